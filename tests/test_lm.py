"""train_lm.py: FLOPs accounting, causality, a context switch, exact resume, and one-line errors."""
import dataclasses
import inspect
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import runtime
import train_lm
from train_lm import LM, Config, UserError, main, model_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name,context", [("L32-2", 16), ("L64-4", 128), ("L128-3", 64), ("L256-1", 32)])
def test_flops_match_flop_counter(name, context):
    """Blocks-only analytic count = FlopCounterMode's count of the blocks; a whole training step adds
    exactly the (excluded) output layer. SDPA runs on its math backend so that the counter sees it."""
    args = model_args(name, 256, context)
    model = LM(**args)
    x = torch.randint(0, 256, (2, context))
    with FlopCounterMode(display=False) as blocks, sdpa_kernel(SDPBackend.MATH):
        h = model.embed(x)
        for block in model.blocks:
            h = block(h, model.freqs[:context])
    analytic = 2 * model.macs_per_token(context) * x.numel()
    assert blocks.get_total_flops() == pytest.approx(analytic, rel=0.02)
    with FlopCounterMode(display=False) as step, sdpa_kernel(SDPBackend.MATH):
        F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    head = 2 * args["width"] * 256 * x.numel()
    assert step.get_total_flops() == pytest.approx(3 * (analytic + head), rel=0.02)


def test_causal():
    torch.manual_seed(0)
    model = LM(**model_args("L64-2", 256, 32)).eval()
    x = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        before = model(x)
        for t in (0, 7, 31):
            y = x.clone()
            y[:, t] = (y[:, t] + 1) % 256
            after = model(y)
            assert torch.allclose(before[:, :t], after[:, :t], atol=1e-6)
            assert not torch.allclose(before[:, t], after[:, t])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("".join(inspect.getsource(m) for m in (json, dataclasses, inspect)))
    return str(path)


def tiny(tmp_path, corpus, **kw):
    base = dict(out_dir=str(tmp_path / "run"), data=corpus, model="L32-2", context=16, tokens_per_step=256,
                steps=16, warmup=4, evals=5, eval_from=0.1, val_tokens=512, cache_dir=str(tmp_path / "cache"))
    return Config(**{**base, **kw})


def records(cfg):
    with open(os.path.join(cfg.out_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f][1:]


def write_schedule(path, stages):
    path.write_text(json.dumps({"version": 1, "kind": "law", "metric": "val_loss", "stages": stages}))
    return str(path)


def test_context_switch_and_exact_resume(tmp_path, corpus):
    step_flops = 6 * LM(**model_args("L32-2", 256, 32)).macs_per_token(16) * 256
    schedule = write_schedule(tmp_path / "schedule.json", [
        {"config": {"context": 16}, "flops_start": 0.0},
        {"config": {"context": 32}, "flops_start": 6.5 * step_flops}])
    whole = tiny(tmp_path / "a", corpus, schedule=schedule)
    main(whole)
    logged = records(whole)
    assert [r["config"]["context"] for r in logged] == [16, 16, 16, 32, 32]
    assert all(math.isfinite(r["train_loss"]) and r["val_loss"] < math.log(256) for r in logged)
    assert logged[-1]["val_loss_max_context"] < logged[0]["val_loss_max_context"]
    assert logged[-1]["tokens"] == 16 * 256

    cut = dataclasses.replace(whole, out_dir=str(tmp_path / "b" / "run"))
    main(dataclasses.replace(cut, stop_after_steps=10))               # stops after the switch (step 8)
    assert len(records(cut)) == 4
    main(dataclasses.replace(cut, resume=True))
    resumed = records(cut)
    assert len(resumed) == len(logged)
    for a, b in zip(logged, resumed):
        assert a.keys() == b.keys()
        for key in set(a) - {"wall"}:
            assert a[key] == (pytest.approx(b[key], rel=1e-6, abs=1e-6) if isinstance(a[key], float) else b[key])

    with pytest.raises(UserError, match="model"):                       # another shape
        main(dataclasses.replace(cut, resume=True, model="L64-2"))
    other = write_schedule(tmp_path / "other.json", [{"config": {"context": 16}, "flops_start": 0.0},
                                                     {"config": {"context": 32}, "flops_start": 1.0}])
    with pytest.raises(UserError, match="boundaries"):                  # another schedule
        main(dataclasses.replace(cut, resume=True, schedule=other))
    with pytest.raises(UserError, match="already holds a run"):        # no --resume
        main(cut)


def test_switch_on_error(tmp_path, corpus):
    schedule = write_schedule(tmp_path / "schedule.json", [
        {"config": {"context": 16}, "flops_start": 0.0, "error_end": 5.1},
        {"config": {"context": 32}, "flops_start": 0.0}])
    cfg = tiny(tmp_path, corpus, schedule=schedule, switch_on="error")
    main(cfg)
    logged = records(cfg)
    first_below = next(i for i, r in enumerate(logged) if r["val_loss"] < 5.1)
    assert 0 < first_below < len(logged) - 1                           # the switch falls inside the run
    contexts = [r["config"]["context"] for r in logged]
    assert contexts == [16] * (first_below + 1) + [32] * (len(logged) - first_below - 1)


def test_divergence_keeps_last_good_checkpoint(tmp_path, corpus, capsys):
    cfg = tiny(tmp_path, corpus, steps=8)
    main(dataclasses.replace(cfg, stop_after_steps=4))
    with pytest.raises(runtime.DivergedError, match="non-finite") as error:
        main(dataclasses.replace(cfg, resume=True, lr=1e30))
    diverged_at = int(re.search(r"at step (\d+)", str(error.value))[1])
    ckpt = torch.load(os.path.join(cfg.out_dir, "ckpt.pt"), weights_only=False)
    assert 4 <= ckpt["state"]["step"] <= diverged_at
    assert all(torch.isfinite(p).all() for p in ckpt["model"].values())
    assert f"(step {ckpt['state']['step']}) is kept" in str(error.value)
    capsys.readouterr()                                                # the command line: one line, exit code 2
    args = ["--out-dir", cfg.out_dir, "--data", corpus, "--model", "L32-2", "--context", "16", "--tokens-per-step",
            "256", "--steps", "8", "--warmup", "4", "--evals", "5", "--eval-from", "0.1", "--val-tokens", "512",
            "--cache-dir", cfg.cache_dir, "--resume", "--lr", "1e30"]
    assert train_lm.cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train_lm.py: error: non-finite loss"), err


def test_batch_size_stage_sets_tokens_flops_and_lr(tmp_path, corpus):
    """A stage's batch_size B at context T: B*T tokens a step, FLOPs of those, LR x (B*T / --tokens-per-step)."""
    small, big = (6 * LM(**model_args("L32-2", 256, 32)).macs_per_token(T) * n for T, n in ((16, 256), (32, 1024)))
    schedule = write_schedule(tmp_path / "schedule.json", [
        {"config": {"context": 16}, "flops_start": 0.0},
        {"config": {"context": 32, "batch_size": 32}, "flops_start": 2.5 * small}])
    cfg = tiny(tmp_path, corpus, schedule=schedule, lr_scaling="linear", steps=6, evals=100, eval_from=0.01)
    main(cfg)
    logged = records(cfg)
    assert [r["config"] for r in logged] == [{"context": 16}] * 3 + [{"context": 32, "batch_size": 32}] * 3
    assert [r["tokens"] for r in logged] == [256, 512, 768, 1792, 2816, 3840]
    assert logged[-1]["flops"] == pytest.approx(3 * small + 3 * big, rel=1e-12)
    assert [r["lr"] for r in logged] == pytest.approx([cfg.lr * s for s in (0.25, 0.5, 0.75, 4.0, 4.0, 4.0)])
    rate = lambda scaling, tokens: runtime.learning_rate(cfg.lr, 9, cfg.warmup, scaling, tokens / cfg.tokens_per_step)
    assert [rate(s, 1024) for s in ("none", "linear", "sqrt")] == pytest.approx([cfg.lr, 4 * cfg.lr, 2 * cfg.lr])
    assert rate("sqrt", 256) == cfg.lr                                 # no batch_size: the LR of --lr
    for bad in ({"context": 32, "batch_size": 0}, {"context": 32, "batch_size": True}, {"batch_size": 8},
                {"context": 32, "batch_size": 8, "patch": 4}):
        path = write_schedule(tmp_path / "bad.json", [{"config": bad, "flops_start": 0.0}])
        with pytest.raises(UserError, match="is not a context length"):
            train_lm.load_stages(dataclasses.replace(cfg, schedule=path))


def run_cli(*args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train_lm.py"), *args], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    return proc.returncode, proc.stderr.strip()


def test_bad_input_one_line_errors(tmp_path, corpus, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    tokens = tmp_path / "tokens.bin"
    np.array([1, 2, 300, 4] * 100, dtype=np.uint16).tofile(tokens)
    patch_schedule = write_schedule(tmp_path / "patch.json", [{"config": {"patch": 7}, "flops_start": 0.0}])
    common = ["--out-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), "--model", "L32-2", "--steps", "8"]
    cases = [(["--data", str(tmp_path / "missing")], "no such file"),
             (["--data", str(empty)], "empty"),
             (["--data", corpus, "--context", "4096", "--val-fraction", "0.01"], "longer than the validation split"),
             (["--data", str(tokens), "--vocab-size", "256", "--context", "8"], "token id 300"),
             (["--data", corpus, "--schedule", patch_schedule], "not a context length")]
    for i, (args, message) in enumerate(cases):      # the first in a real process, the others through the same cli()
        if i == 0:
            code, err = run_cli(*common, *args)
        else:
            capsys.readouterr()
            code = train_lm.cli([*common, *args])
            err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (args, err)
        assert err.startswith("train_lm.py: error:") and message in err, err
