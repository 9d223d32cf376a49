"""Does bf16 autocast train as well as float32? Pairs of identical runs, one per precision (run by hand).

The issue this answers: a bf16 run and a float32 run of the same configuration and seed end within 0.01
10-shot error of each other (ViT V64-4 at patch 7 on Fashion-MNIST, 1e13 FLOPs), and the LM's final
validation loss within 1%. Runs go through the trainers' own main() (train_vit.py, train_lm.py), logs
in --out-dir/{vit,lm}-{fp32,bf16}/, curves in --out-dir/precision.png, and a table is printed.

This measures numerics, not speed: on a CPU without bf16 matrix units the trainers refuse --precision
bf16 (it would only be slower), so this script lets bf16 run anyway by telling runtime.py the units are
there. bf16 products accumulate in float32 with AMX and with avx512_bf16 alike, so the numbers carry
over to a machine with AMX. A rerun resumes the runs it finds.

    python bench/bench_precision_accuracy.py --threads 1
"""
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
import runtime  # noqa: E402
import train_lm  # noqa: E402
import train_vit  # noqa: E402


@dataclass
class Config:
    out_dir: str = "runs/precision-accuracy"  # where the four runs and the plot go
    data_dir: str = "/usr/share/datasets/fashion-mnist"  # Fashion-MNIST IDX files
    vit_flops: float = 1e13  # budget of each ViT run (V64-4, patch 7)
    lm_flops: float = 3e12  # budget of each LM run (L64-4, context 128, 4096 tokens a step)
    threads: int = 1  # torch threads per run
    seed: int = 0  # seed of both runs of a pair


def records(path):
    return [r for r in map(json.loads, Path(path).read_text().splitlines()) if r.get("type") == "eval"]


def run_pair(cfg, out):
    runtime.bf16_matrix_units = lambda device: (True, "bf16 (numerics only)")   # see the module docstring
    for prec in ("fp32", "bf16"):
        vit = out / f"vit-{prec}"
        train_vit.main(train_vit.Config(data_dir=cfg.data_dir, model="V64-4", patch=7, flops=cfg.vit_flops,
                                        evals=12, precision=prec, seed=cfg.seed, threads=cfg.threads,
                                        out_dir=str(vit), progress=False, resume=True))
        train_lm.main(train_lm.Config(model="L64-4", context=128, flops=cfg.lm_flops, evals=12, precision=prec,
                                      seed=cfg.seed, threads=cfg.threads, out_dir=str(out / f"lm-{prec}"),
                                      cache_dir=str(out / ".cache"), progress=False, resume=True))


def plot(out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind, metric in ((axes[0], "vit", "fewshot10_error"), (axes[1], "lm", "val_loss")):
        for prec in ("fp32", "bf16"):
            r = records(out / f"{kind}-{prec}" / "log.jsonl")
            ax.plot([x["flops"] for x in r], [x[metric] for x in r], "o-", label=prec, ms=3)
        ax.set(xscale="log", xlabel="training FLOPs", ylabel=metric, title=f"{kind}: float32 vs bf16 autocast")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "precision.png", dpi=110)


def main(cfg):
    out = Path(cfg.out_dir)
    run_pair(cfg, out)
    plot(out)
    print(f"{'pair':<5} {'metric':<16} {'fp32':>8} {'bf16':>8} {'difference':>11}  wall fp32 / bf16")
    for kind, metric in (("vit", "fewshot10_error"), ("lm", "val_loss")):
        a, b = (records(out / f"{kind}-{p}" / "log.jsonl")[-1] for p in ("fp32", "bf16"))
        diff = b[metric] - a[metric] if kind == "vit" else (b[metric] / a[metric] - 1)
        unit = "" if kind == "vit" else " (rel.)"
        print(f"{kind:<5} {metric:<16} {a[metric]:8.4f} {b[metric]:8.4f} {diff:+11.4f}{unit}  "
              f"{a['wall']:.0f} s / {b['wall']:.0f} s")
    print(f"curves: {out / 'precision.png'}")


if __name__ == "__main__":
    import tyro
    main(tyro.cli(Config))
