"""Compare runs at equal error: how much compute and wall time each needed (paper Fig. 5 and 7, App. F).

The paper's headline number: take the best *static* run (one fixed shape for the whole run),
take its final error E*, and for every other run find where its curve reaches E*. The FLOPs
(and training seconds) spent up to there, against the best static run's, are the savings.

Read off raw evaluations this number is noise. Two runs of the same training wobble by about
+-0.01 10-shot error from one evaluation to the next at a constant learning rate, and where the
curves are flat (dE/dlnC ~ -0.03 at the end of a ViT run) a +-0.005 shift of the target or of one
point moves the crossing by 15% of the compute. So this script reads every curve off a fit:

  * Static runs: the paper's law E = a(C+d)^-b + c (Eq. 1), fitted by fit_laws.py (Huber loss on
    ln E, nearly least absolute deviations: one wobbling evaluation barely moves it). The law is
    the right model for a static curve, so its value at the end of the run carries no smoothing
    bias, and it pools all ~14 evaluations.
  * Target E*: the fitted final value of the best static run (the lowest fitted final value).
  * Scheduled runs, stage by stage (never across a switch, where the error jumps): the law of the
    static run with the stage's config (same seed; else the reference's law), shifted in compute:
    E ~ law(k C), one parameter k fitted with soft-L1 residuals in ln E (scale 0.02 ~ one
    evaluation's noise), the evaluations weighted by a Gaussian of width 0.5 in ln C around where
    the stage reaches E*. Why not a free 4-parameter law per stage: a stage holds 4-6 evaluations
    after a switch, too few for 4 parameters, and its first ones are the error spike right after
    the switch, which no power law describes; one parameter pooled over the evaluations near the
    crossing, with a loss that caps the weight of outliers, is stable and unbiased (bench: without
    the window the spike costs 4 points of savings). Why not a moving average or a local linear
    smoother in ln C: both are biased on a convex curve (bench: -7 points of savings at a width of
    0.7 in ln C) and still let the last evaluation set the target.
    A stage with fewer than 3 evaluations is not read (too few to say anything about).
  * Crossing: the first compute where a read curve reaches E*, inside the stage's evaluations
    (never extrapolated past its last one).
  * Shared stretches are never credited: a scheduled run whose first stage has the same config
    as a static run of the same seed *is* that run until its first switch (same seed, data and
    steps), so its crossing only counts after the switch. A scheduled run whose configs over the
    whole run equal one static run's is labelled "same as static" and gets no savings.
  bench/bench_measure.py (curves shaped like `make reproduce`'s, a known saving of 10-40%): moving
  one evaluation by 0.01 moves the saving by at most 8 points (the raw crossing: up to "never");
  within 5 points of the truth in 63% of one-seed draws at noise sd 0.0025 (raw: 42%) and 30% at
  sd 0.005 (raw: 22%); under AR(1) noise no better than raw. 90% is out of reach for any measure
  at this noise on 14 evaluations: an oracle that knows the static law and the target exactly
  gets 82% and 53%. Run seeds and read the t-interval.

The raw first crossing (raw target, raw points, interpolated in log compute; what this script
reported before) is printed beside it, labelled raw.

Seeds: each run's seed is its header config's "seed". Runs are grouped across seeds by name
(the run name with any "seedN" removed, e.g. runs/seed1/sched_law and runs/seed2/sched_law).
Per seed the reference is that seed's best static run (not a mean static curve: each scheduled
run was scheduled from, and shares its first stage with, its own seed's static runs). Per group:
per-seed savings, their mean and a 95% Student-t interval.

    python compare.py --runs runs/static_p14 runs/static_p7 runs/sched_law --out-dir runs/compare

writes `comparison.json` (strict JSON), `comparison.png` (mean error against FLOPs per group,
min-max band over seeds, switch points marked) and prints a table. `--cost wall` makes wall
seconds the headline (paper App. F); both are always reported. `--target` overrides E*.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the core, at the repository root
from fit_laws import UserError as FitError, fit_law
from lab import write_json
from runtime import UserError, atomic_write, run_cli  # UserError: the one bad-input type


@dataclasses.dataclass
class Config:
    runs: tuple[str, ...]
    """Run folders (each holding log.jsonl) or log.jsonl files to compare, any number of seeds."""
    metric: str = "fewshot10_error"
    """Metric to compare at, as named in the logs (fewshot10_error, test_error, val_loss, ...)."""
    target: float | None = None
    """Error to reach; default: per seed, the best static run's fitted final value of the metric."""
    cost: Literal["flops", "wall"] = "flops"
    """Cost of the headline savings: FLOPs, or training wall seconds (App. F). Both are always reported."""
    laws: str | None = None
    """laws.json the schedules came from: refused if fitted on another metric than --metric."""
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
    seed: object = None  # header config "seed"
    group: str = ""  # name without its seed: runs of one group across seeds are averaged
    header: dict = dataclasses.field(default_factory=dict)  # header "config"
    gap: float | None = None  # final test_error - train_error, when the log has train_error
    path: str = ""  # the log file


# -----------------------------------------------------------------------------
# reading logs


def finite_number(x) -> bool:
    """A JSON number a float holds, not a bool or a string, and finite."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < 1e300 and math.isfinite(x)


def read_run(path: str, metric: str) -> Run:
    """Read one run's log.jsonl; the run's kind comes from its header's config."""
    p = Path(path)
    log = p / "log.jsonl" if p.is_dir() else p
    if not log.is_file():
        raise UserError(f"{log}: no such log; pass run folders that hold log.jsonl")
    rows, i = [], 0
    try:
        for i, ln in enumerate(log.read_text().splitlines(), 1):
            if ln.strip():
                rows.append((i, json.loads(ln)))
                if not isinstance(rows[-1][1], dict):
                    raise UserError(f"{log}:{i}: a record must be a JSON object")
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, a 5000-digit number
        raise UserError(f"{log}:{i}: cannot read ({type(e).__name__}: {str(e)[:200]})") from None
    header = next((r for _, r in rows if r.get("type") == "header"), {})
    evals = [(i, r) for i, r in rows if r.get("type", "eval") == "eval" and "flops" in r]
    if not evals:
        raise UserError(f"{log}: no evaluation records")
    evals = [(i, r) for i, r in evals if metric in r]
    if not evals:
        raise UserError(f"{log}: no record has metric {metric!r}; pass the --metric the runs logged")
    for i, r in evals:                                   # no result from values that are not numbers (issue 25)
        if bad := next((k for k in ("flops", metric, "wall") if k in r and not finite_number(r[k])), None):
            raise UserError(f"{log}:{i}: {bad} {r[bad]!r} is not a finite number; mend or drop the record")
        if not r[metric] >= 1e-300:                      # the curves are read in log-log, as fit_laws.py reads them
            raise UserError(f"{log}:{i}: {metric} {r[metric]!r} is not an error >= 1e-300; mend or drop the record")
    evals = [r for _, r in evals if r["flops"] > 0]
    try:
        flops, error = (np.array([float(r[k]) for r in evals]) for k in ("flops", metric))
        wall = np.array([float(r.get("wall", math.nan)) for r in evals])
        both = [r for r in evals if "test_error" in r and "train_error" in r]   # the train/test gap
        gap = float(both[-1]["test_error"]) - float(both[-1]["train_error"]) if both else None
    except (TypeError, ValueError, OverflowError) as e:   # OverflowError: a 400-digit integer
        raise UserError(f"{log}: a record's flops, wall, {metric} or train/test error is not a number ({e})") from None
    if len(evals) == 0 or np.any(np.diff(flops) <= 0):
        raise UserError(f"{log}: {'no record with flops > 0' if len(evals) == 0 else 'flops not increasing'}")
    cfg = header.get("config") if isinstance(header.get("config"), dict) else {}
    kind = "static"
    if cfg.get("schedule"):
        kind = header.get("schedule_kind") or _schedule_kind(cfg["schedule"])
    elif cfg.get("random"):
        kind = "random"
    if p.is_file() and p.name != "log.jsonl":   # a log saved under a name of its own keeps that name
        name = p.stem
    else:
        name = header.get("run") or (p.name if p.is_dir() else p.parent.name)
    return Run(name=name, kind=kind, flops=flops, wall=wall, error=error,
               configs=[r.get("config", {}) for r in evals], seed=cfg.get("seed"),
               group=group_of(name), header=cfg, gap=gap, path=str(log))


def group_of(name: str) -> str:
    """A run's name without its seed: "sched_law_s1" (reproduce.py's folders) and "seed1/sched_law" -> "sched_law"."""
    return re.sub(r"^seed[-_]?\d+[-_.]?|[-_.]seed[-_]?\d+|[-_]s\d+$", "", name) or name


def _schedule_kind(path: str) -> str:
    try:
        return json.loads(Path(path).read_text()).get("kind", "law")
    except (OSError, ValueError, RecursionError, AttributeError):
        return "scheduled"


def check_laws(path: str, metric: str) -> None:
    """--laws: refuse a laws.json fitted on another metric than the one compared at."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{path}: cannot read laws ({type(e).__name__}: {str(e)[:200]})") from None
    got = doc.get("metric") if isinstance(doc, dict) else None
    if got and got != metric:
        raise UserError(f"{path}: runs fitted on another metric ({got!r}, not --metric {metric!r}); "
                        f"pass --metric {got}")


# -----------------------------------------------------------------------------
# configs: which stretches of a run are some static run


def same_config(a: dict, ha: dict, b: dict, hb: dict) -> bool:
    """Two record configs name the same shape: equal on every key both know; a key a record lacks
    is looked up in its run's header config (a static run's records may omit "objective")."""
    shared = 0
    for k in set(a) | set(b):
        va, vb = a.get(k, ha.get(k)), b.get(k, hb.get(k))
        if va is None or vb is None:
            continue
        if va != vb:
            return False
        shared += 1
    return shared > 0


def stages(r: Run) -> list[tuple[int, int]]:
    """(start, end) index ranges of constant config; FlexiViT's random run is one stage."""
    if r.kind == "random":
        return [(0, len(r.error))]
    cut = [0] + [i for i in range(1, len(r.configs)) if r.configs[i] != r.configs[i - 1]] + [len(r.configs)]
    return list(zip(cut[:-1], cut[1:]))


def relation_to_static(r: Run, static: list[Run]) -> tuple[str | None, str | None, int]:
    """-> (same-as-static name, name of the static run sharing the first stage, first index that counts)."""
    if r.kind == "static":
        return None, None, 0
    mine = [s for s in static if s.seed == r.seed]
    whole = next((s.name for s in mine if all(same_config(c, r.header, s.configs[0], s.header)
                                              for c in r.configs)), None)
    first_end = stages(r)[0][1]
    shared = next((s.name for s in mine if same_config(r.configs[0], r.header, s.configs[0], s.header)), None)
    return whole, shared, (first_end if shared else 0)


# -----------------------------------------------------------------------------
# the measure: each stretch of a run read off a fitted law (paper Eq. 1), not off raw points

MIN_STAGE = 3   # evaluations a stage needs before its crossing is read
SCALE = 0.02    # robust scale of residuals in ln E: about one evaluation's noise (0.004 at E = 0.2)
WINDOW = 0.5    # width in ln C of the weights around the crossing (a factor 1.6 of compute)


def fit_static(r: Run):
    """The law E = a(C+d)^-b + c of a static run (fit_laws.py: Huber on ln E, robust to single
    evaluations); None where it cannot be fitted (too few points), then its raw points are read."""
    if r.kind != "static" or len(r.flops) < 5 or np.any(r.error <= 0):
        return None
    try:
        return fit_law(r.flops, r.error, extrap_frac=None)
    except (FitError, ValueError, FloatingPointError):
        return None


def fit_shift(law, C: np.ndarray, E: np.ndarray, target: float | None = None) -> float:
    """k such that E ~ law(k C): how many times the static run's compute this stretch is worth.
    One parameter (the stage keeps the static shape, shifted in compute), soft-L1 residuals in ln E;
    with a target, the evaluations are weighted by a Gaussian of width WINDOW in ln C around where
    the stage reaches it (found again after each fit), so that the error spike right after a
    switch, far from the crossing, weighs little."""
    from scipy.optimize import minimize_scalar

    w = np.ones_like(C)
    for _ in range(4 if target is not None and WINDOW else 1):
        def loss(lnk):
            z = np.log(np.maximum(law(np.exp(lnk) * C), 1e-12) / E) / SCALE
            return float(np.sum(w * 2 * (np.sqrt(1 + z * z) - 1)))
        k = float(np.exp(minimize_scalar(loss, bounds=(-4, 4), method="bounded", options={"xatol": 1e-7}).x))
        if target is None or not WINDOW:
            break
        x = math.log(C[-1])
        if target > law.c:
            x = math.log(max(((target - law.c) / law.a) ** (-1 / law.b) - law.d, 1.0) / k)
        w = np.exp(-0.5 * ((np.log(C) - min(max(x, math.log(C[0])), math.log(C[-1]))) / WINDOW) ** 2)
    return k


def read_stages(r: Run, laws: dict, static: list[Run], ref_law, target: float | None = None) -> list[tuple]:
    """(start, end, law, k, how) per stage; how: "fit" (read law(k C)), "raw" (no law to read
    it with: raw points), "short" (fewer than MIN_STAGE evaluations: not read)."""
    if r.kind == "static":
        law = laws[id(r)]
        return [(0, len(r.error), law, 1.0, "fit" if law else "raw")]
    out = []
    for a, b in stages(r):
        shape = next((laws[id(s)] for s in static if s.seed == r.seed and laws[id(s)]
                      and same_config(r.configs[a], r.header, s.configs[0], s.header)), ref_law)
        if b - a < MIN_STAGE:
            out.append((a, b, None, None, "short"))
        elif shape is None:
            out.append((a, b, None, None, "raw"))
        else:   # a stage the shifted law cannot follow (a grown model below the static shape's asymptote): raw
            k = fit_shift(shape, r.flops[a:b], r.error[a:b], target)
            miss = np.median(np.abs(np.log(shape(k * r.flops[a:b][-MIN_STAGE:]) / r.error[a:b][-MIN_STAGE:])))
            out.append((a, b, shape, k, "fit") if miss <= 2 * SCALE else (a, b, None, None, "raw"))
    return out


def fitted(r: Run, st: list[tuple]) -> np.ndarray:
    """The run's curve as read: law(k C) on fitted stages, raw points elsewhere."""
    out = r.error.copy()
    for a, b, law, k, how in st:
        if how == "fit":
            out[a:b] = law(k * r.flops[a:b])
    return out


def reach(r: Run, st: list[tuple], target: float, start: int = 0) -> float | None:
    """FLOPs at which the run first reaches target, stage by stage from evaluation `start` on; a fitted
    stage is read between its first and last evaluation (never extrapolated past them)."""
    for a, b, law, k, how in st:
        a = max(a, start)
        if b <= a or how == "short":
            continue
        if how == "raw":
            pos = crossing_at(r.error[a:b], target)
            if pos is not None:
                return at(r.flops[a:b], pos)
            continue
        if law(k * r.flops[a]) <= target:
            return float(r.flops[a])
        if target > law.c:   # the law's inverse, Eq. 1 solved for C
            c = (((target - law.c) / law.a) ** (-1 / law.b) - law.d) / k
            if c <= r.flops[b - 1] * (1 + 1e-9):
                return float(min(c, r.flops[b - 1]))
    return None


def wall_at(r: Run, flops: float | None) -> float | None:
    """Training seconds at a compute, interpolated log-log between evaluations; None without wall times."""
    ok = np.isfinite(r.wall) & (r.wall > 0)
    if flops is None or ok.sum() < 2:
        return float(r.wall[-1]) if flops is not None and flops == r.flops[-1] and ok[-1] else None
    return float(np.exp(np.interp(math.log(flops), np.log(r.flops[ok]), np.log(r.wall[ok]))))


def crossing_at(curve: np.ndarray, target: float) -> float | None:
    """First fractional index i + t at which `curve` reaches target, interpolating linearly between
    evaluations (in ln C once `at` turns the index into compute)."""
    for i in range(len(curve)):
        if curve[i] <= target:
            return float(i) if i == 0 else i - 1 + (curve[i - 1] - target) / (curve[i - 1] - curve[i])
    return None


def at(x: np.ndarray, pos: float | None) -> float | None:
    """x (flops or wall) at a fractional index, interpolated in log x; None where unknown."""
    if pos is None:
        return None
    i, t = int(pos), pos - int(pos)
    if t == 0:
        v = float(x[i])
    elif x[i] > 0 and x[i + 1] > 0:
        v = math.exp(math.log(x[i]) + t * (math.log(x[i + 1]) - math.log(x[i])))
    else:
        v = float(x[i] + t * (x[i + 1] - x[i]))
    return v if math.isfinite(v) else None


def crossing(x: np.ndarray, error: np.ndarray, target: float) -> float:
    """Raw first x at which the curve reaches `target`, interpolating in log x; nan if never."""
    v = at(x, crossing_at(error, target))
    return math.nan if v is None else v


# -----------------------------------------------------------------------------
# the comparison


def reference(static: list[Run], laws: dict, target: float | None) -> dict:
    """One seed's reference: the best static run and the target, as fitted and raw."""
    ends = {id(r): float(fitted(r, read_stages(r, laws, static, None))[-1]) for r in static}
    if target is None:   # E* = the lowest final value among the static runs
        best = min(static, key=lambda r: ends[id(r)])
        best_raw = min(static, key=lambda r: r.error[-1])
        t, t_raw = ends[id(best)], float(best_raw.error[-1])
    else:                # the static run that reaches the given target with the least compute
        t = t_raw = target
        got = [(reach(r, read_stages(r, laws, static, None), t), r) for r in static]
        best = min([g for g in got if g[0] is not None], key=lambda g: g[0], default=(0, None))[1]
        got = [(crossing(r.flops, r.error, t), r) for r in static]
        best_raw = min([g for g in got if g[0] == g[0]], key=lambda g: g[0], default=(0, None))[1]
    f = reach(best, read_stages(best, laws, static, None), t) if best else None
    pos_raw = crossing_at(best_raw.error, t_raw) if best_raw else None
    return {"target_error": t, "best_static": best.name if best else None,
            "best_static_flops": f, "best_static_wall": wall_at(best, f) if best else None,
            "law": _law_dict(laws[id(best)]) if best else None,
            "raw": {"target_error": t_raw, "best_static": best_raw.name if best_raw else None,
                    "best_static_flops": at(best_raw.flops, pos_raw) if best_raw else None,
                    "best_static_wall": at(best_raw.wall, pos_raw) if best_raw else None},
            "_law": laws[id(best)] if best else None}


def _law_dict(law) -> dict | None:
    return {k: float(getattr(law, k)) for k in "abcd"} if law else None


def _saving(cost: float | None, ref: float | None) -> float | None:
    return 1 - cost / ref if cost is not None and ref else None


def measure(r: Run, ref: dict, laws: dict, static: list[Run]) -> dict:
    """One run's row: cost to the target as fitted and raw, savings, and why a saving is withheld."""
    st = read_stages(r, laws, static, ref["_law"], ref["target_error"])
    whole, shared, start = relation_to_static(r, static)
    f = reach(r, st, ref["target_error"], start)
    w = wall_at(r, f)
    raw = ref["raw"]
    pos_raw = crossing_at(r.error, raw["target_error"])
    f_raw, w_raw = at(r.flops, pos_raw), at(r.wall, pos_raw)
    fit = fitted(r, st)
    row = {"run": r.name, "group": r.group, "seed": r.seed, "kind": r.kind,
           "final_error": float(r.error[-1]), "final_error_fitted": float(fit[-1]),
           "best_error": float(r.error.min()), "final_flops": float(r.flops[-1]),
           "final_wall": at(r.wall, len(r.wall) - 1),
           "flops_to_target": f, "wall_to_target": w,
           "flops_savings": _saving(f, ref["best_static_flops"]), "wall_savings": _saving(w, ref["best_static_wall"]),
           "raw": {"flops_to_target": f_raw, "wall_to_target": w_raw,
                   "flops_savings": _saving(f_raw, raw["best_static_flops"]),
                   "wall_savings": _saving(w_raw, raw["best_static_wall"]),
                   "reason": None if f_raw is not None else "never reaches the raw target"},
           "same_as_static": whole, "shares_first_stage_with": shared,
           "counts_from_flops": float(r.flops[start]) if start < len(r.flops) else None,
           "stages": [{"from_flops": float(r.flops[a]), "evals": b - a, "read": how,
                       "compute_factor": k} for a, b, law, k, how in st],
           "reason": None, "final_train_test_gap": r.gap,
           "switches": [{"flops": float(r.flops[a]), "wall": at(r.wall, a), "config": r.configs[a]}
                        for a, _ in stages(r)[1:]]}
    if whole:
        row.update(flops_savings=None, wall_savings=None,
                   reason=f"same as static {whole}: the same training, never credited with savings")
    elif f is None:
        early = shared and reach(r, st, ref["target_error"]) is not None
        short = st[-1][4] == "short"
        row["reason"] = (f"reaches the target only in the stretch it shares with static {shared}" if early else
                         f"last stage has < {MIN_STAGE} evaluations: not read" if short else
                         f"never reaches the target (fitted final {fit[-1]:.5f} > {ref['target_error']:.5f})")
    elif ref["best_static_flops"] is None:
        row["reason"] = "no static run reaches the target: nothing to compare with"
    elif row["wall_savings"] is None:
        row["reason"] = "no wall time in the log"
    return row


def interval(values: list) -> dict:
    """Per-seed values -> mean and 95% Student-t interval; null with a reason where undefined."""
    from scipy.stats import t as student_t

    out = {"per_seed": values, "n": len(values), "mean": None, "ci95": None, "reason": None}
    got = [v for v in values if v is not None]
    if len(got) < len(values):
        out["reason"] = f"no value in {len(values) - len(got)} of {len(values)} seeds"
        return out
    out["mean"] = float(np.mean(got))
    if len(got) < 2:
        out["reason"] = "one seed: no interval"
        return out
    half = float(student_t.ppf(0.975, len(got) - 1) * np.std(got, ddof=1) / math.sqrt(len(got)))
    out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out


def summarize(rows: list[dict], cost: str) -> list[dict]:
    """Runs of one group across seeds -> per-seed savings, mean, 95% t-interval."""
    groups = []
    for g in dict.fromkeys(r["group"] for r in rows):
        mine = sorted((r for r in rows if r["group"] == g), key=lambda r: str(r["seed"]))
        gaps = [r["final_train_test_gap"] for r in mine if r["final_train_test_gap"] is not None]
        groups.append({
            "group": g, "kind": mine[0]["kind"], "seeds": [r["seed"] for r in mine], "runs": [r["run"] for r in mine],
            "savings": interval([r[f"{cost}_savings"] for r in mine]),
            "flops_savings": interval([r["flops_savings"] for r in mine]),
            "wall_savings": interval([r["wall_savings"] for r in mine]),
            "raw_flops_savings": interval([r["raw"]["flops_savings"] for r in mine]),
            "raw_wall_savings": interval([r["raw"]["wall_savings"] for r in mine]),
            "final_error": interval([r["final_error_fitted"] for r in mine]),
            "same_as_static": next((r["same_as_static"] for r in mine if r["same_as_static"]), None),
            "final_train_test_gap": float(np.mean(gaps)) if gaps else None})
    return groups


def compare(runs: list[Run], target: float | None = None, cost: str = "flops") -> dict:
    """The comparison as a dict (see the module docstring); NaN never appears, None does."""
    seen = {}
    for r in runs:
        if (r.group, r.seed) in seen:
            raise UserError(f"{seen[r.group, r.seed]} and {r.path or r.name} are both run {r.group!r} of seed "
                            f"{r.seed}: pass each run once, or give them different names")
        seen[r.group, r.seed] = r.path or r.name
    static = [r for r in runs if r.kind == "static"]
    laws = {id(r): fit_static(r) for r in runs}
    refs = {}
    for s in sorted({r.seed for r in runs}, key=str):
        mine = [r for r in static if r.seed == s]
        if not mine and target is None:
            raise UserError(f"no static run of seed {s} among --runs; pass one, or set --target")
        refs[s] = reference(mine, laws, target)
    rows = [measure(r, refs[r.seed], laws, static) for r in runs]
    kinds = {}
    for r in rows:
        if r["final_train_test_gap"] is not None:
            kinds.setdefault(r["kind"], []).append(r["final_train_test_gap"])
    first = refs[next(iter(refs))]
    names = list(dict.fromkeys(str(v["best_static"]) for v in refs.values()))
    return {"version": 2, "cost": cost, "target_given": target is not None,
            "measure": {"method": "static runs: law a(C+d)^-b+c fitted (fit_laws.py); target = the best static "
                                  "law's final value; other runs: per stage the same-config static law shifted "
                                  "in compute, law(k C), k fitted (soft-L1 in ln E, Gaussian weights in ln C "
                                  "around the crossing); first crossing",
                        "min_stage_evals": MIN_STAGE, "robust_scale_ln_error": SCALE, "window_ln_flops": WINDOW},
            "target_error": float(np.mean([v["target_error"] for v in refs.values()])),
            "best_static": ",".join(names),
            "best_static_flops": first["best_static_flops"] if len(refs) == 1 else None,
            "best_static_wall": first["best_static_wall"] if len(refs) == 1 else None,
            "best_static_reason": None if len(refs) == 1 else f"{len(refs)} seeds: per seed under 'seeds'",
            "seeds": [{"seed": s, **{k: x for k, x in v.items() if k != "_law"}} for s, v in refs.items()],
            "runs": rows, "groups": summarize(rows, cost),
            "final_train_test_gap_by_kind": {k: float(np.mean(v)) for k, v in kinds.items()}}


# -----------------------------------------------------------------------------
# output: table, plot, files


def _pct(v, reached: bool = False) -> str:
    """A saving as a table cell: "never" where the run does not reach the target, "-" where it does
    but has no saving (no reference, same as static, no wall time)."""
    return f"{'-' if reached else 'never':>7}" if v is None else f"{100 * v:6.1f}%"


def _ci(s: dict) -> str:
    if s["mean"] is None:
        return f"{'-':>22}"
    ci = f" [{100 * s['ci95'][0]:5.1f},{100 * s['ci95'][1]:5.1f}]" if s["ci95"] else " " * 14
    return f"{100 * s['mean']:6.1f}%{ci}"


def table(result: dict, metric: str) -> str:
    cost = result["cost"]
    other = "wall" if cost == "flops" else "flops"
    given = "--target" if result["target_given"] else "fitted final value of the best static run"
    lines = [f"target {metric} ({given}, per seed; best static run; raw target): "
             + ", ".join(f"seed {s['seed']}: {s['target_error']:.4f} ({s['best_static']}; "
                         f"raw {s['raw']['target_error']:.4f})"
                         for s in result["seeds"]),
             f"{'run':<22} {'seed':>4} {'kind':<7} {'fit end':>7} {cost + ' to target':>16} {'saved':>7} {'raw':>7} "
             f"{other + ' saved':>11} {'raw':>7}  note"]
    for r in result["runs"]:
        to = r[f"{cost}_to_target"]
        gap = r["final_train_test_gap"]
        lines.append(f"{r['run'][:22]:<22} {str(r['seed']):>4} {r['kind'][:7]:<7} {r['final_error_fitted']:>7.4f} "
                     f"{'never' if to is None else format(to, '.3e' if cost == 'flops' else '.1f'):>16} "
                     f"{_pct(r[f'{cost}_savings'], to is not None)} "
                     f"{_pct(r['raw'][f'{cost}_savings'], r['raw'][f'{cost}_to_target'] is not None)} "
                     f"{_pct(r[f'{other}_savings'], r[f'{other}_to_target'] is not None):>11} "
                     f"{_pct(r['raw'][f'{other}_savings'], r['raw'][f'{other}_to_target'] is not None)}  "
                     + (f"test-train {gap:+.4f}; " if gap is not None else "")
                     + (r["reason"] or ""))
    if any(len(g["seeds"]) > 1 for g in result["groups"]):
        lines += ["", f"{'group':<22} {'kind':<7} {'seeds':>5} {cost + ' saved, mean [95% CI]':>30} {'raw mean':>9} "
                      f"{other + ' saved, mean [95% CI]':>30}"]
        for g in result["groups"]:
            raw = g[f"raw_{cost}_savings"]["mean"]
            raw = f"{'-':>9}" if raw is None else f"{_pct(raw):>9}"
            lines.append(f"{g['group'][:22]:<22} {g['kind'][:7]:<7} {len(g['seeds']):>5} "
                         f"{_ci(g[f'{cost}_savings']):>30} "
                         f"{raw} {_ci(g[f'{other}_savings']):>30}"
                         + (f"  same as static {g['same_as_static']}" if g["same_as_static"] else ""))
    gaps = result["final_train_test_gap_by_kind"]
    if gaps:
        lines.append("final test - train error: " + ", ".join(f"{k} {v:+.4f}" for k, v in gaps.items()))
    return "\n".join(lines)


def plot(runs: list[Run], result: dict, metric: str, path: str) -> None:
    """Mean error against FLOPs per group, min-max band over seeds, switch points as crosses."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for g in result["groups"]:
        mine = [r for r in runs if r.group == g["group"]]
        lo = max(np.log(r.flops[0]) for r in mine)
        hi = min(np.log(r.flops[-1]) for r in mine)
        x = np.linspace(lo, hi, 80) if hi > lo else np.log(mine[0].flops)
        ys = np.array([np.interp(x, np.log(r.flops), r.error) for r in mine])
        mean = ys.mean(0)
        n = f", {len(mine)} seeds" if len(mine) > 1 else ""
        (line,) = ax.plot(np.exp(x), mean, "-" if g["kind"] in ("static", "law") else "--",
                          lw=2.5 if g["kind"] == "law" else 1.2, label=f"{g['group']} ({g['kind']}{n})")
        if len(mine) > 1:
            ax.fill_between(np.exp(x), ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2, lw=0)
        if g["kind"] != "random":
            sw = np.log([s["flops"] for r in result["runs"] if r["group"] == g["group"] for s in r["switches"]])
            ax.plot(np.exp(sw), np.interp(sw, x, mean), "x", ms=9, mew=2, color=line.get_color())
    ax.axhline(result["target_error"], color="k", lw=0.8, ls=":", label="target (mean over seeds)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel(metric)
    ax.set_title("error against compute (band: min-max over seeds; crosses: switches)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)


def main(cfg: Config) -> dict:
    if cfg.target is not None and not (math.isfinite(cfg.target) and cfg.target > 0):
        raise UserError(f"--target {cfg.target}: give a finite error > 0, or leave it out (the best static run's)")
    if os.path.exists(cfg.out_dir) and not os.path.isdir(cfg.out_dir):
        raise UserError(f"--out-dir {cfg.out_dir}: is a file; pass a folder")
    if cfg.laws:
        check_laws(cfg.laws, cfg.metric)
    runs = [read_run(p, cfg.metric) for p in cfg.runs]
    result = compare(runs, cfg.target, cfg.cost)
    result["metric"] = cfg.metric
    try:
        os.makedirs(cfg.out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out-dir {cfg.out_dir}: cannot create ({e.strerror})") from None
    write_json(os.path.join(cfg.out_dir, "comparison.json"), result)
    if cfg.plot:
        plot(runs, result, cfg.metric, os.path.join(cfg.out_dir, "comparison.png"))
    print(table(result, cfg.metric))
    return result


def cli(args=None):
    """Flags in, exit code out: bad input is one line and code 2 (runtime.run_cli)."""
    return run_cli(main, Config, "compare.py", args, errors=(FitError,))


if __name__ == "__main__":
    sys.exit(cli())
