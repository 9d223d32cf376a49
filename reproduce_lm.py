"""The paper's language-model experiment end to end: a law-scheduled context length (Sec. 5, Fig. 9).

    python reproduce_lm.py                  # `make reproduce-lm`: about 30-40 min on 2 CPU cores
    python reproduce_lm.py --preset smoke   # a pipeline check in a few minutes

Steps (each a run of one of the project's scripts):
  1. static runs   train_lm.py at each context length, tokens per step fixed  -> runs/lm/ctx*/
  2. laws          fit_laws.py on the validation loss at the run's context    -> laws.json, laws.png
  3. schedule      schedule.py for the static runs' budget, and the baselines -> schedule*.json
  4. scheduled     train_lm.py --schedule, the law schedule and the baselines -> runs/lm/sched_*/
  5. compare       compare.py on the loss at the largest context of each run
                   (the paper's target: short-context stages are judged by how
                   they do at the final context)                              -> comparison.json/.png

The corpus is the Python standard library's own source, read as bytes. Short
contexts learn faster per FLOP early (more windows per FLOP, attention cheaper),
long contexts win later; at CPU scale the crossovers between 16, 32, 64 and 128
tokens fall inside a few times 1e12 FLOPs. Runs go two at a time, one thread
each, and the command resumes where it stopped when run again.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Literal

import tyro

from reproduce import parallel, run

PRESETS = {
    # model, context lengths, FLOPs per static run, FLOPs per scheduled run (a little more, so a
    # schedule that does worse than predicted can still reach the target), evaluations, validation tokens
    "full": dict(model="L64-4", contexts=(128, 64, 32, 16), flops=2e13, sched_flops=2.2e13, evals=24,
                 val_tokens=32768),
    "smoke": dict(model="L64-4", contexts=(64, 32, 16, 8), flops=6e11, sched_flops=6.6e11, evals=6,
                  val_tokens=8192),
}


@dataclasses.dataclass
class Config:
    preset: Literal["full", "smoke"] = "full"
    """Size of the experiment."""
    out_dir: str | None = None
    """Where all runs go; default runs/lm (smoke: runs/lm-smoke)."""
    data: str = ""
    """Corpus for train_lm.py --data ('' = the Python standard library's .py files)."""
    jobs: int = 2
    """Runs trained at the same time, one thread each."""
    tokens_per_step: int = 4096
    """Tokens per optimiser step, the same at every context length."""


def train(cfg: Config, p: dict, out: Path, extra: list[str], flops: float, threads: int) -> None:
    """One train_lm.py run; resumes from a checkpoint, skips a finished run."""
    if (out / "done").exists():
        print(f"= {out.name}: finished earlier, kept", flush=True)
        return
    t0 = time.time()
    run([sys.executable, "train_lm.py", "--model", p["model"], "--tokens-per-step", str(cfg.tokens_per_step),
         "--flops", str(flops), "--evals", str(p["evals"]), "--val-tokens", str(p["val_tokens"]),
         "--data", cfg.data, "--threads", str(threads), "--resume", "--out-dir", str(out), *extra],
        out / "stdout.txt", threads)
    (out / "done").write_text(f"{time.time() - t0:.1f}\n")
    print(f"= {out.name}: done in {time.time() - t0:.0f} s", flush=True)


def main(cfg: Config) -> None:
    p = PRESETS[cfg.preset]
    root = Path(cfg.out_dir or ("runs/lm" if cfg.preset == "full" else f"runs/lm-{cfg.preset}"))
    root.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 2) // cfg.jobs)
    py, t0 = sys.executable, time.time()

    print(f"== 1. static runs: {p['model']} at contexts {p['contexts']}, {p['flops']:.1e} FLOPs each")
    static = [root / f"ctx{T}" for T in p["contexts"]]
    parallel(cfg.jobs, [lambda T=T, o=o: train(cfg, p, o, ["--context", str(T)], p["flops"], threads)
                        for T, o in zip(p["contexts"], static)])

    print("== 2. scaling laws (validation loss at each run's context)")
    run([py, "fit_laws.py", "--logs", *map(str, static), "--metric", "val_loss", "--min-flops-frac", "0.02",
         "--out", str(root / "laws.json"), "--skip-bad"])

    print("== 3. schedule and baselines")
    run([py, "schedule.py", "--laws", str(root / "laws.json"), "--budget", str(p["flops"]),
         "--out", str(root / "schedule.json"), "--baselines"])

    print("== 4. scheduled run and baselines")
    names = {"schedule": "sched_law", "schedule_linear": "sched_linear", "schedule_log": "sched_log",
             "schedule_random": "sched_random"}
    sched = [root / n for n in names.values()]
    parallel(cfg.jobs, [lambda k=k, o=o: train(cfg, p, o, ["--schedule", str(root / f"{k}.json")],
                                               p["sched_flops"], threads) for k, o in zip(names, sched)])

    print("== 5. comparison at the best static run's final loss (at the largest context)")
    run([py, "compare.py", "--runs", *map(str, static + sched), "--metric", "val_loss_max_context",
         "--out-dir", str(root)])
    print(f"== all done in {(time.time() - t0) / 60:.1f} min; results in {root}/comparison.json")


if __name__ == "__main__":
    main(tyro.cli(Config))
