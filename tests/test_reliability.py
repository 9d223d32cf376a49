"""Bad input gets one line and exit code 2 from both trainers; a bug keeps its traceback; a poisoned run is
never checkpointed and resumes from the last good checkpoint; unreadable checkpoints are named in one line."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train_lm
import train_vit

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("data")
    x, y = rng.integers(0, 255, (240, 16, 16)).astype(np.uint8), np.arange(240) % 10
    np.savez(d / "tiny.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    return d / "tiny.npz"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_bytes(bytes(np.random.default_rng(0).integers(32, 127, 40000).astype(np.uint8)))
    return path


def vit_args(npz, out, *extra):
    return ["--data-dir", npz, "--model", "V32-2", "--patch", 4, "--batch-size", 16, "--warmup", 2, "--evals", 2,
            "--fewshot-support", 200, "--fewshot-query", 40, "--fewshot-seeds", 1, "--out-dir", out, "--no-progress",
            *extra]


def lm_args(corpus, out, *extra):
    return ["--data", corpus, "--model", "L32-2", "--context", 16, "--tokens-per-step", 128, "--val-tokens", 256,
            "--evals", 2, "--warmup", 2, "--out-dir", out, "--cache-dir", Path(out).parent / "cache",
            "--no-progress", *extra]


def one_line(capsys, cli, args, script):
    capsys.readouterr()
    rc = cli([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"{script}: error:"), (args, rc, err)
    return err[0]


VIT_BAD = [(("--steps", -5), "--steps"), (("--flops", "nan"), "--flops"), (("--steps", 3, "--flops", 1e9), "exactly one"),
           (("--steps", 3, "--clip", -1), "--clip"), (("--steps", 3, "--warmup", -5), "--warmup"),
           (("--steps", 3, "--patch", 0), "--patch"), (("--steps", 3, "--threads", -1), "--threads"),
           (("--steps", 3, "--model", "V0-4"), "--model"), (("--steps", 3, "--test-size", 0), "--test-size"),
           (("--steps", 3, "--label-smoothing", 2), "--label-smoothing"), (("--steps", 3, "--batch-size", 0), "--batch-size"),
           (("--steps", 3, "--fewshot-seeds", 0), "--fewshot-seeds"), (("--steps", 3, "--precision", "fp16"), "precision"),
           (("--stepz", 3), "did you mean --steps"), (("--steps", "abc"), "--steps"), (("--steps", 3, "--device", "tpu"), "--device")]


@pytest.mark.parametrize("extra, names", VIT_BAD)
def test_train_vit_bad_flags_one_line(npz, tmp_path, capsys, extra, names):
    err = one_line(capsys, train_vit.cli, vit_args(npz, tmp_path / "r", *extra), "train_vit.py")
    assert names in err and not (tmp_path / "r").exists(), err


LM_BAD = [(("--steps", 0), "--steps"), (("--flops", "inf"), "--flops"), (("--steps", 3, "--clip", -1), "--clip"),
          (("--steps", 3, "--val-fraction", 1.5), "--val-fraction"), (("--steps", 3, "--model", "L0-4"), "--model"),
          (("--steps", 3, "--warmup", -1), "--warmup"), (("--steps", 3, "--tokens-per-step", 0), "--tokens-per-step"),
          (("--steps", 3, "--grad-clip", 1), "--grad-clip is now called --clip"), (("--steps", 3, "--eval-from", 0), "--eval-from")]


@pytest.mark.parametrize("extra, names", LM_BAD)
def test_train_lm_bad_flags_one_line(corpus, tmp_path, capsys, extra, names):
    err = one_line(capsys, train_lm.cli, lm_args(corpus, tmp_path / "r", *extra), "train_lm.py")
    assert names in err and not (tmp_path / "r").exists(), err


@pytest.mark.parametrize("labels, says", [(lambda y: -y - 1, "class labels must lie in"), (lambda y: y.astype(np.float32), "integer"),
                                          (lambda y: y.astype(np.int64) + 2**40, "class labels must lie in")])
def test_npz_labels_are_checked(npz, tmp_path, capsys, labels, says):
    with np.load(npz) as z:
        arrays = dict(z)
    arrays["y_train"] = labels(arrays["y_train"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    assert says in one_line(capsys, train_vit.cli, vit_args(bad, tmp_path / "r", "--steps", 2), "train_vit.py")


@pytest.mark.parametrize("trainer", ["vit", "lm"])
def test_unreadable_checkpoint_is_named_in_one_line(npz, corpus, tmp_path, capsys, trainer):
    out = tmp_path / "r"
    out.mkdir()
    cli, args, script = ((train_vit.cli, vit_args(npz, out, "--steps", 2, "--resume"), "train_vit.py") if trainer == "vit"
                         else (train_lm.cli, lm_args(corpus, out, "--steps", 2, "--resume"), "train_lm.py"))
    (out / "log.jsonl").write_text('{"type": "header"}\n')                       # a log beside it, as a run leaves
    (out / "ckpt.pt").write_bytes(b"PK\x03\x04 not a checkpoint")                # truncated / corrupt
    assert "ckpt.pt is not a readable checkpoint" in one_line(capsys, cli, args, script)
    torch.save({"weights": torch.zeros(2)}, out / "ckpt.pt")                    # another program's file
    assert "is not a train_" in one_line(capsys, cli, args, script)


def test_a_bug_keeps_its_traceback(tmp_path):
    """torch raises ValueError for a shape mismatch: that is a bug, not bad input; no exit code 2."""
    code = ("import sys, torch, torch.nn.functional as F, runtime, train_vit\n"
            "def main(cfg):\n    F.cross_entropy(torch.randn(2, 3), torch.zeros(5).long())\n"
            "sys.exit(runtime.run_cli(main, train_vit.Config, 'train_vit.py', ['--steps', '1']))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert p.returncode not in (0, 2) and "Traceback" in p.stderr and "ValueError" in p.stderr, p.stderr


def test_rank_that_is_no_number_is_said(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "abc")
    assert "RANK" in one_line(capsys, train_lm.cli, ["--steps", "2", "--out-dir", str(tmp_path / "r")], "train_lm.py")


def test_divergence_keeps_a_good_checkpoint_and_a_sane_resume_trains(npz, tmp_path, capsys):
    out = tmp_path / "r"
    assert train_vit.cli([str(a) for a in vit_args(npz, out, "--steps", 4)]) == 0       # a good checkpoint at step 4
    good = (out / "ckpt.pt").read_bytes()
    err = one_line(capsys, train_vit.cli, vit_args(npz, out, "--steps", 12, "--evals", 20, "--lr", 1e9, "--resume"),
                   "train_vit.py")
    assert "diverged" in err
    ck = torch.load(out / "ckpt.pt", weights_only=False)
    assert all(torch.isfinite(p).all() for p in ck["model"].values())       # never a poisoned checkpoint
    assert ck["state"]["step"] >= 4 and (ck["state"]["step"] > 4 or (out / "ckpt.pt").read_bytes() == good)
    log = (out / "log.jsonl").read_text()
    assert "NaN" not in log and "Infinity" not in log                        # strict JSON, no NaN record
    assert train_vit.cli([str(a) for a in vit_args(npz, out, "--steps", 12, "--resume")]) == 0   # trains on
    last = [ln for ln in (out / "log.jsonl").read_text().splitlines() if '"eval"' in ln][-1]
    assert '"step": 12' in last


@pytest.mark.parametrize("script", ["train_vit.py", "train_lm.py"])
def test_a_run_that_diverges_at_once_keeps_no_poisoned_checkpoint(npz, corpus, tmp_path, script):
    """Issue 26: a huge LR poisons the weights in the first steps while the loss stays finite for a step or two; the
    checkpoints written then are removed, and the same command with a sane LR is the uninterrupted sane run."""
    cli = {"train_vit.py": train_vit.cli, "train_lm.py": train_lm.cli}[script]
    args = lambda out, lr: [str(a) for a in (vit_args(npz, out) if script == "train_vit.py" else lm_args(corpus, out))
                            + ["--steps", 12, "--evals", 12, "--warmup", 2, "--lr", lr]]
    assert cli(args(tmp_path / "run", 1e3)) == 2
    assert not (tmp_path / "run" / "ckpt.pt").exists() and not (tmp_path / "run" / "ckpt.prev.pt").exists()
    assert cli(args(tmp_path / "run", 1e-3)) == 0
    assert cli(args(tmp_path / "sane", 1e-3)) == 0
    assert eval_records(tmp_path / "run") == eval_records(tmp_path / "sane")


def eval_records(out):
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall"} for r in rows if r.get("type") == "eval"]
