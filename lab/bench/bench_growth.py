"""Benchmark of width growth (paper App. C, Fig. 17): how much compute does a grown ViT need to get
back to the error it had before growing, for the paper's init (gamma=1), zero-init (gamma=0) and the
exactly function-preserving growth (preserve=True)?

Trains a small FlexiViT (default V64-4, patch 7) on Fashion-MNIST for --steps-before steps, grows its
width (default 64 -> 128, head size fixed, so 2 -> 4 heads) with each scheme from the same checkpoint,
continues training with the carried-over AdamW state, and reports per scheme the test error right
after growing and the training FLOPs (6 x the model's blocks-only MACs x examples) after the growth
until the test error is back at its pre-growth value. "none" continues the small model as a reference.

    python bench/bench_growth.py                                  # full run, ~10 min on 2 CPU cores
    python bench/bench_growth.py --steps-before 20 --steps-after 20 --eval-every 10 --test-images 200
"""
import copy
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import expand  # noqa: E402
import flexivit  # noqa: E402


class UserError(ValueError):
    pass


from data import UserError as DataError, load_dataset  # noqa: E402  (the trainer's loader: IDX, CIFAR, .npz)


@dataclass
class Config:
    model: str = "V64-4"  # model before growth (flexivit name)
    new_width: int = 128  # width after growth (a multiple of the head size)
    patch: int = 7  # patch size (fixed)
    modes: tuple[str, ...] = ("paper", "zero", "preserve", "none")
    """growth schemes: paper (N(0, gamma sigma^2)), zero (gamma=0), preserve (exact), none (no growth)"""
    gamma: float = 1.0  # variance factor of the paper's init (mode 'paper'; 'preserve' uses it for its random entries)
    steps_before: int = 1500  # training steps of the small model before growth
    steps_after: int = 1000  # training steps after growth, per mode
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100  # linear learning-rate warm-up steps at the start (then constant, as in the paper)
    rewarm: int = 0  # linear learning-rate re-warm-up steps after growth (0: none, as in the paper)
    label_smoothing: float = 0.2
    eval_every: int = 50  # evaluate every this many steps after growth (plus at 0, 10 and 25 steps)
    test_images: int = 2000  # test images used for the error
    data_dir: str = "/usr/share/datasets/fashion-mnist"  # folder with the Fashion-MNIST IDX .gz files
    seed: int = 0
    threads: int = 0  # torch threads (0: torch's default)
    out: str = ""  # optional JSON file for the results


def load_data(data_dir):
    """(train_x, train_y, test_x, test_y): uint8 images [N, C, H, W], int64 labels."""
    return load_dataset(data_dir)


def to_float(x):
    return x.float() / 127.5 - 1.0


@torch.no_grad()
def test_error(model, patch, x, y):
    model.eval()
    wrong = sum((model(to_float(x[i:i + 500]), patch).argmax(1) != y[i:i + 500]).sum().item()
                for i in range(0, len(x), 500))
    model.train()
    return wrong / len(x)


def train(model, opt, cfg, data, steps, start_step, rewarm_from=None, evals=(), on_eval=None):
    """`steps` AdamW steps; calls on_eval(step, flops_since_start) at the steps in `evals`."""
    train_x, train_y = data
    gen = torch.Generator().manual_seed(cfg.seed + start_step)
    flops_per_step = 6 * model.macs(cfg.patch) * cfg.batch_size
    for step in range(steps + 1):
        if step in evals and on_eval is not None:
            on_eval(step, step * flops_per_step)
        if step == steps:
            break
        t = start_step + step
        scale = min(1.0, (t + 1) / cfg.warmup) if cfg.warmup else 1.0
        if rewarm_from is not None and cfg.rewarm:
            scale = min(scale, (t - rewarm_from + 1) / cfg.rewarm)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * scale
        idx = torch.randint(len(train_x), (cfg.batch_size,), generator=gen)
        loss = F.cross_entropy(model(to_float(train_x[idx]), cfg.patch), train_y[idx],
                               label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return flops_per_step * steps


def grow(model, opt, mode, cfg):
    if mode == "none":
        return
    mapping = expand.expand_width(model, cfg.new_width, gamma=0.0 if mode == "zero" else cfg.gamma,
                                  preserve=mode == "preserve")
    expand.expand_optimizer(opt, mapping)


def main(cfg):
    bad = [m for m in cfg.modes if m not in ("paper", "zero", "preserve", "none")]
    if bad:
        raise UserError(f"unknown mode(s) {bad}; use paper, zero, preserve, none")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    train_x, train_y, test_x, test_y = load_data(cfg.data_dir)
    test_x, test_y = test_x[:cfg.test_images], test_y[:cfg.test_images]
    data = (train_x, train_y)

    model = flexivit.build(cfg.model, image_size=train_x.shape[-1], in_chans=train_x.shape[1])
    if cfg.new_width <= model.width:
        raise UserError(f"--new-width {cfg.new_width} must exceed the model's width {model.width}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    t0 = time.time()
    flops0 = train(model, opt, cfg, data, cfg.steps_before, 0)
    err0 = test_error(model, cfg.patch, test_x, test_y)
    print(f"{cfg.model} patch {cfg.patch}: {cfg.steps_before} steps, {flops0:.3g} FLOPs, "
          f"test error {err0:.4f} ({time.time() - t0:.0f}s)")

    evals = sorted({0, 10, 25, *range(cfg.eval_every, cfg.steps_after + 1, cfg.eval_every)}
                   | {cfg.steps_after})
    results = []
    for mode in cfg.modes:
        m, o = copy.deepcopy((model, opt))        # one deepcopy: the optimizer keeps pointing at m
        torch.manual_seed(cfg.seed + 1)
        grow(m, o, mode, cfg)
        curve, t0 = [], time.time()
        train(m, o, cfg, data, cfg.steps_after, cfg.steps_before, rewarm_from=cfg.steps_before,
              evals=set(evals), on_eval=lambda s, f: curve.append((s, f, test_error(m, cfg.patch, test_x, test_y))))
        back = next(((s, f) for s, f, e in curve if e <= err0), None)
        r = dict(mode=mode, width=m.width, error_after_growth=curve[0][2], final_error=curve[-1][2],
                 recovery_steps=back[0] if back else None, recovery_flops=back[1] if back else None,
                 curve=curve, seconds=time.time() - t0)
        results.append(r)
        print(f"  {mode:8s} width {m.width}: error after growth {r['error_after_growth']:.4f}, "
              + (f"back to {err0:.4f} after {back[0]} steps / {back[1]:.3g} FLOPs"
                 if back else f"not back to {err0:.4f} in {cfg.steps_after} steps")
              + f", final {r['final_error']:.4f} ({r['seconds']:.0f}s)")
        print("           error at step: " + " ".join(f"{s}:{e:.3f}" for s, _, e in curve))
    if cfg.out:
        with open(cfg.out + ".tmp", "w") as f:
            json.dump(dict(config=dataclasses.asdict(cfg), error_before=err0, flops_before=flops0,
                           results=results), f, indent=1)
        os.replace(cfg.out + ".tmp", cfg.out)


if __name__ == "__main__":
    try:
        main(tyro.cli(Config))
    except (UserError, DataError, FileNotFoundError) as e:
        print(f"bench_growth.py: error: {e}", file=sys.stderr)
        sys.exit(2)
