"""
k-shot linear evaluation on frozen features: the paper's downstream metric E.

Paper, Sec. 3 and App. B.2: a ViT's quality is its 10-shot error: the pre-logit features
of k images per class (the support set) fit a linear classifier by ridge regression
(scikit-learn's Ridge, regularisation 1e-2), which then classifies the query set. Here
the ridge is solved in closed form:

- features are standardised with the mean and std of the support set;
- targets are one-hot coded as +1 / -1; a bias column is appended and not regularised
  (as sklearn's fit_intercept), so W = (X^T X + reg I)^-1 X^T Y on the centred features;
- for each seed, k examples per class are drawn from the support pool; the error is the
  mean over seeds, with its std over seeds.

Images passed to `extract_features` / `evaluate` are float tensors [N, C, H, W],
normalised exactly as the model saw them in training.

The trainer calls `evaluate_all(model, patch, ev, shots=(10,), draws=50, amp=amp)` on the fixed image sets
of data.eval_images: ONE forward pass per image set (support pool, test set, training subset), whose
features serve every metric: the k-shot error over many draws on the cached features (a draw costs one
small solve; one matrix product scores 16 draws), the top-1 test and train errors from model.head on the
same features (forward is head(features)). The test set doubles as the k-shot query set: all 10k queries
and 50 draws bring the std of one evaluation of a fixed checkpoint from 0.010-0.013 (2000 queries, 3 draws)
to 0.002-0.003 (0.004 with a new support pool too), for the forward passes the old evaluation made anyway
(bench/bench_eval_noise.py).

Run on a checkpoint saved by train_vit.py (support pool = the training set, queries =
the test set):
    python eval_fewshot.py --ckpt runs/p7/ckpt.pt --data-dir /usr/share/datasets/fashion-mnist
It prints one JSON line, e.g. {"fewshot10_error": 0.21, "fewshot10_error_std": 0.01, ...}.
"""
import os
import pickle
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data import load_dataset, normalize
from runtime import UserError, atomic_write, check_out_dir, dumps, resolve_device, run_cli


def extract_features(model, patch, images, batch_size=512):
    """Pre-logit features [N, width] (float32, on the CPU) of float images [N, C, H, W]
    normalised as in training; the model runs in eval mode and keeps its mode afterwards."""
    if not torch.is_floating_point(images):
        raise UserError(f"images must be float tensors normalised as in training, got dtype {images.dtype}")
    return feature_pass(model, patch, images, batch_size)[0]


# torch.no_grad rather than torch.inference_mode: FlexiViT caches its PI-resize matrices (flexivit.resize_matrix);
# one first built here as an inference tensor would break the backward pass of a later training step at that patch.
@torch.no_grad()
def feature_pass(model, patch, images, batch_size=512, amp=None, predict=False):
    """ONE batched forward pass over images [N, C, H, W] (uint8: normalised here as in training, data.normalize;
    float: normalised already), without autograd, in eval mode (the model's mode is restored), inside the `amp`
    context (e.g. torch.autocast; None: none). Returns (pre-logit features [N, width], float32 on the CPU;
    top-1 predictions [N] on the CPU from model.head on those same features, i.e. forward's, or None)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    feats, preds = [], []
    try:
        with amp if amp is not None else nullcontext():
            for i in range(0, len(images), batch_size):
                x = images[i:i + batch_size].to(device)
                f = model.features(x if torch.is_floating_point(x) else normalize(x), patch)
                feats.append(f.float().cpu())
                if predict:
                    preds.append(model.head(f).argmax(1).cpu())   # forward(x) is head(features(x))
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(preds) if predict else None


def _as_numpy(x, dtype):
    return x.detach().cpu().numpy().astype(dtype) if torch.is_tensor(x) else np.asarray(x, dtype=dtype)


def _ridge(x_support, y_support, num_classes, reg):
    """Closed-form ridge on standardised features with +-1 targets: (mean, std, w [d, C], bias [C])."""
    mean, std = x_support.mean(0), x_support.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    xs = (x_support - mean) / std
    y = -np.ones((len(xs), num_classes))
    y[np.arange(len(xs)), y_support] = 1.0
    bias = y.mean(0)                       # intercept: xs is centred, so it decouples
    yc = y - bias
    n, d = xs.shape
    if n < d:   # dual form, same solution: X^T (X X^T + reg I)^-1 Y
        w = xs.T @ np.linalg.solve(xs @ xs.T + reg * np.eye(n), yc)
    else:
        w = np.linalg.solve(xs.T @ xs + reg * np.eye(d), xs.T @ yc)
    return mean, std, w, bias


def ridge_fit_predict(x_support, y_support, x_query, num_classes, reg=1e-2):
    """Closed-form ridge on standardised features with +-1 targets; returns predicted
    class indices (0..num_classes-1) for x_query."""
    mean, std, w, bias = _ridge(x_support, y_support, num_classes, reg)
    return np.argmax((x_query - mean) / std @ w + bias, axis=1)


def ridge_fit(x_support, y_support, num_classes, reg=1e-2):
    """ridge_fit_predict's classifier as an affine map of the raw features, the standardisation folded in:
    (W [d, C], b [C]) with scores x @ W + b. Many draws then score the queries in one matrix product."""
    mean, std, w, bias = _ridge(x_support, y_support, num_classes, reg)
    return w / std[:, None], bias - (mean / std) @ w


def draw_errors(train_feats, train_labels, test_feats, test_labels, shots=10, seeds=(0, 1, 2), reg=1e-2):
    """The k-shot error of each draw [len(seeds)]: per seed, `shots` examples per class are drawn without
    replacement from (train_feats, train_labels) by numpy's default_rng(seed); a ridge classifier fit on them
    is scored on the test set. The features are computed once (feature_pass); a draw costs one small solve,
    and the queries are scored for 16 draws at a time in one matrix product."""
    xtr, xte = _as_numpy(train_feats, np.float64), _as_numpy(test_feats, np.float64)
    ytr, yte = _as_numpy(train_labels, np.int64), _as_numpy(test_labels, np.int64)
    classes, ytr_idx = np.unique(ytr, return_inverse=True)
    by_class = [np.flatnonzero(ytr_idx == c) for c in range(len(classes))]
    fewest = min(len(ix) for ix in by_class)
    if fewest < shots:
        raise UserError(f"{shots}-shot needs {shots} support examples per class, but a class has only {fewest}")
    fits = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        pick = np.concatenate([rng.choice(ix, size=shots, replace=False) for ix in by_class])
        fits.append(ridge_fit(xtr[pick], ytr_idx[pick], len(classes), reg))
    errors = []
    for i in range(0, len(fits), 16):
        w = np.concatenate([f[0] for f in fits[i:i + 16]], axis=1)        # [d, draws * C]
        b = np.concatenate([f[1] for f in fits[i:i + 16]])
        pred = (xte @ w + b).reshape(len(xte), -1, len(classes)).argmax(2)  # [queries, draws]
        errors += np.mean(classes[pred] != yte[:, None], axis=0).tolist()
    return np.array(errors)


def fewshot_error(train_feats, train_labels, test_feats, test_labels, shots=10, seeds=(0, 1, 2), reg=1e-2):
    """k-shot error of a ridge classifier (draw_errors): (mean, std) over seeds (std with ddof=1; 0.0 for one seed)."""
    errors = draw_errors(train_feats, train_labels, test_feats, test_labels, shots, seeds, reg)
    std = float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0
    return float(np.mean(errors)), std


def top1_error(pred, labels):
    return int((pred != labels.cpu()).sum()) / len(labels)


def evaluate_all(model, patch, ev, shots=(10,), draws=50, reg=1e-2, batch_size=512, amp=None):
    """The trainer's evaluation at `patch`: ONE forward pass per image set of `ev` (data.eval_images), whose
    features serve every metric: the support pool's features; the test set's features and top-1 predictions
    (model.head on those features), whose rows ev["query"] (all rows if None) are the k-shot queries; the top-1
    predictions on the fixed training subset ev["train"] (un-augmented). Per k in `shots`, `draws` draws of k
    examples per class (seeds 0..draws-1) each fit the closed-form ridge (App. B.2, reg 1e-2). Returns
    {"fewshot{k}_error": mean over the draws, "fewshot{k}_error_std": std of one draw's error over the draws
    (ddof=1, as evaluate's; 0.0 for one draw), "fewshot{k}_error_sem": the std the draws leave in the mean,
    std / sqrt(draws), "test_error", "train_error" (only if ev["train"])}. `amp`: e.g. torch.autocast, or None."""
    if draws < 1:
        raise UserError(f"draws must be >= 1, got {draws}")
    support, _ = feature_pass(model, patch, ev["support"][0], batch_size, amp)
    test, test_pred = feature_pass(model, patch, ev["test"][0], batch_size, amp, predict=True)
    test_y = ev["test"][1].cpu()
    query = ev.get("query")
    query, query_y = (test, test_y) if query is None else (test[query.cpu()], test_y[query.cpu()])
    if ev.get("query_set") is not None:               # another dataset's query images (train_vit --fewshot-data)
        query, query_y = feature_pass(model, patch, ev["query_set"][0], batch_size, amp)[0], ev["query_set"][1].cpu()
    out = {}
    for k in shots:
        errors = draw_errors(support, ev["support"][1], query, query_y, k, range(draws), reg)
        spread = float(np.std(errors, ddof=1)) if draws > 1 else 0.0
        out[f"fewshot{k}_error"] = float(errors.mean())
        out[f"fewshot{k}_error_std"] = spread
        out[f"fewshot{k}_error_sem"] = spread / draws**0.5
    out["test_error"] = top1_error(test_pred, test_y)
    if ev.get("train") is not None:
        out["train_error"] = top1_error(feature_pass(model, patch, ev["train"][0], batch_size, amp, True)[1],
                                        ev["train"][1])
    return out


def evaluate(model, patch, support_images, support_labels, query_images, query_labels,
             shots=(1, 5, 10, 25), seeds=(0, 1, 2), reg=1e-2, batch_size=512):
    """Few-shot errors at each k in `shots`: {"fewshot{k}_error": mean, "fewshot{k}_error_std": std}.
    Features are extracted once; support_images is the pool the k shots are drawn from."""
    support = extract_features(model, patch, support_images, batch_size)
    query = extract_features(model, patch, query_images, batch_size)
    out = {}
    for k in shots:
        mean, std = fewshot_error(support, support_labels, query, query_labels, k, seeds, reg)
        out[f"fewshot{k}_error"], out[f"fewshot{k}_error_std"] = mean, std
    return out


# ----------------------------------------------------------------------------- CLI

@dataclass
class Config:
    ckpt: str
    """checkpoint saved by train_vit.py (a dict with "model_args", "model", "config")"""
    data_dir: str = "/usr/share/datasets/fashion-mnist"
    """dataset folder, read by train_vit.load_dataset"""
    patch: int = 0
    """patch size to evaluate at; 0 = the checkpoint's "patch" (the size in force when saved), else its config["patch"]"""
    shots: tuple[int, ...] = (1, 5, 10, 25)
    """k values: examples per class in the support set"""
    seeds: int = 5
    """number of draws of the support set (seeds 0..seeds-1)"""
    reg: float = 1e-2
    """ridge regularisation (paper App. B.2: 1e-2)"""
    pool_size: int = 0
    """draw the shots from the first pool_size training images (0 = all)"""
    query_size: int = 0
    """score on the first query_size test images (0 = all)"""
    batch_size: int = 512
    """feature-extraction batch size"""
    device: str = "cpu"
    """torch device"""
    out: str = ""
    """also write the JSON result to this file (atomically)"""


def load_checkpoint(path, device="cpu"):
    """(FlexiViT, checkpoint dict) from a train_vit.py checkpoint; anything else is one line naming the file."""
    import flexivit
    if not os.path.isfile(path):
        raise UserError(f"--ckpt {path} is a folder; give its ckpt.pt" if os.path.isdir(path) else f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:   # a checkpoint of your own holding other Python objects
        ckpt = _load_any(path, device)
    except Exception as e:           # truncated or not a torch file: torch raises many kinds
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "model" not in ckpt:
        raise UserError(f"{path} is not a train_vit.py checkpoint (needs keys 'model_args' and 'model')")
    try:
        model = flexivit.FlexiViT(**ckpt["model_args"])
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{path}: state dict does not fit model_args: {str(e).splitlines()[0]}") from None
    return model.to(device), ckpt


def _load_any(path, device):
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None


def check_flags(cfg):
    """Every flag in range, before any work."""
    if cfg.seeds < 1 or not cfg.shots or min(cfg.shots) < 1:
        raise UserError("--seeds and every --shots value must be >= 1")
    if not cfg.reg > 0:
        raise UserError(f"--reg {cfg.reg}: the ridge regulariser must be > 0")
    for name in ("patch", "pool_size", "query_size", "batch_size"):
        if getattr(cfg, name) < (1 if name == "batch_size" else 0):
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)} is out of range")
    if cfg.out and (os.path.isdir(cfg.out) or cfg.out.endswith(os.sep)):
        raise UserError(f"--out {cfg.out} is a folder; give a file name such as fewshot.json")
    if cfg.out:
        check_out_dir(Path(cfg.out).parent, "--out")
    return resolve_device(cfg.device)


def main(cfg):
    device = check_flags(cfg)
    model, ckpt = load_checkpoint(cfg.ckpt, device)
    patch = cfg.patch or ckpt.get("patch") or (ckpt.get("config") or {}).get("patch") or model.base_patch
    train_x, train_y, test_x, test_y = load_dataset(cfg.data_dir)
    if not isinstance(patch, int) or train_x.shape[-1] % patch:
        raise UserError(f"--patch {patch} does not divide the images' side {train_x.shape[-1]}")
    if not torch.is_tensor(train_x) and not cfg.pool_size:       # a prepared folder: read memory-mapped
        raise UserError(f"{cfg.data_dir}: a prepared train split of {len(train_x)} images; pass --pool-size "
                        "(e.g. 50000) to draw the shots from its first images (a uniform sample)")
    if cfg.pool_size:
        train_x, train_y = train_x[:cfg.pool_size], train_y[:cfg.pool_size]
    if not torch.is_tensor(test_x):
        test_x, test_y = test_x[:cfg.query_size or len(test_x)], test_y[:cfg.query_size or len(test_x)]
    if cfg.query_size:
        test_x, test_y = test_x[:cfg.query_size], test_y[:cfg.query_size]
    norm = normalize
    result = evaluate(model, patch, norm(train_x), train_y, norm(test_x), test_y,
                      shots=cfg.shots, seeds=tuple(range(cfg.seeds)), reg=cfg.reg, batch_size=cfg.batch_size)
    result = {"patch": patch, **result}
    line = dumps(result)                                 # strict JSON: a NaN error is null
    print(line)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cfg.out, lambda tmp: Path(tmp).write_text(line + "\n"))
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main, Config, "eval_fewshot.py"))
