"""Fit the paper's Eq. 1, E = a*(C+d)^(-b) + c, to run logs: one law per configuration (App. B.4).

    python fit_laws.py --logs runs/patch* --metric fewshot10_error --out laws.json --bootstrap 100
    python fit_laws.py --logs runs/patch* --cost wall     # training seconds as the cost (App. F, Fig. 22)

Per configuration (seeds pooled): drop the warm-up, resample, fit (Huber on log E), bootstrap, check extrapolation.
As a library (numpy + scipy; copy this file alone): law = fit_law(C, E); law(C); load_laws(path).
"""
import contextlib, glob, io, json, math, os, re, sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace as Curve  # a configuration's pooled points: pool()
from typing import Literal

import numpy as np
from scipy.optimize import minimize

FORM = "E = a*(C+d)**(-b) + c"
NOT_METRICS = {"type", "step", "samples", "tokens", "flops", "wall", "config"}
MIN_POINTS = 5
COSTS = {"flops": "flops", "wall": "seconds"}  # --cost -> the unit's name in laws.json's ci / extrapolation


class UserError(ValueError): """Bad input: one line naming the file or run and the problem; the CLI exits 2."""

# ---- the law, Eq. 1 -----------------------------------------------------------------------------------------


@dataclass
class Law:
    """E = a*(C+d)^(-b) + c, C the cost (FLOPs, or seconds with cost "wall"); vectorised, as schedule.Law."""
    name: str = ""; config: dict = field(default_factory=dict)  # the configuration (its shape: patch=7)
    a: float = 1.0; b: float = 0.5; c: float = 0.0; d: float = 0.0  # Eq. 1
    flops_range: tuple = (0.0, math.inf); cost_range: tuple | None = None  # of the fitted points: FLOPs, cost
    metric: str = ""; cost: str = "flops"  # file-level in laws.json
    residual: float | None = None  # RMS of log(f(C)/E) over the fitted (resampled) points
    n_points: int = 0; n_raw: int = 0  # points fitted: resampled, raw
    starts: int = 0; starts_converged: int = 0; starts_at_best: int = 0  # L-BFGS-B starts: all, converged, best
    at_bound: list = field(default_factory=list)  # parameters at a limit of the search box: not a law
    at_zero: list = field(default_factory=list)  # c = 0 / d ~ 0: the family's own edges (valid)
    runs: list = field(default_factory=list); seeds: list = field(default_factory=list)  # whose points were fitted
    seed: int | None = None; warmup_dropped: int = 0  # --per-seed: the one seed; points dropped as warm-up
    flops_per_second: float | None = None  # cost "wall": the runs' FLOPs / seconds over the fitted range
    ci: dict | None = None; extrapolation: dict | None = None  # bootstrap intervals, extrapolation_check()
    boot: np.ndarray | None = field(default=None, repr=False)  # (N, 4) bootstrap a, b, c, d; not saved

    def __call__(self, C):  # Eq. 1: E at cost C; a scalar in, a float out
        with np.errstate(divide="ignore", over="ignore"):
            return (self.a * (np.asarray(C, float) + self.d) ** -self.b + self.c)[()]  # [()]: 0-d -> float

# ---- the fit, App. B.4: theta = (log A, log b, c, log D) on x = C / max C; c >= 0 (c = 0: no floor, valid) ----


def resample(C, E, points=50):  # App. B.4: ~points points equidistant in log C (bins' mean; empty: interpolated)
    lc, le = np.log(C), np.log(E)
    n = min(points, len(C))
    edges = np.linspace(lc[0], lc[-1], n + 1)
    idx = np.clip(np.searchsorted(edges, lc, side="right") - 1, 0, n - 1)
    cnt = np.bincount(idx, minlength=n)
    centers = 0.5 * (edges[:-1] + edges[1:])
    x = np.where(cnt > 0, np.bincount(idx, lc, n) / np.maximum(cnt, 1), centers)
    y = np.where(cnt > 0, np.bincount(idx, le, n) / np.maximum(cnt, 1), np.interp(centers, lc, le))
    return np.exp(x), np.exp(y)


def _loss(theta, x, y, delta):
    """Huber(log f - log E) / (n delta), gradient: a 1% miss counts alike at any E; delta 1e-3 < noise: robust."""
    A, b, c, D = math.exp(theta[0]), math.exp(theta[1]), theta[2], math.exp(theta[3])
    lu = np.log(x + D)
    p = A * np.exp(-b * lu)
    f = p + c
    r = np.log(f) - y
    g = np.minimum(np.maximum(r, -delta), delta)  # Huber'(r); Huber(r) = g * (r - g/2)
    gf = g / f
    wp = gf * p
    scale = 1.0 / (len(x) * delta)
    grad = np.array([wp.sum(), -b * (wp @ lu), gf.sum(), -b * D * (wp @ np.exp(-lu))])
    return scale * (g @ (r - 0.5 * g)), scale * grad


def _bounds(x, E):  # the search box: a in 1e+-8 E, b in [0.01, 5], c in [0, max E], d in [1e-6 min C, 1e3 max C]
    lo, hi = float(E.min()), float(E.max())
    return [(math.log(1e-8 * lo), math.log(1e8 * hi)), (math.log(1e-2), math.log(5.0)),
            (0.0, hi), (math.log(1e-6 * x.min()), math.log(1e3))]


def _grid(x, E, delta, k=8):  # starts: the k best cells of a (b, D) grid, A and c by weighted least squares
    b = np.geomspace(0.03, 3.0, 16)[:, None, None]
    D = np.clip(x[0] * np.geomspace(1e-2, 1e3, 16), 1e-6 * x[0], 1e3)[None, :, None]
    v = (x + D) ** -b  # (16, 16, n)
    w = 1.0 / E ** 2
    s_vv, s_v, s_1 = (w * v * v).sum(-1), (w * v).sum(-1), w.sum()
    s_ve, s_e = (w * v * E).sum(-1), (w * E).sum()
    det = s_vv * s_1 - s_v ** 2
    c = np.clip((s_vv * s_e - s_v * s_ve) / np.where(det > 0, det, np.inf), 0.0, 0.99 * E.min())
    A = np.maximum(((w * v * (E - c[..., None])).sum(-1)) / s_vv, 1e-300)
    r = np.log(A[..., None] * v + c[..., None]) - np.log(E)
    g = np.clip(r, -delta, delta)
    loss = (g * (r - 0.5 * g)).sum(-1)
    i, j = np.unravel_index(np.argsort(loss, axis=None)[:k], loss.shape)
    return np.stack([np.log(A[i, j]), np.log(b[i, 0, 0]), c[i, j], np.log(D[0, j, 0])], 1)


def _minimize(theta0, x, y, delta, bounds):  # loss ~1e-3: default tolerances stop early on flat b-c ridges
    return minimize(_loss, theta0, args=(x, y, delta), jac=True, method="L-BFGS-B", bounds=bounds,
                    options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-7})


def _to_params(theta, s):
    (A, b, D), c = np.exp(theta[[0, 1, 3]]), theta[2]
    with np.errstate(over="ignore"):  # an overflow (extreme compute values) is refused by fit_law
        return np.array([A * s ** b, b, c, D * s])


def _fit_points(C, E, delta):
    """L-BFGS-B from each start -> the best's Law fields (at_bound: set by the box, not the data), theta, s."""
    x, y, s = C / C.max(), np.log(E), C.max()
    bounds = _bounds(x, E)
    results = [_minimize(np.clip(t, *np.array(bounds).T), x, y, delta, bounds) for t in _grid(x, E, delta)]
    best = min(results, key=lambda r: r.fun if np.isfinite(r.fun) else np.inf)
    side = {k: "lo" if t <= lo + tol else "hi" if t >= hi - tol else ""  # at a limit: within 1e-4 (log a, b, d)
            for k, t, (lo, hi) in zip("abcd", best.x, bounds) for tol in [1e-4 * (abs(hi) if k == "c" else 1.0)]}
    at_best = sum(r.fun <= best.fun + 1e-6 * abs(best.fun) + 1e-12 for r in results)
    return dict(zip("abcd", map(float, _to_params(best.x, s))), starts=len(results), starts_at_best=int(at_best),
                starts_converged=int(sum(r.success for r in results)), at_zero=[k for k in "cd" if side[k] == "lo"],
                at_bound=[k for k, e in side.items() if e == "hi" or e == "lo" and k in "ab"]), best.x, s


def fit_law(C, E, *, name="", config=None, metric="", points=50, delta=1e-3, bootstrap=0, seed=0,
            extrap_frac=0.3, predict_at=(), level=0.95, cost="flops"):
    """Eq. 1 fitted to one curve (C, E > 0, any order) -> Law, its bootstrap intervals, extrapolation check."""
    C, E = np.asarray(C, float).ravel(), np.asarray(E, float).ravel()
    if C.shape != E.shape or not (np.all(np.isfinite(C)) and np.all(np.isfinite(E))):
        raise UserError(f"C and E must be finite and of one length (got {len(C)} and {len(E)} values)")
    if np.any(C <= 0) or np.any(E <= 0):
        raise UserError("compute and metric must be > 0 (the law is fitted in log-log)")
    if len(np.unique(C)) < MIN_POINTS:
        raise UserError(f"{len(np.unique(C))} distinct compute values, need at least {MIN_POINTS}")
    C, E = C[order := np.argsort(C, kind="stable")], E[order]
    Cr, Er = resample(C, E, points)
    fit, theta, s = _fit_points(Cr, Er, delta)
    law = Law(name, dict(config or {}), **fit, flops_range=(float(C[0]), float(C[-1])),
              cost_range=(float(C[0]), float(C[-1])), metric=metric, cost=cost, n_points=len(Cr), n_raw=len(C))
    with np.errstate(all="ignore"):
        law.residual = float(np.sqrt(np.mean(np.log(law(Cr) / Er) ** 2)))
    if bad := [f"{k} = {v:g}" for k in ("a", "b", "c", "d", "residual") if not math.isfinite(v := getattr(law, k))]:
        raise UserError(f"{name or 'law'}: fitted {', '.join(bad)} is not finite in float64 (compute from "
                        f"{C[0]:.3g} to {C[-1]:.3g}, metric from {E.min():.3g} to {E.max():.3g}); rescale them")
    if bootstrap > 0:
        law.boot, law.ci = _bootstrap(C, E, points, theta, s, delta, bootstrap, seed, predict_at, law, level)
    if extrap_frac is not None:
        law.extrapolation = extrapolation_check(C, E, Cr, Er, extrap_frac, points, delta, COSTS[cost])
    return law


def _bootstrap(C, E, points, theta, s, delta, n_boot, seed, predict_at, law, level):
    """Refits on raw points drawn with replacement (resampled ones are not independent) -> (params (N, 4), ci)."""
    bounds, boot = _bounds(C / s, E), []
    for i in np.sort(np.random.default_rng(seed).integers(0, len(C), (n_boot, len(C))), axis=1):
        Cb, Eb = resample(C[i], E[i], points)
        boot.append(_to_params(_minimize(theta, Cb / s, np.log(Eb), delta, bounds).x, s))
    boot, q = np.array(boot).reshape(-1, 4), [50 * (1 - level), 50 * (1 + level)]
    ci = {"level": level, "n": len(boot), **{k: np.percentile(boot[:, j], q).tolist() for j, k in enumerate("abcd")}}
    lo, hi = law.cost_range
    at = sorted({lo, math.exp(0.5 * (math.log(lo) + math.log(hi))), hi, *map(float, predict_at)})  # no overflow
    ci["E"] = [{COSTS[law.cost]: f, "E": float(law(f)), **dict(zip(("lo", "hi"), map(float, band(boot, f, q))))}
               for f in at]
    return boot, ci


def band(boot, C, q=(2.5, 97.5)):  # percentiles of E(C) over bootstrap samples (N, 4) -> (lo, hi), shaped as C
    a, b, c, d = (boot[:, j, None] for j in range(4))
    with np.errstate(all="ignore"):
        lo, hi = np.percentile(a * (np.atleast_1d(np.asarray(C, float))[None, :] + d) ** -b + c, q, axis=0)
    return (lo[0], hi[0]) if np.ndim(C) == 0 else (lo, hi)


def extrapolation_check(C, E, Cr, Er, frac, points, delta, unit="flops"):
    """Refit on C <= frac * max C; relative and log errors on the full curve's resampled points beyond."""
    cut = frac * C[-1]
    head, test = C <= cut, Cr > cut
    if len(np.unique(C[head])) < MIN_POINTS or not test.any():
        return {"frac": frac, "skipped": f"need >= {MIN_POINTS} points below and 1 above {cut:.3g} {unit}"}
    Ch, Eh = resample(C[head], E[head], points)
    abcd = {k: v for k, v in _fit_points(Ch, Eh, delta)[0].items() if k in "abcd"}
    with np.errstate(all="ignore"):
        pred = Law(**abcd)(Cr[test])
        rel, log_rmse = np.abs(pred / Er[test] - 1), np.sqrt(np.mean(np.log(pred / Er[test]) ** 2))
    return {"frac": frac, f"{unit}_cut": float(cut), "n_fit": len(Ch), "n_test": int(test.sum()),
            "rel_mean": float(rel.mean()), "rel_max": float(rel.max()), "rel_last": float(rel[-1]),
            "log_rmse": float(log_rmse), **abcd}


def warmup_flops(warmup, recs):
    """FLOPs at step = warmup (None: none), before which the curve is not the law's: interpolated, or extrapolated."""
    if not warmup:
        return None if warmup is None else 0.0
    steps, flops = np.r_[0.0, [r["step"] for r in recs]], np.r_[0.0, [r["flops"] for r in recs]]
    return float(np.interp(warmup, steps, flops) if warmup <= steps[-1] else flops[-1] / steps[-1] * warmup)


def pool(name, parts, per_seed, min_flops, min_flops_frac, cost):
    """Seeds pooled: a configuration's runs (parts) sample one curve -> Curve(config, C, E, flops, runs, seeds, ...)."""
    f_max = max(p["F"].max() for p in parts)
    for p in parts:
        F, warm = p["F"], p["warm"] or 0.0  # warm None: the header names no warm-up
        p["keep"] = (F > 0) & (p["C"] > 0) & (F >= warm) & (F >= min_flops) & (F >= min_flops_frac * f_max)
        p["dropped"] = int(((F > 0) & (F < warm)).sum())
    C, E, F = (np.concatenate([p[k][p["keep"]] for p in parts]) for k in "CEF")
    if len(np.unique(C)) < MIN_POINTS:
        raise UserError(f"config {name} (runs {', '.join(p['run'] for p in parts)}): {len(np.unique(C))} points "
                        f"with flops > 0, past warm-up and >= --min-flops, need at least {MIN_POINTS}")
    spans = [(p["F"][p["keep"]][[0, -1]], p["C"][p["keep"]][[0, -1]]) for p in parts if p["keep"].sum() > 1]
    sec, flo = sum(c[1] - c[0] for _, c in spans), sum(f[1] - f[0] for f, _ in spans)  # each run's first to last
    fps = float(flo / sec if sec > 0 else F.max() / C.max()) if cost == "wall" else None
    seeds = list(dict.fromkeys(p["seed"] for p in parts if p["seed"] is not None))
    with contextlib.suppress(TypeError):  # seeds of mixed types: in the order met
        seeds.sort()
    o = np.argsort(C, kind="stable")
    return Curve(config=parts[0]["config"], C=C[o], E=E[o], flops=F[o], runs=[p["run"] for p in parts], seeds=seeds,
                 seed=parts[0]["seed"] if per_seed else None, warmup_dropped=sum(p["dropped"] for p in parts),
                 no_warmup=[p["run"] for p in parts if p["warm"] is None], flops_per_second=fps)

# ---- files: laws.json and run logs, checked where they are read ---------------------------------------------


def _finite(v):  # a JSON number that float64 holds: not NaN, not infinite, not a 400-digit integer
    return type(v) in (int, float) and (math.isfinite(v) if type(v) is float else abs(v) < 1.7e308)


def _finite_or_null(x, where, nulls):  # x, every float that is not finite None (strict JSON), its place in nulls
    if isinstance(x, dict):
        return {k: _finite_or_null(v, f"{where}.{k}", nulls) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_null(v, f"{where}[{i}]", nulls) for i, v in enumerate(x)]
    if isinstance(x, (float, np.floating)) and not math.isfinite(x):
        return nulls.append(where)  # None
    return x.item() if isinstance(x, np.generic) else x


def name_of(config):
    return ",".join(f"{k}={v}" for k, v in config.items()) or "default"


def _law_json(law):  # a law in laws.json: its fields but metric, cost (file-level) and boot
    nulls = []
    d = {k: _finite_or_null([float(x) for x in v] if k.endswith("_range") and v is not None else v, k, nulls)
         for k, v in vars(law).items() if k not in ("metric", "cost", "boot")}
    return d | ({"null_reason": f"not finite (infinite or overflowed float64): {', '.join(nulls)}"} if nulls else {})


def save_laws(laws, path, metric=None, extra=None, cost=None):
    """laws.json, atomically, strict JSON (a value not finite: null, named in "null_reason"); extra: more fields."""
    doc = {"version": 1, "metric": metric if metric is not None else (laws[0].metric if laws else ""),
           "cost": cost if cost is not None else (laws[0].cost if laws else "flops"), "form": FORM,
           "laws": [_law_json(law) for law in laws], **(extra or {})}
    try:
        Path(f"{path}.tmp").write_text(json.dumps(doc, indent=1, allow_nan=False, default=lambda x: x.tolist()) + "\n")
        os.replace(f"{path}.tmp", path)
    finally:
        Path(f"{path}.tmp").unlink(missing_ok=True)


def load_laws(path):
    """laws.json -> list[Law] with the file's metric and cost (as schedule.load_laws); a bad file: UserError."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, a 5000-digit number
        raise UserError(f"{path}: cannot read laws ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise UserError(f"{path}: field 'version' must be 1")
    if not isinstance(doc.get("laws"), list) or not doc["laws"]:
        raise UserError(f"{path}: field 'laws' must be a non-empty list")
    if (cost := doc.get("cost", "flops")) not in COSTS:
        raise UserError(f"{path}: field 'cost' must be one of {', '.join(COSTS)} (got {cost!r})")
    laws = []
    for where, d in ((f"{path}: laws[{i}]", d) for i, d in enumerate(doc["laws"])):
        if not isinstance(d, dict) or not isinstance(d.get("config", {}), dict):
            raise UserError(f"{where}: must be an object with a dict field 'config'")
        if k := next((k for k in "abcd" if not _finite(d.get(k)) or d[k] < 0 or (k in "ab" and d[k] == 0)), None):
            raise UserError(f"{where}: field '{k}' must be a finite number > 0 (>= 0 for c, d), got {d.get(k)!r}")
        ranges = {k: d.get(k) or d.get("flops_range") or [0.0, None] for k in ("flops_range", "cost_range")}
        if k := next((k for k, r in ranges.items() if not (isinstance(r, list) and len(r) == 2 and _finite(r[0])
                      and (r[1] is None or r[1] == math.inf or _finite(r[1])))), None):
            raise UserError(f"{where}: field '{k}' must be [lo, hi] (hi null: open)")
        known = {k: d[k] for k in vars(Law()) if k in d and k != "boot"} | {
            k: (float(r[0]), math.inf if r[1] is None else float(r[1])) for k, r in ranges.items()}
        name = d.get("name") or name_of(d.get("config", {}))
        laws.append(Law(**known | dict(metric=doc.get("metric", ""), cost=cost, name=name)))
    return laws


def find_logs(paths):  # log.jsonl files from files, folders (searched recursively) and globs, in the order given
    files = []
    for p in paths:  # folders a pattern matches may hold no log; a folder named must
        if not (matches := sorted(glob.glob(p, recursive=True)) if (pattern := glob.has_magic(p)) else [p]):
            raise UserError(f"{p}: no file or folder matches this pattern")
        for m in map(Path, matches):
            if not m.exists():
                raise UserError(f"{m}: no such file or folder")
            if not (found := sorted(m.rglob("log.jsonl")) if m.is_dir() else [m]) and not pattern:
                raise UserError(f"{m}: no log.jsonl in this folder")
            files += found
    if not (files := list(dict.fromkeys(f.resolve() for f in files))):
        raise UserError(f"no log.jsonl found in {' '.join(paths) or '(no --logs given)'}")
    return files


def read_log(path):  # one log.jsonl -> (run name, header config, eval records, each with its "_line")
    recs, i = [], 0
    try:
        for i, line in enumerate(lines := path.read_text().splitlines(), 1):
            if not isinstance(rec := json.loads(line) if line.strip() else {}, dict):
                raise UserError(f"{path}:{i}: a record must be a JSON object")
            recs.append(rec)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, a 5000-digit number
        raise e if isinstance(e, UserError) else UserError(
            f"{path}:{i}: cannot read ({type(e).__name__}: {str(e)[:200]})") from None
    header = next((r for r in reversed(recs) if r.get("type") == "header"), {})
    evals = [{**r, "_line": i} for i, r in enumerate(recs, 1) if r.get("type") == "eval"]
    run = str(header.get("run") or path.parent.name)
    if not evals:
        raise UserError(f"run {run} ({path}): {'empty log' if not lines else 'no eval records'}")
    if not isinstance(config := header.get("config", {}), dict):
        raise UserError(f"{path}: the header's 'config' must be an object (got {config!r:.60})")
    return run, config, evals


def _problems(evals, recs, metric, cost, warmup):  # in order: the first is reported, a check trusts the earlier
    if len({json.dumps(r.get("config", {}), sort_keys=True) for r in evals}) > 1:
        yield "records have several configs (a scheduled run?); fit static runs only"
    if not recs:
        yield f"no record has metric '{metric}'"
    if cost == "wall" and (no := [r["_line"] for r in recs if "wall" not in r]):
        yield (f"line {no[0]}: no 'wall' (training seconds), which --cost wall needs; use --cost flops or logs of "
               "trainers that record 'wall'")
    for k in dict.fromkeys(("flops", cost, metric)):  # finite numbers, the metric > 0
        if bad := [r for r in recs if not _finite(r.get(k)) or (k == metric and not r[k] >= 1e-300)]:
            yield (f"line {bad[0]['_line']}: '{k}' is {bad[0].get(k)!r}, need a finite number"
                   f"{' >= 1e-300 (the law is fitted in log-log)' if k == metric else ''}")
    for k in dict.fromkeys((cost, "flops")):
        if len(i := np.flatnonzero(np.diff(x := np.array([r[k] for r in recs], float)) <= 0)):
            yield f"{k} not increasing at line {recs[i[0] + 1]['_line']} ({k} {x[i[0]]:.4g} -> {x[i[0] + 1]:.4g})"
    if warmup is not None and not (_finite(warmup) and warmup >= 0):
        yield f"header config 'warmup' is {warmup!r}, need a number of steps >= 0"
    if warmup and any(type(r.get("step")) not in (int, float) for r in recs):
        yield (f"records lack 'step', needed to place the end of warm-up ({warmup} steps); pass --keep-warmup to "
               "keep every point")


def _attempt(skip_bad, fn, *args, **kw):  # fn(...); with skip_bad a UserError is a warning and None
    try:
        return fn(*args, **kw)
    except UserError as e:
        if not skip_bad:
            raise
        print(f"fit_laws.py: warning: {e}; skipped", file=sys.stderr)


def _run_part(run, path, header, evals, metric, cost, keep_warmup):  # a checked run's points, for pool()
    recs, warmup = [r for r in evals if metric in r], None if keep_warmup else header.get("warmup")
    if problem := next(_problems(evals, recs, metric, cost, warmup), None):
        raise UserError(f"run {run} ({path}): {problem}")
    C, E, F = (np.array([r[k] for r in recs], float) for k in (cost, metric, "flops"))
    warm = 0.0 if keep_warmup else warmup_flops(warmup, recs)
    return dict(run=run, config=dict(evals[0].get("config", {})), seed=header.get("seed"), C=C, E=E, F=F, warm=warm)


def read_logs(paths, metric, *, min_flops=0.0, min_flops_frac=0.0, skip_bad=False, keep_warmup=False,
              per_seed=False, cost="flops"):
    """Run logs -> {name: Curve}, one per configuration (per_seed: per config and seed); skip_bad: warn, go on."""
    runs = [(path, got) for path in find_logs(paths) if (got := _attempt(skip_bad, read_log, path))]
    seen = {k for _, (_, _, evals) in runs for r in evals for k, v in r.items()
            if k not in NOT_METRICS and not k.startswith("_") and type(v) in (int, float)}
    if runs and metric not in seen and not any(metric in r for _, (_, _, evals) in runs for r in evals):
        raise UserError(f"unknown metric '{metric}'; the logs contain: {', '.join(sorted(seen)) or 'none'}")
    groups = {}
    for path, (run, header, evals) in runs:
        if p := _attempt(skip_bad, _run_part, run, path, header, evals, metric, cost, keep_warmup):
            groups.setdefault(json.dumps(p["config"], sort_keys=True) + (f" seed={p['seed']}" if per_seed else ""),
                              []).append(p)
    # a law's name: the keys in which the configurations differ (patch=7, not patch=7,width=64,...)
    confs = {json.dumps(ps[0]["config"], sort_keys=True): ps[0]["config"] for ps in groups.values()}.values()
    shared = {k for k in set().union(*confs) if len(confs) > 1 and len({json.dumps(c.get(k)) for c in confs}) == 1}
    curves = {}
    for ps in groups.values():
        name = name_of({k: v for k, v in ps[0]["config"].items() if k not in shared}) + \
            (f" seed={'?' if ps[0]['seed'] is None else ps[0]['seed']}" if per_seed else "")
        if cv := _attempt(skip_bad, pool, name, ps, per_seed, min_flops, min_flops_frac, cost):
            curves[name] = cv
    if not curves:
        raise UserError("no configuration left to fit" + (" (all skipped)" if skip_bad else ""))
    return curves

# ---- command line, summary and plot -------------------------------------------------------------------------


@dataclass
class Config:
    logs: list[str]  # log.jsonl files, folders holding them (searched recursively) or globs
    metric: str = "fewshot10_error"  # metric to fit, by its name in the eval records (test_error, val_loss, ...)
    out: str = "laws.json"  # output laws.json; the plot goes beside it (same name, .png)
    cost: Literal["flops", "wall"] = "flops"  # x-axis: cumulative training FLOPs, or training seconds (App. F)
    keep_warmup: bool = False  # keep the points before the end of warm-up (default: drop them)
    per_seed: bool = False  # one law per (config, seed), to see the spread (default: seeds pooled)
    min_flops: float = 0.0  # drop records below this compute
    min_flops_frac: float = 0.0  # drop records below this fraction of each configuration's largest compute
    points: int = 50  # points per curve after resampling to ~equidistant log-compute
    delta: float = 1e-3  # Huber delta on residuals in log E (paper: 1e-3)
    bootstrap: int = 100  # bootstrap resamples for the confidence intervals (0: none)
    seed: int = 0  # bootstrap seed
    extrap_frac: float = 0.3  # extrapolation check: refit on compute <= this fraction of the maximum
    predict_at: list[float] = field(default_factory=list)  # costs at which to report E with its interval too
    skip_bad: bool = False  # turn per-configuration problems into warnings and fit the rest
    plot: bool = True  # write laws.png beside laws.json


def check_args(cfg):  # bad flags, or an output path that cannot be written, before any work
    out, json_name = Path(cfg.out), "give a .json name such as laws.json"
    if not (5 <= cfg.points <= 1e5 and 0 <= cfg.bootstrap <= 1e5 and 0 < cfg.extrap_frac < 1 and cfg.delta > 0):
        raise UserError("need 5 <= --points <= 100000, 0 <= --bootstrap <= 100000, 0 < --extrap-frac < 1, --delta > 0")
    if not (math.isfinite(cfg.min_flops) and cfg.min_flops >= 0):
        raise UserError(f"--min-flops {cfg.min_flops}: give a finite compute >= 0")
    if not 0 <= cfg.min_flops_frac < 1:
        raise UserError(f"--min-flops-frac {cfg.min_flops_frac}: give a fraction in [0, 1)")
    if not all(math.isfinite(c) and c > 0 for c in cfg.predict_at):
        raise UserError(f"--predict-at {' '.join(map(str, cfg.predict_at))}: give finite cost values > 0")
    if out.is_dir() or cfg.out.endswith(os.sep):
        raise UserError(f"--out {cfg.out} is a folder; give a file name such as {out / 'laws.json'}")
    if out.suffix.lower() == ".jsonl" or out.name == "log.jsonl":
        raise UserError(f"--out {cfg.out} would overwrite a run log; {json_name}")
    if cfg.plot and out.suffix.lower() == ".png":
        raise UserError(f"--out {cfg.out} is the plot's own path (laws.json's name with .png); {json_name}")


def summary(laws, curves=None, keep_warmup=False):  # the table of laws; with curves, the line on warm-up
    head = f"{'law':<24} {'pts':>4} {'a':>9} {'b':>6} {'c':>9} {'d':>9} {'resid':>7} {'conv':>5} {'best':>4} " \
           f"{'extrap rel_last':>15} {'log_rmse':>8} {'at bound':>8}"
    rows = [head, "-" * len(head)]
    for law, ex in ((law, law.extrapolation or {}) for law in laws):
        ext = f"{ex['rel_last']:>15.2%} {ex['log_rmse']:>8.4f}" if "rel_last" in ex else f"{'-':>15} {'-':>8}"
        rows.append(f"{law.name:<24} {law.n_points:>4} {law.a:>9.3g} {law.b:>6.3f} {law.c:>9.3g} {law.d:>9.3g} "
                    f"{law.residual:>7.4f} {law.starts_converged:>3}/{law.starts:<1} {law.starts_at_best:>4} {ext} "
                    f"{','.join(law.at_bound) or '-':>8}")
    rows += [f"law {law.name}: {', '.join(f'{k} = {getattr(law, k):.4g}' for k in law.at_bound)} at a limit of the "
             "fit's search box: the data did not set it (schedule.py leaves this law out unless --allow-bound-laws)"
             for law in laws if law.at_bound]
    no = [r for cv in (curves or {}).values() for r in cv.no_warmup]
    rows += [] if curves is None else ["warm-up: kept (--keep-warmup)"] if keep_warmup else [
        f"warm-up: dropped {sum(cv.warmup_dropped for cv in curves.values())} points below the FLOPs at the end of "
        f"warm-up (header 'warmup' steps) of {sum(len(cv.runs) for cv in curves.values()) - len(no)} runs"
        + (f"; {len(no)} runs name no warmup, nothing dropped: {', '.join(no)}" if no else "")]
    return "\n".join(rows)


def main(cfg):
    check_args(cfg)
    curves = read_logs(cfg.logs, cfg.metric, min_flops=cfg.min_flops, min_flops_frac=cfg.min_flops_frac,
                       skip_bad=cfg.skip_bad, keep_warmup=cfg.keep_warmup, per_seed=cfg.per_seed, cost=cfg.cost)
    kw = {k: getattr(cfg, k) for k in ("metric", "points", "delta", "bootstrap", "seed", "extrap_frac", "predict_at")}
    laws = [law for name, cv in curves.items()  # a law not finite: an error, or with --skip-bad skipped
            if (law := _attempt(cfg.skip_bad, fit_law, cv.C, cv.E, name=name, config=cv.config, cost=cfg.cost, **kw))]
    if not laws:
        raise UserError("no configuration left to fit (all skipped)")
    for law, cv in ((law, curves[law.name]) for law in laws):  # the runs behind each law
        vars(law).update(flops_range=(float(cv.flops.min()), float(cv.flops.max())), **{k: getattr(cv, k) for k in (
            "runs", "seeds", "seed", "warmup_dropped", "flops_per_second")})
    print(summary(laws, curves, cfg.keep_warmup))
    out, png = Path(cfg.out), Path(cfg.out).with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fit = {"loss": f"huber(log f(C) - log E), delta={cfg.delta}", "residual": "rms of log(f(C)/E), resampled points"}
    fit |= {k: vars(cfg)[k] for k in "points bootstrap seed min_flops min_flops_frac keep_warmup per_seed logs".split()}
    try:  # the plot to .tmp first: a failed run replaces neither file
        plot_laws(laws, curves, f"{png}.tmp", cfg.metric) if cfg.plot else None
        save_laws(laws, out, metric=cfg.metric, cost=cfg.cost, extra={"fit": fit})
        os.replace(f"{png}.tmp", png) if cfg.plot else None
    finally:
        Path(f"{png}.tmp").unlink(missing_ok=True)
    print(f"wrote {out}" + (f" and {png}" if cfg.plot else ""))


def cli(args=None):  # bad input (a flag, a file): one line on stderr, exit code 2; other exceptions are bugs
    import tyro
    try:
        try:
            with contextlib.redirect_stderr(box := io.StringIO()):
                cfg = tyro.cli(Config, args=args, prog="fit_laws.py")
        except SystemExit as e:
            if not e.code:  # --help: as tyro wrote it
                sys.stderr.write(box.getvalue())
                raise
            lines = "\n".join(ln.strip("│╭╰╮╯| ").strip("─ ") for ln in box.getvalue().splitlines())
            title, _, rest = re.sub(r"(?m)^-*$", "", lines).strip().partition("\n")  # tyro's box: title, paragraph 1
            body = re.split(r"\n\n|^(?=For full|Argument|Perhaps)", rest.strip(), flags=re.M)[0].splitlines()
            raise UserError(f"{' '.join([title, *body]).strip() or 'bad flags'}; see fit_laws.py --help") from None
        main(cfg)
    except (UserError, OSError) as e:
        print(f"fit_laws.py: error: {e}", file=sys.stderr)
        return 2
    return 0


def plot_laws(laws, curves, path, metric=""):  # points and laws on log-log axes (Fig. 4), 95% bootstrap bands
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for i, law in enumerate(laws):
        ax.scatter(curves[law.name].C, curves[law.name].E, s=8, alpha=0.5, color=f"C{i % 10}", linewidths=0)
        grid = np.geomspace(*law.cost_range, 200)
        ax.plot(grid, law(grid), color=f"C{i % 10}", label=f"{law.name}: b={law.b:.2f}, c={law.c:.3g}"
                + (f" (at bound: {','.join(law.at_bound)})" if law.at_bound else ""))
        if law.boot is not None and len(law.boot):
            ax.fill_between(grid, *band(law.boot, grid), color=f"C{i % 10}", alpha=0.2, linewidth=0)
    ax.set(xscale="log", yscale="log", ylabel=metric or "E", title=FORM, xlabel="compute C (FLOPs)"
           if not laws or laws[0].cost == "flops" else "training time C (seconds)")
    ax.yaxis.set_major_formatter("{x:.3g}"), ax.yaxis.set_minor_formatter("{x:.3g}")
    ax.legend(fontsize=8), ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(cli())
