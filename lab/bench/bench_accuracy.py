"""How good a FlexiViT gets on Fashion-MNIST in ten minutes of a 2-core CPU.

Trains one fixed-shape run with train_vit.py (its defaults: AdamW, label smoothing 0.2,
warm-up, constant learning rate) for a FLOPs budget sized to fit the time, then prints
the final top-1 test error on all 10000 test images and the 10-shot error, with the
wall time the training took. The promise it checks: test error <= 12% within 10 minutes.

    python bench/bench_accuracy.py                       # the default shape below
    python bench/bench_accuracy.py --model V128-6 --patch 4 --flops 2.4e13
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass
class Config:
    model: str = "V64-4"  # Model size V{width}-{depth}.
    patch: int = 7  # Fixed patch size (16 tokens on 28 px images).
    flops: float = 3.5e13  # Training budget in FLOPs (6 x block MACs x examples); sized to fit the time limit.
    data_dir: str = "/usr/share/datasets/fashion-mnist"  # Fashion-MNIST IDX files.
    out_dir: str = "runs/bench_accuracy"  # Run folder (removed first, so the run starts fresh).
    minutes: float = 10.0  # Time limit the promise is about, in minutes (whole command, evaluation included).
    max_error: float = 0.12  # Test error the promise is about.


def main(cfg: Config) -> None:
    import shutil
    shutil.rmtree(cfg.out_dir, ignore_errors=True)
    cmd = [sys.executable, os.path.join(ROOT, "train_vit.py"), "--model", cfg.model, "--patch", str(cfg.patch),
           "--flops", str(cfg.flops), "--data-dir", cfg.data_dir, "--out-dir", cfg.out_dir, "--evals", "6"]
    t0 = time.time()
    rc = subprocess.run(cmd).returncode
    total = time.time() - t0
    if rc:
        sys.exit(rc)
    with open(os.path.join(cfg.out_dir, "log.jsonl")) as f:
        last = [json.loads(line) for line in f if line.strip()][-1]
    ok = last["test_error"] <= cfg.max_error and total <= 60 * cfg.minutes
    print(f"\n{cfg.model} patch {cfg.patch}, {last['flops']:.2e} FLOPs: test error {last['test_error']:.4f}, "
          f"10-shot error {last['fewshot10_error']:.4f}; training {last['wall'] / 60:.1f} min, "
          f"whole command {total / 60:.1f} min -> {'PASS' if ok else 'MISS'} "
          f"(<= {cfg.max_error:.0%} within {cfg.minutes:g} min)")


if __name__ == "__main__":
    main(tyro.cli(Config))
