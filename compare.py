"""Compare runs at equal error: how much compute and wall time each needed (paper Fig. 5 and 7).

The paper's headline number is read off like this: take the best *static* run (one
fixed shape for the whole run), take its final error E*, and for every other run
find the first point of its curve at or below E*. The FLOPs (and training seconds)
spent up to that point, against the best static run's, are the savings.

A curve is linearly interpolated in log-compute between evaluations, so the point
where a run crosses E* does not depend on how densely it was evaluated. A run that
never reaches E* is reported as such, with its best error.

    python compare.py --runs runs/static_p14 runs/static_p7 runs/scheduled --out-dir runs/compare

writes `comparison.json`, `comparison.png` (error against FLOPs, switch points
marked) and prints a table. `--target` overrides E*.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import tyro


class UserError(ValueError):
    """Bad input: reported as one line, exit code 2."""


@dataclasses.dataclass
class Config:
    runs: tuple[str, ...]
    """Run folders (each holding log.jsonl) or log.jsonl files to compare."""
    metric: str = "fewshot10_error"
    """Metric to compare at, as named in the logs (fewshot10_error, test_error, val_loss, ...)."""
    target: float | None = None
    """Error to reach; default: the best static run's final value of the metric."""
    out_dir: str = "runs/compare"
    """Folder for comparison.json and comparison.png."""
    plot: bool = True
    """Write comparison.png."""


@dataclasses.dataclass
class Run:
    name: str
    kind: str  # "static", or the schedule kind ("law", "linear", "log", "random", ...)
    flops: np.ndarray
    wall: np.ndarray
    error: np.ndarray
    configs: list  # the config in force at each evaluation


def read_run(path: str, metric: str) -> Run:
    """Read one run's log.jsonl; the run's kind comes from its header's config."""
    p = Path(path)
    log = p / "log.jsonl" if p.is_dir() else p
    if not log.is_file():
        raise UserError(f"{log}: no such log; pass run folders that hold log.jsonl")
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    try:
        rows = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as e:
        raise UserError(f"{log}: line {e.doc[:40]!r} is not JSON") from None
    header = next((r for r in rows if r.get("type") == "header"), {})
    evals = [r for r in rows if r.get("type", "eval") == "eval" and "flops" in r]
    if not evals:
        raise UserError(f"{log}: no evaluation records")
    if metric not in evals[-1]:
        names = sorted(k for k, v in evals[-1].items() if isinstance(v, float) and k not in ("flops", "wall"))
        raise UserError(f"{log}: no metric {metric!r}; the log has {', '.join(names)}")
    cfg = header.get("config", {})
    kind = "static"
    if cfg.get("schedule"):
        kind = header.get("schedule_kind") or _schedule_kind(cfg["schedule"])
    elif cfg.get("random"):
        kind = "random"
    if p.is_file() and p.name != "log.jsonl":   # a log saved under a name of its own keeps that name
        name = p.stem
    else:
        name = header.get("run") or (p.name if p.is_dir() else p.parent.name)
    return Run(name=name, kind=kind,
               flops=np.array([r["flops"] for r in evals], float),
               wall=np.array([r.get("wall", math.nan) for r in evals], float),
               error=np.array([r[metric] for r in evals], float),
               configs=[r.get("config", {}) for r in evals])


def _schedule_kind(path: str) -> str:
    try:
        return json.loads(Path(path).read_text()).get("kind", "law")
    except (OSError, json.JSONDecodeError):
        return "scheduled"


def crossing(x: np.ndarray, error: np.ndarray, target: float) -> float:
    """First x at which the curve reaches `target`, interpolating in log x; nan if never."""
    below = np.nonzero(error <= target)[0]
    if len(below) == 0:
        return math.nan
    i = below[0]
    if i == 0 or not (x[i - 1] > 0):
        return float(x[i])
    # error falls from error[i-1] > target to error[i] <= target between x[i-1] and x[i]
    t = (error[i - 1] - target) / (error[i - 1] - error[i])
    return float(math.exp(math.log(x[i - 1]) + t * (math.log(x[i]) - math.log(x[i - 1]))))


def compare(runs: list[Run], target: float | None = None) -> dict:
    """The comparison table as a dict: target, best static run, per run FLOPs/wall to target."""
    static = [r for r in runs if r.kind == "static"]
    if target is None:
        if not static:
            raise UserError("no static run among --runs; pass one, or set --target")
        best = min(static, key=lambda r: r.error[-1])
        target = float(best.error[-1])
    else:  # the static run that reaches the given target with the least compute
        reach = [(crossing(r.flops, r.error, target), r) for r in static]
        reach = [(f, r) for f, r in reach if f == f]
        best = min(reach, key=lambda fr: fr[0])[1] if reach else None
    ref_flops = crossing(best.flops, best.error, target) if best else math.nan
    ref_wall = crossing(best.wall, best.error, target) if best else math.nan
    rows = []
    for r in runs:
        f, w = crossing(r.flops, r.error, target), crossing(r.wall, r.error, target)
        rows.append({
            "run": r.name, "kind": r.kind, "final_error": float(r.error[-1]),
            "best_error": float(r.error.min()), "final_flops": float(r.flops[-1]),
            "flops_to_target": f, "wall_to_target": w,
            "flops_savings": 1 - f / ref_flops if f == f and ref_flops == ref_flops else None,
            "wall_savings": 1 - w / ref_wall if w == w and ref_wall == ref_wall else None,
            "switches": [{"flops": float(r.flops[i]), "config": r.configs[i]}
                         for i in range(1, len(r.configs)) if r.configs[i] != r.configs[i - 1]],
        })
    return {"version": 1, "target_error": target, "best_static": best.name if best else None,
            "best_static_flops": ref_flops, "best_static_wall": ref_wall, "runs": rows}


def table(result: dict, metric: str) -> str:
    def fmt(v, spec, unit=""):
        width = int(spec.split(".")[0]) + len(unit)
        return f"{'never':>{width}}" if v is None or v != v else format(v, spec) + unit
    lines = [f"target {metric} = {result['target_error']:.4f} (best static run: {result['best_static']})",
             f"{'run':<24} {'kind':<8} {'final':>7} {'FLOPs to target':>16} {'saved':>7} "
             f"{'wall to target':>15} {'saved':>7}"]
    for r in result["runs"]:
        lines.append(f"{r['run'][:24]:<24} {r['kind']:<8} {r['final_error']:>7.4f} "
                     f"{fmt(r['flops_to_target'], '16.3e')} "
                     f"{fmt(None if r['flops_savings'] is None else 100 * r['flops_savings'], '6.1f', '%')} "
                     f"{fmt(r['wall_to_target'], '14.1f', 's')} "
                     f"{fmt(None if r['wall_savings'] is None else 100 * r['wall_savings'], '6.1f', '%')}")
    return "\n".join(lines)


def plot(runs: list[Run], result: dict, metric: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        style = "-" if r.kind == "static" else ("-" if r.kind == "law" else "--")
        lw = 2.5 if r.kind == "law" else 1.2
        (line,) = ax.plot(r.flops, r.error, style, lw=lw, label=f"{r.name} ({r.kind})")
        sw = [i for i in range(1, len(r.configs)) if r.configs[i] != r.configs[i - 1] and r.kind != "random"]
        ax.plot(r.flops[sw], r.error[sw], "x", ms=9, mew=2, color=line.get_color())
    ax.axhline(result["target_error"], color="k", lw=0.8, ls=":", label="target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel(metric)
    ax.set_title("error against compute (crosses: switch points)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main(cfg: Config) -> dict:
    runs = [read_run(p, cfg.metric) for p in cfg.runs]
    result = compare(runs, cfg.target)
    result["metric"] = cfg.metric
    os.makedirs(cfg.out_dir, exist_ok=True)
    out = os.path.join(cfg.out_dir, "comparison.json")
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(out + ".tmp", out)
    if cfg.plot:
        plot(runs, result, cfg.metric, os.path.join(cfg.out_dir, "comparison.png"))
    print(table(result, cfg.metric))
    return result


if __name__ == "__main__":
    try:
        main(tyro.cli(Config))
    except UserError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        sys.exit(2)
