"""What a run or a sweep will cost, before spending it (the trainers' plan, and reproduce.py --plan).

    python lab/planner.py train_vit.py --flops 2e13 --schedule schedule.json    # the trainer's own flags
    python lab/planner.py train_lm.py --flops 1e14 --context 256 --plan-steps 3

A plan trains nothing and writes nothing. Per run it gives the compute the trainer will count (FLOPs, Sec. 3:
6 x block MACs per example or token), the steps and examples (tokens) the budget buys, and the time on this
device at this precision, estimated from measurements in this process:

    setup       the trainer's own start (data, model, evaluation sets), as this process took it
    training    steps x the median of --plan-steps timed optimiser steps per shape (after 2 untimed ones)
    evaluation  evaluations x one timed evaluation per shape (the evaluations sit log-spaced, runtime.eval_points)
    checkpoints saves x one timed serialisation of the model and optimiser to memory

and the peak memory: on CUDA torch.cuda.max_memory_allocated, on a CPU the process's peak resident set (VmHWM,
which holds the data of the in-memory formats; a prepared file is mapped, not held), beside the trainer's own
estimate before it allocates anything (runtime.check_memory: a floor for training alone, which refuses a stage
that cannot fit). A schedule's stages are
split by their flops_start as the trainer switches (by FLOPs; --switch-on error cannot be known in advance).
"""
import importlib
import io
import json
import math
import os
import statistics
import sys
import time
from bisect import bisect_left
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the core, at the repository root
import flexivit  # noqa: E402
import runtime  # noqa: E402
import train_lm  # noqa: E402
import train_vit  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def process_seconds():
    """Seconds since this process started (interpreter start and imports included), from /proc; None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19])     # field 22, starttime, in clock ticks
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) - start / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def reset_peak(device):
    """Start a new peak-memory measurement (CUDA: the allocator's; CPU: VmHWM, where the kernel lets us)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory(device):
    """Peak bytes since reset_peak: CUDA allocations, or the process's peak resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_calls(fn, device, timed=5, warm=2):
    """Median seconds of `timed` calls of fn() after `warm` untimed ones (the first allocate, build caches)."""
    for _ in range(warm):
        fn()
    sync(device)
    seconds = []
    for _ in range(timed):
        t = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - t)
    return statistics.median(seconds)


def time_once(fn, device):
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def save_seconds(model, opt, device):
    """One checkpoint's serialisation (model and optimiser) into memory: the write's CPU cost, no file."""
    return time_once(lambda: torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, io.BytesIO()),
                     device)


def split_steps(budget, unit, stages):
    """Steps per stage: [n_k]. `stages`: [{"flops_start", "step_flops"}] in order; the trainer enters stage k once
    its cumulative FLOPs reach flops_start (stage 0 at 0) and stops when the budget (steps or FLOPs) is reached."""
    out, flops, steps = [], 0.0, 0
    for k, s in enumerate(stages):
        end = stages[k + 1]["flops_start"] if k + 1 < len(stages) else math.inf
        if unit == "flops":
            end = min(end, budget)
        n = math.ceil((end - flops) / s["step_flops"]) if end > flops and math.isfinite(end) else 0
        if unit == "steps":
            n = int(budget) - steps if not math.isfinite(end) else min(n, int(budget) - steps)
        n = max(n, 0)
        out.append(n)
        flops, steps = flops + n * s["step_flops"], steps + n
    return out


def evals_per_stage(points, unit, stages, steps):
    """How many of the evaluation points (runtime.eval_points) fall in each stage."""
    ends, at = [], 0.0
    for s, n in zip(stages, steps):
        at += n * (s["step_flops"] if unit == "flops" else 1)
        ends.append(at)
    counts = [0] * len(stages)
    for p in points:
        counts[min(bisect_left(ends, p * (1 - 1e-12)), len(stages) - 1)] += 1
    return counts


def summarise(name, rows, setup, saves, save_s, peak, unit_name="examples"):
    """A run's plan from its stages' rows [{"shape", "steps", "units", "flops", "step_s", "evals", "eval_s"}]."""
    train_s = sum(r["steps"] * r["step_s"] for r in rows)
    eval_s = sum(r["evals"] * r["eval_s"] for r in rows)
    return {"run": name, "stages": rows, "steps": sum(r["steps"] for r in rows),
            unit_name: sum(r["units"] for r in rows), "flops": sum(r["flops"] for r in rows),
            "setup_s": setup, "train_s": train_s, "eval_s": eval_s, "evals": sum(r["evals"] for r in rows),
            "ckpt_s": saves * save_s, "total_s": setup + train_s + eval_s + saves * save_s, "peak_bytes": peak}


def hours(seconds):
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def show(plan, device, precision, unit_name="examples"):
    """The plan of one run as lines of text: one per stage, then the totals."""
    lines = [f"plan {plan['run']} on {device_name(device)}, {precision}:"]
    for r in plan["stages"]:
        lines.append(f"  {r['shape']:<34} {r['steps']:>10,} steps {r['units']:>14,.0f} {unit_name} {r['flops']:9.3g} FLOPs"
                     f"  {r['step_s'] * 1e3:8.1f} ms/step  {r['evals']:>3} evals x {r['eval_s']:.2f} s")
    lines.append(f"  total: {plan['steps']:,} steps, {plan[unit_name]:,.0f} {unit_name}, {plan['flops']:.3g} FLOPs; "
                 f"time {hours(plan['total_s'])} = setup {hours(plan['setup_s'])} + training {hours(plan['train_s'])} "
                 f"+ {plan['evals']} evaluations {hours(plan['eval_s'])} + checkpoints {hours(plan['ckpt_s'])}; "
                 f"peak memory {plan['peak_bytes'] / 2**20:,.0f} MiB "
                 f"({'allocated on the GPU' if device.type == 'cuda' else 'resident, this process'}; the trainer's "
                 f"estimate before allocating, a floor for training alone: {plan.get('need_bytes', 0) / 2**20:,.0f} MiB)")
    return "\n".join(lines)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


# ----------------------------------------------------------------------------- train_vit.py

def time_shape(run, shape, patches, plan_steps):
    """(seconds per step, seconds per evaluation, seconds per checkpoint) of one stage's shape, measured on a fresh
    model of its width and depth (the data position advances: a prepared file is read as in training)."""
    cfg, t = run.cfg, run.template
    run.model = flexivit.FlexiViT(**{**t.model_args(), "width": shape["width"], "depth": shape["depth"],
                                     "heads": shape["width"] // t.head_dim}).to(run.device).train()
    run.opt, run.state = train_vit.make_optimizer(run.model, cfg, run.device), train_vit.State()
    fwd, drawn = train_vit.wrap(run), iter(patches * (plan_steps + 2))

    def step():
        train_vit.train_step(run, fwd, shape, next(drawn))
        run.state.step, run.state.samples = run.state.step + 1, run.state.samples + shape["batch_size"]
    step_s = time_calls(step, run.device, plan_steps)
    eval_s = time_once(lambda: train_vit.evaluate(run.model, shape["patch"], run.ev, cfg, run.amp), run.device)
    return step_s, eval_s, save_seconds(run.model, run.opt, run.device)


def plan_vit(cfg, plan_steps=5, name=None):
    """What this run will cost (py): per stage its steps, examples, FLOPs and timed seconds; trains nothing,
    writes nothing. Returns the plan (a dict) after printing it."""
    t0 = time.perf_counter()
    run = train_vit.Run(cfg)
    setup = process_seconds() if name is None else None    # a run of its own: from the process start
    setup = time.perf_counter() - t0 if setup is None else setup
    reset_peak(run.device)
    sched_stages = run.sched.stages if run.sched and not run.sched.random else None
    stages, timed, saves_s = [], {}, 0.0
    for k, shape in enumerate(run.stages):
        patches = run.patches or [shape["patch"]]
        key = json.dumps({**shape, "patches": patches}, sort_keys=True)
        if key not in timed:
            timed[key] = time_shape(run, shape, patches, plan_steps)
        macs = sum(run.model.macs(p) for p in patches) / len(patches)     # a random draw: the mean patch
        stages.append({"shape": train_vit.log_config(shape, run.patches, run.distilling), "timed": timed[key],
                       "flops_start": sched_stages[k].flops_start if sched_stages else 0.0,
                       "step_flops": train_vit.step_flops(macs, shape["batch_size"], shape["objective"], run.teacher)})
    steps = split_steps(run.budget, run.unit, stages)
    evals = evals_per_stage(train_vit.eval_points(run), run.unit, stages, steps)   # as the trainer places them
    rows = [{"shape": " ".join(f"{k}={v}" for k, v in s["shape"].items()), "steps": n,
             "units": n * run.stages[i]["batch_size"], "flops": n * s["step_flops"], "step_s": s["timed"][0],
             "evals": e, "eval_s": s["timed"][1]} for i, (s, n, e) in enumerate(zip(stages, steps, evals))]
    saves_s = max(t[2] for t in timed.values())
    out = summarise(name or str(run.out), rows, setup, 0, saves_s, peak_memory(run.device))
    n_saves = out["evals"] + (out["steps"] // cfg.ckpt_every if cfg.ckpt_every else 0) + int(
        out["total_s"] // (60 * cfg.ckpt_minutes))
    out = {**summarise(out["run"], rows, setup, n_saves, saves_s, out["peak_bytes"]), "need_bytes": run.need}
    print(show(out, run.device, run.precision))
    return out


# ----------------------------------------------------------------------------- train_lm.py

def plan_lm(cfg, plan_steps=5, name=None):
    """What this run will cost (py): per context its steps, tokens, FLOPs and timed seconds (steps, one
    evaluation at the context and at the run's largest); trains nothing, writes nothing. Returns the plan."""
    t0 = time.perf_counter()
    run = train_lm.Run(cfg)
    setup = process_seconds() if name is None else None
    setup = time.perf_counter() - t0 if setup is None else setup
    sched = run.schedule if run.schedule and not run.schedule.random else None
    fwd, stages, timed = torch.compile(run.model) if cfg.compile else run.model, [], {}
    for k, s in enumerate(run.shapes):                  # full shapes: a stage may name only its depth
        if s["depth"] > len(run.model.blocks):           # a deeper stage is timed on the grown model
            train_lm.grow(run, s["depth"])
            fwd, timed = torch.compile(run.model) if cfg.compile else run.model, {}
        context, batch = s["context"], train_lm.batch_of(cfg, s)
        if (context, batch) not in timed:
            def step():
                train_lm.train_step(run, fwd, context, batch)
                run.state.step += 1
            evals = lambda: [train_lm.evaluate(fwd, run.val, c, cfg.val_tokens, cfg.tokens_per_step, run.device, run.amp)
                             for c in {context, run.max_context}]
            timed[context, batch] = (time_calls(step, run.device, plan_steps),
                                     time_once(evals, run.device))
        stages.append({"shape": f"context={context} batch_size={batch}", "batch": batch, "context": context,
                       "timed": timed[context, batch], "flops_start": sched.stages[k].flops_start if sched else 0.0,
                       "step_flops": 6 * run.model.macs_per_token(context) * batch * context})
    if run.schedule and run.schedule.random:            # a stage drawn per step: the mean step, one row
        mean = lambda key: sum(st[key] for st in stages) / len(stages)
        stages = [{**stages[-1], "shape": "random over " + " ".join(str(st["context"]) for st in stages),
                   "step_flops": mean("step_flops"), "timed": (mean_t(stages, 0), mean_t(stages, 1))}]
    steps = split_steps(run.budget, run.unit, stages)
    evals = evals_per_stage(train_lm.eval_points(run), run.unit, stages, steps)   # as the trainer places them
    rows = [{"shape": st["shape"], "steps": n, "units": n * st["step_flops"] / (6 * run.model.macs_per_token(
        st["context"])), "flops": n * st["step_flops"], "step_s": st["timed"][0], "evals": e, "eval_s": st["timed"][1]}
            for st, n, e in zip(stages, steps, evals)]
    save_s = save_seconds(run.model, run.opt, run.device)
    out = summarise(name or cfg.out_dir, rows, setup, 0, save_s, 0, "tokens")
    n_saves = out["evals"] + (out["steps"] // cfg.ckpt_every if cfg.ckpt_every else 0) + int(
        out["total_s"] // (60 * cfg.ckpt_minutes))
    out = {**summarise(out["run"], rows, setup, n_saves, save_s, peak_memory(run.device), "tokens"),
           "need_bytes": run.need}
    print(show(out, run.device, run.precision, "tokens"))
    return out


def mean_t(stages, i):
    return sum(st["timed"][i] for st in stages) / len(stages)

# ----------------------------------------------------------------------------- the command line

def plan_run(script, args, name=None):
    """The plan of `script` (train_vit.py or train_lm.py) run with `args`; --plan-steps N: timed steps per shape."""
    args, steps = list(args), 5
    if "--plan-steps" in args:
        i = args.index("--plan-steps")
        try:
            steps = int(args[i + 1])
            assert steps > 0
        except (IndexError, ValueError, AssertionError):
            raise runtime.UserError("--plan-steps wants a positive number of timed steps") from None
        del args[i:i + 2]
    trainer = importlib.import_module(script.removesuffix(".py"))
    cfg = runtime.parse(trainer.Config, script, args)
    return (plan_vit if trainer is train_vit else plan_lm)(cfg, steps, name)


def cli(args=None):
    """python lab/planner.py train_vit.py|train_lm.py <the trainer's flags> [--plan-steps N]: one line and exit
    code 2 on bad input."""
    args = sys.argv[1:] if args is None else list(args)
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    try:
        if args[:1] not in (["train_vit.py"], ["train_lm.py"]):
            raise runtime.UserError("name the trainer first: python lab/planner.py train_vit.py|train_lm.py <its flags>")
        plan_run(args[0], args[1:])
    except runtime.UserError as e:
        print(f"planner.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
