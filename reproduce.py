"""The paper's ViT experiment end to end, by one command (Sec. 3-4, Fig. 4, 5 and 7).

    python reproduce.py --preset demo     # `make demo`: minutes on a laptop CPU
    python reproduce.py --preset full     # `make reproduce`: <= 60 min on 2 CPU cores

Steps, each a run of one of the project's scripts (what it prints is shown):
  1. static sweep  train_vit.py at each patch size, one fixed shape per run   -> runs/<preset>/static_p*/
  2. laws          fit_laws.py on those logs (metric: 10-shot error)          -> laws.json, laws.png
  3. schedule      schedule.py: switch points for the static runs' budget,
                   plus the baselines (linear-, log-spaced switches, random)  -> schedule*.json, schedule.png
  4. scheduled     train_vit.py --schedule for the law schedule and baselines -> runs/<preset>/sched_*/
  5. compare       compare.py: FLOPs and wall time each run needed to reach
                   the best static run's final 10-shot error                  -> comparison.json/.png

Runs go two at a time, one thread each (`--jobs`): on a 2-core CPU small models use
a core better that way than one run on two threads, and every run sees the same
conditions, so their wall times compare. A run already finished is not trained
again, and one that was interrupted resumes from its checkpoint: rerunning the
command after a kill picks up where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import tyro

PRESETS = {
    # model, patch sizes (4, 16, 49, 196 tokens), FLOPs per run, evaluations per run, few-shot query
    # images, test images, and the share of the budget given to static runs whose law only matters
    # early or late: patch 14 plateaus within the first third of the budget, and with four tokens it
    # runs at a small fraction of the CPU's FLOP rate; patch 2 (196 tokens) wins only far past the
    # budget, and its law needs only to show that.
    "demo": dict(model="V64-4", patches=(4, 7, 2, 14), flops=6e12, evals=12, fewshot_query=1000,
                 test_size=2000, short={14: 0.6, 2: 0.3}),
    "full": dict(model="V64-4", patches=(4, 7, 2, 14), flops=2.5e13, evals=14, fewshot_query=1000,
                 test_size=2000, short={14: 0.4, 2: 0.3}),
    # a pipeline check in a minute or two (tests and first look; no claim about savings)
    "smoke": dict(model="V64-4", patches=(14, 7, 4, 2), flops=2e11, evals=6, fewshot_query=300,
                  test_size=500, short={}),
}


@dataclasses.dataclass
class Config:
    preset: Literal["demo", "full", "smoke"] = "demo"
    """Size of the experiment: demo (minutes) or full (the paper's comparison at CPU scale)."""
    data_dir: str = "/usr/share/datasets/fashion-mnist"
    """Image data (Fashion-MNIST IDX files by default; see train_vit.py --help)."""
    out_dir: str | None = None
    """Where all runs go; default runs/<preset>."""
    jobs: int = 2
    """Runs trained at the same time, one thread each."""
    flops: float | None = None
    """Override the preset's compute budget per run (FLOPs)."""
    model: str | None = None
    """Override the preset's model size (e.g. V64-4, V128-6)."""
    patches: tuple[int, ...] | None = None
    """Override the preset's patch sizes (each must divide the image size)."""
    metric: str = "fewshot10_error"
    """Metric the laws, the schedule and the comparison use (the paper's E)."""
    seed: int = 0
    """Seed of every run."""


def run(cmd: list[str], log: Path | None = None, threads: int | None = None) -> None:
    """Run one step; on failure stop the whole pipeline with that step's message."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print("$", " ".join(cmd), flush=True)
    if log is None:
        rc = subprocess.run(cmd, env=env).returncode
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        where = f" (output in {log})" if log else ""
        sys.exit(f"reproduce.py: step failed with exit code {rc}{where}: {' '.join(cmd)}")


def train(cfg: Config, p: dict, out: Path, extra: list[str], threads: int, flops: float) -> None:
    """One train_vit.py run; resumes when a checkpoint is there, skips a finished run."""
    if (out / "done").exists():
        print(f"= {out.name}: finished earlier, kept", flush=True)
        return
    cmd = [sys.executable, "train_vit.py", "--model", p["model"], "--data-dir", cfg.data_dir,
           "--flops", str(flops), "--evals", str(p["evals"]), "--seed", str(cfg.seed),
           "--fewshot-query", str(p["fewshot_query"]), "--test-size", str(p["test_size"]),
           "--out-dir", str(out), "--no-progress", *extra]
    if (out / "ckpt.pt").exists():
        cmd.append("--resume")
    t0 = time.time()
    run(cmd, out / "stdout.txt", threads)
    (out / "done").write_text(f"{time.time() - t0:.1f}\n")
    print(f"= {out.name}: done in {time.time() - t0:.0f} s", flush=True)


def parallel(jobs: int, tasks: list) -> None:
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for f in [pool.submit(t) for t in tasks]:
            f.result()


def main(cfg: Config) -> None:
    p = dict(PRESETS[cfg.preset])
    p.update({k: v for k, v in (("flops", cfg.flops), ("model", cfg.model), ("patches", cfg.patches))
              if v is not None})
    root = Path(cfg.out_dir or f"runs/{cfg.preset}")
    root.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 2) // cfg.jobs)
    py = sys.executable
    t0 = time.time()

    print(f"== 1. static sweep: {p['model']} at patch sizes {p['patches']}, {p['flops']:.1e} FLOPs each")
    static = [root / f"static_p{q}" for q in p["patches"]]
    order = list(zip(p["patches"], static))  # in the preset's order: longest first, so workers finish together
    parallel(cfg.jobs, [lambda q=q, o=o: train(cfg, p, o, ["--patch", str(q)], threads,
                                               p["flops"] * p["short"].get(q, 1.0)) for q, o in order])

    print("== 2. scaling laws")
    run([py, "fit_laws.py", "--logs", *map(str, static), "--metric", cfg.metric,
         "--out", str(root / "laws.json"), "--skip-bad"])

    print("== 3. schedule and baselines")
    run([py, "schedule.py", "--laws", str(root / "laws.json"), "--budget", str(p["flops"]),
         "--out", str(root / "schedule.json"), "--baselines"])

    print("== 4. scheduled run and baselines")
    kinds = ["schedule", "schedule_linear", "schedule_log", "schedule_random"]
    sched = [root / f"sched_{k.replace('schedule', 'law') if k == 'schedule' else k[9:]}" for k in kinds]
    parallel(cfg.jobs, [lambda k=k, o=o: train(cfg, p, o, ["--schedule", str(root / f"{k}.json")], threads,
                                               p["flops"])
                        for k, o in zip(kinds, sched)])

    print("== 5. comparison at the best static run's final error")
    run([py, "compare.py", "--runs", *map(str, static + sched), "--metric", cfg.metric,
         "--out-dir", str(root)])
    print(f"== all done in {(time.time() - t0) / 60:.1f} min; results in {root}/comparison.json, "
          f"plots laws.png, schedule.png, comparison.png")


if __name__ == "__main__":
    main(tyro.cli(Config))
