"""The paper's experiments end to end, one command each: static sweep -> laws -> schedule -> scheduled runs ->
comparison -> report (Sec. 3-6; Fig. 4, 5, 7, 9, 12).

    python lab/reproduce.py --experiment patch --preset demo    # `make demo`: ViT patch size, minutes on a laptop
    python lab/reproduce.py --experiment patch --preset full    # `make reproduce`
    python lab/reproduce.py --experiment context --preset full  # `make reproduce-lm`: LM context length (Sec. 5)
    python lab/reproduce.py --experiment batch --preset full    # `make hparams-batch`: batch size (Sec. 6.2)
    python lab/reproduce.py --experiment distill --preset full  # `make hparams-distill`: supervised -> distillation
    python lab/reproduce.py --experiment width --preset demo    # `make reproduce-width`: ViT width 32 -> 64 -> 128
    python lab/reproduce.py --experiment depth --preset demo    # `make reproduce-depth`: ViT depth 2 -> 4 -> 6
    python lab/reproduce.py --experiment joint --preset demo    # `make reproduce-joint`: patch x width (App. D)
    python lab/reproduce.py --experiment lm-depth --preset demo # `make reproduce-lm-depth`: LM depth 2 -> 4 -> 6, code
    python lab/reproduce.py --experiment patch --preset smoke --seeds 0 1 2 --set patches=14,7 --flops 1e11

Six steps, each a run of one of the project's scripts; what a step prints goes to its own file
(<out-dir>/<run>/stdout.txt for a training run, <out-dir>/<step>.txt for the others):
  1. static runs   train_vit.py / train_lm.py at one fixed shape a run, once per seed     -> <run>_s<seed>/
                   (distill: first one teacher on all cores; its training is not counted, its forwards are)
  2. laws          fit_laws.py on the static runs of every seed, pooled per shape         -> laws.json, .png
  3. schedule      schedule.py for the static runs' budget, and lab/baselines.py         -> schedule*.json, .png
  4. scheduled     the law schedule and the baselines (linear, log, random), once per seed -> sched_<kind>_s<seed>/
                   When the laws do not cross, the law, linear and log schedules have one stage and would only
                   repeat a static run: they are not trained (the random baseline still is, where there is one).
  5. compare       compare.py at the best static run's final error                       -> comparison.json, .png
  6. report        report.py: the verdict, laws, schedule, comparison and the sweep's compute -> report.md

Presets are data (presets.py); `--set KEY=VALUE` changes one of their values, `--flops` the budget. The
output folder keeps a manifest, pipeline.json (experiment, preset, parameters, seeds, budget): the same
command run again resumes (a finished run, one whose log reached its budget, is kept; an interrupted one
continues from its checkpoint), and a command that differs from the manifest is refused, so runs of two
settings never mix. Runs go `--jobs` at a time, `--threads` each; one progress bar follows the whole pipeline.
(This replaces reproduce_lm.py, now --experiment context, and reproduce_hparams.py, now --experiment batch|distill.)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]             # the core's folder: its scripts run from any working folder
sys.path.insert(0, str(ROOT))
from lab import report, transfer, write_json
import runtime
from lab.presets import PRESETS
from runtime import UserError

# per experiment: the trainer, and the baselines it can train (train_vit.py's random mode draws patch sizes only)
TRAINER = {"context": "train_lm.py", "lm-depth": "train_lm.py"}
LM_EXPERIMENTS = ("context", "lm-depth")
BASELINES = {"patch": ("linear", "log", "random"), "context": ("linear", "log", "random"),
             "joint": ("linear", "log", "width-only", "patch-only")}   # Fig. 19: one axis at a time, same laws
DEFAULT_BASELINES = ("linear", "log")


@dataclasses.dataclass
class Config:
    experiment: Literal["patch", "context", "batch", "distill", "width", "depth", "joint", "lm-depth"] = "patch"
    """What the schedule changes: ViT patch size, LM context length, batch size, objective (supervised ->
    distillation), ViT width or depth, patch and width at once (joint, App. D), or LM depth (lm-depth: grown by
    expand.py, on code)."""
    preset: Literal["demo", "full", "smoke", "long", "paper"] = "demo"
    """Size: demo (minutes), full (the paper's comparison at CPU scale), smoke (checks the plumbing, no claim),
    long (context only: contexts up to 512 bytes, a wider model, hours), paper (patch only: the paper's V256-6 at
    120 px on ImageNet, for a GPU; README "A GPU recipe")."""
    seeds: tuple[int, ...] = (0,)
    """Seeds: every static and scheduled run once per seed; the laws pool the static runs of all seeds."""
    flops: float | None = None
    """Override the preset's compute budget per run (FLOPs)."""
    set: tuple[str, ...] = ()
    """Override preset values, KEY=VALUE each (e.g. model=V32-2 patches=14,7 lr_scaling=sqrt); see PRESETS."""
    out_dir: str | None = None
    """Where all runs and results go; default runs/<experiment>-<preset>."""
    data_dir: str = "/usr/share/datasets/fashion-mnist"
    """Image data for train_vit.py (Fashion-MNIST IDX files by default; see train_vit.py --help)."""
    jobs: int = 2
    """Runs trained at the same time."""
    threads: int | None = None
    """CPU threads per run; default: the cores divided by --jobs (a teacher gets all cores)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Passed to the trainers' --precision."""
    fewshot_data: str | None = None
    """A folder prepared by prepare_images.py for the 10-shot support pool and queries (the paper: ImageNet-1k while
    training on ImageNet-21k); passed to train_vit.py --fewshot-data."""
    plan: bool = False
    """Print what every run and the whole sweep will cost (FLOPs, steps, time from a few timed steps and one
    evaluation per shape on this device, peak memory) and exit: trains nothing, writes nothing (planner.py)."""
    cost: Literal["flops", "wall"] = "flops"
    """What the laws and the schedule minimise, and the headline savings: FLOPs (the paper), or training seconds
    on this machine (App. F); the comparison shows both either way."""


# ----------------------------------------------------------------------------- the parameters, checked


def number(key: str, text: str, like):
    """One --set value, parsed like the preset's value `like`; numbers must be finite and > 0."""
    if isinstance(like, tuple):
        parts = [t.strip() for t in text.split(",") if t.strip()]
        if not parts:
            raise UserError(f"--set {key}={text}: give a comma-separated list, e.g. {key}={','.join(map(str, like))}")
        return tuple(number(key, t, like[0] if like else 1) for t in parts)
    if isinstance(like, str):
        return text
    if isinstance(like, bool):
        if text.lower() not in ("true", "false"):
            raise UserError(f"--set {key}={text}: expected true or false")
        return text.lower() == "true"
    try:
        v = float(text)
    except ValueError:
        raise UserError(f"--set {key}={text}: expected a number like {like!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise UserError(f"--set {key}={text}: must be a finite number > 0")
    if isinstance(like, int):
        if not v.is_integer():
            raise UserError(f"--set {key}={text}: must be a whole number")
        return int(v)
    return v


def resolve(cfg: Config) -> dict:
    """The preset's values with --set and --flops applied, each checked."""
    if cfg.preset not in PRESETS[cfg.experiment]:
        raise UserError(f"--experiment {cfg.experiment} has the presets {', '.join(PRESETS[cfg.experiment])}; "
                        f"pick one with --preset")
    p = dict(PRESETS[cfg.experiment][cfg.preset])
    for item in cfg.set:
        key, eq, text = item.partition("=")
        if not eq or key not in p:
            raise UserError(f"--set {item}: give KEY=VALUE with KEY one of {', '.join(p)}")
        try:
            p[key] = number(key, text, p[key])
        except UserError as e:
            raise UserError(f"--experiment {cfg.experiment}: {e}") from None
    if cfg.flops is not None:
        if not (math.isfinite(cfg.flops) and cfg.flops > 0):
            raise UserError(f"--flops {cfg.flops}: the budget must be a finite number of FLOPs > 0")
        if "sched_flops" in p:                                  # the same margin over the static budget
            p["sched_flops"] *= cfg.flops / p["flops"]
        p["flops"] = cfg.flops
    if cfg.jobs < 1 or (cfg.threads is not None and cfg.threads < 1):
        raise UserError("--jobs and --threads must be >= 1")
    check_grid(cfg.experiment, p)
    return p


def check_grid(e: str, p: dict) -> None:
    """A growth grid (width, depth, joint) that a grown model can follow, checked before any training: at least
    two distinct values per axis (one value: nothing to schedule), widths multiples of the head size (expand.py
    keeps it fixed), depths whole blocks (the ViT's and the LM's)."""
    axes = {"width": ("widths",), "depth": ("depths",), "lm-depth": ("depths",),
            "joint": ("patches", "widths")}.get(e, ())
    for key in axes:
        values = p[key]
        if len(set(values)) < 2:
            raise UserError(f"--experiment {e}: {key} {','.join(map(str, values))} has one value; a schedule needs "
                            f"two or more, e.g. --set {key}={','.join(map(str, PRESETS[e]['demo'][key]))}")
        if len(set(values)) != len(values):
            raise UserError(f"--experiment {e}: {key} {','.join(map(str, values))} repeats a value")
    for w in p["widths"] if "widths" in axes else [p["width"]] if e == "depth" else []:
        if w % p["head_dim"]:
            raise UserError(f"--experiment {e}: width {w} is not a multiple of the head size {p['head_dim']} "
                            f"(growth keeps the head size; use multiples of {p['head_dim']}, or --set head_dim=...)")
    for d in p["depths"] if e in ("depth", "lm-depth") else []:
        if not float(d).is_integer() or d < 1:
            raise UserError(f"--experiment {e}: depth {d} is not a whole number of blocks >= 1 (a model grows by "
                            "whole blocks)")


def check_batch(p: dict) -> None:
    if p.get("batch", "constant") not in ("constant", "tuned"):
        raise UserError(f"--set batch={p['batch']}: use constant (tokens_per_step at every context) or tuned (App. B.5)")
    if p.get("batch") == "tuned" and "pilot_points" in p:    # a pilot would train at the shared batch, not the tuned one
        raise UserError("--set batch=tuned: this preset's pilots (pilot_points) need one batch for every context; use "
                        "batch=constant, or a preset without pilots")


def check_corpus(e: str, p: dict) -> None:
    """LM experiments: the corpus is read once before any training (train_lm.py's own reader and cache), and refused
    when its validation split is shorter than the largest context times the validation windows, or a token file's ids
    reach the vocabulary size, so that no run fails half-way through the pipeline."""
    if e not in LM_EXPERIMENTS:
        return
    from data import load_corpus                     # torch; only the LM experiments need it
    T = max(p.get("contexts", ()) or (p["context"],))
    train, val, _, _ = load_corpus(p["data"], "", p.get("vocab_size", 0))
    windows = p["val_tokens"] // T
    if windows < 1 or len(val) < windows * T + 1 or len(train) < T + 1:
        raise UserError(f"--set data={p['data'] or '(the standard library)'}: the validation split holds {len(val)} "
                        f"tokens (training {len(train)}), fewer than the largest context {T} x "
                        f"{max(windows, 1)} validation windows + 1 = {max(windows, 1) * T + 1}: use a larger corpus, "
                        "or lower val_tokens / the contexts")


def check_seeds(seeds) -> tuple[int, ...]:
    seeds = tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"--seeds {' '.join(map(str, seeds))}: give distinct seeds >= 0, e.g. --seeds 0 1 2")
    return seeds


# ----------------------------------------------------------------------------- the plan: which runs, which flags


@dataclasses.dataclass
class Job:
    """One training run: its folder, what it is, its budget and the trainer's command (without --resume)."""
    name: str
    kind: str          # teacher, static, or the schedule's kind: law, linear, log, random
    seed: int
    budget: float      # FLOPs it trains for; finished once its log's last evaluation reached them
    out: Path
    threads: int
    cmd: list


def common_flags(cfg: Config, p: dict) -> list[str]:
    """What every run of the experiment shares: data, evaluation, warm-up."""
    if cfg.experiment in LM_EXPERIMENTS:
        return ["--tokens-per-step", str(p["tokens_per_step"]), "--val-tokens", str(p["val_tokens"]),
                "--data", p["data"], "--warmup", str(p.get("warmup", 100)),      # 100: train_lm.py's default
                *(["--vocab-size", str(p["vocab_size"])] if p.get("vocab_size") else []),
                *(["--rewarm", str(p["rewarm"])] if p.get("rewarm") else [])]
    flags = ["--data-dir", cfg.data_dir, "--fewshot-support", str(p["fewshot_support"]), "--fewshot-query",
             str(p["fewshot_query"]), "--test-size", str(p["test_size"]), "--warmup", str(p["warmup"]),
             *(["--image-size", str(p["image_size"])] if p.get("image_size") else [])]
    flags += [f for k in ("base_patch", "posemb_grid") if k in p for f in (f"--{k.replace('_', '-')}", str(p[k]))]
    return flags + (["--fewshot-data", cfg.fewshot_data] if cfg.fewshot_data else [])


def static_shapes(e: str, p: dict, teacher: str) -> list[tuple[str, list[str], float]]:
    """(run name, flags, FLOPs) of each static run: one fixed value of the experiment's parameter a run."""
    f, m = p["flops"], p.get("model")

    def opt(b=None, lr=None):   # batch size and learning rate
        return ["--batch-size", str(b or p["batch_size"]), "--lr", str(lr or p["lr"])]

    if e == "patch":
        return [(f"static_p{q}", ["--model", m, "--patch", str(q), *opt()], f)
                for q in p["patches"]]
    if e == "context":
        return [(f"ctx{T}", ["--model", m, "--context", str(T)], f) for T in p["contexts"]]
    if e == "lm-depth":   # --depth puts the depth into the logged shape: one law per depth
        return [(f"depth{d}", ["--model", f"L{p['width']}-{d}", "--depth", str(d), "--context", str(p["context"])],
                 f) for d in p["depths"]]
    if e == "batch":   # the LR of batch b follows lr_scaling, as the scheduled run's does
        b0 = min(p["batch_sizes"])
        if p["lr_scaling"] not in ("none", "linear", "sqrt"):
            raise UserError(f"--set lr_scaling={p['lr_scaling']}: use none, linear or sqrt")
        return [(f"static_bs{b}", ["--model", m, "--patch", str(p["patch"]),      # the trainer's own rule
                                   *opt(b, runtime.learning_rate(p["lr"], 0, 0, p["lr_scaling"], b / b0))], f)
                for b in sorted(p["batch_sizes"])]
    if e == "distill":
        base = ["--model", m, "--patch", str(p["patch"]), *opt()]
        return [("static_distill", [*base, "--objective", "distill", "--teacher", teacher, "--temperature",
                                    str(p["temperature"])], f), ("static_supervised", base, f)]
    heads = ["--head-dim", str(p["head_dim"])] if "head_dim" in p else []      # the grown model's head size
    if e == "width":
        return [(f"static_w{w}", ["--model", f"V{w}-{p['depth']}", "--patch", str(p["patch"]), *heads, *opt()], f)
                for w in p["widths"]]
    if e == "joint":   # every (patch, width); the grid's static runs also give the one-axis schedules their laws
        return [(f"static_p{q}_w{w}", ["--model", f"V{w}-{p['depth']}", "--patch", str(q), *heads, *opt()], f)
                for q in p["patches"] for w in p["widths"]]
    return [(f"static_d{d}", ["--model", f"V{p['width']}-{d}", "--patch", str(p["patch"]), *heads, *opt()], f)
            for d in p["depths"]]


def schedule_flags(e: str, p: dict, teacher: str) -> list[str]:
    """The flags of a scheduled run besides --schedule (its stages set the shape)."""
    if e == "context":
        return ["--model", p["model"]]
    if e == "lm-depth":   # starts at the smallest depth; the stages grow it
        return ["--model", f"L{p['width']}-{min(p['depths'])}", "--context", str(p["context"])]
    if e == "batch":
        return ["--model", p["model"], "--batch-size", str(min(p["batch_sizes"])), "--lr", str(p["lr"]),
                "--lr-scaling", p["lr_scaling"]]
    start = {"width": f"V{min(p.get('widths', [0]))}-{p.get('depth')}",
             "joint": f"V{min(p.get('widths', [0]))}-{p.get('depth')}",
             "depth": f"V{p.get('width')}-{min(p.get('depths', [0]))}"}.get(e, p["model"])   # grows from there
    base = ["--model", start, "--batch-size", str(p["batch_size"]), "--lr", str(p["lr"])]
    if e in ("width", "depth", "joint"):   # how the model grows (train_vit.py; Fig. 17, App. C)
        base += ["--head-dim", str(p["head_dim"]), "--grow-gamma", str(p["grow_gamma"]), "--rewarm", str(p["rewarm"]),
                 "--grow-preserve" if p["grow_preserve"] else "--no-grow-preserve",     # explicit: never the default
                 "--grow-depth", p["grow_depth"]]
    return [*base, "--teacher", teacher, "--temperature", str(p["temperature"])] if e == "distill" else base


def trainer_cmd(cfg, p, out: Path, seed: int, budget: float, threads: int, evals: int, flags) -> list[str]:
    common = common_flags(cfg, p)
    if "--tokens-per-step" in flags:                          # a tuning run's own batch replaces the shared one
        i = common.index("--tokens-per-step")
        common = common[:i] + common[i + 2:]
    cmd = [sys.executable, TRAINER.get(cfg.experiment, "train_vit.py"), *flags, *common,
           "--flops", repr(float(budget)), "--evals", str(evals), "--seed", str(seed), "--out-dir", str(out),
           "--threads", str(threads), "--no-progress"]
    return cmd + (["--precision", cfg.precision] if cfg.precision != "auto" else [])   # auto: the trainers' default


def plan(cfg: Config, p: dict, root: Path, seeds, threads: int) -> tuple[list[Job], list[Job]]:
    """The static runs (a teacher first, for distill) and the scheduled runs of every seed, before any training."""
    e, jobs = cfg.experiment, []
    teacher = p.get("teacher") or str(root / "teacher" / "ckpt.pt")
    if e == "distill" and not p["teacher"]:   # one teacher for every seed, on all cores, alone
        t_flags = ["--model", p["teacher_model"], "--patch", str(p["teacher_patch"])]
        t_out, cores = root / "teacher", cfg.threads or os.cpu_count() or 1
        jobs.append(Job("teacher", "teacher", seeds[0], p["teacher_flops"], t_out, cores,
                        trainer_cmd(cfg, p, t_out, seeds[0], p["teacher_flops"], cores, 5, t_flags)))
    if e == "context" and p.get("batch") == "tuned":          # App. B.5: first the batch of each context
        jobs += tuning_jobs(cfg, p, root, seeds[0], threads)
    for seed in seeds:
        for name, flags, budget in static_shapes(e, p, teacher):
            out, flags = root / f"{name}_s{seed}", flags + transfer.keep_flags(p)
            jobs.append(Job(out.name, "static", seed, budget, out, threads,
                            trainer_cmd(cfg, p, out, seed, budget, threads, p["evals"], flags)))
    sched = []
    for seed in seeds:
        for kind in ("law", *(("transfer",) if "pilot_points" in p else ()), *BASELINES.get(e, DEFAULT_BASELINES)):
            out, file = root / f"sched_{kind}_s{seed}", root / ("schedule.json" if kind == "law" else
                                                                f"schedule_{kind}.json")
            budget = p.get("sched_flops", p["flops"])
            flags = [*schedule_flags(e, p, teacher), "--schedule", str(file)]
            sched.append(Job(out.name, kind, seed, budget, out, threads,
                             trainer_cmd(cfg, p, out, seed, budget, threads, p["evals"], flags)))
    return jobs, sched


# ----------------------------------------------------------------------------- the batch per context (App. B.5)
# The paper trains each context at "the batch size that leads to the most efficient convergence". With batch=tuned
# the context experiment first trains every context at each of tune_tokens tokens a step for tune_frac of the budget
# (one seed, the first), keeps the one with the lowest val_loss at that equal compute, and uses it for that context
# everywhere: the static runs (--tokens-per-step) and every schedule's stages ("tokens_per_step"). batch=constant
# (default) keeps tokens_per_step at every context. The tuning's compute is reported, not counted in the savings.


def tuning_jobs(cfg: Config, p: dict, root: Path, seed: int, threads: int) -> list[Job]:
    jobs, budget = [], p["flops"] * p["tune_frac"]
    for T in p["contexts"]:
        for n in p["tune_tokens"]:
            if n % T:
                raise UserError(f"--set tune_tokens={','.join(map(str, p['tune_tokens']))}: {n} tokens a step is not a "
                                f"multiple of context {T}")
            out = root / f"tune_ctx{T}_t{n}"
            flags = ["--model", p["model"], "--context", str(T), "--tokens-per-step", str(n)]
            jobs.append(Job(out.name, "tune", seed, budget, out, threads,
                            trainer_cmd(cfg, p, out, seed, budget, threads, max(4, p["evals"] // 3), flags)))
    return jobs


def tuned_batches(root: Path, p: dict) -> dict:
    """tuned.json: per context, each tuning run's last val_loss and the tokens a step with the lowest."""
    contexts = {}
    for T in p["contexts"]:
        losses = {n: report.last_eval(root / f"tune_ctx{T}_t{n}")["val_loss"] for n in p["tune_tokens"]}
        contexts[str(T)] = {"val_loss": {str(n): v for n, v in losses.items()}, "tokens_per_step": min(losses, key=losses.get)}
    doc = {"version": 1, "budget": p["flops"] * p["tune_frac"], "candidates": list(p["tune_tokens"]), "contexts": contexts}
    write_json(root / "tuned.json", doc)
    return {int(T): c["tokens_per_step"] for T, c in contexts.items()}


def apply_tuning(root: Path, static: list[Job], tuned: dict) -> None:
    """Static runs at their context's tuned tokens a step; every schedule's stages carry it ("tokens_per_step")."""
    for job in static:
        if job.kind == "static":
            T = int(job.cmd[job.cmd.index("--context") + 1])
            job.cmd[job.cmd.index("--tokens-per-step") + 1] = str(tuned[T])
    for path in sorted(root.glob("schedule*.json")):
        doc = json.loads(path.read_text())
        for stage in doc["stages"]:
            stage["config"]["tokens_per_step"] = tuned[stage["config"]["context"]]
        write_json(path, doc)


def attention_share(p: dict) -> dict:
    """Share of a token's block FLOPs spent in attention scores (2 T d of lm.macs_per_token's terms), per context."""
    import lm                                                   # torch; only the LM experiments need it
    w, d = (int(x) for x in (p.get("model") or f"L{p['width']}-1")[1:].split("-"))
    return {str(T): 1 - lm.macs_per_token(w, d, 4 * w, 0) / lm.macs_per_token(w, d, 4 * w, T)
            for T in sorted(p.get("contexts", ()) or (p["context"],))}


# ----------------------------------------------------------------------------- running: finished, resumed, failed


class StepFailed(Exception):
    """A step exited with an error: its one-line cause and the file holding its output."""
    def __init__(self, name: str, log: Path):
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] \
            if log.exists() else []
        super().__init__(f"{name} failed: {lines[-1] if lines else 'no output'} (output: {log})")


def last_flops(run: Path) -> float | None:
    """Cumulative FLOPs of the last evaluation in run/log.jsonl; None before the first one."""
    r = report.last_eval(run)
    return None if r is None else float(r["flops"])


def finished(run: Path, budget: float) -> bool:
    """A run is finished when its log's last evaluation reached its budget (within 1e-9 relative)."""
    flops = last_flops(run)
    return flops is not None and flops >= budget * (1 - 1e-9)


class Bar:
    """One progress bar for the whole pipeline: runs done of all runs, plus the share of its budget each run in
    training has reached (its log's last "flops", read every few seconds), and an ETA. On a terminal a tqdm bar
    on stderr; elsewhere (a log file) the same line on stdout every 30 s."""
    FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n:.2f}/{total} runs [{elapsed}<{remaining}]"

    def __init__(self, jobs: list[Job]):
        self.done = self.start = sum(finished(j.out, j.budget) for j in jobs)
        self.total, self.t0, self.shown = len(jobs), time.time(), 0.0
        self.tq = tqdm(total=self.total, initial=self.done, file=sys.stderr, dynamic_ncols=True, leave=False,
                       bar_format=self.FORMAT) if sys.stderr.isatty() else None

    def show(self, desc: str, running=(), force=False) -> None:
        if not (force or self.tq or time.time() - self.shown > 30):
            return
        n = self.done + sum(min(1.0, (last_flops(j.out) or 0.0) / j.budget) for j in running)
        if self.tq:
            self.tq.set_description_str(desc, refresh=False)
            self.tq.total, self.tq.n = self.total, n
            self.tq.refresh()
        else:
            rate = (n - self.start) / max(time.time() - self.t0, 1e-9)
            say(tqdm.format_meter(n, self.total, time.time() - self.t0, prefix=desc, ncols=80,
                                  bar_format=self.FORMAT, rate=rate or None, initial=self.start))
        self.shown = time.time()

    def drop(self, jobs: list[Job]) -> None:
        """Runs the plan no longer needs."""
        self.done -= sum(finished(j.out, j.budget) for j in jobs)
        self.start -= sum(finished(j.out, j.budget) for j in jobs)
        self.total -= len(jobs)

    def close(self) -> None:
        if self.tq:
            self.tq.close()


def say(text: str) -> None:
    tqdm.write(text, file=sys.stdout)     # above the bar
    sys.stdout.flush()                    # a log file followed with `tail -f` gets each line as it is said


def rooted(cmd: list[str]) -> list[str]:   # [python, script.py, ...]: the project's script found from any working folder
    return [cmd[0], str(ROOT / cmd[1]) if cmd[1].endswith(".py") else cmd[1], *cmd[2:]]


def launch(job: Job) -> subprocess.Popen:
    """Start one run; it continues from its checkpoint when there is one. Its output: stdout.txt in its folder."""
    cmd = job.cmd + (["--resume"] if (job.out / "ckpt.pt").exists() else [])
    job.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(job.threads), "MKL_NUM_THREADS": str(job.threads)}
    with open(job.out / "stdout.txt", "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.Popen(rooted(cmd), stdout=f, stderr=subprocess.STDOUT, env=env)


def train(jobs: list[Job], parallel: int, bar: Bar, desc: str, tolerate: bool = False) -> None:
    """Train the unfinished jobs, `parallel` at a time. On a failure the other runs are stopped (their
    checkpoints stay, a rerun resumes them) and the failure's cause is raised; with `tolerate` (pilots) it is said
    and the others go on."""
    todo, running, polled = [j for j in jobs if not finished(j.out, j.budget)], {}, 0.0
    try:
        while todo or running:
            while todo and len(running) < parallel:
                job = todo.pop(0)
                running[job.name] = (job, launch(job))
            time.sleep(0.2)
            for name, (job, proc) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                if proc.returncode != 0 and tolerate:
                    say(f"= {StepFailed(name, job.out / 'stdout.txt')}; going on without it")
                    bar.done += 1
                    continue
                if proc.returncode != 0:
                    raise StepFailed(name, job.out / "stdout.txt")
                if not finished(job.out, job.budget):
                    raise UserError(f"{name} ended before its budget of {job.budget:.3g} FLOPs "
                                    f"(output: {job.out / 'stdout.txt'})")
                bar.done += 1
                say(f"= {name}: done")
            if time.time() - polled > 3 or not running:
                bar.show(desc, [j for j, _ in running.values()])
                polled = time.time()
    finally:
        for _, proc in running.values():
            proc.terminate()
            proc.wait()


def step(name: str, cmd: list[str], log: Path, mode: str = "w") -> None:
    """Run one of the project's scripts (fit_laws.py, schedule.py, compare.py), its output to `log` (mode "a": after
    what is there)."""
    with open(log, mode) as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        # one BLAS thread unless set: scipy's fits run up to 10x slower with more on 2 busy cores (tests/conftest.py)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        rc = subprocess.run(rooted(cmd), stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise StepFailed(name, log)


def one_axis_schedules(cfg: Config, p: dict, root: Path, sched: list[Job], bar: Bar) -> list[Job]:
    """App. D, Fig. 19: the joint grid's laws restricted to one axis, scheduled for the same target. Width only:
    the laws at the best static shape's patch; patch only: those at its width (the best static shape lies on both,
    so both reach the target). schedule.py runs on a laws file holding the sub-grid (laws_<kind>.json) and writes
    schedule_<kind>.json (its "kind" set to width-only / patch-only). A sub-grid with fewer than two usable laws,
    or whose schedule has one stage (it would repeat a static run), is not trained; the report says why."""
    main = json.loads((root / "schedule.json").read_text())
    laws = json.loads((root / "laws.json").read_text())
    best = main["predicted"]["best_static"]["config"]
    drop = []
    for kind, fixed in (("width-only", "patch"), ("patch-only", "width")):
        sub, out = root / f"laws_{kind}.json", root / f"schedule_{kind}.json"
        write_json(sub, {**laws, "laws": [x for x in laws["laws"] if x["config"].get(fixed) == best[fixed]]})
        try:
            step(f"schedule.py ({kind})", [sys.executable, "schedule.py", "--laws", str(sub), "--target-error",
                                           repr(main["target_error"]), "--max-extrap-error", str(p["max_extrap_error"]),
                                           "--out", str(out), *(["--allow-bound-laws"] if p.get("allow_bound_laws")
                                                               else [])], root / f"schedule_{kind}.txt")
        except StepFailed as e:             # e.g. one law left on this axis: nothing to schedule
            say(f"== {kind}: no schedule ({e})")
            drop.append(kind)
            continue
        doc = json.loads(out.read_text())
        write_json(out, {**doc, "kind": kind})
        if len(doc["stages"]) < 2:
            say(f"== {kind}: one stage ({doc['stages'][0].get('name')} throughout), same as a static run: not trained")
            drop.append(kind)
    bar.drop([j for j in sched if j.kind in drop])
    return [j for j in sched if j.kind not in drop]


# ----------------------------------------------------------------------------- the manifest: resume, never mix


def open_manifest(root: Path, want: dict, check=lambda: None) -> None:
    """Write pipeline.json after `check()`, or check that the one there describes the same pipeline (it resumes)."""
    path = root / "pipeline.json"
    want = json.loads(json.dumps(want))                     # tuples as lists, int keys as strings
    if root.exists() and not root.is_dir():
        raise UserError(f"--out-dir {root} is a file; give a folder")
    if not path.exists():
        check()                                          # every setting, before the folder exists
        root.mkdir(parents=True, exist_ok=True)
        return write_json(path, want)
    try:
        have = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{path} is unreadable ({type(e).__name__}); delete it, or pass another --out-dir") from None
    if not isinstance(have, dict) or not isinstance(have.get("params"), dict):
        raise UserError(f"{path} is not a reproduce.py pipeline.json; delete it, or pass another --out-dir")
    for key in ("experiment", "preset", "seeds", "budget", "precision", "cost", "params"):
        if have.get(key) != want[key]:
            if key == "params":
                keys = sorted(k for k in {*have[key], *want[key]} if have[key].get(k) != want[key].get(k))
                what = ", ".join(f"{k} {have[key].get(k)!r} there, {want[key].get(k)!r} now" for k in keys)
            else:
                what = f"{key} {have.get(key)!r} there, {want[key]!r} now"
            raise UserError(f"{path} is another pipeline ({what}): rerun its own command to resume it, "
                            "or give another --out-dir")


# ----------------------------------------------------------------------------- the six steps


def command(cfg: Config, p: dict, seeds) -> str:
    """The command that reproduces this pipeline (for report.md)."""
    preset = PRESETS[cfg.experiment][cfg.preset]
    sets = [f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in p.items()
            if k not in ("flops", "sched_flops") and v != preset[k]]
    return (f"python lab/reproduce.py --experiment {cfg.experiment} --preset {cfg.preset}"
            + (f" --seeds {' '.join(map(str, seeds))}" if list(seeds) != [0] else "")
            + (f" --flops {p['flops']:g}" if p["flops"] != preset["flops"] else "")
            + (f" --set {' '.join(sets)}" if sets else "") + (f" --precision {cfg.precision}"
                                                              if cfg.precision != "auto" else "")
            + (f" --cost {cfg.cost}" if cfg.cost != "flops" else ""))


def main(cfg: Config) -> bool:
    p, seeds = resolve(cfg), check_seeds(cfg.seeds)
    check_batch(p)
    check_corpus(cfg.experiment, p)                      # before any run: the corpus fits every context
    root = Path(cfg.out_dir or f"runs/{cfg.experiment}-{cfg.preset}")
    threads = cfg.threads or max(1, (os.cpu_count() or 2) // cfg.jobs)
    if p.get("teacher") and not Path(p["teacher"]).is_file():
        raise UserError(f"--set teacher={p['teacher']}: no such checkpoint (a train_vit.py ckpt.pt)")
    static, sched = plan(cfg, p, root, seeds, threads)
    if cfg.plan:                                         # the cost, measured; nothing trained, nothing written
        check_runs(cfg, p, static)
        plan_sweep(cfg, p, static, sched)
        return True
    open_manifest(root, dict(version=1, experiment=cfg.experiment, preset=cfg.preset, seeds=list(seeds),
                             budget=p["flops"], precision=cfg.precision, cost=cfg.cost, params=p,
                             command=command(cfg, p, seeds),
                             data_dir=cfg.data_dir, **({"attention_share": attention_share(p)} if cfg.experiment in
                                                       LM_EXPERIMENTS else {}),
                             runs=[dict(name=j.name, kind=j.kind, seed=j.seed, budget=j.budget)
                                                          for j in static + sched]),
                  check=lambda: (check_runs(cfg, p, static), check_orphans(root, static + sched)))
    t0, bar = time.time(), Bar(static + sched)
    say(f"== {cfg.experiment} ({cfg.preset}), seeds {' '.join(map(str, seeds))}, {p['flops']:.3g} FLOPs a run, "
        f"{len(static + sched)} runs, {cfg.jobs} at a time; output in {root}/")
    try:
        steps(cfg, p, root, static, sched, bar)
    finally:
        bar.close()
    ok, verdict = report.write_report(root)
    say(verdict)
    say(f"== done in {(time.time() - t0) / 60:.1f} min: {root / 'report.md'}")
    return ok


METRICS = {"train_vit.py": ("fewshot10_error", "test_error", "train_error"),
           "train_lm.py": ("val_loss", "val_loss_max_context")}


def check_runs(cfg: Config, p: dict, static: list[Job]) -> None:
    """Before anything is written (issue 26): the metrics exist, every static run's flags are what its trainer takes
    (values and ranges, as it would check them), every patch size divides the images' side, every run fits here."""
    import importlib
    import data
    import flexivit
    script = TRAINER.get(cfg.experiment, "train_vit.py")
    for key in ("metric", "compare_metric"):
        if p.get(key, METRICS[script][0]) not in METRICS[script]:
            raise UserError(f"--set {key}={p[key]}: {script} logs {', '.join(METRICS[script])}")
    trainer = importlib.import_module(script[:-3])
    flags = [runtime.parse(trainer.Config, script, job.cmd[2:]) for job in static]
    for f in flags:
        trainer.check_flags(f)
        if script == "train_lm.py":                        # the LM's sizes need no data
            check_fits(script, f, 0, 0)
    if script != "train_vit.py" or not Path(cfg.data_dir).exists():   # no images here: the first run says so
        return
    if data.is_prepared(cfg.data_dir):
        meta, where = data.read_meta(cfg.data_dir, "train"), data.paths(cfg.data_dir, "train")[2]
        side, chans = meta["resolution"], meta["channels"]
    else:
        x, where = data.load_dataset(cfg.data_dir)[0], cfg.data_dir
        side, chans = p.get("image_size") or x.shape[-1], x.shape[1]
    patches = list(p.get("patches", ())) + [p[k] for k in ("patch", "teacher_patch") if k in p]
    if bad := [q for q in patches if q not in flexivit.valid_patches(side)]:
        raise UserError(f"{where}: the {side}-pixel images have no patch size {' '.join(map(str, bad))} (valid: "
                        f"{' '.join(map(str, flexivit.valid_patches(side)))}); --set patches=... or prepare the data "
                        "at a resolution they all divide (e.g. 120)")
    for f in flags:
        check_fits(script, f, side, chans)


def check_fits(script: str, f, side: int, chans: int) -> None:
    """A static run too big for this machine, refused before anything is written (issue 25) by its trainer's own
    floor on memory (runtime.check_memory), from its flags; a --set model= that names no model."""
    import flexivit
    import train_lm
    import train_vit
    device = runtime.resolve_device(f.device)
    if script == "train_lm.py":
        _, shapes, _ = train_lm.load_stages(f)
        m = {**train_lm.model_args(f.model, f.vocab_size or 256, f.context), "depth": shapes[0]["depth"]}
        runtime.check_memory(f"--set model={f.model}", device, *train_lm.memory_args(f, shapes[0], m, 1))
        return
    try:
        w, d, heads = flexivit.spec(f.model)
    except ValueError as e:
        raise UserError(f"--set model={f.model}: {e}") from None
    run = SimpleNamespace(size=side, chans=chans, num_classes=0, device=device, world=SimpleNamespace(size=1))
    stage = {"patch": f.patch or side // 4, "width": w, "depth": d, "batch_size": f.batch_size}
    train_vit.check_memory(f, run, 0, stage, w // heads)


UNSET = ("threads", "progress", "resume", "out_dir")     # how and where a run is carried out, not what it computes


def check_orphans(root: Path, jobs: list[Job]) -> None:
    """With no pipeline.json (deleted), runs already in `root` must be this command's: each run's logged flags are
    its job's (as its trainer parses them), else the pipeline would mix the runs of two settings."""
    import importlib
    for job in (j for j in jobs if (j.out / "log.jsonl").is_file()):
        script = job.cmd[1]
        trainer = importlib.import_module(Path(script).stem)
        want = json.loads(runtime.dumps(dataclasses.asdict(runtime.parse(trainer.Config, script, job.cmd[2:]))))
        try:
            have = json.loads((job.out / "log.jsonl").read_text(errors="replace").splitlines()[0])["config"]
        except (IndexError, ValueError, TypeError, KeyError):
            have = None
        if not isinstance(have, dict):
            raise UserError(f"{root} has no pipeline.json and {job.out / 'log.jsonl'} names no settings; give "
                            "another --out-dir (or remove the run folders to start afresh)")
        if diff := [k for k in want if k not in UNSET and have.get(k) != want[k]]:
            raise UserError(f"{root} has no pipeline.json and its run {job.name} was trained with {diff[0]} "
                            f"{have.get(diff[0])!r}, this command asks for {want[diff[0]]!r}: rerun that run's "
                            "command, or give another --out-dir")


def plan_sweep(cfg: Config, p: dict, static: list[Job], sched: list[Job]) -> None:
    """reproduce.py --plan: each distinct static run timed once in this process (the trainer's own plan, at its
    --threads), seeds sharing it; the scheduled runs, whose schedule the laws decide, between the cheapest and the
    dearest static shape per FLOP. Sums are run-seconds; with --jobs runs at a time the wall is about sum / jobs."""
    script = TRAINER.get(cfg.experiment, "train_vit.py")
    t = time.perf_counter()                                # a run's own start: interpreter and imports
    subprocess.run([sys.executable, "-c", f"import {script[:-3]}"], check=True, cwd=ROOT)
    start, plans, total = time.perf_counter() - t, {}, 0.0
    from lab import planner
    for job in static:
        flags = job.cmd[2:]
        key = json.dumps([f for i, f in enumerate(flags) if flags[i - 1] not in ("--seed", "--out-dir")])
        teacher = "--teacher" in flags and not Path(flags[flags.index("--teacher") + 1]).exists()
        if teacher:
            say(f"plan {job.name}: {job.budget:.3g} FLOPs; its time is measured once the teacher exists (run the "
                "pipeline's teacher first, or --set teacher=CKPT)")
            continue
        if key not in plans:
            plans[key] = planner.plan_run(script, flags, name=job.name)
        else:
            say(f"plan {job.name}: as {plans[key]['run']} (another seed)")
        total += plans[key]["total_s"] - plans[key]["setup_s"] + start
    per_flop = [(q["train_s"] + q["eval_s"]) / q["flops"] for q in plans.values()] or [0.0]
    lo = sum(min(per_flop) * j.budget + start for j in sched)
    hi = sum(max(per_flop) * j.budget + start for j in sched)
    say(f"sweep: {len(static)} static runs {hours(total)}; {len(sched)} scheduled runs {hours(lo)} to {hours(hi)} "
        f"(their schedule is fitted from the static runs); all: {hours(total + lo)} to {hours(total + hi)} "
        f"run-time, about {hours((total + lo) / cfg.jobs)} to {hours((total + hi) / cfg.jobs)} at --jobs {cfg.jobs}")


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def schedule_step(p: dict, root: Path, budget: float, out: str = "schedule.json", flags=(),
                  target: float | None = None, baselines: bool = True) -> bool:
    """schedule.py on the laws for the best static law's error at `budget` (or `target`), then (`baselines`)
    lab/baselines.py on its schedule, its output after schedule.py's in the same log; False when fewer than two laws
    pass the checks (extrapolation, fit bounds): then nothing can be scheduled, which is a finding of the sweep, not a
    failure of the pipeline."""
    laws = ["--laws", str(root / "laws.json"), "--max-extrap-error", str(p["max_extrap_error"]),
            *(["--allow-bound-laws"] if p.get("allow_bound_laws") else [])]       # the same laws for both
    goal = ["--budget", repr(budget)] if target is None else ["--target-error", repr(target)]
    log = root / out.replace(".json", ".txt")
    try:
        step("schedule.py", [sys.executable, "schedule.py", *laws, *goal, "--out", str(root / out), *flags], log)
    except StepFailed:
        if report.too_few_laws(root) is None:             # the report reads the same line for its verdict
            raise
        return False
    if baselines:                                          # Fig. 7: schedule_linear.json, _log, _random beside it
        step("baselines.py", [sys.executable, "lab/baselines.py", "--schedule", str(root / out), *laws], log, "a")
    return True


def steps(cfg: Config, p: dict, root: Path, static: list[Job], sched: list[Job], bar: Bar) -> None:
    """Steps 1-5: static runs, laws, schedule and baselines, scheduled runs, comparison."""
    py, runs = sys.executable, [str(j.out) for j in static if j.kind == "static"]
    train([j for j in static if j.kind == "teacher"], 1, bar, "teacher")
    if any(j.kind == "tune" for j in static):                 # the batch of each context first (App. B.5)
        train([j for j in static if j.kind == "tune"], cfg.jobs, bar, "0/6 batch per context")
        tuned = tuned_batches(root, p)
        say(f"== tokens a step per context: {', '.join(f'{T}: {n}' for T, n in tuned.items())}")
        apply_tuning(root, static, tuned)
    train([j for j in static if j.kind == "static"], cfg.jobs, bar, "1/6 static runs")
    bar.show("2/6 laws", force=True)
    step("fit_laws.py", [py, "fit_laws.py", "--logs", *runs, "--metric", p["metric"], "--min-flops-frac",
                         str(p["min_flops_frac"]), "--cost", cfg.cost, "--out", str(root / "laws.json"), "--skip-bad"],
         root / "laws.txt")
    bar.show("3/6 schedule", force=True)
    budget = p["flops"] if cfg.cost == "flops" else max(      # wall: the seconds the longest static run took
        float(report.last_eval(Path(r))["wall"]) for r in runs)
    if not schedule_step(p, root, budget):                  # fewer than two laws pass the checks: an outcome
        say("== fewer than two laws pass the checks (schedule.txt): no schedule to train")
        bar.drop(sched)
        sched, stages = [], []
    else:
        stages = json.loads((root / "schedule.json").read_text())["stages"]
    if any(j.kind == "tune" for j in static):
        apply_tuning(root, [], tuned_batches(root, p))
    if stages and "pilot_points" in p:                     # pilots, transfer.json, schedule_transfer.json
        sched = pilots_step(cfg, p, root, static, sched, bar)
    if len(stages) == 1:    # law, linear and log runs would repeat a static run: only a random baseline differs
        say(f"== the laws do not cross within {p['flops']:.3g} FLOPs ({stages[0].get('name')} is best "
            "throughout): no law schedule to train")
        keep = ("random", "transfer", *(("linear", "log") if multi_stage(root / "schedule_linear.json") else ()))
        bar.drop([j for j in sched if j.kind not in keep])
        sched = [j for j in sched if j.kind in keep]
    elif stages and cfg.experiment == "joint":
        sched = one_axis_schedules(cfg, p, root, sched, bar)
    train(sched, cfg.jobs, bar, "4/6 scheduled runs")
    bar.show("5/6 compare", force=True)      # with no scheduled run too: the static runs' finals, with intervals
    step("compare.py", [py, "lab/compare.py", "--runs", *runs, *[str(j.out) for j in sched], "--metric",
                        p.get("compare_metric", p["metric"]), "--cost", cfg.cost, "--out-dir", str(root)],
         root / "compare.txt")
    bar.show("6/6 report", force=True)


def multi_stage(path: Path) -> bool:
    """Has the schedule at `path` more than one stage (the baselines follow the transfer plan's shapes when Eq. 2's
    plan has a single one)?"""
    return path.exists() and len(json.loads(path.read_text())["stages"]) > 1


def measured_target(static: list[Job], metric: str) -> float:
    """The error the comparison judges at: the final error of the best static shape, its mean over seeds. The
    transfer plan aims at it (its runs are judged there); Eq. 2's plan keeps the best static law's at the budget."""
    finals = {}
    for j in (j for j in static if j.kind == "static"):
        finals.setdefault(j.name.rsplit("_s", 1)[0], []).append(float(report.last_eval(j.out)[metric]))
    return min(sum(v) / len(v) for v in finals.values())


def pilots_step(cfg: Config, p: dict, root: Path, static: list[Job], sched: list[Job], bar: Bar) -> list[Job]:
    """Issue 24: pilot switches from the static runs' kept checkpoints, their transfer (lab/transfer.py) and the
    plan with it (schedule.py --transfer -> schedule_transfer.json). A failed pilot leaves its transition to Eq. 2.
    Returns the scheduled runs, less the transfer runs if that plan has a single stage."""
    jobs, plan, runs = [], [], {j.name: j for j in static if j.kind == "static"}
    (root / "pilots").mkdir(exist_ok=True)
    for seed in dict.fromkeys(j.seed for j in runs.values()):   # each seed's static shapes, read once
        shapes = {k.name: transfer.shape(k.out) for k in runs.values() if k.seed == seed}
        for pl in transfer.pilot_plan(p, shapes):
            if (kept := transfer.kept_at(runs[pl["from"]].out, pl["point"])) is None:
                raise UserError(f"{pl['from']} kept no checkpoint at {pl['point']:.3g} FLOPs (--keep-at): delete the "
                                "run folder and rerun the same command")
            (at, ckpt), out, threads = kept, root / f"{pl['name']}_s{seed}", runs[pl["from"]].threads
            write_json(file := root / "pilots" / f"{out.name}.json", transfer.pilot_schedule(shapes[pl["from"]],
                                                                                         shapes[pl["to"]], at))
            budget = at + p["pilot_stretch"] * p["flops"]
            flags = [*schedule_flags(cfg.experiment, p, ""), "--schedule", str(file), "--start-from", str(ckpt)]
            jobs.append(Job(out.name, "pilot", seed, budget, out, threads,
                            trainer_cmd(cfg, p, out, seed, budget, threads, 2 * p["evals"], flags)))
            plan.append({"run": out.name, "seed": seed, "point": pl["point"], "at": at, "budget": budget,
                         "stretch": budget - at, "from_config": shapes[pl["from"]], "to_config": shapes[pl["to"]],
                         "from_run": pl["from"]})
    bar.total += len(jobs)
    train(jobs, cfg.jobs, bar, "3b/6 pilot switches", tolerate=True)
    for pl in plan:
        pl["finished"] = finished(root / pl["run"], pl["budget"])
    write_json(root / "pilots.json", {"version": 1, "pilots": plan})
    transfer.remeasure(root)
    schedule_step(p, root, p["flops"], "schedule_transfer.json", ("--transfer", str(root / "transfer.json")),
                  target=measured_target(static, p["metric"]),     # Eq. 2's plan one shape: baselines on this one
                  baselines=not multi_stage(root / "schedule.json"))
    if multi_stage(root / "schedule_transfer.json"):
        return sched
    say("== with the measured transfer the best plan is a single shape: no transfer schedule to train")
    bar.drop([j for j in sched if j.kind == "transfer"])
    return [j for j in sched if j.kind != "transfer"]


if __name__ == "__main__":
    sys.exit(runtime.run_cli(main, Config, "reproduce.py", errors=(StepFailed,),
                             interrupted="the same command resumes where it stopped"))
