"""eval_fewshot.py: closed-form ridge few-shot error on synthetic features, evaluate() on a
tiny FlexiViT, and the CLI on a saved checkpoint."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import data
import eval_fewshot
import flexivit
from eval_fewshot import evaluate, feature_pass, fewshot_error
from lab.bench.bench_eval_noise import eval_sets   # the earlier sets, kept by the benchmark that compares them

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def blobs(n_per_class, classes=10, dim=32, spread=10.0, noise=1.0, seed=0):
    """Gaussian blobs around fixed class centres; `seed` draws the noise."""
    centres = np.random.default_rng(42).normal(size=(classes, dim)) * spread
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + np.random.default_rng(seed).normal(size=(len(y), dim)) * noise
    return x.astype(np.float32), y


def ridge_fit_predict(x_support, y_support, x_query, num_classes, reg=1e-2):
    """The reference: the closed-form ridge on standardised features, the queries standardised alike (the module
    docstring, before eval_fewshot.ridge_fit folds the standardisation into W and b)."""
    mean, std = x_support.mean(0), x_support.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    xs, n, d = (x_support - mean) / std, *x_support.shape
    y = np.where(np.arange(num_classes) == np.asarray(y_support)[:, None], 1.0, -1.0)
    bias = y.mean(0)
    w = (xs.T @ np.linalg.solve(xs @ xs.T + reg * np.eye(n), y - bias) if n < d
         else np.linalg.solve(xs.T @ xs + reg * np.eye(d), xs.T @ (y - bias)))
    return np.argmax((x_query - mean) / std @ w + bias, axis=1)


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
    feats = feature_pass(model, 2, x, batch_size=7)[0]
    assert feats.shape == (60, 16) and feats.dtype == torch.float32


def test_cli_on_checkpoint(tmp_path, monkeypatch, capsys):
    model = tiny_model()
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model_args": model.model_args(), "model": model.state_dict(), "config": {"patch": 4}}, ckpt)
    g = torch.Generator().manual_seed(0)
    data = (torch.randint(0, 256, (40, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(40) % 3,
            torch.randint(0, 256, (20, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(20) % 3)
    monkeypatch.setattr(eval_fewshot, "load_dataset", lambda d: data)      # data.load_dataset, as imported
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


# ----------------------------------------------------------------------------- cached features (evaluate_all)

def test_draw_errors_equal_the_per_draw_computation():
    """The cached-feature path scores exactly the draws the old loop drew: default_rng(seed), k per class."""
    xtr, ytr = blobs(20, noise=8.0)
    xte, yte = blobs(15, noise=8.0, seed=1)
    errors = eval_fewshot.draw_errors(xtr, ytr, xte, yte, shots=5, seeds=range(4))
    for seed, err in zip(range(4), errors):
        rng = np.random.default_rng(seed)
        pick = np.concatenate([rng.choice(np.flatnonzero(ytr == c), size=5, replace=False) for c in range(10)])
        pred = ridge_fit_predict(xtr[pick].astype(np.float64), ytr[pick], xte.astype(np.float64), 10)
        assert err == np.mean(pred != yte)
    assert len(set(errors.tolist())) > 1   # the draws differ


def tiny_eval_images(n_support=60, n_test=30, n_train=24):
    g = torch.Generator().manual_seed(1)
    u8 = lambda n: torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)  # noqa: E731
    return {"support": (u8(n_support), torch.arange(n_support) % 3), "test": (u8(n_test), torch.arange(n_test) % 3),
            "query": None, "train": (u8(n_train), torch.arange(n_train) % 3), "shots": (1, 5, 10)}


def test_features_and_head_equal_forward():
    model = tiny_model()
    torch.nn.init.normal_(model.head.weight)   # a zero head would predict class 0 everywhere
    x = torch.randn(20, 1, 8, 8)
    assert torch.equal(model.head(model.features(x, 4)), model(x, 4))
    ev = tiny_eval_images()
    feats, pred = eval_fewshot.feature_pass(model.train(), 4, ev["test"][0], batch_size=7, predict=True)
    model.eval()
    with torch.no_grad():
        logits = model(data.normalize(ev["test"][0]), 4)
        assert torch.equal(pred, logits.argmax(1)) and len(set(pred.tolist())) > 1
        torch.testing.assert_close(feats, model.features(data.normalize(ev["test"][0]), 4))
    out = eval_fewshot.evaluate_all(model.train(), 4, ev, shots=(5,), draws=3)
    assert model.training
    assert out["test_error"] == pytest.approx(float((logits.argmax(1) != ev["test"][1]).float().mean()))
    with torch.no_grad():
        train_pred = model.eval()(data.normalize(ev["train"][0]), 4).argmax(1)
    assert out["train_error"] == pytest.approx(float((train_pred != ev["train"][1]).float().mean()))


def test_evaluate_all_equals_old_evaluate_on_the_same_draws():
    """evaluate_all (one pass, uint8 images, queries = test set) gives evaluate's numbers (float images)."""
    model, ev = tiny_model(), tiny_eval_images()
    sx, sy = ev["support"]
    tx, ty = ev["test"]
    old = evaluate(model, 4, data.normalize(sx), sy, data.normalize(tx), ty, shots=(1, 5), seeds=range(6))
    new = eval_fewshot.evaluate_all(model, 4, ev, shots=(1, 5), draws=6)
    for k in (1, 5):
        assert new[f"fewshot{k}_error"] == pytest.approx(old[f"fewshot{k}_error"])
        assert new[f"fewshot{k}_error_std"] == pytest.approx(old[f"fewshot{k}_error_std"])
        assert new[f"fewshot{k}_error_sem"] == pytest.approx(old[f"fewshot{k}_error_std"] / 6**0.5)
    # a query subset: rows of the test features
    q = torch.tensor([0, 3, 4, 8, 9, 20])
    sub = eval_fewshot.evaluate_all(model, 4, {**ev, "query": q, "train": None}, shots=(5,), draws=4)
    ref = evaluate(model, 4, data.normalize(sx), sy, data.normalize(tx[q]), ty[q], shots=(5,), seeds=range(4))
    assert sub["fewshot5_error"] == pytest.approx(ref["fewshot5_error"]) and "train_error" not in sub


def test_evaluate_all_accepts_an_autocast_context():
    model, ev = tiny_model(), tiny_eval_images()
    amp = torch.autocast("cpu", dtype=torch.bfloat16)
    out = eval_fewshot.evaluate_all(model, 4, ev, shots=(5,), draws=2, amp=amp)
    assert set(out) == {"fewshot5_error", "fewshot5_error_std", "fewshot5_error_sem", "test_error", "train_error"}
    assert all(0.0 <= v <= 1.0 for v in out.values())


def test_reported_std_shrinks_with_more_draws():
    """On overlapping blobs the draws disagree: the spread of one draw stays, the std of the mean falls."""
    xtr, ytr = blobs(50, noise=14.0)
    xte, yte = blobs(40, noise=14.0, seed=1)
    feats = torch.tensor(np.concatenate([xtr, xte]))
    model = FeatureModel(feats)   # evaluate_all only needs features: images are row numbers of a table
    ev = {"support": (torch.arange(len(xtr)).float(), torch.tensor(ytr)),
          "test": (torch.arange(len(xtr), len(feats)).float(), torch.tensor(yte)), "query": None, "train": None}
    few = eval_fewshot.evaluate_all(model, 4, ev, shots=(5,), draws=4)
    many = eval_fewshot.evaluate_all(model, 4, ev, shots=(5,), draws=64)
    assert few["fewshot5_error_std"] > 0.01 and many["fewshot5_error_std"] > 0.01
    assert many["fewshot5_error_sem"] < few["fewshot5_error_sem"] / 2
    one = eval_fewshot.evaluate_all(model, 4, ev, shots=(5,), draws=1)
    assert one["fewshot5_error_std"] == one["fewshot5_error_sem"] == 0.0


class FeatureModel(torch.nn.Module):
    """A 'model' whose images are row numbers (float, so feature_pass passes them as given) of a feature table."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.head = torch.nn.Linear(table.shape[1], 10)

    def features(self, idx, patch):
        return self.table[idx.long()]


def test_train_subset_is_fixed_by_seed():
    train_subset = lambda n, size, seed=0: data.draw(n, size, False, "train_subset", seed)   # as eval_images draws it
    a, b = train_subset(1000, 200), train_subset(1000, 200)
    assert torch.equal(a, b) and len(set(a.tolist())) == 200 and int(a.max()) < 1000
    assert not torch.equal(train_subset(1000, 200, seed=1), a)
    assert torch.equal(train_subset(1000, 100), a[:100]) and len(train_subset(50, 200)) == 50


def test_eval_images_fixed_sets():
    g = torch.Generator().manual_seed(0)
    tx, ty = torch.randint(0, 256, (400, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(400) % 10
    vx, vy = torch.randint(0, 256, (100, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(100) % 10
    ev = data.eval_images(tx, ty, vx, vy, 300, 1000, 80, 50, "cpu")
    old = eval_sets(tx, ty, vx, vy, 300, 1000, 80, "cpu")
    assert torch.equal(data.normalize(ev["support"][0]), old["fewshot"][0]) and ev["shots"] == old["shots"]
    assert torch.equal(ev["test"][0], old["test"][0]) and ev["query"] is None
    assert torch.equal(ev["train"][0], tx[data.draw(400, 50, False, "train_subset", 0)]) and ev["train"][0].dtype == torch.uint8
    sub = data.eval_images(tx, ty, vx, vy, 300, 20, 80, 0, "cpu")
    assert sub["train"] is None and len(sub["query"]) == 20 and int(sub["query"].max()) < 80
    with pytest.raises(ValueError, match="--fewshot-support"):
        data.eval_images(tx, ty, vx, vy, 30, 1000, 80, 0, "cpu")


def test_training_after_evaluation_at_a_new_patch_size(monkeypatch):
    """The evaluation builds FlexiViT's cached resize matrix for a new patch size; training at that size must
    still backpropagate (it would not if the matrix were an inference-mode tensor)."""
    monkeypatch.setattr(flexivit, "_RESIZE_CACHE", {})
    model, ev = tiny_model(), tiny_eval_images()
    eval_fewshot.evaluate_all(model, 2, ev, shots=(5,), draws=2)
    model(torch.randn(4, 1, 8, 8), 2).sum().backward()
    assert model.patch_weight.grad is not None
