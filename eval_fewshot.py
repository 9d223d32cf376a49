"""k-shot linear evaluation on frozen features: the paper's downstream metric E (Sec. 3, App. B.2).

The pre-logit features of k images per class, drawn from a pool by numpy's default_rng(seed), fit a ridge
regression (sklearn's Ridge, reg 1e-2) that classifies the queries; the error is the mean over the draws. In
closed form, on features X standardised by the support set, one-hot targets Y of +-1, a free bias b = mean(Y):

    W = (X^T X + reg I)^-1 X^T (Y - b)  =  X^T (X X^T + reg I)^-1 (Y - b)        (the dual form when n < d).

evaluate_all (the trainer's): ONE forward pass per image set serves every draw and model.head's top-1 errors.
The CLI evaluates a train_vit.py checkpoint (pool: its training set, queries: its test set), one JSON line:
    python eval_fewshot.py --ckpt runs/p7/ckpt.pt --data-dir /usr/share/datasets/fashion-mnist
"""
import contextlib, os, pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data import load_dataset, normalize
from runtime import UserError, atomic_write, check_out_dir, check_ranges, dumps, resolve_device, run_cli


@torch.no_grad()   # not inference_mode: a PI-resize matrix FlexiViT caches here must serve a later backward pass
def feature_pass(model, patch, images, batch_size=512, amp=None, predict=False):
    """ONE pass over images [N, C, H, W] (uint8: data.normalize'd here) in eval mode, inside `amp` (torch.autocast
    or None): (features [N, width], float32 on the CPU; model.head's top-1 predictions [N] on them, or None)."""
    device, was_training, feats, preds = next(model.parameters()).device, model.training, [], []
    model.eval()
    try:
        with amp if amp is not None else contextlib.nullcontext():
            for i in range(0, len(images), batch_size):
                x = images[i:i + batch_size].to(device)
                f = model.features(x if torch.is_floating_point(x) else normalize(x), patch)
                feats.append(f.float().cpu())
                if predict:
                    preds.append(model.head(f).argmax(1).cpu())   # forward(x) is head(features(x))
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(preds) if predict else None


def ridge_fit(x_support, y_support, num_classes, reg=1e-2):
    """The closed-form ridge of the module docstring on the standardised support features, the standardisation
    folded in to serve the raw ones: (W / std, b - (mean / std) W)."""
    mean, std = x_support.mean(0), x_support.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    xs = (x_support - mean) / std
    y = np.where(np.arange(num_classes) == np.asarray(y_support)[:, None], 1.0, -1.0)   # one-hot +-1 targets
    bias = y.mean(0)                       # the intercept: xs is centred, so it decouples
    n, d = xs.shape
    if n < d:                              # the dual form, the same solution
        w = xs.T @ np.linalg.solve(xs @ xs.T + reg * np.eye(n), y - bias)
    else:
        w = np.linalg.solve(xs.T @ xs + reg * np.eye(d), xs.T @ (y - bias))
    return w / std[:, None], bias - (mean / std) @ w


def draw_errors(train_feats, train_labels, test_feats, test_labels, shots=10, seeds=(0, 1, 2), reg=1e-2):
    """The k-shot error [len(seeds)] of ridge fits on `shots` examples per class, 16 draws per matrix product."""
    xtr, xte, yte = _array(train_feats, np.float64), _array(test_feats, np.float64), _array(test_labels, np.int64)
    classes, ytr_idx = np.unique(_array(train_labels, np.int64), return_inverse=True)   # labels -> 0..C-1
    by_class = [np.flatnonzero(ytr_idx == c) for c in range(len(classes))]
    if (fewest := min(len(ix) for ix in by_class)) < shots:
        raise UserError(f"{shots}-shot needs {shots} support examples per class, but a class has only {fewest}")
    picks = [np.concatenate([rng.choice(ix, size=shots, replace=False) for ix in by_class])
             for rng in map(np.random.default_rng, seeds)]            # one generator per seed, k per class
    fits = [ridge_fit(xtr[pick], ytr_idx[pick], len(classes), reg) for pick in picks]
    errors = []
    for i in range(0, len(fits), 16):
        w, b = (np.concatenate(part, axis=-1) for part in zip(*fits[i:i + 16]))   # [d, draws * C], [draws * C]
        pred = (xte @ w + b).reshape(len(xte), -1, len(classes)).argmax(2)  # [queries, draws]
        errors += np.mean(classes[pred] != yte[:, None], axis=0).tolist()
    return np.array(errors)


def _array(x, dtype):
    return x.detach().cpu().numpy().astype(dtype) if torch.is_tensor(x) else np.asarray(x, dtype=dtype)


def fewshot_error(train_feats, train_labels, test_feats, test_labels, shots=10, seeds=(0, 1, 2), reg=1e-2):
    """k-shot error of a ridge classifier (draw_errors): (mean, std) over the seeds (ddof=1; 0.0 for one)."""
    errors = draw_errors(train_feats, train_labels, test_feats, test_labels, shots, seeds, reg)
    return float(np.mean(errors)), float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0


def top1_error(pred, labels):
    return int((pred != labels.cpu()).sum()) / len(labels)


def evaluate_all(model, patch, ev, shots=(10,), draws=50, reg=1e-2, batch_size=512, amp=None):
    """The trainer's metrics, one pass per image set of `ev` (data.eval_images; queries ev["query"] or "query_set"):
    per k "fewshot{k}_error" (the mean of `draws` draws), "_std" (one draw's), "_sem"; "test_error", "train_error"."""
    run = lambda images, predict=False: feature_pass(model, patch, images, batch_size, amp, predict)  # noqa: E731
    (support, _), (test, test_pred), test_y = run(ev["support"][0]), run(ev["test"][0], True), ev["test"][1].cpu()
    query, query_y = (test, test_y) if ev.get("query") is None else (test[ev["query"].cpu()], test_y[ev["query"].cpu()])
    if ev.get("query_set") is not None:               # another dataset's query images (train_vit --fewshot-data)
        query, query_y = run(ev["query_set"][0])[0], ev["query_set"][1].cpu()
    out = {}
    for k in shots:
        mean, std = fewshot_error(support, ev["support"][1], query, query_y, k, range(draws), reg)
        out.update({f"fewshot{k}_error": mean, f"fewshot{k}_error_std": std, f"fewshot{k}_error_sem": std / draws**0.5})
    out["test_error"] = top1_error(test_pred, test_y)
    if ev.get("train") is not None:
        out["train_error"] = top1_error(run(ev["train"][0], True)[1], ev["train"][1])
    return out


def evaluate(model, patch, support_images, support_labels, query_images, query_labels,
             shots=(1, 5, 10, 25), seeds=(0, 1, 2), reg=1e-2, batch_size=512):
    """{"fewshot{k}_error": mean, "fewshot{k}_error_std": std} per k, the k shots drawn from support_images."""
    support, query = (feature_pass(model, patch, x, batch_size)[0] for x in (support_images, query_images))
    errors = {k: fewshot_error(support, support_labels, query, query_labels, k, seeds, reg) for k in shots}
    return {f"fewshot{k}_error{s}": v for k, e in errors.items() for s, v in zip(("", "_std"), e)}


@dataclass
class Config:
    ckpt: str  # checkpoint saved by train_vit.py (a dict with "model_args", "model", "config")
    data_dir: str = "/usr/share/datasets/fashion-mnist"  # dataset folder, read by train_vit.load_dataset
    patch: int = 0  # patch size to evaluate at; 0 = the checkpoint's "patch" (in force when saved) or config["patch"]
    shots: tuple[int, ...] = (1, 5, 10, 25)  # k values: examples per class in the support set
    seeds: int = 5  # number of draws of the support set (seeds 0..seeds-1)
    reg: float = 1e-2  # ridge regularisation (paper App. B.2: 1e-2)
    pool_size: int = 0  # draw the shots from the first pool_size training images (0 = all)
    query_size: int = 0  # score on the first query_size test images (0 = all)
    batch_size: int = 512  # feature-extraction batch size
    device: str = "cpu"  # torch device
    out: str = ""  # also write the JSON result to this file (atomically)


def load_checkpoint(path, device="cpu"):
    """(FlexiViT, checkpoint dict) from a train_vit.py checkpoint; anything else is one line naming the file."""
    import flexivit
    if not os.path.isfile(path):
        raise UserError(f"--ckpt {path} is a folder; give its ckpt.pt" if os.path.isdir(path) else f"no checkpoint at {path}")
    try:
        try:
            ckpt = torch.load(path, map_location=device, weights_only=True)
        except pickle.UnpicklingError:   # a checkpoint of your own holding other Python objects
            ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:               # truncated or not a torch file: torch raises many kinds
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "model" not in ckpt:
        raise UserError(f"{path} is not a train_vit.py checkpoint (needs keys 'model_args' and 'model')")
    try:
        model = flexivit.FlexiViT(**ckpt["model_args"])
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{path}: state dict does not fit model_args: {str(e).splitlines()[0]}") from None
    return model.to(device), ckpt


def check_flags(cfg):
    """Every flag in range, before any work; returns the torch device."""
    check_ranges(cfg, ("seeds", "reg", "batch_size"), (("shots", bool(cfg.shots) and min(cfg.shots) >= 1),
                 ("patch", cfg.patch >= 0), ("pool_size", cfg.pool_size >= 0), ("query_size", cfg.query_size >= 0)))
    if cfg.out and (os.path.isdir(cfg.out) or cfg.out.endswith(os.sep)):
        raise UserError(f"--out {cfg.out} is a folder; give a file name such as fewshot.json")
    if cfg.out:
        check_out_dir(Path(cfg.out).parent, "--out")
    return resolve_device(cfg.device)


def main(cfg):
    model, ckpt = load_checkpoint(cfg.ckpt, check_flags(cfg))
    patch = cfg.patch or ckpt.get("patch") or (ckpt.get("config") or {}).get("patch") or model.base_patch
    train_x, train_y, test_x, test_y = load_dataset(cfg.data_dir)
    if not isinstance(patch, int) or train_x.shape[-1] % patch:
        raise UserError(f"--patch {patch} does not divide the images' side {train_x.shape[-1]}")
    if not torch.is_tensor(train_x) and not cfg.pool_size:       # a prepared folder: read memory-mapped
        raise UserError(f"{cfg.data_dir}: a prepared train split of {len(train_x)} images; pass --pool-size "
                        "(e.g. 50000) to draw the shots from its first images (a uniform sample)")
    p, q = cfg.pool_size or len(train_x), cfg.query_size or len(test_x)   # a slice reads a prepared split
    train_x, train_y, test_x, test_y = train_x[:p], train_y[:p], test_x[:q], test_y[:q]
    result = {"patch": patch, **evaluate(model, patch, train_x, train_y, test_x, test_y, cfg.shots,
                                         tuple(range(cfg.seeds)), cfg.reg, cfg.batch_size)}
    print(line := dumps(result))                         # strict JSON: a NaN error is null
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cfg.out, lambda tmp: Path(tmp).write_text(line + "\n"))
    return result


def cli(args=None):                                      # args None: sys.argv
    return run_cli(main, Config, "eval_fewshot.py", args)


if __name__ == "__main__":
    raise SystemExit(cli())
