"""eval_fewshot.py: closed-form ridge few-shot error on synthetic features, evaluate() on a
tiny FlexiViT, and the CLI on a saved checkpoint."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import eval_fewshot
import flexivit
from eval_fewshot import evaluate, extract_features, fewshot_error, ridge_fit_predict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def blobs(n_per_class, classes=10, dim=32, spread=10.0, noise=1.0, seed=0):
    """Gaussian blobs around fixed class centres; `seed` draws the noise."""
    centres = np.random.default_rng(42).normal(size=(classes, dim)) * spread
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + np.random.default_rng(seed).normal(size=(len(y), dim)) * noise
    return x.astype(np.float32), y


def test_separable_features_give_zero_error():
    xtr, ytr = blobs(30)
    xte, yte = blobs(20, seed=1)
    for k in (1, 5, 10, 25):
        mean, std = fewshot_error(xtr, ytr, xte, yte, shots=k, seeds=(0, 1, 2))
        assert mean < 0.02 and std < 0.02, (k, mean, std)


def test_random_labels_give_chance_error():
    rng = np.random.default_rng(0)
    xtr, xte = rng.normal(size=(500, 16)), rng.normal(size=(2000, 16))
    ytr, yte = rng.integers(0, 10, 500), rng.integers(0, 10, 2000)
    mean, std = fewshot_error(xtr, ytr, xte, yte, shots=10, seeds=(0, 1, 2, 3))
    assert 0.8 < mean < 0.97
    assert std > 0  # different draws give different errors


def test_std_is_over_seeds():
    xtr, ytr = blobs(40, noise=12.0)
    xte, yte = blobs(40, noise=12.0, seed=1)
    errs = [fewshot_error(xtr, ytr, xte, yte, shots=5, seeds=(s,))[0] for s in range(4)]
    mean, std = fewshot_error(xtr, ytr, xte, yte, shots=5, seeds=range(4))
    assert mean == pytest.approx(np.mean(errs)) and std == pytest.approx(np.std(errs, ddof=1))
    assert fewshot_error(xtr, ytr, xte, yte, shots=5, seeds=(0,))[1] == 0.0


def test_ridge_matches_explicit_solution_with_unregularised_bias():
    rng = np.random.default_rng(0)
    for n, d in [(12, 40), (60, 8)]:   # dual and primal forms
        x, y, xq = rng.normal(size=(n, d)), rng.integers(0, 3, n), rng.normal(size=(50, d))
        reg = 0.5
        mean, std = x.mean(0), x.std(0)
        xs = np.hstack([(x - mean) / std, np.ones((n, 1))])
        t = -np.ones((n, 3))
        t[np.arange(n), y] = 1
        penalty = reg * np.eye(d + 1)
        penalty[-1, -1] = 0
        w = np.linalg.solve(xs.T @ xs + penalty, xs.T @ t)
        ref = np.argmax(np.hstack([(xq - mean) / std, np.ones((50, 1))]) @ w, axis=1)
        np.testing.assert_array_equal(ridge_fit_predict(x, y, xq, 3, reg), ref)


def test_labels_need_not_be_contiguous():
    xtr, ytr = blobs(10, classes=3)
    xte, yte = blobs(10, classes=3, seed=1)
    mean, _ = fewshot_error(xtr, ytr * 7 + 2, xte, yte * 7 + 2, shots=5)
    assert mean < 0.05


def test_too_few_examples_per_class():
    xtr, ytr = blobs(3)
    with pytest.raises(ValueError, match="10-shot needs 10"):
        fewshot_error(xtr, ytr, xtr, ytr, shots=10)


def tiny_model():
    torch.manual_seed(0)
    return flexivit.FlexiViT(image_size=8, in_chans=1, num_classes=3, width=16, depth=1, heads=2,
                             base_patch=4, posemb_grid=2)


def test_evaluate_keys_and_modes():
    model = tiny_model().train()
    x, y = torch.randn(60, 1, 8, 8), torch.arange(60) % 3
    out = evaluate(model, 4, x, y, x[:30], y[:30], shots=(1, 5, 10), seeds=(0, 1))
    assert set(out) == {f"fewshot{k}_error{s}" for k in (1, 5, 10) for s in ("", "_std")}
    assert all(0.0 <= v <= 1.0 for v in out.values())
    assert model.training
    feats = extract_features(model, 2, x, batch_size=7)
    assert feats.shape == (60, 16) and feats.dtype == torch.float32
    with pytest.raises(ValueError, match="float"):
        extract_features(model, 4, (x * 100).to(torch.uint8))


def test_cli_on_checkpoint(tmp_path, monkeypatch, capsys):
    model = tiny_model()
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model_args": model.model_args(), "model": model.state_dict(), "config": {"patch": 4}}, ckpt)
    g = torch.Generator().manual_seed(0)
    data = (torch.randint(0, 256, (40, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(40) % 3,
            torch.randint(0, 256, (20, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(20) % 3)
    monkeypatch.setitem(sys.modules, "train_vit", types.SimpleNamespace(load_dataset=lambda d: data))
    out = tmp_path / "fewshot.json"
    result = eval_fewshot.main(eval_fewshot.Config(ckpt=str(ckpt), data_dir="unused", shots=(1, 5), seeds=2, out=str(out)))
    assert result["patch"] == 4 and "fewshot5_error_std" in result
    assert json.loads(out.read_text()) == result
    assert json.loads(capsys.readouterr().out) == result


def test_cli_missing_checkpoint_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "eval_fewshot.py"), "--ckpt", str(tmp_path / "none.pt")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"eval_fewshot.py: error: no checkpoint at {tmp_path / 'none.pt'}"
