"""Fit one scaling law per configuration to run logs: paper Eq. 1/3, E = a*(C+d)^(-b) + c (App. B.4).

    python fit_laws.py --logs runs/patch* --metric fewshot10_error --out laws.json --bootstrap 100

Reads `log.jsonl` files (or folders holding them, or globs), groups the eval records by their
"config" (the shape in force, e.g. {"patch": 7}; static runs only), takes x = the record's
cumulative training "flops" and y = the chosen metric, and per configuration:
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
  4. bootstraps raw points (fixed seed), re-running steps 1-2 per draw (warm-started from the best fit):
     95% intervals of a, b, c, d and of E at a few compute values (raw, not resampled points: one raw
     point can fill several interpolated bins, and drawing those as independent gives too narrow intervals);
  5. refits on compute <= 30% of the maximum and reports the extrapolation error on the rest.
Writes laws.json (see DESIGN.md; atomic) and laws.png beside it (points, laws, bands; log-log).

As a library (numpy + scipy only; copy this file):
    law = fit_law(C, E, name="patch=7");  law(1e13);  law.inverse(0.2);  law.inverse_slope(0.2)
    laws = load_laws("laws.json");  save_laws(laws, "laws.json", metric="fewshot10_error")
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


class UserError(ValueError):
    """Bad input: the message is one line naming the file/run and the problem."""


def warn(msg):
    print(f"fit_laws.py: warning: {msg}", file=sys.stderr)

# -----------------------------------------------------------------------------
# the law


@dataclass
class Law:
    """E = a*(C+d)^(-b) + c for one configuration. Calls are vectorised over numpy arrays."""
    name: str = ""
    config: dict = field(default_factory=dict)
    a: float = 1.0
    b: float = 0.5
    c: float = 0.0
    d: float = 0.0
    flops_range: tuple = (0.0, math.inf)  # compute range the law was fitted on
    metric: str = ""
    residual: float | None = None  # RMS of log(f(C)/E) over the fitted (resampled) points
    n_points: int = 0  # resampled points fitted (raw points: n_raw)
    n_raw: int = 0
    starts: int = 0  # initialisations tried
    starts_converged: int = 0  # of which L-BFGS-B reported convergence
    starts_at_best: int = 0  # of which reached the best loss (within 1e-6 relative)
    ci: dict | None = None  # bootstrap intervals, see _bootstrap()
    extrapolation: dict | None = None  # see extrapolation_check()
    boot: np.ndarray | None = field(default=None, repr=False)  # (N, 4) bootstrap a, b, c, d; not saved

    def __call__(self, C):
        """Predicted E at compute C (FLOPs)."""
        return (self.a * (np.asarray(C, float) + self.d) ** -self.b + self.c)[()]  # [()]: 0-d array -> float

    def inverse(self, E):
        """Compute C at which the law reaches E; inf for E <= c. C < 0 when E lies above f(0)."""
        g = (np.asarray(E, float) - self.c) / self.a
        with np.errstate(divide="ignore", invalid="ignore"):
            C = np.where(g > 0, np.abs(g) ** (-1.0 / self.b) - self.d, np.inf)
        return C[()]

    def inverse_slope(self, E):
        """dC/dE of the inverse law at E (Eq. 2; negative: less error costs more compute); -inf for E <= c."""
        g = (np.asarray(E, float) - self.c) / self.a
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(g > 0, -np.abs(g) ** (-1.0 / self.b - 1.0) / (self.a * self.b), -np.inf)
        return q[()]

    def to_dict(self):  # the JSON object of laws.json; metric is file-level, boot is not saved
        return {k: list(map(float, v)) if k == "flops_range" else v for k, v in vars(self).items()
                if k not in ("metric", "boot")}

    @classmethod
    def from_dict(cls, d, metric="", where="laws.json"):
        if not isinstance(d, dict) or not isinstance(d.get("config", {}), dict):
            raise UserError(f"{where}: must be an object with a dict field 'config'")
        for k in "abcd":
            v = d.get(k)
            if type(v) not in (int, float) or not math.isfinite(v) or v < 0 or (k in "ab" and v == 0):
                raise UserError(f"{where}: field '{k}' must be a finite number > 0 (>= 0 for c, d), got {v!r}")
        fr = d.get("flops_range", [0.0, math.inf])
        if not (isinstance(fr, list) and len(fr) == 2 and all(type(v) in (int, float) for v in fr)):
            raise UserError(f"{where}: field 'flops_range' must be [lo, hi]")
        known = {k: d[k] for k in vars(cls()) if k in d and k != "boot"}
        known.update(flops_range=(float(fr[0]), float(fr[1])), metric=metric,
                     name=d.get("name") or name_of(d.get("config", {})))
        return cls(**known)


def name_of(config):
    return ",".join(f"{k}={v}" for k, v in config.items()) or "default"


def save_laws(laws, path, metric=None, extra=None):
    """Write laws.json atomically (path.tmp, then os.replace); `extra`: more top-level fields."""
    metric = metric if metric is not None else (laws[0].metric if laws else "")
    doc = {"version": 1, "metric": metric, "form": FORM, "laws": [law.to_dict() for law in laws], **(extra or {})}
    text = json.dumps(doc, indent=1, default=lambda x: x.tolist()) + "\n"  # numpy scalars/arrays -> JSON
    with open(f"{path}.tmp", "w") as f:
        f.write(text)
    os.replace(f"{path}.tmp", path)


def load_laws(path):
    """Read laws.json -> list[Law]; a one-line UserError naming the file and field on a bad file."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read laws ({e})") from None
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise UserError(f"{path}: field 'version' must be 1")
    if not isinstance(doc.get("laws"), list) or not doc["laws"]:
        raise UserError(f"{path}: field 'laws' must be a non-empty list")
    return [Law.from_dict(d, doc.get("metric", ""), f"{path}: laws[{i}]") for i, d in enumerate(doc["laws"])]


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
    return np.array([A * s ** b, b, c, D * s])


def _fit_points(C, E, delta):
    """Best of several L-BFGS-B runs on points (C, E) -> (params a,b,c,d, theta, counts, scale s)."""
    s = C.max()
    x, y = C / s, np.log(E)
    bounds = _bounds(x, E)
    results = [_minimize(np.clip(t, *np.array(bounds).T), x, y, delta, bounds) for t in _grid(x, E, delta)]
    best = min(results, key=lambda r: r.fun if np.isfinite(r.fun) else np.inf)
    at_best = sum(r.fun <= best.fun + 1e-6 * abs(best.fun) + 1e-12 for r in results)
    return _to_params(best.x, s), best.x, (len(results), int(sum(r.success for r in results)), int(at_best)), s


def fit_law(C, E, *, name="", config=None, metric="", points=50, delta=1e-3, bootstrap=0, seed=0,
            extrap_frac=0.3, predict_at=(), level=0.95):
    """Fit E = a*(C+d)^(-b) + c to one curve (any order; C, E > 0, finite) -> Law with extras filled in.
    points: resampled points; delta: Huber delta on log E; bootstrap: resamples (0: no intervals), with
    `level` intervals also at the compute values `predict_at`; extrap_frac=None skips the extrapolation check."""
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
    (a, b, c, d), theta, (n_starts, n_conv, n_best), s = _fit_points(Cr, Er, delta)
    law = Law(name=name, config=dict(config or {}), a=float(a), b=float(b), c=float(c), d=float(d),
              flops_range=(float(C[0]), float(C[-1])), metric=metric, n_points=len(Cr), n_raw=len(C),
              starts=n_starts, starts_converged=n_conv, starts_at_best=n_best)
    law.residual = float(np.sqrt(np.mean(np.log(law(Cr) / Er) ** 2)))
    if bootstrap > 0:
        law.boot, law.ci = _bootstrap(C, E, points, theta, s, delta, bootstrap, seed, predict_at, law, level)
    if extrap_frac is not None:
        law.extrapolation = extrapolation_check(C, E, Cr, Er, extrap_frac, points, delta)
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
    lo, hi = law.flops_range
    flops = sorted({lo, math.sqrt(lo * hi), hi, *map(float, predict_at)})
    ci["E"] = [{"flops": f, "E": float(law(f)), **dict(zip(("lo", "hi"), band(boot, f, q)))} for f in flops]
    return boot, ci


def band(boot, C, q=(2.5, 97.5)):
    """Percentiles of E(C) over bootstrap parameter samples (N, 4) -> (lo, hi), each shaped like C."""
    a, b, c, d = (boot[:, j, None] for j in range(4))
    Cs = np.atleast_1d(np.asarray(C, float))[None, :]
    lo, hi = np.percentile(a * (Cs + d) ** -b + c, q, axis=0)
    return (lo[0], hi[0]) if np.ndim(C) == 0 else (lo, hi)


def extrapolation_check(C, E, Cr, Er, frac, points, delta):
    """Refit on C <= frac * max C; relative and log errors on the full curve's resampled points beyond."""
    cut = frac * C[-1]
    head, test = C <= cut, Cr > cut
    if len(np.unique(C[head])) < MIN_POINTS or not test.any():
        return {"frac": frac, "skipped": f"need >= {MIN_POINTS} points below and 1 above {cut:.3g} FLOPs"}
    Ch, Eh = resample(C[head], E[head], points)
    (a, b, c, d), *_ = _fit_points(Ch, Eh, delta)
    pred = Law(a=a, b=b, c=c, d=d)(Cr[test])
    rel = np.abs(pred / Er[test] - 1)
    return {"frac": frac, "flops_cut": float(cut), "n_fit": len(Ch), "n_test": int(test.sum()),
            "rel_mean": float(rel.mean()), "rel_max": float(rel.max()), "rel_last": float(rel[-1]),
            "log_rmse": float(np.sqrt(np.mean(np.log(pred / Er[test]) ** 2))),
            "a": float(a), "b": float(b), "c": float(c), "d": float(d)}

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
    """-> (run name, eval records); UserError on an unreadable file."""
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}:{i}: cannot read ({e})") from None
    run = (header or {}).get("run") or path.parent.name
    if not evals:
        raise UserError(f"run {run} ({path}): {'empty log' if not lines else 'no eval records'}")
    return run, evals


def _run_curve(run, path, evals, metric):
    """Eval records of one run -> (config, C, E); UserError naming the run and the problem."""
    where = f"run {run} ({path})"
    if len({json.dumps(r.get("config", {}), sort_keys=True) for r in evals}) > 1:
        raise UserError(f"{where}: records have several configs (a scheduled run?); fit static runs only")
    recs = [r for r in evals if metric in r]
    if not recs:
        raise UserError(f"{where}: no record has metric '{metric}'")
    for k in ("flops", metric):
        bad = [r for r in recs if type(r[k] if k in r else None) not in (int, float) or not math.isfinite(r[k])
               or (k == metric and r[k] <= 0)]
        if bad:
            raise UserError(f"{where}: line {bad[0]['_line']}: '{k}' is {bad[0].get(k)!r}, need a finite "
                            f"number{' > 0 (the law is fitted in log-log)' if k == metric else ''}")
    C, E = (np.array([r[k] for r in recs], float) for k in ("flops", metric))
    bad = np.flatnonzero(np.diff(C) <= 0)
    if len(bad):
        raise UserError(f"{where}: compute not increasing at line {recs[bad[0] + 1]['_line']} "
                        f"(flops {C[bad[0]]:.4g} -> {C[bad[0] + 1]:.4g})")
    return dict(evals[0].get("config", {})), C, E


def read_logs(paths, metric, *, min_flops=0.0, min_flops_frac=0.0, skip_bad=False):
    """Run logs -> {name: (config, C, E)}, runs with the same config pooled, sorted by C.
    Records with flops <= 0 (eval before training) or below min_flops / min_flops_frac * max are dropped.
    Per-run/per-configuration problems raise UserError, or with skip_bad become warnings."""
    def problem(msg):  # per-run / per-configuration: an error, or with skip_bad a warning
        if not skip_bad:
            raise UserError(msg)
        warn(f"{msg}; skipped")

    def attempt(fn, *args):
        try:
            return fn(*args)
        except UserError as e:
            problem(str(e))

    runs = [(path, got) for path in find_logs(paths) if (got := attempt(_read_run, path))]
    seen = {k for _, (_, evals) in runs for r in evals for k, v in r.items()
            if k not in NOT_METRICS and not k.startswith("_") and type(v) in (int, float)}
    if runs and metric not in seen:
        raise UserError(f"unknown metric '{metric}'; the logs contain: {', '.join(sorted(seen)) or 'none'}")
    groups = {}
    for path, (run, evals) in runs:
        if got := attempt(_run_curve, run, path, evals, metric):
            g = groups.setdefault(json.dumps(got[0], sort_keys=True), (got[0], [], [], []))
            g[1].append(got[1]), g[2].append(got[2]), g[3].append(run)
    curves = {}
    # name a law by the keys in which the configurations differ (patch=7, not patch=7,width=64,...)
    shared = {k for k in set().union(*(g[0] for g in groups.values()))
              if len({json.dumps(g[0].get(k)) for g in groups.values()}) == 1} if len(groups) > 1 else set()
    for config, Cs, Es, names in groups.values():
        name = name_of({k: v for k, v in config.items() if k not in shared})
        C, E = np.concatenate(Cs), np.concatenate(Es)
        order = np.argsort(C, kind="stable")
        C, E = C[order], E[order]
        keep = (C > 0) & (C >= min_flops) & (C >= min_flops_frac * C.max())
        if len(np.unique(C[keep])) < MIN_POINTS:
            problem(f"config {name} (runs {', '.join(names)}): {len(np.unique(C[keep]))} points with flops > 0 "
                    f"and >= --min-flops, need at least {MIN_POINTS}")
            continue
        curves[name] = (config, C[keep], E[keep])
    if not curves:
        raise UserError("no configuration left to fit" + (" (all skipped)" if skip_bad else ""))
    return curves

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
        ax.scatter(*curves[law.name][1:], s=8, alpha=0.5, color=color, linewidths=0)
        grid = np.geomspace(*law.flops_range, 200)
        ax.plot(grid, law(grid), color=color, label=f"{law.name}: b={law.b:.2f}, c={law.c:.3g}")
        if law.boot is not None and len(law.boot):
            ax.fill_between(grid, *band(law.boot, grid), color=color, alpha=0.2, linewidth=0)
    ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel=metric or "E", title=FORM)
    ax.yaxis.set_major_formatter("{x:.3g}"), ax.yaxis.set_minor_formatter("{x:.3g}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)


def summary(laws):
    head = f"{'law':<24} {'pts':>4} {'a':>9} {'b':>6} {'c':>9} {'d':>9} {'resid':>7} {'conv':>5} {'best':>4} " \
           f"{'extrap rel_last':>15} {'log_rmse':>8}"
    rows = [head, "-" * len(head)]
    for law in laws:
        ex = law.extrapolation or {}
        ext = (f"{ex['rel_last']:>15.2%} {ex['log_rmse']:>8.4f}" if "rel_last" in ex else f"{'-':>15} {'-':>8}")
        rows.append(f"{law.name:<24} {law.n_points:>4} {law.a:>9.3g} {law.b:>6.3f} {law.c:>9.3g} {law.d:>9.3g} "
                    f"{law.residual:>7.4f} {law.starts_converged:>3}/{law.starts:<1} {law.starts_at_best:>4} {ext}")
    return "\n".join(rows)


@dataclass
class Config:
    logs: list[str]
    """log.jsonl files, folders holding them (searched recursively) or globs"""
    metric: str = "fewshot10_error"
    """metric to fit, by its name in the eval records (fewshot10_error, test_error, val_loss, ...)"""
    out: str = "laws.json"
    """output laws.json; the plot goes beside it (same name, .png)"""
    min_flops: float = 0.0
    """drop records below this compute (warm-up)"""
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
    """compute values at which to report E with its interval (besides the range's ends and middle)"""
    skip_bad: bool = False
    """turn per-configuration problems into warnings and fit the rest"""
    plot: bool = True
    """write laws.png beside laws.json"""


def main(cfg):
    if cfg.points < MIN_POINTS or cfg.bootstrap < 0 or not 0 < cfg.extrap_frac < 1 or cfg.delta <= 0:
        raise UserError("need --points >= 5, --bootstrap >= 0, 0 < --extrap-frac < 1, --delta > 0")
    curves = read_logs(cfg.logs, cfg.metric, min_flops=cfg.min_flops, min_flops_frac=cfg.min_flops_frac,
                       skip_bad=cfg.skip_bad)
    # read_logs checked every curve (finite, > 0, >= 5 points), so fit_law raises no UserError here
    laws = [fit_law(C, E, name=name, config=config, metric=cfg.metric, points=cfg.points, delta=cfg.delta,
                    bootstrap=cfg.bootstrap, seed=cfg.seed, extrap_frac=cfg.extrap_frac, predict_at=cfg.predict_at)
            for name, (config, C, E) in curves.items()]
    print(summary(laws))
    out, png = Path(cfg.out), Path(cfg.out).with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fit = {"loss": f"huber(log f(C) - log E), delta={cfg.delta}", "residual": "rms of log(f(C)/E), resampled points",
           **{k: getattr(cfg, k) for k in ("points", "bootstrap", "seed", "min_flops", "min_flops_frac", "logs")}}
    if cfg.plot:  # to .tmp first: a failed run replaces neither file
        plot_laws(laws, curves, f"{png}.tmp", cfg.metric)
    save_laws(laws, out, metric=cfg.metric, extra={"fit": fit})
    if cfg.plot:
        os.replace(f"{png}.tmp", png)
    print(f"wrote {out}" + (f" and {png}" if cfg.plot else ""))


if __name__ == "__main__":
    import tyro
    try:
        main(tyro.cli(Config))
    except (UserError, OSError) as e:
        print(f"fit_laws.py: error: {e}", file=sys.stderr)
        sys.exit(2)
