"""Benchmark compare.py's savings measure on generated curves with a known true saving.

    OMP_NUM_THREADS=1 python bench/bench_measure.py --draws 100     # ~10 min on 1 busy core
    OMP_NUM_THREADS=1 python bench/bench_measure.py --draws 20      # smoke test

Generating distribution (one draw = `seeds` (3) independent seeds, each a static patch-7 run, a
static patch-14 run and a scheduled run 14 -> 7), shaped after `make reproduce` (results/vit-full/laws.json):
  laws: patch 7  E7(C)  = 1.561e5 (C + 3.29e10)^-0.480 + 0.1157 (at the end, 2.5e13 FLOPs, it falls by
        only 0.028 per unit of ln C: as flat as the real runs), patch 14 E14(C) = 1.883e5 (C + 2.89e10)^-0.531
        + 0.1583 (its static run stops at 1e13 FLOPs, at 0.186, above patch 7's final 0.1735);
  evaluations: `evals` (14) log-spaced from 2.5e11 to 2.5e13 FLOPs, like train_vit.py's;
  scheduled run: E14 up to the switch at 7.2e12 FLOPs (the laws' switch point), then patch 7 ahead
        by a factor 1/(1 - s) of compute, E7(C / (1 - s)), plus the error spike of a switch,
        +0.05 exp(-(C - 7.2e12) / 1e12) (the real run needed ~3e12 FLOPs to recover);
        s ~ U[0.1, 0.4]; the true saving is where this noiseless curve reaches E7(2.5e13);
  noise: N(0, sigma) per evaluation, i.i.d. or AR(1) with correlation rho between neighbouring
        evaluations (same marginal sigma), independent between runs. sigma = 0.005 gives the +-0.01
        wobble between neighbouring evaluations seen in the logs (their difference has std 0.007).
A draw succeeds when the measured saving is within 5 percentage points of the truth ("never reaches"
fails). "1 seed": seed 0 of the draw alone; "3 seeds": the mean over the draw's seeds, as compare.py
reports per group. Also printed: the largest change of the saving that moving one evaluation of the
noiseless curves by 0.01 causes (the issue: "one evaluation's wobble cannot move it by 10%").

Columns: "fitted" is compare.py's measure, "raw" the raw first crossing (what compare.py reported
before), "oracle" reads the scheduled run with the true patch-7 law and the true target (only the
scheduled run's own noise left, the spiked evaluation dropped): no measure can do better.

Measured (OMP_NUM_THREADS=1 python bench/bench_measure.py --draws 100; one evaluation moved by 0.01
moves the fitted saving by at most 8.3 points, the raw one by up to "never reaches"):

                    |   within 5 points of the truth (1 seed / 3 seeds)   |  median |error|, points
                    |   fitted        raw          oracle                 |  fitted     raw      oracle
  iid, sd 0.0025    |   63% / 70%    42% / 59%    82% / 96%               |  3.7/3.1   5.7/4.7  3.0/1.6
  AR(1) 0.6, 0.0025 |   52% / 72%    45% / 68%    72% / 92%               |  4.8/2.7   5.5/2.9  3.4/1.8
  iid, sd 0.005     |   30% / 37%    22% / 25%    53% / 72%               |  7.9/6.2  10.9/34.6 4.8/3.2
  AR(1) 0.6, 0.005  |   18% / 23%    18% / 25%    33% / 56%               | 11.6/16.7 14.9/28.4 7.2/4.7
The issue's target (>= 90% within 5 points) is not reached, and cannot be at this noise: the oracle
misses it too. "3 seeds" fails a draw when any seed never reaches the target (compare.py gives no
group mean then), which is why fitted gains less from seeds than the oracle.

What limits any measure here: the saving is read where the curves fall by 0.028 per unit of ln C, so
an error of 0.003 in the target or in the crossing run's level is 0.1 in ln C, 7 points of savings.
Fourteen evaluations with noise 0.005 do not pin either level down better than that: a fitted
law's end and a stage's level pooled over its ~5 post-switch evaluations are each ~0.002-0.003 off.
"""
import os
import sys
from dataclasses import dataclass

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from lab.compare import Run, compare, fit_shift  # noqa: E402
from fit_laws import Law  # noqa: E402

P7 = (1.561155e5, 0.4800087, 0.1156755, 3.290254e10)    # a, b, c, d: results/vit-full/laws.json
P14 = (1.882578e5, 0.5311201, 0.1582628, 2.885151e10)
LO, HI, SWITCH, SPIKE, RECOVER = 2.5e11, 2.5e13, 7.2e12, 0.05, 1e12
P14_END = 1e13   # the static patch-14 run is shorter, as in `make reproduce`


@dataclass
class Config:
    draws: int = 100  # draws per row of the table
    evals: int = 14  # evaluations per run, log-spaced
    seeds: int = 3
    """seeds per draw (the "3 seeds" column averages them)"""
    sigmas: tuple[float, ...] = (0.0025, 0.005)  # noise std per evaluation
    rho: float = 0.6  # AR(1) correlation between neighbouring evaluations
    seed: int = 0


def law(p, c):
    a, b, e0, d = p
    return a * (c + d) ** -b + e0


def scheduled_curve(c, s):
    after = c >= SWITCH
    return np.where(after, law(P7, c / (1 - s)) + SPIKE * np.exp(-(c - SWITCH) / RECOVER), law(P14, c))


def true_saving(s):
    """Where the noiseless scheduled curve reaches E7(HI), found on a fine grid."""
    c = np.geomspace(SWITCH, HI, 20001)
    e = scheduled_curve(c, s)
    return 1 - c[np.argmax(e <= law(P7, HI))] / HI


def noise(rng, n, sigma, rho):
    z = rng.standard_normal(n)
    for i in range(1, n):
        z[i] = rho * z[i - 1] + np.sqrt(1 - rho * rho) * z[i]
    return sigma * z


def runs(c, s, seed, noises):
    """The three runs of one seed; noises: three arrays added to p7, p14 and the scheduled run."""
    p7, p14, sch = law(P7, c) + noises[0], law(P14, c) + noises[1], scheduled_curve(c, s) + noises[2]
    cfg = [{"patch": 14} if x < SWITCH else {"patch": 7} for x in c]
    mk = lambda name, kind, e, cf, n=len(c): Run(name, kind, c[:n], c[:n] / 4e10, e[:n], cf[:n],  # noqa: E731
                                                 seed=seed, group=name)
    return [mk("static_p7", "static", p7, [{"patch": 7}] * len(c)),
            mk("static_p14", "static", p14, [{"patch": 14}] * len(c), int(np.sum(c <= P14_END * 1.001))),
            mk("sched_law", "law", sch, cfg)]


def measured(result, seed=None):
    """-> (fitted saving, raw saving) of the scheduled run (one seed, or the mean over seeds)."""
    if seed is not None:
        r = next(r for r in result["runs"] if r["run"] == "sched_law" and r["seed"] == seed)
        return r["flops_savings"], r["raw"]["flops_savings"]
    g = next(g for g in result["groups"] if g["group"] == "sched_law")
    return g["flops_savings"]["mean"], g["raw_flops_savings"]["mean"]


def one_eval_sensitivity(c, s):
    """Largest |change of the saving| when one evaluation of one noiseless run moves by +-0.01."""
    zero = [np.zeros(len(c))] * 3
    base = np.array(measured(compare(runs(c, s, 0, zero)), 0), dtype=float)
    worst = np.zeros(2)
    for which in range(3):
        for i in range(len(c)):
            for delta in (-0.01, 0.01):
                nz = [z.copy() for z in zero]
                nz[which][i] = delta
                got = np.array([np.nan if v is None else v for v in measured(compare(runs(c, s, 0, nz)), 0)])
                worst = np.fmax(worst, np.where(np.isnan(got), 1.0, np.abs(got - base)))
    return worst


def oracle(c, e_sched):
    """The saving read by one who knows the static patch-7 law and the target exactly and drops the
    spiked evaluation: only the scheduled run's own noise is left. No measure can do better."""
    after = np.flatnonzero(c >= SWITCH)[1:]
    k = fit_shift(Law(a=P7[0], b=P7[1], c=P7[2], d=P7[3]), c[after], e_sched[after])
    return 1 - 1 / k


def row(cfg, rng, c, sigma, rho):
    """Share of draws within 5 points of the truth and median |error|, for [fitted, raw, oracle] x
    [1 seed, mean of seeds]."""
    errs = np.zeros((3, 2, cfg.draws))
    for n in range(cfg.draws):
        s = rng.uniform(0.1, 0.4)
        truth = true_saving(s)
        pairs = [(k, runs(c, s, k, [noise(rng, len(c), sigma, rho) for _ in range(3)])) for k in range(cfg.seeds)]
        res = compare([r for _, rs in pairs for r in rs])
        orc = [oracle(c, rs[2].error) for _, rs in pairs]
        for j, got in enumerate((measured(res, 0) + (orc[0],), measured(res) + (float(np.mean(orc)),))):
            for m in range(3):
                errs[m, j, n] = 1.0 if got[m] is None else abs(got[m] - truth)
    return (errs <= 0.05).mean(-1), np.median(errs, -1)


def main(cfg: Config):
    rng = np.random.default_rng(cfg.seed)
    c = np.geomspace(LO, HI, cfg.evals)
    a, b, _, d = P7
    print(f"patch-7 law: dE/dlnC at the end {-b * a * (HI + d) ** -b * HI / (HI + d):.4f}; {cfg.evals} evaluations; "
          f"{cfg.draws} draws a row; true saving of s = 0.25: {true_saving(0.25):.4f}")
    sens = one_eval_sensitivity(c, 0.25)
    print(f"one evaluation moved by 0.01 changes the saving by at most {100 * sens[0]:.1f} points (fitted), "
          f"{100 * sens[1]:.1f} (raw first crossing; 100 = the run no longer reaches the target)\n")
    seeds = f"{'1 seed':>8}{f'{cfg.seeds} seeds':>8}"
    print(f"{'':<20}|{'within 5 points of the truth':^48}|{'median |error| (points)':^48}")
    print(f"{'noise':<20}" + ("|" + "".join(f"{m:^16}" for m in ("fitted", "raw", "oracle"))) * 2)
    print(f"{'':<20}" + ("|" + seeds * 3) * 2)
    for sigma in cfg.sigmas:
        for rho, name in ((0.0, "iid"), (cfg.rho, f"AR(1) {cfg.rho}")):
            share, med = row(cfg, rng, c, sigma, rho)
            cells = [(m, j) for m in range(3) for j in range(2)]
            print(f"{f'{name}, sd {sigma}':<20}|" + "".join(f"{100 * share[m, j]:>7.0f}%" for m, j in cells)
                  + "|" + "".join(f"{100 * med[m, j]:>8.1f}" for m, j in cells), flush=True)


if __name__ == "__main__":
    main(tyro.cli(Config))
