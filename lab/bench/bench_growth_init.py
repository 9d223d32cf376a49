"""Benchmark of the growth initialisation (paper App. C, Fig. 17) and of re-warming the learning rate after growth,
over seeds: which way of growing a ViT's width should the project use by default?

Per seed: a small FlexiViT (default V64-4, patch 14, head size 32) trains for --flops-before FLOPs; from that one
checkpoint, each variant grows the width (default 64 -> 128, 2 -> 4 heads) and trains on with the carried-over AdamW
state (expand.expand_optimizer), on the same data order. Variants: "g<gamma>" (new entries N(0, gamma sigma^2),
gamma = 0 is zero-init), "preserve" (exactly function preserving, random read-side entries at gamma 1), "none"
(the small model continues: the reference); a "+rw" suffix re-warms the learning rate linearly over --rewarm steps
after the growth (train_vit.py --rewarm). Per variant and seed:
  recovery_flops  FLOPs after the growth until the test error is back at the pre-growth error (the mean of the
                  last --pre-evals evaluations before growing, so one noisy evaluation does not set it);
  error_at        the test error --later FLOPs after the growth (interpolated in FLOPs between evaluations);
then their means over seeds with 95% t-intervals. This is also the switch cost of a width growth that
schedule.py --switch-cost charges (the FLOPs lost to the jump, at this scale and this point of training).

    python bench/bench_growth_init.py --out results/growth-init/growth_init.json     # ~30 min on one core
    python bench/bench_growth_init.py --seeds 0 --variants g0 g1 --flops-before 1e10 --steps-after 20 --test-images 200

Results land in --out after every (seed, variant), a plot of the curves (Fig. 17's form) beside it at the end, and
the pre-growth checkpoints in --work-dir: a killed run continues where it stopped when started again with the same
flags, and a seed whose variants are all in --out is not trained again. Training as train_vit.py's (AdamW 0.9/0.999,
weight decay 0.01, label smoothing 0.2, clip 1.0, warm-up, constant LR), without augmentation; the error is
the top-1 test error of the model's own head on --test-images test images.
"""
import copy
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import expand  # noqa: E402
import flexivit  # noqa: E402
from data import UserError, load_dataset  # noqa: E402
from lab import write_json  # noqa: E402
from bench_growth import test_error, to_float  # noqa: E402  (the same measure as the one-growth benchmark)


@dataclass
class Config:
    model: str = "V64-4"  # model before growth (flexivit name)
    head_dim: int = 32  # head size, kept when growing
    new_width: int = 128  # width after growth
    patch: int = 14  # patch size (fixed)
    variants: tuple[str, ...] = ("g0", "g0.25", "g0.5", "g1", "g1.5", "preserve", "none", "g0+rw", "g1+rw",
                                 "preserve+rw")
    """g<gamma>, preserve, none; +rw: re-warm the learning rate over --rewarm steps after growing"""
    seeds: tuple[int, ...] = (0, 1, 2)
    flops_before: float = 2e12  # training FLOPs of the small model before growth (6 x block MACs x examples)
    steps_after: int = 500
    """training steps after growth, per variant (more where they do not reach --later FLOPs: "none")"""
    later: float = 1e12  # report the error this many FLOPs after the growth
    early: float = 3e11  # also report the error this many FLOPs after the growth (read off the stored curves)
    merge: tuple[str, ...] = ()
    """other result files (e.g. one per seed, run in parallel) whose rows join --out's; nothing is trained for them"""
    rewarm: int = 50  # re-warm-up steps of the +rw variants
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    label_smoothing: float = 0.2
    clip: float = 1.0
    evals_after: tuple[int, ...] = (0, 10, 25, 50, 75, 100, 125, 150, 200, 250, 300, 350, 400, 450, 500)
    """steps after growth at which to evaluate (clipped to --steps-after, which is always evaluated)"""
    pre_evals: int = 3  # evaluations before growing (the last 3 x 50 steps) averaged into the pre-growth error
    test_images: int = 5000
    data_dir: str = "/usr/share/datasets/fashion-mnist"
    threads: int = 1
    out: str = "results/growth-init/growth_init.json"
    work_dir: str = "runs/growth-init"  # pre-growth checkpoints (one per seed)




def make_opt(model, cfg):
    ps = list(model.parameters())
    return torch.optim.AdamW([{"params": [p for p in ps if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                              {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.999))


def steps(model, opt, cfg, data, n, start, rewarm_from=None, evals=(), on_eval=None):
    """n AdamW steps from global step `start` (data order seeded by it); on_eval(k) before step k in evals."""
    x, y = data
    gen = torch.Generator().manual_seed(cfg.seed_now * 100003 + start)
    for k in range(n + 1):
        if k in evals and on_eval:
            on_eval(k)
        if k == n:
            return
        t = start + k
        scale = min(1.0, (t + 1) / cfg.warmup)
        if rewarm_from is not None:
            scale = min(scale, (t - rewarm_from + 1) / cfg.rewarm)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * scale
        idx = torch.randint(len(x), (cfg.batch_size,), generator=gen)
        loss = F.cross_entropy(model(to_float(x[idx]), cfg.patch), y[idx], label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()


def pretrained(cfg, seed, data, test):
    """The small model after --flops-before FLOPs, its optimiser, the pre-growth error; cached in --work-dir."""
    path = os.path.join(cfg.work_dir, f"pre_s{seed}.pt")
    torch.manual_seed(seed)
    small = flexivit.build(cfg.model, image_size=data[0].shape[-1], in_chans=data[0].shape[1])
    model = flexivit.FlexiViT(**{**small.model_args(), "heads": small.width // cfg.head_dim})
    opt = make_opt(model, cfg)
    n = math.ceil(cfg.flops_before / (6 * model.macs(cfg.patch) * cfg.batch_size))
    if os.path.exists(path):
        ck = torch.load(path, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        return model, opt, n, ck["errors"]
    errors = []
    pre = {n - 50 * i for i in range(cfg.pre_evals)}
    steps(model, opt, cfg, data, n, 0, evals=pre, on_eval=lambda k: errors.append(test_error(model, cfg.patch, *test)))
    os.makedirs(cfg.work_dir, exist_ok=True)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "errors": errors}, path + ".tmp")
    os.replace(path + ".tmp", path)
    return model, opt, n, errors


def grow(model, opt, variant, cfg):
    init = variant.split("+")[0]
    if init == "none":
        return
    if init != "preserve" and not (init.startswith("g") and _float(init[1:]) is not None):
        raise UserError(f"variant {variant!r}: use g<gamma> (e.g. g0.5), preserve or none, with an optional +rw")
    gamma = 1.0 if init == "preserve" else float(init[1:])
    expand.expand_optimizer(opt, expand.expand_width(model, cfg.new_width, gamma=gamma, preserve=init == "preserve"))


def _float(s):
    try:
        return float(s)
    except ValueError:
        return None


def run_variant(cfg, variant, base, n_before, err0, data, test):
    m, o = copy.deepcopy(base)                   # one deepcopy: the optimiser keeps pointing at m
    torch.manual_seed(cfg.seed_now * 7919 + 1)
    grow(m, o, variant, cfg)
    per_step = 6 * m.macs(cfg.patch) * cfg.batch_size
    n = max(cfg.steps_after, math.ceil(cfg.later / per_step))     # "none" (cheaper steps) also reaches --later
    curve, scale = [], n / cfg.steps_after
    evals = {round(k * scale) for k in cfg.evals_after if k <= cfg.steps_after} | {n}
    steps(m, o, cfg, data, n, n_before, rewarm_from=n_before if variant.endswith("+rw") else None,
          evals=evals, on_eval=lambda k: curve.append((k, k * per_step, test_error(m, cfg.patch, *test))))
    back = next((f for _, f, e in curve if e <= err0), None)
    fl, er = np.array([c[1] for c in curve]), np.array([c[2] for c in curve])
    later = float(np.interp(cfg.later, fl, er)) if fl[-1] >= cfg.later else None
    return {"variant": variant, "seed": cfg.seed_now, "error_before": err0, "error_after_growth": curve[0][2],
            "jump": curve[0][2] - err0, "recovery_flops": back, "error_at_later": later, "curve": curve}


def interval(v):
    v = [x for x in v if x is not None]
    if not v:
        return {"mean": None, "ci95": None, "n": 0}
    from scipy import stats
    m = float(np.mean(v))
    if len(v) < 2:
        return {"mean": m, "ci95": None, "n": 1}
    h = float(stats.t.ppf(0.975, len(v) - 1) * np.std(v, ddof=1) / math.sqrt(len(v)))
    return {"mean": m, "ci95": [m - h, m + h], "n": len(v)}


def at(curve, flops):
    """The error at `flops` after the growth, interpolated between evaluations (None past the curve's end)."""
    fl, er = [c[1] for c in curve], [c[2] for c in curve]
    return float(np.interp(flops, fl, er)) if fl[-1] >= flops else None


def summarize(cfg, rows):
    out = {}
    for v in cfg.variants:
        r = [x for x in rows if x["variant"] == v]
        out[v] = {"seeds": len(r), "recovered": sum(x["recovery_flops"] is not None for x in r),
                  "jump": interval([x["jump"] for x in r]), "recovery_flops": interval([x["recovery_flops"] for x in r]),
                  "error_at_later": interval([x["error_at_later"] for x in r]),
                  "error_at_early": interval([at(x["curve"], cfg.early) for x in r])}
    return out


def save(cfg, rows):
    """--out, atomically: the config, every (seed, variant) row, the summary over seeds."""
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    write_json(cfg.out, {"version": 1, "config": dataclasses.asdict(cfg), "rows": rows,
                         "summary": summarize(cfg, rows)})


def plot(cfg, rows, path):
    """Fig. 17's form: the test error against the FLOPs since the growth, mean over seeds, one line per variant
    (dashed: re-warmed); the dotted line is the pre-growth error. Written atomically beside --out."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for v in cfg.variants:
        curves = [np.array(r["curve"], dtype=float) for r in rows if r["variant"] == v]
        n = min((len(c) for c in curves), default=0)
        if n:                                            # the seeds share the evaluation steps
            mean = np.mean([c[:n] for c in curves], axis=0)
            ax.plot(mean[:, 1], mean[:, 2], "--" if v.endswith("+rw") else "-", label=f"{v} ({len(curves)} seeds)")
    before = float(np.mean([r["error_before"] for r in rows])) if rows else None
    if before is not None:
        ax.axhline(before, color="k", ls=":", lw=1, label="before growth")
        ax.set_ylim(top=min(ax.get_ylim()[1], before + 0.12))     # the first steps of gamma 1.5 leave the page
    ax.set_xlabel("FLOPs after the growth")
    ax.set_ylabel(f"test error ({cfg.test_images} images), mean over seeds")
    ax.set_title(f"{cfg.model} -> width {cfg.new_width}, patch {cfg.patch}: how to initialise the growth (Fig. 17)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def main(cfg):
    torch.set_num_threads(cfg.threads)
    tx, ty, vx, vy = load_dataset(cfg.data_dir)
    data, test = (tx, ty), (vx[:cfg.test_images], vy[:cfg.test_images])
    rows = json.load(open(cfg.out))["rows"] if os.path.exists(cfg.out) else []
    for path in cfg.merge:
        have = {(r["seed"], r["variant"]) for r in rows}
        rows += [r for r in json.load(open(path))["rows"] if (r["seed"], r["variant"]) not in have]
    done = {(r["seed"], r["variant"]) for r in rows}
    for seed in cfg.seeds:
        cfg.seed_now = seed
        if all((seed, v) in done for v in cfg.variants):     # nothing left to train: no pre-growth run either
            continue
        model, opt, n, errors = pretrained(cfg, seed, data, test)
        err0 = float(np.mean(errors))
        print(f"seed {seed}: {cfg.model} patch {cfg.patch}, {n} steps, pre-growth error {err0:.4f} "
              f"(evals {', '.join(f'{e:.4f}' for e in errors)})", flush=True)
        for v in cfg.variants:
            if (seed, v) in done:
                continue
            r = run_variant(cfg, v, (model, opt), n, err0, data, test)
            rows.append(r)
            print(f"  {v:12s} jump {r['jump']:+.4f}  back after "
                  + (f"{r['recovery_flops']:.3g} FLOPs" if r["recovery_flops"] is not None else "never")
                  + f"  error {cfg.later:.0e} FLOPs later {r['error_at_later']}", flush=True)
            save(cfg, rows)
    save(cfg, rows)
    plot(cfg, rows, os.path.splitext(cfg.out)[0] + ".png")
    for v, s in summarize(cfg, rows).items():
        f = lambda d, k=1.0: "—" if d["mean"] is None else (f"{d['mean'] * k:.4g}" + (
            f" [{d['ci95'][0] * k:.4g}, {d['ci95'][1] * k:.4g}]" if d["ci95"] else ""))
        print(f"{v:12s} recovered {s['recovered']}/{s['seeds']}  recovery FLOPs {f(s['recovery_flops'])}  "
              f"jump {f(s['jump'])}  error {cfg.early:.0e} later {f(s['error_at_early'])}  "
              f"error {cfg.later:.0e} later {f(s['error_at_later'])}")


if __name__ == "__main__":
    try:
        main(tyro.cli(Config))
    except UserError as e:
        print(f"bench_growth_init.py: error: {e}", file=sys.stderr)
        sys.exit(2)
