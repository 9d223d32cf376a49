"""A run killed at any moment resumes: tiny runs of both trainers, and a scheduled run across a patch switch, are
SIGKILLed at 10 moments each (at once; inside the first checkpoint's write before and after its bytes reach the
temporary file; before a rename; 0-30 ms after a seeded random optimiser step), each time relaunched with the same command, which
finally completes with eval records equal to an uninterrupted run's ("wall" aside), and no *.tmp left.

The runs are forked from this process (torch already imported: no 4 s start-up per launch, so 30+ launches stay
fast); one launch per trainer is a real `python train_*.py` subprocess, killed once its log appears."""
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train_lm
import train_vit
from conftest import make_images

ROOT = Path(__file__).resolve().parent.parent
FORK = multiprocessing.get_context("fork")
CLIS = {"train_vit.py": train_vit.cli, "train_lm.py": train_lm.cli}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("killdata")
    x, y = make_images(300, np.random.default_rng(0))
    np.savez(d / "tiny.npz", x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    (d / "corpus.txt").write_bytes(bytes(np.random.default_rng(0).integers(32, 127, 40000).astype(np.uint8)))
    (d / "s.json").write_text(json.dumps({"version": 1, "kind": "law", "stages": [
        {"config": {"patch": 8}, "flops_start": 0.0, "flops_end": 2e8},            # the switch: about step 20 of 60
        {"config": {"patch": 4}, "flops_start": 2e8, "flops_end": None}]}))
    return d


def command(kind, d, out):
    """The one command every launch of a chain repeats (with --resume: a folder without a checkpoint starts afresh)."""
    common = ["--steps", 60, "--warmup", 2, "--evals", 8, "--ckpt-every", 5, "--out-dir", out, "--no-progress",
              "--threads", 1, "--resume"]
    if kind == "lm":
        return "train_lm.py", [str(a) for a in ["--data", d / "corpus.txt", "--model", "L32-2", "--context", 16,
                                                "--tokens-per-step", 128, "--val-tokens", 256, "--cache-dir",
                                                d / "cache", *common]]
    shape = ["--schedule", d / "s.json"] if kind == "vit-schedule" else ["--patch", 4]
    return "train_vit.py", [str(a) for a in ["--data-dir", d / "tiny.npz", "--model", "V32-2", *shape,
                                             "--batch-size", 16, "--fewshot-support", 200, "--fewshot-query", 40,
                                             "--fewshot-seeds", 1, "--test-size", 40, "--train-size", 40, *common]]


def _child(script, args, hook):
    """In the forked process: silence, arm the kill hook, run the trainer, exit with its code."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1), os.dup2(null, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w")
    if hook:
        kind, n, calls = hook[0], hook[1], [0]
        real_save, real_replace, real_step = torch.save, os.replace, torch.optim.AdamW.step

        def step(self, *a, **k):                         # die a seeded moment after the n-th optimiser step
            calls[0] += 1
            if calls[0] == n:
                threading.Timer(hook[2], os.kill, (os.getpid(), signal.SIGKILL)).start()
            return real_step(self, *a, **k)

        def save(obj, f, *a, **k):                      # checkpoints are the only torch.save of a run
            calls[0] += 1
            if kind.startswith("save") and calls[0] == n:
                if kind == "save-half":                  # die with half the bytes in the temporary file
                    real_save(obj, f, *a, **k)
                    os.truncate(f, os.path.getsize(f) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *a, **k)

        def replace(src, dst):                           # die with the whole checkpoint written, not yet renamed
            if kind == "rename" and str(dst).endswith("ckpt.pt") and calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst)
        if kind == "step":
            torch.optim.AdamW.step = step
        else:
            torch.save, os.replace = save, replace
    os._exit(CLIS[script](args))


def launch(script, args, hook=None, delay=None):
    """-> "killed" or the exit code; a hook kills from inside, a delay from outside."""
    p = FORK.Process(target=_child, args=(script, args, hook))
    p.start()
    p.join(delay if delay is not None else 300)
    if p.exitcode is None:
        p.kill()
        p.join()
        return "killed"
    return "killed" if p.exitcode == -signal.SIGKILL else p.exitcode


def evals(out):
    recs = [json.loads(ln) for ln in (Path(out) / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall"} for r in recs if r.get("type") == "eval"]


def kill_in_subprocess(script, args, out):
    """A real launch of the script, SIGKILLed as soon as it (re)writes its log."""
    p = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log, t0 = Path(out) / "log.jsonl", time.time()
    before = log.stat().st_mtime_ns if log.exists() else None
    while p.poll() is None and (log.stat().st_mtime_ns if log.exists() else None) == before and time.time() - t0 < 120:
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    return "killed" if p.wait() == -signal.SIGKILL else p.returncode


@pytest.mark.parametrize("kind", ["vit", "lm", "vit-schedule"])
def test_killed_at_ten_moments_then_completes_like_an_uninterrupted_run(data, tmp_path, kind):
    script, ref_args = command(kind, data, tmp_path / "ref")
    assert launch(script, ref_args) == 0
    reference = evals(tmp_path / "ref")
    assert len(reference) >= 6 and {str(r["config"]) for r in reference} != set() and "NaN" not in str(reference)
    if kind == "vit-schedule":
        assert [r["config"]["patch"] for r in reference][0] == 8 and reference[-1]["config"]["patch"] == 4

    out = tmp_path / "run"
    script, args = command(kind, data, out)
    rng = random.Random(kind)
    moments = [dict(delay=0.0),                                  # at once
               dict(hook=("save-before", 1)),                    # log written, before the first checkpoint
               dict(hook=("save-half", 1)),                      # half of the first checkpoint written
               dict(hook=("rename", 1)),                         # first checkpoint written, not yet renamed
               *[dict(hook=("step", rng.randint(1, 8), rng.uniform(0, 0.03))) for _ in range(5)],  # seeded
               dict(hook=("save-half", 2))]                      # a later checkpoint, half written
    outcomes = [launch(script, args, **m) for m in moments]
    assert outcomes == ["killed"] * 10, list(zip(moments, outcomes))
    step = torch.load(out / "ckpt.pt", weights_only=False)["state"]["step"]
    assert 0 < step < 60                                         # killed mid-run, a checkpoint kept
    assert kill_in_subprocess(script, args, out) in ("killed", 0)
    assert launch(script, args) == 0                             # the same command completes
    assert evals(out) == reference
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("kind", ["vit", "lm"])
def test_killed_before_its_first_checkpoint_starts_again_without_resume(data, tmp_path, kind):
    """The rule, the same in both trainers: a folder whose run has no checkpoint yet is started afresh by the same
    command, with or without --resume (nothing in it is worth keeping)."""
    script, args = command(kind, data, tmp_path / "run")
    assert launch(script, args, hook=("save-half", 1)) == "killed"
    assert (tmp_path / "run" / "log.jsonl").exists() and not (tmp_path / "run" / "ckpt.pt").exists()
    assert launch(script, [a for a in args if a != "--resume"]) == 0
    assert launch(script, args[:args.index("--out-dir") + 1] + [str(tmp_path / "ref")] + args[args.index("--out-dir") + 2:]) == 0
    assert evals(tmp_path / "run") == evals(tmp_path / "ref")
