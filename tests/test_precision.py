"""Precision and attention paths: every attention path agrees with the reference, forward and backward, in
float32 and under bf16 autocast; --precision resolves by capability and is refused where bf16 matrix units
are missing; a checkpoint resumes under another precision and the log says so; the copy-alone modules
import and run from an empty folder."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import flexivit  # noqa: E402
import lm  # noqa: E402
import runtime  # noqa: E402


def reference(q, k, v, causal):
    """softmax(q k^T / sqrt(d)) v in float64: the reference both paths are held to."""
    q, k, v = (t.double() for t in (q, k, v))
    s = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if causal:
        n = q.shape[-2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return s.softmax(-1) @ v


# float32 paths agree with float64 to 1e-5; under bf16 autocast (8-bit mantissa) to 3e-2 of the output scale
TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("impl", ["sdpa", "matmul", "auto"])
@pytest.mark.parametrize("module, n, causal", [(flexivit, 1, False), (flexivit, 16, False), (flexivit, 49, False),
                                               (lm, 64, True), (lm, 257, True)])
def test_attention_paths_agree_with_the_reference(module, n, causal, impl, precision):
    torch.manual_seed(n)
    q, k, v = (torch.randn(3, 2, n, 32, requires_grad=True) for _ in range(3))
    grad_out = torch.randn(3, 2, n, 32, dtype=torch.float64)
    ref = reference(q, k, v, causal)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    with ctx:
        out = module.attention(q, k, v, impl)
    grads = torch.autograd.grad(out.double(), (q, k, v), grad_out)
    tol = TOLERANCE[precision]
    scale = lambda t: t.abs().max().clamp(min=1.0)      # noqa: E731  (one token: q and k get zero gradient)
    assert (out.double() - ref).abs().max() <= tol * scale(ref)
    for g, r in zip(grads, ref_grads):
        assert (g.double() - r).abs().max() <= tol * scale(r) * (4 if precision == "bf16" else 1)


def test_auto_attention_picks_matmul_under_cpu_bf16_autocast(monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    q = torch.randn(1, 1, 4, 8)
    flexivit.attention(q, q, q)
    assert calls == [1]                                  # float32 on a CPU: sdpa
    with torch.autocast("cpu", dtype=torch.bfloat16):
        flexivit.attention(q, q, q)
        lm.attention(q, q, q)
    assert calls == [1]                                  # bf16 autocast on a CPU: the two matmuls
    with pytest.raises(ValueError, match="attention impl"):
        flexivit.attention(q, q, q, "flash")


def test_models_match_across_attention_paths():
    torch.manual_seed(0)
    vit = flexivit.build("V64-2", image_size=16)
    x = torch.randn(4, 1, 16, 16)
    a = vit.set_attention("sdpa")(x, 4)
    b = vit.set_attention("matmul")(x, 4)
    assert torch.allclose(a, b, atol=1e-5)
    model = lm.LM(**lm.model_args("L64-2", 256, 32))
    idx = torch.randint(0, 256, (2, 32))
    assert torch.allclose(model.set_attention("sdpa")(idx), model.set_attention("matmul")(idx), atol=1e-4)


def test_precision_resolves_by_capability(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "bf16_matrix_units", lambda d: (False, "AMX-BF16 matrix units"))
    assert runtime.resolve_precision("auto", cpu) == "fp32"
    assert runtime.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(runtime.UserError, match="lacks AMX-BF16.*--precision fp32"):
        runtime.resolve_precision("bf16", cpu)
    monkeypatch.setattr(runtime, "bf16_matrix_units", lambda d: (True, "AMX-BF16"))
    assert runtime.resolve_precision("auto", cpu) == "bf16" and runtime.resolve_precision("fp32", cpu) == "fp32"
    assert isinstance(runtime.autocast(cpu, "bf16"), torch.autocast)


def test_bf16_refused_in_one_line_before_training(tmp_path, monkeypatch):
    """On a CPU without AMX the real check refuses bf16; with AMX it trains. Either way: no traceback."""
    ok, _ = runtime.bf16_matrix_units(torch.device("cpu"))
    p = subprocess.run([sys.executable, str(ROOT / "train_lm.py"), "--precision", "bf16", "--steps", "2",
                        "--model", "L32-1", "--context", "16", "--tokens-per-step", "64", "--val-tokens", "64",
                        "--evals", "1", "--out-dir", str(tmp_path / "r"), "--no-progress", "--data", str(ROOT / "lm.py")],
                       capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    if ok:
        assert p.returncode == 0, p.stderr
    else:
        err = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(err) == 1 and "AMX-BF16" in err[0] and "--precision fp32" in err[0], err
        assert not (tmp_path / "r").exists()


def test_resume_under_another_precision_is_logged(tmp_path, monkeypatch):
    import train_lm
    monkeypatch.setattr(runtime, "bf16_matrix_units", lambda d: (True, "AMX-BF16"))   # bf16 runs anywhere, slowly
    cfg = train_lm.Config(out_dir=str(tmp_path / "r"), data=str(ROOT / "lm.py"), model="L32-1", context=16,
                          tokens_per_step=64, val_tokens=64, steps=6, evals=3, eval_from=0.3, warmup=2,
                          precision="bf16", progress=False, cache_dir=str(tmp_path / "c"))
    train_lm.main(cfg.__class__(**{**cfg.__dict__, "steps": 3}))
    train_lm.main(cfg.__class__(**{**cfg.__dict__, "precision": "fp32", "resume": True}))
    rows = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert rows[0]["precision"] == "bf16"
    notes = [r for r in rows if r.get("type") == "note"]
    assert notes == [{"type": "note", "step": 3, "precision": "fp32", "was": "bf16"}]
    assert [r["step"] for r in rows if r.get("type") == "eval"][-1] == 6


@pytest.mark.parametrize("module, use", [
    ("flexivit.py", "m = flexivit.build('V64-2', image_size=16); assert m(torch.randn(2, 1, 16, 16), 4).shape == (2, 10)"),
    ("lm.py", "m = lm.LM(**lm.model_args('L64-2', 256, 16)); assert m(torch.randint(0, 256, (2, 16))).shape == (2, 16, 256)"),
    ("expand.py", "import torch.nn as nn; assert callable(expand.expand_width) and callable(expand.expand_depth)"),
    # fit_laws.py and schedule.py: tests/test_layout.py fits and schedules two laws with them copied alone
])
def test_copy_alone_modules_work_from_an_empty_folder(tmp_path, module, use):
    shutil.copy(ROOT / module, tmp_path / module)
    name = module[:-3]
    code = f"import torch, {name}\n{use}\nprint('ok')"
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": ""})
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
