"""Switch pilots and measured transfer (issue 24): train_vit.py --keep-at / --start-from, lab/transfer.py's
effective-compute reading, and schedule.py --transfer.

The pilot's promise: a run started from a static run's --keep-at checkpoint with a schedule that switches there is
the same run as that schedule trained from scratch (the LR is constant after warm-up and every draw is keyed by
(seed, step)), so a pilot costs only its stretch after the switch."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import make_images  # noqa: E402
import train_vit  # noqa: E402


def tiny(tmp):
    rng = np.random.default_rng(0)
    (xt, yt), (xs, ys) = make_images(300, rng), make_images(100, rng)
    np.savez(tmp / "tiny.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return ["--data-dir", str(tmp / "tiny.npz"), "--model", "V32-1", "--batch-size", "32", "--warmup", "4",
            "--evals", "4", "--fewshot-support", "200", "--fewshot-query", "60", "--fewshot-seeds", "2", "--no-progress"]


def weights(run):
    return torch.load(run / "ckpt.pt", weights_only=False)["model"]


def test_a_pilot_from_a_kept_checkpoint_is_the_scheduled_run_from_scratch(tmp_path):
    flags, keep = tiny(tmp_path), 6e7
    assert train_vit.cli(flags + ["--patch", "8", "--flops", "1.5e8", "--keep-at", str(keep),
                                  "--out-dir", str(tmp_path / "static")]) == 0
    kept = train_vit.kept_path(tmp_path / "static", keep)
    at = torch.load(kept, weights_only=False)["state"]["flops"]
    assert keep <= at < keep * 1.5
    logged = [r["flops"] for r in map(json.loads, (tmp_path / "static" / "log.jsonl").read_text().splitlines())
              if r.get("type") == "eval"]
    assert at in logged                                           # the kept point is evaluated: the pilot's start
    sched = tmp_path / "pilot.json"
    sched.write_text(json.dumps({"version": 1, "stages": [{"config": {"patch": 8}, "flops_start": 0.0},
                                                          {"config": {"patch": 4, "depth": 2}, "flops_start": at}]}))
    pilot = ["--schedule", str(sched), "--flops", "1.2e8"]
    assert train_vit.cli(flags + pilot + ["--start-from", str(kept), "--out-dir", str(tmp_path / "pilot")]) == 0
    assert train_vit.cli(flags + pilot + ["--out-dir", str(tmp_path / "scratch")]) == 0
    a, b = weights(tmp_path / "pilot"), weights(tmp_path / "scratch")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = json.loads((tmp_path / "pilot" / "log.jsonl").read_text().splitlines()[1])
    assert first["flops"] > at and first["config"]["depth"] == 2   # the pilot logs only its stretch after the switch


def test_start_from_refuses_another_seed_in_one_line(tmp_path, capsys):
    flags = tiny(tmp_path)
    assert train_vit.cli(flags + ["--patch", "8", "--flops", "8e7", "--keep-at", "4e7",
                                  "--out-dir", str(tmp_path / "static")]) == 0
    kept = str(train_vit.kept_path(tmp_path / "static", 4e7))
    assert train_vit.cli(flags + ["--patch", "8", "--flops", "8e7", "--seed", "1", "--start-from", kept,
                                  "--out-dir", str(tmp_path / "p")]) == 2
    assert "seed=0" in capsys.readouterr().err
    assert train_vit.cli(flags + ["--patch", "8", "--flops", "8e7", "--keep-at", "9e7",
                                  "--out-dir", str(tmp_path / "q")]) == 2      # past the budget: out of range
