"""Scheduling training hyper-parameters by scaling laws: batch size and objective (paper Sec. 6.2, Fig. 12).

    python reproduce_hparams.py --experiment batch      # static runs at batch 32 and 256 -> laws -> schedule
    python reproduce_hparams.py --experiment distill    # teacher; supervised and distilled students -> ...
    python reproduce_hparams.py --experiment batch --preset smoke       # a one-minute check of the plumbing

The paper's claim: "the smaller batch size initially dominates but again is surpassed at later stages by the
large batch size run", and distillation from a bigger teacher, slower at first in FLOPs (the teacher's forward
counted), wins later; switching where the laws cross (Eq. 2) reaches an error with less compute than either
static run. Steps, each a run of one of the project's scripts (as reproduce.py, whose helpers this reuses):

  batch    1. static    train_vit.py --batch-size 32 and --batch-size 256 (same model, patch and budget; the LR
                        of batch B follows --lr-scaling: none = the same LR, linear, sqrt in B / 32)
           2. laws      fit_laws.py: one law per config ("batch_size=32", "batch_size=256", ...)
           3. schedule  schedule.py --budget: batch_size never shrinks (its default rule)
           4. scheduled train_vit.py --schedule --batch-size 32 --lr-scaling ... (the stages set batch_size);
                        beside it, the same stages switched at linear compute (schedule.py --baselines, Fig. 7)
           5. compare   compare.py at the better static run's final error
  distill  1. teacher   train_vit.py on all cores: a bigger model, trained longer than a student (its training
                        is not counted, as the paper's pre-trained teacher; its forward passes are)
           2. static    students: supervised, and --objective distill --teacher (Hinton loss, T = 2, App. B.6)
           3-5.         laws ("objective=distill" names the second law), schedule, scheduled run, comparison

Presets (full), measured on the 2-core machine while other jobs shared it:
  batch    V64-4 patch 7, batch 32 at LR 1e-3 and 256 at 1e-3 x sqrt(8) (--lr-scaling sqrt: at the same LR the
           large batch trails everywhere), 3e13 FLOPs a run (~25 epochs): ~20 min a pair.
  distill  teacher V96-4 patch 7, 4e13 FLOPs on both cores (~28 min shared; its forward costs 0.74x a V64-4
           training step per example); students V64-4 patch 7, 1e13 FLOPs a run, batch 128, T = 2.
If the laws do not cross within the budget the schedule has one stage and the pipeline stops there with a
FAIL verdict that says so (no scheduled run, which could only repeat a static one). Then raise --flops
(batch), or --teacher-flops / lower --flops (distill: the teacher must end well below the supervised
student's error; the pipeline prints both). What the full presets gave is in the README (Results).
Output: runs/hparams-<experiment>/{static_*, teacher, sched_law, sched_linear, laws.json, schedule.json,
comparison.json, *.png}; a finished run is kept, an interrupted one resumes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Literal

import tyro

from reproduce import parallel, run, train

COMMON = dict(model="V64-4", patch=7, lr=1e-3, evals=20, fewshot_query=2000, test_size=5000, warmup=200)
PRESETS = {
    "batch": {
        "full": dict(COMMON, batch_sizes=(32, 256), lr_scaling="sqrt", flops=3e13),
        "demo": dict(COMMON, batch_sizes=(32, 256), lr_scaling="none", flops=3e12, evals=12, fewshot_query=1000,
                     test_size=2000),
        "smoke": dict(COMMON, batch_sizes=(32, 128), lr_scaling="none", flops=4e10, evals=6, fewshot_query=300,
                      test_size=500, warmup=10),
    },
    "distill": {
        "full": dict(COMMON, batch_size=128, flops=1e13, teacher_model="V96-4", teacher_patch=7,
                     teacher_flops=4e13, temperature=2.0),
        "demo": dict(COMMON, batch_size=128, flops=2e12, teacher_model="V96-4", teacher_patch=7,
                     teacher_flops=8e12, temperature=2.0, evals=12, fewshot_query=1000, test_size=2000),
        "smoke": dict(COMMON, batch_size=32, flops=4e10, teacher_model="V96-4", teacher_patch=7,
                      teacher_flops=5e10, temperature=2.0, evals=6, fewshot_query=300, test_size=500, warmup=10),
    },
}


@dataclasses.dataclass
class Config:
    experiment: Literal["batch", "distill"] = "batch"
    """batch: batch size 32 -> 256 as the scheduled parameter; distill: supervised -> distillation"""
    preset: Literal["full", "demo", "smoke"] = "full"
    """full (<= 25 min on 2 cores), demo (a few minutes), smoke (a minute: checks the plumbing, not the claim)"""
    data_dir: str = "/usr/share/datasets/fashion-mnist"
    """image data (see train_vit.py --help)"""
    out_dir: str | None = None
    """where all runs go; default runs/hparams-<experiment>[-<preset>]"""
    jobs: int = 2
    """runs trained at the same time, one thread each (the teacher alone, on all cores)"""
    metric: str = "fewshot10_error"
    """metric of the laws, the schedule and the comparison (the paper's E; or test_error)"""
    seed: int = 0
    """seed of every run"""
    flops: float | None = None
    """override the preset's compute per student run (FLOPs; a distilled run's include the teacher's forwards)"""
    model: str | None = None
    """override the student model (V64-4)"""
    patch: int | None = None
    """override the patch size of every student run (7)"""
    lr: float | None = None
    """override the peak learning rate (of the smallest batch size)"""
    batch_sizes: tuple[int, ...] | None = None
    """batch: override the two batch sizes (32 256)"""
    lr_scaling: Literal["none", "linear", "sqrt"] | None = None
    """batch: how the LR follows the batch size B (x1, x B/B_min, x sqrt(B/B_min)); the static runs use it too"""
    teacher: str | None = None
    """distill: an existing teacher ckpt.pt (train_vit.py, same data) instead of training one"""
    teacher_model: str | None = None
    """distill: override the teacher model (V96-4)"""
    teacher_flops: float | None = None
    """distill: override the teacher's training budget"""


def last(log_dir: Path, metric: str) -> float:
    rows = [json.loads(x) for x in (log_dir / "log.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in rows if r.get("type") == "eval"][-1][metric]


def verdict(root: Path) -> bool:
    """The claim: the scheduled run reaches the better static run's final error with fewer FLOPs than either."""
    res = json.loads((root / "comparison.json").read_text())
    static = [r for r in res["runs"] if r["kind"] == "static"]
    sched = next(r for r in res["runs"] if r["kind"] == "law")
    reach = [r["flops_to_target"] for r in static if not math.isnan(r["flops_to_target"])]
    f = sched["flops_to_target"]
    ok = not math.isnan(f) and bool(reach) and f < min(reach)
    fmt = lambda x: "never" if math.isnan(x) else f"{x:.3g} FLOPs"   # noqa: E731
    others = ", ".join(f"{r['run']} {fmt(r['flops_to_target'])}" for r in static)
    print(f"== verdict: target {res['target_error']:.4f} (final error of {res['best_static']}); scheduled run: "
          f"{fmt(f)}; static runs: {others}: {'PASS' if ok else 'FAIL'}"
          + ("" if sched["switches"] else " (the run never switched: the laws do not cross within the budget)"))
    return ok


def main(cfg: Config) -> bool:
    p = dict(PRESETS[cfg.experiment][cfg.preset])
    p.update({k: v for k, v in (("flops", cfg.flops), ("model", cfg.model), ("patch", cfg.patch), ("lr", cfg.lr),
                                ("batch_sizes", cfg.batch_sizes), ("lr_scaling", cfg.lr_scaling),
                                ("teacher_model", cfg.teacher_model), ("teacher_flops", cfg.teacher_flops))
              if v is not None})
    root = Path(cfg.out_dir or f"runs/hparams-{cfg.experiment}" + ("" if cfg.preset == "full" else f"-{cfg.preset}"))
    root.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 2) // cfg.jobs)
    py, t0 = sys.executable, time.time()
    common = ["--warmup", str(p["warmup"])]
    n = iter(range(1, 9))

    if cfg.experiment == "batch":
        sizes = sorted(p["batch_sizes"])
        scale = {"none": lambda r: 1.0, "linear": lambda r: r, "sqrt": math.sqrt}[p["lr_scaling"]]
        static = {b: root / f"static_bs{b}" for b in sizes}
        print(f"== {next(n)}. static runs: {p['model']} patch {p['patch']} at batch sizes {sizes}, "
              f"{p['flops']:.1e} FLOPs each, LR {p['lr']:g} x {p['lr_scaling']}(B/{sizes[0]})")
        parallel(cfg.jobs, [lambda b=b: train(cfg, p, static[b], [*common, "--patch", str(p["patch"]),
                                                                  "--batch-size", str(b),
                                                                  "--lr", str(p["lr"] * scale(b / sizes[0]))],
                                              threads, p["flops"]) for b in sizes])
        sched_flags = ["--batch-size", str(sizes[0]), "--lr", str(p["lr"]), "--lr-scaling", p["lr_scaling"]]
    else:
        teacher = Path(cfg.teacher) if cfg.teacher else root / "teacher" / "ckpt.pt"
        if not cfg.teacher:
            print(f"== {next(n)}. teacher: {p['teacher_model']} patch {p['teacher_patch']}, "
                  f"{p['teacher_flops']:.1e} FLOPs")
            train(cfg, {**p, "model": p["teacher_model"], "evals": 5}, teacher.parent,
                  [*common, "--patch", str(p["teacher_patch"])], os.cpu_count() or 1, p["teacher_flops"])
        elif not teacher.is_file():
            sys.exit(f"reproduce_hparams.py: error: --teacher {teacher}: no such checkpoint")
        static = {o: root / f"static_{o}" for o in ("supervised", "distill")}
        base = [*common, "--patch", str(p["patch"]), "--batch-size", str(p["batch_size"]), "--lr", str(p["lr"])]
        print(f"== {next(n)}. static students: {p['model']} patch {p['patch']}, supervised and distilled, "
              f"{p['flops']:.1e} FLOPs each (the teacher's forwards included)")
        parallel(cfg.jobs, [lambda: train(cfg, p, static["distill"], [*base, "--objective", "distill", "--teacher",
                                                                      str(teacher), "--temperature",
                                                                      str(p["temperature"])], threads, p["flops"]),
                            lambda: train(cfg, p, static["supervised"], base, threads, p["flops"])])
        if (teacher.parent / "log.jsonl").exists():
            te, se = last(teacher.parent, cfg.metric), last(static["supervised"], cfg.metric)
            print(f"   teacher's final {cfg.metric} {te:.4f}, supervised student's {se:.4f}"
                  + ("" if te < se else ": the teacher is no better: distillation cannot win; train it longer"))
        sched_flags = ["--batch-size", str(p["batch_size"]), "--lr", str(p["lr"]), "--teacher", str(teacher),
                       "--temperature", str(p["temperature"])]

    print(f"== {next(n)}. scaling laws")
    run([py, "fit_laws.py", "--logs", *map(str, static.values()), "--metric", cfg.metric,
         "--out", str(root / "laws.json")])
    print(f"== {next(n)}. schedule")
    run([py, "schedule.py", "--laws", str(root / "laws.json"), "--budget", str(p["flops"]),
         "--out", str(root / "schedule.json"), "--baselines"])
    stages = json.loads((root / "schedule.json").read_text())["stages"]
    if len(stages) < 2:
        best = stages[0].get("name") or stages[0]["config"]
        print(f"== verdict: the laws do not cross within {p['flops']:.3g} FLOPs ({best} is best throughout), so a "
              "schedule has nothing to switch and saves nothing: FAIL; raise --flops or change the runs (see --help)")
        return False
    print(f"== {next(n)}. scheduled run, and beside it (same conditions) the baseline switching at linear compute")
    sched = {k: root / f"sched_{k}" for k in ("law", "linear")}
    parallel(cfg.jobs, [lambda k=k: train(cfg, p, sched[k], [*common, "--schedule", str(
        root / ("schedule.json" if k == "law" else f"schedule_{k}.json")), *sched_flags], threads, p["flops"])
        for k in sched])
    print(f"== {next(n)}. comparison at the better static run's final error")
    run([py, "compare.py", "--runs", *map(str, [*static.values(), *sched.values()]), "--metric", cfg.metric,
         "--out-dir", str(root)])
    ok = verdict(root)
    print(f"== all done in {(time.time() - t0) / 60:.1f} min; results in {root}/comparison.json, "
          "laws.png, schedule.png, comparison.png")
    return ok


if __name__ == "__main__":
    main(tyro.cli(Config))
