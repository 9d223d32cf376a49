"""Fit one scaling law per configuration to run logs: paper Eq. 1/3, E = a*(C+d)^(-b) + c (App. B.4).

    python fit_laws.py --logs runs/patch* --metric fewshot10_error --out laws.json --bootstrap 100
    python fit_laws.py --logs runs/patch* --cost wall        # time as the cost (App. F, Fig. 22)
    python fit_laws.py --logs runs/patch* --per-seed          # one law per (config, seed): the spread

Reads `log.jsonl` files (or folders holding them, or globs), groups the eval records by their
"config" (the shape in force, e.g. {"patch": 7}; static runs only), takes x = the cost C (the record's
cumulative training "flops", or with --cost wall its training seconds "wall") and y = the chosen metric.
Points before the end of warm-up are dropped (their FLOPs below the FLOPs at step = the header's "warmup",
interpolated over the records): while the learning rate ramps up the curve is not yet the law's
(--keep-warmup keeps them). Then per configuration:
  1. resamples the curve to points almost equidistant in log-compute (App. B.4): equal-width bins in
     log C; a bin's point is the mean of its (log C, log E); an empty bin is filled by log-log interpolation;
  2. fits a, b, d > 0 by their logs and c >= 0 by a bound (c = 0, no floor in sight, is a valid law;
     with log c it is an infinitely far plateau where gradients vanish and bootstrap refits get stuck)
     with scipy's L-BFGS-B (analytic gradients, compute divided by its maximum, tight tolerances) from
     the 8 best cells of a 16 x 16 grid over (b, d), a and c of each cell by linear least squares;
  3. loss: Huber with delta = 1e-3 (paper) on residuals in log E, r = log f(C) - log E. Why log E:
     the curves are read on log-log axes (Fig. 4) and the schedule (Eq. 2) needs the law at every error
     level, so a 1% miss counts the same at E = 0.8 and at E = 0.08; evaluation noise is roughly
     multiplicative; and the metric may be a loss > 1 (LM val_loss) where delta in absolute units means
     something else. delta = 1e-3 in log E is a 0.1% relative error, about the paper's 1e-3 on errors of
     0.2-0.8; real noise is larger, so the fit is nearly least-absolute-deviation: robust to eval spikes;
  4. flags a parameter the fit left at a limit of its search box ("at_bound": b at 0.01 or 5, a at its
     limits, c at the largest E, d at 1000x the largest compute): the data asked for a value beyond it, so
     the box, not the data, set it, and the law is no law (schedule.py leaves such laws out). c = 0 and
     d ~ 0 (1e-6 of the smallest compute) are the law family's own edges, no floor / no knee in sight, and
     valid laws; they are listed as "at_zero" for information;
  5. bootstraps raw points (fixed seed), re-running steps 1-2 per draw (warm-started from the best fit):
     95% intervals of a, b, c, d and of E at a few compute values (raw, not resampled points: one raw
     point can fill several interpolated bins, and drawing those as independent gives too narrow intervals);
  6. refits on compute <= 30% of the maximum and reports the extrapolation error on the rest.
Seeds: runs of one configuration with different seeds (header config "seed") are pooled into ONE law.
A law describes a shape, and seeds are samples of the same expected curve: pooling averages the
evaluation wobble that a fit to a single run would chase, and the bootstrap over the pooled points gives
the interval. --per-seed fits one law per (config, seed) ("patch=7 seed=1") to look at the spread.
Cost wall: the laws are in seconds; each law also records "flops_per_second" (its runs' FLOPs over their
seconds in the fitted range), with which schedule.py turns a schedule in seconds into FLOPs switch points.
Writes laws.json (see docs/design.md; strict JSON: a value that is not finite is refused or written as null with
a reason; atomic) and laws.png beside it (points, laws, bands; log-log).

As a library (numpy + scipy only; copy this file). The law vocabulary is the same in schedule.py:
    law = fit_law(C, E, name="patch=7");  law(1e13);  law.inverse(0.2);  law.inverse_slope(0.2);  law.start
    laws = load_laws("laws.json");  save_laws(laws, "laws.json", metric="fewshot10_error", cost="flops")
"""
import glob
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

FORM = "E = a*(C+d)**(-b) + c"
NOT_METRICS = {"type", "step", "samples", "tokens", "flops", "wall", "config"}
MIN_POINTS = 5
COSTS = {"flops": "flops", "wall": "seconds"}  # --cost -> the unit's name in laws.json's ci / extrapolation
BOUND_TOL = 1e-4  # relative: a parameter this close to a limit of the search box sits at it


class UserError(ValueError):
    """Bad input: the message is one line naming the file/run and the problem."""


def warn(msg):
    print(f"fit_laws.py: warning: {msg}", file=sys.stderr)

# -----------------------------------------------------------------------------
# the law


@dataclass
class Law:
    """E = a*(C+d)^(-b) + c for one configuration, C the cost (FLOPs, or seconds with cost "wall").
    Calls are vectorised over numpy arrays; a scalar in gives a float out. Same vocabulary as schedule.Law:
    law(C) -> E;  law.inverse(E) -> C;  law.inverse_slope(E) -> dC/dE;  law.start -> E where the law starts."""
    name: str = ""
    config: dict = field(default_factory=dict)
    a: float = 1.0
    b: float = 0.5
    c: float = 0.0
    d: float = 0.0
    flops_range: tuple = (0.0, math.inf)  # FLOPs range of the fitted points
    cost_range: tuple | None = None  # cost range the law was fitted on (= flops_range with cost "flops")
    metric: str = ""  # file-level in laws.json
    cost: str = "flops"  # file-level in laws.json
    residual: float | None = None  # RMS of log(f(C)/E) over the fitted (resampled) points
    n_points: int = 0  # resampled points fitted (raw points: n_raw)
    n_raw: int = 0
    starts: int = 0  # initialisations tried
    starts_converged: int = 0  # of which L-BFGS-B reported convergence
    starts_at_best: int = 0  # of which reached the best loss (within 1e-6 relative)
    at_bound: list = field(default_factory=list)  # parameters at a limit of the search box: not a law
    at_zero: list = field(default_factory=list)  # c = 0 / d ~ 0: the family's own edges (valid)
    runs: list = field(default_factory=list)  # runs whose points were fitted
    seeds: list = field(default_factory=list)  # their seeds (header config "seed")
    seed: int | None = None  # --per-seed: the one seed of this law
    warmup_dropped: int = 0  # points dropped as warm-up
    flops_per_second: float | None = None  # cost "wall": the runs' FLOPs / seconds over the fitted range
    ci: dict | None = None  # bootstrap intervals, see _bootstrap()
    extrapolation: dict | None = None  # see extrapolation_check()
    boot: np.ndarray | None = field(default=None, repr=False)  # (N, 4) bootstrap a, b, c, d; not saved

    def __call__(self, C):
        """Eq. 1: predicted E at cost C."""
        with np.errstate(divide="ignore", over="ignore"):
            return (self.a * (np.asarray(C, float) + self.d) ** -self.b + self.c)[()]  # [()]: 0-d -> float

    @property
    def start(self):
        """Where the law starts: law(0), or law(1) when d < 1 (d = 0 would give infinity)."""
        return float(self.a * max(self.d, 1.0) ** -self.b + self.c)

    def inverse(self, E):
        """Cost at which the law reaches E, clamped at 0: 0 for E >= law(0) (reached before any cost);
        inf for E <= c (never reached)."""
        g = (np.asarray(E, float) - self.c) / self.a
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            C = np.where(g > 0, np.maximum(np.abs(g) ** (-1.0 / self.b) - self.d, 0.0), np.inf)
        return C[()]

    def inverse_slope(self, E):
        """dC/dE of the unclamped inverse at E (Eq. 2's q_P; negative: less error costs more);
        -inf for E <= c."""
        g = (np.asarray(E, float) - self.c) / self.a
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            q = np.where(g > 0, -np.abs(g) ** (-1.0 / self.b - 1.0) / (self.a * self.b), -np.inf)
        return q[()]

    def to_dict(self):
        """The JSON object of laws.json (metric and cost are file-level, boot is not saved); a value that is not
        finite (a hand-made law's open flops_range, an overflow in ci) becomes null, named in "null_reason"."""
        out = {k: [float(x) for x in v] if k.endswith("_range") and v is not None else v
               for k, v in vars(self).items() if k not in ("metric", "cost", "boot")}
        nulls = []
        out = {k: _finite_or_null(v, k, nulls) for k, v in out.items()}
        if nulls:
            out["null_reason"] = f"not finite (infinite or overflowed float64): {', '.join(nulls)}"
        return out

    @classmethod
    def from_dict(cls, d, metric="", where="laws.json", cost="flops"):
        if not isinstance(d, dict) or not isinstance(d.get("config", {}), dict):
            raise UserError(f"{where}: must be an object with a dict field 'config'")
        for k in "abcd":
            v = d.get(k)
            if not _finite(v) or v < 0 or (k in "ab" and v == 0):
                raise UserError(f"{where}: field '{k}' must be a finite number > 0 (>= 0 for c, d), got {v!r}")
        ranges = {}
        for k in ("flops_range", "cost_range"):
            fr = d.get(k) or d.get("flops_range") or [0.0, None]
            if not (isinstance(fr, list) and len(fr) == 2 and _finite(fr[0])
                    and (fr[1] is None or fr[1] == math.inf or _finite(fr[1]))):
                raise UserError(f"{where}: field '{k}' must be [lo, hi] (hi null: open)")
            ranges[k] = (float(fr[0]), math.inf if fr[1] is None else float(fr[1]))
        known = {k: d[k] for k in vars(cls()) if k in d and k != "boot"}
        known.update(ranges, metric=metric, cost=cost, name=d.get("name") or name_of(d.get("config", {})))
        return cls(**known)


def _finite(v):
    """A JSON number that float64 holds: not NaN, not infinite, not a 400-digit integer."""
    return type(v) in (int, float) and (math.isfinite(v) if type(v) is float else abs(v) < 1.7e308)


def _finite_or_null(x, where, nulls):
    """x with every float that is not finite replaced by None (strict JSON); their places go to nulls."""
    if isinstance(x, dict):
        return {k: _finite_or_null(v, f"{where}.{k}", nulls) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_null(v, f"{where}[{i}]", nulls) for i, v in enumerate(x)]
    if isinstance(x, (float, np.floating)) and not math.isfinite(x):
        nulls.append(where)
        return None
    return x.item() if isinstance(x, np.generic) else x


def name_of(config):
    return ",".join(f"{k}={v}" for k, v in config.items()) or "default"


def save_laws(laws, path, metric=None, extra=None, cost=None):
    """Write laws.json atomically (path.tmp, then os.replace) as strict JSON; `extra`: more top-level fields.
    A law whose a, b, c, d or residual is not finite is a ValueError (fit_law refuses those laws)."""
    metric = metric if metric is not None else (laws[0].metric if laws else "")
    cost = cost if cost is not None else (laws[0].cost if laws else "flops")
    doc = {"version": 1, "metric": metric, "cost": cost, "form": FORM, "laws": [law.to_dict() for law in laws],
           **(extra or {})}
    text = json.dumps(doc, indent=1, allow_nan=False, default=lambda x: x.tolist()) + "\n"  # numpy -> JSON
    try:
        with open(f"{path}.tmp", "w") as f:
            f.write(text)
        os.replace(f"{path}.tmp", path)
    finally:
        Path(f"{path}.tmp").unlink(missing_ok=True)


def load_laws(path):
    """Read laws.json -> list[Law] (each with the file's metric and cost); a one-line UserError naming the
    file and field on a bad file. schedule.load_laws reads the same file into the same list[Law] shape."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, a 5000-digit number
        raise UserError(f"{path}: cannot read laws ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise UserError(f"{path}: field 'version' must be 1")
    if not isinstance(doc.get("laws"), list) or not doc["laws"]:
        raise UserError(f"{path}: field 'laws' must be a non-empty list")
    cost = doc.get("cost", "flops")
    if cost not in COSTS:
        raise UserError(f"{path}: field 'cost' must be one of {', '.join(COSTS)} (got {cost!r})")
    return [Law.from_dict(d, doc.get("metric", ""), f"{path}: laws[{i}]", cost) for i, d in enumerate(doc["laws"])]


# -----------------------------------------------------------------------------
# fitting: theta = (log A, log b, c, log D), x = C / s, A = a * s^-b, D = d / s  (s = max compute)


def resample(C, E, points=50):
    """Curve -> ~`points` points equidistant in log C (mean of log-log points per bin; empty bins interpolated)."""
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
    """Huber(log f(x) - y) / (n*delta) and its gradient in theta = (log A, log b, c, log D)."""
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


def _bounds(x, E):
    lo, hi = float(E.min()), float(E.max())
    return [(math.log(1e-8 * lo), math.log(1e8 * hi)), (math.log(1e-2), math.log(5.0)),
            (0.0, hi), (math.log(1e-6 * x.min()), math.log(1e3))]


def _edges(theta, bounds):
    """Parameters the fit left at a limit of its box -> (at_bound, at_zero). Every limit is a box limit except
    c = 0 and d ~ 0 (D's lower limit), the law family's own edges, reported as at_zero."""
    at_bound, at_zero = [], []
    for j, k in enumerate("abcd"):
        lo, hi = bounds[j]
        tol = BOUND_TOL * (abs(hi) if k == "c" else 1.0)  # theta is log a, log b, log d: tolerance is relative
        if theta[j] <= lo + tol:
            (at_zero if k in "cd" else at_bound).append(k)
        elif theta[j] >= hi - tol:
            at_bound.append(k)
    return at_bound, at_zero


def _grid(x, E, delta, k=8):
    """Initialisations: a 16 x 16 grid over (b, D); for each cell A and c solve a weighted linear least-squares
    problem (relative residuals), so every cell is a sensible law. The k cells of lowest loss are returned."""
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
    best = np.argsort(loss, axis=None)[:k]
    i, j = np.unravel_index(best, loss.shape)
    return np.stack([np.log(A[i, j]), np.log(b[i, 0, 0]), c[i, j], np.log(D[0, j, 0])], 1)


def _minimize(theta0, x, y, delta, bounds):  # loss ~1e-3: default tolerances stop early on flat b-c ridges
    return minimize(_loss, theta0, args=(x, y, delta), jac=True, method="L-BFGS-B", bounds=bounds,
                    options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-7})


def _to_params(theta, s):
    (A, b, D), c = np.exp(theta[[0, 1, 3]]), theta[2]
    with np.errstate(over="ignore"):  # an overflow (extreme compute values) is refused by fit_law
        return np.array([A * s ** b, b, c, D * s])


def _fit_points(C, E, delta):
    """Best of several L-BFGS-B runs on points (C, E) -> (params a,b,c,d, theta, counts, scale s, bounds)."""
    s = C.max()
    x, y = C / s, np.log(E)
    bounds = _bounds(x, E)
    results = [_minimize(np.clip(t, *np.array(bounds).T), x, y, delta, bounds) for t in _grid(x, E, delta)]
    best = min(results, key=lambda r: r.fun if np.isfinite(r.fun) else np.inf)
    at_best = sum(r.fun <= best.fun + 1e-6 * abs(best.fun) + 1e-12 for r in results)
    counts = (len(results), int(sum(r.success for r in results)), int(at_best))
    return _to_params(best.x, s), best.x, counts, s, bounds


def fit_law(C, E, *, name="", config=None, metric="", points=50, delta=1e-3, bootstrap=0, seed=0,
            extrap_frac=0.3, predict_at=(), level=0.95, cost="flops"):
    """Fit E = a*(C+d)^(-b) + c to one curve (any order; C, E > 0, finite) -> Law with extras filled in.
    points: resampled points; delta: Huber delta on log E; bootstrap: resamples (0: no intervals), with
    `level` intervals also at the cost values `predict_at`; extrap_frac=None skips the extrapolation check;
    cost: "flops" or "wall" (C in seconds), which names the unit in ci and extrapolation.
    A law whose a, b, c, d or residual is not finite (float64 overflow on extreme inputs) is a UserError."""
    C, E = np.asarray(C, float).ravel(), np.asarray(E, float).ravel()
    if C.shape != E.shape or not (np.all(np.isfinite(C)) and np.all(np.isfinite(E))):
        raise UserError(f"C and E must be finite and of one length (got {len(C)} and {len(E)} values)")
    if np.any(C <= 0) or np.any(E <= 0):
        raise UserError("compute and metric must be > 0 (the law is fitted in log-log)")
    if len(np.unique(C)) < MIN_POINTS:
        raise UserError(f"{len(np.unique(C))} distinct compute values, need at least {MIN_POINTS}")
    order = np.argsort(C, kind="stable")
    C, E = C[order], E[order]
    Cr, Er = resample(C, E, points)
    (a, b, c, d), theta, (n_starts, n_conv, n_best), s, bounds = _fit_points(Cr, Er, delta)
    at_bound, at_zero = _edges(theta, bounds)
    law = Law(name=name, config=dict(config or {}), a=float(a), b=float(b), c=float(c), d=float(d),
              flops_range=(float(C[0]), float(C[-1])), cost_range=(float(C[0]), float(C[-1])), metric=metric,
              cost=cost, n_points=len(Cr), n_raw=len(C), starts=n_starts, starts_converged=n_conv,
              starts_at_best=n_best, at_bound=at_bound, at_zero=at_zero)
    with np.errstate(all="ignore"):
        law.residual = float(np.sqrt(np.mean(np.log(law(Cr) / Er) ** 2)))
    values = {"a": law.a, "b": law.b, "c": law.c, "d": law.d, "residual": law.residual}
    bad = [f"{k} = {v:g}" for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise UserError(f"{name or 'law'}: fitted {', '.join(bad)} is not finite in float64 (compute from "
                        f"{C[0]:.3g} to {C[-1]:.3g}, metric from {E.min():.3g} to {E.max():.3g}); rescale them")
    if bootstrap > 0:
        law.boot, law.ci = _bootstrap(C, E, points, theta, s, delta, bootstrap, seed, predict_at, law, level)
    if extrap_frac is not None:
        law.extrapolation = extrapolation_check(C, E, Cr, Er, extrap_frac, points, delta, COSTS[cost])
    return law


def _bootstrap(C, E, points, theta, s, delta, n_boot, seed, predict_at, law, level):
    """Resample + refit (warm-started at theta) on raw points drawn with replacement -> (params (N, 4), ci)."""
    bounds = _bounds(C / s, E)
    boot = []
    for i in np.sort(np.random.default_rng(seed).integers(0, len(C), (n_boot, len(C))), axis=1):
        Cb, Eb = resample(C[i], E[i], points)
        boot.append(_to_params(_minimize(theta, Cb / s, np.log(Eb), delta, bounds).x, s))
    boot = np.array(boot).reshape(-1, 4)
    q = [50 * (1 - level), 50 * (1 + level)]
    ci = {"level": level, "n": len(boot), **{k: np.percentile(boot[:, j], q).tolist() for j, k in enumerate("abcd")}}
    lo, hi = law.cost_range
    unit = COSTS[law.cost]
    flops = sorted({lo, math.exp(0.5 * (math.log(lo) + math.log(hi))), hi, *map(float, predict_at)})  # no overflow
    ci["E"] = [{unit: f, "E": float(law(f)), **dict(zip(("lo", "hi"), map(float, band(boot, f, q))))} for f in flops]
    return boot, ci


def band(boot, C, q=(2.5, 97.5)):
    """Percentiles of E(C) over bootstrap parameter samples (N, 4) -> (lo, hi), each shaped like C."""
    a, b, c, d = (boot[:, j, None] for j in range(4))
    Cs = np.atleast_1d(np.asarray(C, float))[None, :]
    with np.errstate(all="ignore"):
        lo, hi = np.percentile(a * (Cs + d) ** -b + c, q, axis=0)
    return (lo[0], hi[0]) if np.ndim(C) == 0 else (lo, hi)


def extrapolation_check(C, E, Cr, Er, frac, points, delta, unit="flops"):
    """Refit on C <= frac * max C; relative and log errors on the full curve's resampled points beyond."""
    cut = frac * C[-1]
    head, test = C <= cut, Cr > cut
    if len(np.unique(C[head])) < MIN_POINTS or not test.any():
        return {"frac": frac, "skipped": f"need >= {MIN_POINTS} points below and 1 above {cut:.3g} {unit}"}
    Ch, Eh = resample(C[head], E[head], points)
    (a, b, c, d), *_ = _fit_points(Ch, Eh, delta)
    with np.errstate(all="ignore"):
        pred = Law(a=a, b=b, c=c, d=d)(Cr[test])
        rel = np.abs(pred / Er[test] - 1)
        log_rmse = np.sqrt(np.mean(np.log(pred / Er[test]) ** 2))
    return {"frac": frac, f"{unit}_cut": float(cut), "n_fit": len(Ch), "n_test": int(test.sum()),
            "rel_mean": float(rel.mean()), "rel_max": float(rel.max()), "rel_last": float(rel[-1]),
            "log_rmse": float(log_rmse), "a": float(a), "b": float(b), "c": float(c), "d": float(d)}

# -----------------------------------------------------------------------------
# reading run logs


def find_logs(paths):
    """log.jsonl files from files, folders (searched recursively) and globs; in the order given."""
    files = []
    for p in paths:
        pattern = glob.has_magic(p)  # folders a pattern matches may hold no log; a folder named must
        matches = sorted(glob.glob(p, recursive=True)) if pattern else [p]
        if not matches:
            raise UserError(f"{p}: no file or folder matches this pattern")
        for m in map(Path, matches):
            if not m.exists():
                raise UserError(f"{m}: no such file or folder")
            found = sorted(m.rglob("log.jsonl")) if m.is_dir() else [m]
            if not found and not pattern:
                raise UserError(f"{m}: no log.jsonl in this folder")
            files += found
    files = list(dict.fromkeys(f.resolve() for f in files))
    if not files:
        raise UserError(f"no log.jsonl found in {' '.join(paths) or '(no --logs given)'}")
    return files


def _read_run(path):
    """-> (run name, header config, eval records); UserError on an unreadable file."""
    header, evals, i = None, [], 0
    try:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines, 1):
            rec = json.loads(line) if line.strip() else {}
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{i}: a record must be a JSON object")
            if rec.get("type") == "header":
                header = rec
            elif rec.get("type") == "eval":
                evals.append({**rec, "_line": i})
    except UserError:
        raise
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, a 5000-digit number
        raise UserError(f"{path}:{i}: cannot read ({type(e).__name__}: {str(e)[:200]})") from None
    run = str((header or {}).get("run") or path.parent.name)
    if not evals:
        raise UserError(f"run {run} ({path}): {'empty log' if not lines else 'no eval records'}")
    config = (header or {}).get("config", {})
    if not isinstance(config, dict):
        raise UserError(f"{path}: the header's 'config' must be an object (got {config!r:.60})")
    return run, config, evals


def _run_curve(run, path, evals, metric, cost="flops"):
    """Eval records of one run -> (config, C, E, flops, records); C is the cost: "flops", or "wall" seconds.
    UserError naming the run and the problem."""
    where = f"run {run} ({path})"
    if len({json.dumps(r.get("config", {}), sort_keys=True) for r in evals}) > 1:
        raise UserError(f"{where}: records have several configs (a scheduled run?); fit static runs only")
    recs = [r for r in evals if metric in r]
    if not recs:
        raise UserError(f"{where}: no record has metric '{metric}'")
    if cost == "wall" and any("wall" not in r for r in recs):
        line = next(r["_line"] for r in recs if "wall" not in r)
        raise UserError(f"{where}: line {line}: no 'wall' (training seconds), which --cost wall needs; "
                        "use --cost flops or logs of trainers that record 'wall'")
    for k in dict.fromkeys(("flops", cost, metric)):
        bad = [r for r in recs if not _finite(r.get(k))
               or (k == metric and r[k] <= 0)]
        if bad:
            raise UserError(f"{where}: line {bad[0]['_line']}: '{k}' is {bad[0].get(k)!r}, need a finite "
                            f"number{' > 0 (the law is fitted in log-log)' if k == metric else ''}")
    C, E, F = (np.array([r[k] for r in recs], float) for k in (cost, metric, "flops"))
    for k, x in {cost: C, "flops": F}.items():
        bad = np.flatnonzero(np.diff(x) <= 0)
        if len(bad):
            raise UserError(f"{where}: {k} not increasing at line {recs[bad[0] + 1]['_line']} "
                            f"({k} {x[bad[0]]:.4g} -> {x[bad[0] + 1]:.4g})")
    return dict(evals[0].get("config", {})), C, E, F, recs


def warmup_flops(run, path, header_config, recs):
    """FLOPs at the end of warm-up: flops interpolated at step = the header config's "warmup" over the records
    (from step 0 at 0 FLOPs; past the last record at the run's mean FLOPs per step). 0 when the header names
    no warm-up (None when it names none at all)."""
    w = header_config.get("warmup")
    if w is None:
        return None
    if type(w) not in (int, float) or not math.isfinite(w) or w < 0:
        raise UserError(f"run {run} ({path}): header config 'warmup' is {w!r}, need a number of steps >= 0")
    if w == 0:
        return 0.0
    if any(type(r.get("step")) not in (int, float) for r in recs):
        raise UserError(f"run {run} ({path}): records lack 'step', needed to place the end of warm-up "
                        f"({w} steps); pass --keep-warmup to keep every point")
    steps = np.r_[0.0, [r["step"] for r in recs]]
    flops = np.r_[0.0, [r["flops"] for r in recs]]
    if w <= steps[-1]:
        return float(np.interp(w, steps, flops))
    return float(flops[-1] / steps[-1] * w)  # steps[-1] > 0: the flops increase


@dataclass
class Curve:
    """One configuration's points pooled over its runs (one seed's with per_seed), sorted by cost; unpacks
    as (config, C, E) like the tuple read_logs returned before."""
    config: dict
    C: np.ndarray  # cost: cumulative FLOPs, or training seconds with cost "wall"
    E: np.ndarray
    flops: np.ndarray  # cumulative FLOPs of each point
    runs: list
    seeds: list
    seed: int | None = None  # per_seed: the one seed
    warmup_dropped: int = 0  # points dropped as warm-up
    no_warmup: list = field(default_factory=list)  # runs whose header names no warm-up (nothing dropped)
    flops_per_second: float | None = None  # cost "wall": sum of the runs' FLOPs / sum of their seconds

    def __iter__(self):
        return iter((self.config, self.C, self.E))


def read_logs(paths, metric, *, min_flops=0.0, min_flops_frac=0.0, skip_bad=False, keep_warmup=False,
              per_seed=False, cost="flops"):
    """Run logs -> {name: Curve}: one per configuration, its runs (seeds) pooled, or with per_seed one per
    (configuration, seed) named "patch=7 seed=1". Records with flops <= 0 (eval before training), below the
    end of warm-up (unless keep_warmup), or below min_flops / min_flops_frac * max are dropped.
    Per-run/per-configuration problems raise UserError, or with skip_bad become warnings."""
    def attempt(fn, *args):  # per-run / per-configuration: an error, or with skip_bad a warning
        try:
            return fn(*args)
        except UserError as e:
            if not skip_bad:
                raise
            warn(f"{e}; skipped")

    runs = [(path, got) for path in find_logs(paths) if (got := attempt(_read_run, path))]
    seen = {k for _, (_, _, evals) in runs for r in evals for k, v in r.items()
            if k not in NOT_METRICS and not k.startswith("_") and type(v) in (int, float)}
    if runs and metric not in seen and not any(metric in r for _, (_, _, evals) in runs for r in evals):
        raise UserError(f"unknown metric '{metric}'; the logs contain: {', '.join(sorted(seen)) or 'none'}")
    groups = {}
    for path, (run, header, evals) in runs:
        got = attempt(_run_curve, run, path, evals, metric, cost)
        warm = 0.0 if keep_warmup or not got else attempt(warmup_flops, run, path, header, got[4])
        if not got or (warm is None and header.get("warmup") is not None):  # a bad warmup, skipped
            continue
        seed = header.get("seed")
        key = json.dumps(got[0], sort_keys=True) + (f" seed={seed}" if per_seed else "")
        g = groups.setdefault(key, {"config": got[0], "seed": seed if per_seed else None, "parts": []})
        g["parts"].append((run, seed, warm, *got[1:4]))
    # name a law by the keys in which the configurations differ (patch=7, not patch=7,width=64,...)
    configs = {json.dumps(g["config"], sort_keys=True): g["config"] for g in groups.values()}.values()
    shared = {k for k in set().union(*configs) if len({json.dumps(c.get(k)) for c in configs}) == 1} \
        if len(configs) > 1 else set()
    curves = {}
    for g in groups.values():
        name = name_of({k: v for k, v in g["config"].items() if k not in shared})
        name += f" seed={'?' if g['seed'] is None else g['seed']}" if per_seed else ""
        if got := attempt(_pool, name, g, min_flops, min_flops_frac, cost):
            curves[name] = got
    if not curves:
        raise UserError("no configuration left to fit" + (" (all skipped)" if skip_bad else ""))
    return curves


def _pool(name, g, min_flops, min_flops_frac, cost):
    """One group's runs -> Curve: points past warm-up and the --min-flops cuts, sorted by cost, and with cost
    "wall" the FLOPs per second over the kept points (sum over runs of their FLOPs / seconds spans)."""
    parts = [dict(zip(("run", "seed", "warm", "C", "E", "F"), p)) for p in g["parts"]]
    f_max = max(p["F"].max() for p in parts)
    for p in parts:
        F, warm = p["F"], p["warm"] or 0.0  # warm None: the header names no warm-up
        p["keep"] = (F > 0) & (p["C"] > 0) & (F >= warm) & (F >= min_flops) & (F >= min_flops_frac * f_max)
        p["dropped"] = int(((F > 0) & (F < warm)).sum())
    C, E, F = (np.concatenate([p[k][p["keep"]] for p in parts]) for k in "CEF")
    runs = [p["run"] for p in parts]
    if len(np.unique(C)) < MIN_POINTS:
        raise UserError(f"config {name} (runs {', '.join(runs)}): {len(np.unique(C))} points with flops > 0, "
                        f"past warm-up and >= --min-flops, need at least {MIN_POINTS}")
    order = np.argsort(C, kind="stable")
    fps = None
    if cost == "wall":  # FLOPs and seconds spent between each run's first and last fitted point
        spans = [(p["F"][p["keep"]][[0, -1]], p["C"][p["keep"]][[0, -1]]) for p in parts if p["keep"].sum() > 1]
        seconds = sum(c[1] - c[0] for _, c in spans)
        fps = float(sum(f[1] - f[0] for f, _ in spans) / seconds if seconds > 0 else F.max() / C.max())
    seeds = list(dict.fromkeys(p["seed"] for p in parts if p["seed"] is not None))
    try:
        seeds.sort()
    except TypeError:  # seeds of mixed types: keep the order met
        pass
    return Curve(g["config"], C[order], E[order], F[order], runs, seeds, g["seed"], sum(p["dropped"] for p in parts),
                 [p["run"] for p in parts if p["warm"] is None], fps)

# -----------------------------------------------------------------------------
# plot, summary, command line


def plot_laws(laws, curves, path, metric=""):
    """Points and fitted laws per configuration on log-log axes (paper Fig. 4), 95% bootstrap band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for i, law in enumerate(laws):
        color = f"C{i % 10}"
        ax.scatter(curves[law.name].C, curves[law.name].E, s=8, alpha=0.5, color=color, linewidths=0)
        grid = np.geomspace(*law.cost_range, 200)
        bound = f" (at bound: {','.join(law.at_bound)})" if law.at_bound else ""
        ax.plot(grid, law(grid), color=color, label=f"{law.name}: b={law.b:.2f}, c={law.c:.3g}{bound}")
        if law.boot is not None and len(law.boot):
            ax.fill_between(grid, *band(law.boot, grid), color=color, alpha=0.2, linewidth=0)
    xlabel = "compute C (FLOPs)" if not laws or laws[0].cost == "flops" else "training time C (seconds)"
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=metric or "E", title=FORM)
    ax.yaxis.set_major_formatter("{x:.3g}"), ax.yaxis.set_minor_formatter("{x:.3g}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)


def summary(laws):
    head = f"{'law':<24} {'pts':>4} {'a':>9} {'b':>6} {'c':>9} {'d':>9} {'resid':>7} {'conv':>5} {'best':>4} " \
           f"{'extrap rel_last':>15} {'log_rmse':>8} {'at bound':>8}"
    rows = [head, "-" * len(head)]
    for law in laws:
        ex = law.extrapolation or {}
        ext = (f"{ex['rel_last']:>15.2%} {ex['log_rmse']:>8.4f}" if "rel_last" in ex else f"{'-':>15} {'-':>8}")
        rows.append(f"{law.name:<24} {law.n_points:>4} {law.a:>9.3g} {law.b:>6.3f} {law.c:>9.3g} {law.d:>9.3g} "
                    f"{law.residual:>7.4f} {law.starts_converged:>3}/{law.starts:<1} {law.starts_at_best:>4} {ext} "
                    f"{','.join(law.at_bound) or '-':>8}")
    for law in laws:
        if law.at_bound:
            rows.append(f"law {law.name}: {', '.join(f'{k} = {getattr(law, k):.4g}' for k in law.at_bound)} at a "
                        "limit of the fit's search box: the data did not set it (schedule.py leaves this law out "
                        "unless --allow-bound-laws)")
    return "\n".join(rows)


def warmup_line(curves, keep_warmup):
    """The summary's line on warm-up: how many points it dropped, from how many runs."""
    if keep_warmup:
        return "warm-up: kept (--keep-warmup)"
    no = [r for cv in curves.values() for r in cv.no_warmup]
    n_runs = sum(len(cv.runs) for cv in curves.values()) - len(no)
    line = (f"warm-up: dropped {sum(cv.warmup_dropped for cv in curves.values())} points below the FLOPs at the "
            f"end of warm-up (header 'warmup' steps) of {n_runs} runs")
    return line + (f"; {len(no)} runs name no warmup, nothing dropped: {', '.join(no)}" if no else "")


@dataclass
class Config:
    logs: list[str]
    """log.jsonl files, folders holding them (searched recursively) or globs"""
    metric: str = "fewshot10_error"
    """metric to fit, by its name in the eval records (fewshot10_error, test_error, val_loss, ...)"""
    out: str = "laws.json"
    """output laws.json; the plot goes beside it (same name, .png)"""
    cost: str = "flops"
    """x-axis of the laws: "flops" (cumulative training FLOPs) or "wall" (cumulative training seconds, App. F)"""
    keep_warmup: bool = False
    """keep the points before the end of warm-up (default: drop those below the FLOPs at step = header warmup)"""
    per_seed: bool = False
    """one law per (config, seed), to see the spread (default: one law per config on all its seeds' points)"""
    min_flops: float = 0.0
    """drop records below this compute"""
    min_flops_frac: float = 0.0
    """drop records below this fraction of each configuration's largest compute"""
    points: int = 50
    """points per curve after resampling to ~equidistant log-compute"""
    delta: float = 1e-3
    """Huber delta on residuals in log E (paper: 1e-3)"""
    bootstrap: int = 100
    """bootstrap resamples for the confidence intervals (0: none)"""
    seed: int = 0
    """bootstrap seed"""
    extrap_frac: float = 0.3
    """extrapolation check: refit on compute <= this fraction of the maximum, test on the rest"""
    predict_at: list[float] = field(default_factory=list)
    """cost values at which to report E with its interval (besides the range's ends and middle)"""
    skip_bad: bool = False
    """turn per-configuration problems into warnings and fit the rest"""
    plot: bool = True
    """write laws.png beside laws.json"""


def check_args(cfg):
    """Bad flags and an output path that cannot be written, before any work."""
    if not (MIN_POINTS <= cfg.points <= 100_000 and 0 <= cfg.bootstrap <= 100_000 and 0 < cfg.extrap_frac < 1
            and cfg.delta > 0):
        raise UserError("need 5 <= --points <= 100000, 0 <= --bootstrap <= 100000, 0 < --extrap-frac < 1, --delta > 0")
    if cfg.cost not in COSTS:
        raise UserError(f"--cost must be one of {', '.join(COSTS)} (got {cfg.cost!r})")
    if not (math.isfinite(cfg.min_flops) and cfg.min_flops >= 0):
        raise UserError(f"--min-flops {cfg.min_flops}: give a finite compute >= 0")
    if not 0 <= cfg.min_flops_frac < 1:
        raise UserError(f"--min-flops-frac {cfg.min_flops_frac}: give a fraction in [0, 1)")
    if not all(math.isfinite(c) and c > 0 for c in cfg.predict_at):
        raise UserError(f"--predict-at {' '.join(map(str, cfg.predict_at))}: give finite cost values > 0")
    out = Path(cfg.out)
    if out.is_dir() or cfg.out.endswith(os.sep):
        raise UserError(f"--out {cfg.out} is a folder; give a file name such as {out / 'laws.json'}")
    if out.suffix.lower() == ".jsonl" or out.name == "log.jsonl":
        raise UserError(f"--out {cfg.out} would overwrite a run log; give a .json name such as laws.json")
    if cfg.plot and out.suffix.lower() == ".png":
        raise UserError(f"--out {cfg.out} is the plot's own path (laws.json's name with .png); "
                        "give a .json name such as laws.json")


def fit_curves(curves, cfg):
    """One law per curve, with the curve's runs, seeds, warm-up and FLOPs per second; a law that cannot be
    fitted (not finite) is an error, or with --skip-bad a warning."""
    laws = []
    for name, cv in curves.items():
        try:
            law = fit_law(cv.C, cv.E, name=name, config=cv.config, metric=cfg.metric, points=cfg.points,
                          delta=cfg.delta, bootstrap=cfg.bootstrap, seed=cfg.seed, extrap_frac=cfg.extrap_frac,
                          predict_at=cfg.predict_at, cost=cfg.cost)
        except UserError as e:
            if not cfg.skip_bad:
                raise
            warn(f"{e}; skipped")
            continue
        law.flops_range = (float(cv.flops.min()), float(cv.flops.max()))
        law.runs, law.seeds, law.seed, law.warmup_dropped = cv.runs, cv.seeds, cv.seed, cv.warmup_dropped
        law.flops_per_second = cv.flops_per_second
        laws.append(law)
    if not laws:
        raise UserError("no configuration left to fit (all skipped)")
    return laws


def main(cfg):
    check_args(cfg)
    curves = read_logs(cfg.logs, cfg.metric, min_flops=cfg.min_flops, min_flops_frac=cfg.min_flops_frac,
                       skip_bad=cfg.skip_bad, keep_warmup=cfg.keep_warmup, per_seed=cfg.per_seed, cost=cfg.cost)
    laws = fit_curves(curves, cfg)
    print(summary(laws))
    print(warmup_line(curves, cfg.keep_warmup))
    out, png = Path(cfg.out), Path(cfg.out).with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fit = {"loss": f"huber(log f(C) - log E), delta={cfg.delta}", "residual": "rms of log(f(C)/E), resampled points",
           **{k: getattr(cfg, k) for k in ("points", "bootstrap", "seed", "min_flops", "min_flops_frac",
                                            "keep_warmup", "per_seed", "logs")}}
    try:
        if cfg.plot:  # to .tmp first: a failed run replaces neither file
            plot_laws(laws, curves, f"{png}.tmp", cfg.metric)
        save_laws(laws, out, metric=cfg.metric, cost=cfg.cost, extra={"fit": fit})
        if cfg.plot:
            os.replace(f"{png}.tmp", png)
    finally:
        Path(f"{png}.tmp").unlink(missing_ok=True)
    print(f"wrote {out}" + (f" and {png}" if cfg.plot else ""))


def cli(args=None):
    """The command line: tyro's flags, bad input (a flag, a file) as one line on stderr and exit code 2; any
    other exception is a bug and keeps its traceback. Returns the exit code."""
    import contextlib
    import io

    import tyro
    box = io.StringIO()
    try:
        with contextlib.redirect_stderr(box):
            cfg = tyro.cli(Config, args=args, prog="fit_laws.py")
    except SystemExit as e:                      # tyro's 6-15-line box, cut to its first paragraph
        if not e.code:
            sys.stderr.write(box.getvalue())
            raise
        words = []
        for ln in (ln.strip("\u2502\u256d\u2570\u256e\u256f| ").strip("\u2500 ") for ln in box.getvalue().splitlines()):
            if ln.startswith(("For full", "Argument", "Perhaps")) or (len(words) > 1 and not ln.strip("-")):
                break
            words += [ln] if ln.strip("-") else []   # the title, then its first paragraph
        print(f"fit_laws.py: error: {' '.join(words) or 'bad flags'}; see fit_laws.py --help", file=sys.stderr)
        return 2
    try:
        main(cfg)
    except (UserError, OSError) as e:
        print(f"fit_laws.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
