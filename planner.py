"""What a run or a sweep will cost, before spending it: `--plan` on train_vit.py, train_lm.py and reproduce.py.

A plan trains nothing and writes nothing. Per run it gives the compute the trainer will count (FLOPs, Sec. 3:
6 x block MACs per example or token), the steps and examples (tokens) the budget buys, and the time on this
device at this precision, estimated from measurements in this process:

    setup       the trainer's own start (data, model, evaluation sets), as this process took it
    training    steps x the median of --plan-steps timed optimiser steps per shape (after 2 untimed ones)
    evaluation  evaluations x one timed evaluation per shape (the evaluations sit log-spaced, runtime.eval_points)
    checkpoints saves x one timed serialisation of the model and optimiser to memory

and the peak memory: on CUDA torch.cuda.max_memory_allocated, on a CPU the process's peak resident set (VmHWM,
which holds the data of the in-memory formats; a prepared file is mapped, not held). A schedule's stages are
split by their flops_start as the trainer switches (by FLOPs; --switch-on error cannot be known in advance).
"""
import io
import math
import os
import statistics
import time
from bisect import bisect_left

import torch


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
                 f"({'allocated on the GPU' if device.type == 'cuda' else 'resident, this process'})")
    return "\n".join(lines)


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"
