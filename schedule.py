"""Compute-optimal shape schedules from scaling laws: "Navigating Scaling Laws" (arXiv 2311.03233), Sec. 4, Eq. 2.

Each configuration P ({"patch": 7}, {"width": 384}, ...) has a law E = f_P(C) (laws.json from fit_laws.py) whose
inverse g_P(E) is the cost of reaching error E. Eq. 2: at every error level train the P with the smallest |q_P(E)| =
|dg_P/dE|, switching where that argmin changes (Fig. 3); a DP keeps the transition rules and pays --switch-cost.

    python schedule.py --laws laws.json --target-error 0.12 --out runs/schedule.json
    python schedule.py --laws laws.json --budget 5e14 --rules patch=any --switch-cost width=2e12
    python schedule.py --check my_schedule.json        # a hand-written schedule against the rules
"""
import contextlib
import hashlib
import io
import itertools as it
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, make_dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

VERSION = 1
DEFAULT_RULES = {"patch": "down", "width": "up", "depth": "up", "context": "up", "batch_size": "up", "objective": "any"}
RULE_WORDS = {"up": "never shrinks", "down": "never grows", "any": "may change freely"}
UNITS = {"flops": "FLOPs", "wall": "seconds"}  # laws.json's cost (wall: training seconds, App. F) -> its unit


class ScheduleError(ValueError):
    """Unusable laws, schedule or request; the message is one line naming the file and the field."""


def _need(ok, message):
    if not ok:
        raise ScheduleError(message)


num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and (  # a number a float holds: not a bool,
    abs(x) <= 1e300 if isinstance(x, int) else math.isfinite(x))                 # NaN, Infinity, 1e400, 10**400
ge0, gt0 = (lambda x: num(x) and x >= 0), (lambda x: num(x) and x >= 1e-300)   # > 0: no subnormal such as 5e-324


# ================================================================ the maths (Sec. 4): laws, Eq. 2, the DP, savings

@dataclass(frozen=True)
class Law:
    """Eq. 1 for one configuration P: E = f_P(C) = a (C + d)^-b + c, C the cost (FLOPs, or seconds: cost "wall")."""
    name: str
    config: dict
    a: float
    b: float
    c: float
    d: float
    flops_lo: float | None = None  # smallest FLOPs fitted (laws[].flops_range[0]), if given
    cost_lo: float | None = None  # smallest cost fitted (laws[].cost_range[0], else flops_lo)
    flops_per_second: float | None = None  # cost "wall": FLOPs a second of this configuration's training
    at_bound: tuple = ()  # parameters fit_laws.py found at a limit of its search box
    metric: str | None = None  # laws.json's metric
    cost: str = "flops"  # laws.json's cost: "flops" or "wall"

    def __call__(self, C):  # f_P(C); fit_laws.Law's maths, copied: vectorised, a scalar in gives a float out
        with np.errstate(divide="ignore", over="ignore"):
            return (self.a * (np.asarray(C, float) + self.d) ** -self.b + self.c)[()]

    start = property(lambda self: float(self.a * max(self.d, 1.0) ** -self.b + self.c))  # f_P(0); f_P(1) if d < 1

    def inverse(self, E):  # g_P(E) = ((E - c)/a)^(-1/b) - d: 0 above f_P(0), inf at or below c (never reached)
        with np.errstate(all="ignore"):
            C = ((np.asarray(E, float) - self.c) / self.a) ** (-1.0 / self.b) - self.d
        return np.where(np.asarray(E, float) > self.c, np.maximum(C, 0.0), np.inf)[()]

    inverse_slope = lambda self, E: (-np.exp(self.log_abs_slope(E)))[()]  # Eq. 2's q_P(E) = dg_P/dE < 0; -inf at c

    def log_abs_slope(self, E):  # log |q_P(E)| = -log(a b) - (1 + 1/b) log((E - c)/a); +inf at or below c
        with np.errstate(all="ignore"):
            v = -math.log(self.a * self.b) - (1 + 1 / self.b) * np.log((np.asarray(E, float) - self.c) / self.a)
        return np.where(np.asarray(E, float) > self.c, v, np.inf)


def transition_error(prev, nxt, rules=None):
    """Why prev -> nxt breaks the per-key rules (up, down, any; on the keys both configs have), or None."""
    for key in sorted(set(prev) & set(nxt)):
        rule, a, b = (DEFAULT_RULES if rules is None else rules).get(key, "any"), prev[key], nxt[key]
        try:
            bad = (rule == "up" and b < a) or (rule == "down" and b > a)
        except TypeError:
            return f"{key} values {a!r} and {b!r} cannot be ordered for the rule '{key}={rule}'"
        if bad:
            return f"{key} {a} -> {b} breaks the rule '{key}={rule}' ({key} {RULE_WORDS[rule]})"


def check_transitions(configs, rules=None, source="schedule"):
    """Raise ScheduleError if consecutive configs break the rules (trainers call this before training)."""
    for k, why in enumerate(transition_error(p, q, rules) for p, q in zip(configs, configs[1:])):
        _need(not why, f"{source}: stages[{k}] -> stages[{k + 1}]: {why} (or relax the rules, e.g. --allow-any)")


# A training state is its error E. A stage following P from E_start to E_end costs g_P(E_end) - g_P(E_start); law P
# covers c_P < E <= f_P(0). The first stage starts at C = 0 of its law, a later one at any level its law covers.

def error_grid(laws, target, top, n):
    """n error levels from top down to target, geometric in E - min c (fine where the slopes change fast)."""
    return (c_lo := min(l.c for l in laws)) + np.geomspace(top - c_lo, target - c_lo, n)


def _root(h, lo, hi):
    from scipy.optimize import brentq
    return brentq(h, lo, hi, xtol=1e-14 * abs(hi - lo) + 1e-300, rtol=1e-15)


def greedy_path(laws, target, n=2000):
    """Eq. 2 as an argmin: from E_top = min f(0) down to the target, the law with the smallest |q_P| at each level of a
    grid, each switch refined by brentq on log|q_P| - log|q_Q|. -> [(law, E_start, E_end)], from Q: f_Q(0) = E_top."""
    f0 = np.array([l.start for l in laws])
    top = float(f0.min())
    E = error_grid(laws, target, top, n)
    lab = np.argmin(np.stack([l.log_abs_slope(E) for l in laws], 1), 1)
    bounds, seq = [top], [int(lab[0])]
    for i in np.nonzero(lab[1:] != lab[:-1])[0]:
        p, q = laws[lab[i]], laws[lab[i + 1]]
        lo, hi = max(E[i + 1], p.c + 1e-12 * (E[i] - p.c)), E[i]  # p may stop short of E[i+1] (its c)
        h = lambda e: float(p.log_abs_slope(e) - q.log_abs_slope(e))
        bounds.append(_root(h, lo, hi) if h(lo) * h(hi) < 0 else hi)  # no sign change: a tie, keep the level
        seq.append(int(lab[i + 1]))
    start = seq[0] if f0[seq[0]] <= top * (1 + 1e-12) else int(np.argmin(f0))  # ties in f(0): no extra stage
    return ([(start, top, top)] if seq[0] != start else []) + list(zip(seq, bounds, bounds[1:] + [float(target)]))


def dp_path(laws, target, n, allowed, S):
    """Cheapest grid path, switches Q -> P allowed[Q, P] costing S[Q, P]. -> (stages, cost on the grid)"""
    M, f0 = len(laws), np.array([l.start for l in laws])
    E = error_grid(laws, target, f0.max(), n)
    G = np.stack([l.inverse(E) for l in laws], 1)
    G[(E[:, None] > f0[None]) | ~np.isfinite(G)] = np.inf  # outside c < E <= f(0)
    T, V = np.where(np.eye(M, dtype=bool), 0.0, np.where(allowed, S, np.inf)), None   # V: the level above's, from 0 on
    fresh, parent, U = np.arange(n)[:, None].repeat(M, 1) == 0, np.zeros((n, M), int), G[0].copy()  # level 0: fresh
    for i in range(n):
        if i:  # arrive in P by continuing P from the level above, or by starting P fresh (g_P from its C = 0)
            ok = np.isfinite(G[i]) & np.isfinite(G[i - 1])
            cont = np.where(ok, V + np.subtract(G[i], G[i - 1], out=np.zeros(M), where=ok), np.inf)
            fresh[i] = G[i] < cont
            U = np.where(fresh[i], G[i], cont)
        W = U[:, None] + T  # then maybe switch; one round suffices: the rules and costs make chains no cheaper
        parent[i], V = np.argmin(W, 0), W.min(0)
    cur, i, end, stages = int(np.argmin(U)), n - 1, float(target), []
    _need(np.isfinite(U[cur]), "no allowed path reaches the target (check the rules and the laws' c)")
    while not fresh[i, cur]:
        i, q = i - 1, int(parent[i - 1, cur])
        if q != cur:
            stages.append((cur, float(E[i]), end))
            end, cur = float(E[i]), q
    return [(cur, float(f0[cur]), end)] + stages[::-1], float(U.min())


def refine(laws, stages, E):
    """Move each switch P -> R at b within its grid cells to the b minimising g_P(b) - g_R(b) (where slopes cross)."""
    st = [list(s) for s in stages]
    for k in range(len(st) - 1):
        (p, ps, b), (r, _, re) = st[k], st[k + 1]
        P, R, j = laws[p], laws[r], int(np.argmin(abs(E - b)))
        lo = max(E[min(j + 1, len(E) - 1)], re, P.c + 1e-12 * (ps - P.c))
        hi = min(E[max(j - 1, 0)], ps, R.start)
        if lo < hi:
            h = lambda e: float(R.log_abs_slope(e) - P.log_abs_slope(e))
            cands = [b, lo, hi] + ([_root(h, lo, hi)] if h(lo) < 0 < h(hi) else [])
            st[k][2] = st[k + 1][1] = min(cands, key=lambda e: float(P.inverse(e) - R.inverse(e)))
    return [tuple(s) for s in st]


def path_flops(laws, stages, S):
    """Cumulative (cost_start, cost_end) per stage; stage k costs S[prev, P] + g_P(E_end) - g_P(E_start)."""
    ends = list(it.accumulate((S[q[0], p] if k else 0.0) + float(laws[p].inverse(e1) - laws[p].inverse(e0))
                              for k, (q, (p, e0, e1)) in enumerate(zip([None] + stages, stages))))
    return list(zip([0.0] + ends[:-1], ends))


def switch_costs(laws, switch_cost=0.0, per_key=None):
    """S[Q, P]: the cost of switching Q -> P: switch_cost plus per_key[k] for each key k that changes."""
    cost = lambda q, p: switch_cost + sum(v for k, v in (per_key or {}).items() if q.config.get(k) != p.config.get(k))
    return np.array([[0.0 if q is p else cost(q, p) for p in laws] for q in laws])


def allowed_matrix(laws, rules):  # allowed[Q, P]: may Q switch to P under the rules?
    return np.array([[transition_error(q.config, p.config, rules) is None for p in laws] for q in laws])


def solve(laws, target, rules, S, n=2000):
    """The greedy partition if it keeps the rules and switches are free, else the cheaper of it and the refined DP."""
    allowed, greedy = allowed_matrix(laws, rules), greedy_path(laws, target, n)
    ok = all(allowed[a[0], b[0]] for a, b in zip(greedy, greedy[1:]))
    if ok and not S.any():
        return greedy, "greedy"
    dp, _ = dp_path(laws, target, n, allowed, S)
    cands = [(refine(laws, dp, error_grid(laws, target, max(l.start for l in laws), n)), "dp")]
    return min(cands + ([(greedy, "greedy")] if ok else []), key=lambda c: path_flops(laws, c[0], S)[-1][1])


# Beyond the paper (issue 24): Eq. 2 assumes a switch Q -> P at cost C_s is free and the model goes on along P's law
# from the error it had, at g_P(f_Q(C_s)). Pilot switches measure where it really goes on, at g_P(f_Q(C_s)) + tau_QP:
# the effective compute transferred (Hernandez et al. 2021; lab/transfer.py), tau < 0 a loss, > 0 a gain. With tau
# the cheapest schedule is no argmin of slopes: search every allowed sequence of 1-3 configurations, switches on a grid.

def tau(transfer, q, p, C):  # tau_QP(C): the measured points, linear in log C between them, held beyond; none: Eq. 2
    pts = sorted(transfer.get((q, p), [(1.0, 0.0)]))
    return np.interp(np.log(C), np.log([x for x, _ in pts]), [t for _, t in pts])


def follow(laws, seq, Cs, target, S, transfer):
    """seq to the target, switching at costs Cs (arrays): (total, ok, [(law, C_start, C_end, E_start, E_end)])."""
    e, E, ok, rows = 0.0, None, True, []                      # e: the effective cost on the current law
    for k, (p, c0) in enumerate(zip(seq, [0.0, *Cs])):
        if k:  # switch seq[k-1] -> p: on at g_p(E) + tau. A pilot measures a switch from a static run, so a later
            # switch, from a switched model no pilot measured, keeps Eq. 2 (tau = 0)
            t = tau(transfer, seq[k - 1], p, c0) if k == 1 else 0.0
            e = np.maximum(laws[p].inverse(np.minimum(E, laws[p].start)) + t - S[seq[k - 1], p], 0.0)
        last = k == len(Cs)                                   # the last stage ends at the target, the others at Cs[k]
        w = transfer.get("window", 0.0) if k == 1 else 0.0    # tau holds from the pilots' window on, not before
        c1 = c0 + np.maximum(laws[p].inverse(target) - e, w) if last else Cs[k]
        E0, E, e = laws[p](e), laws[p](e + c1 - c0), e + c1 - c0
        ok = ok if last else ok & (c1 > c0) & (E > target)
        rows.append((p, c0, c1, E0, target if last else E))
    return c1, ok, rows


def transfer_path(laws, target, allowed, S, transfer, n=300):
    """The cheapest schedule with transfers: every allowed sequence of 1-3 configurations, its switches on a grid ->
    (rows, cost); with the seeds' spread (below), the mean over the seeds of each one's cost, capped at staying's."""
    g, w = min(float(l.inverse(target)) for l in laws), transfer.get("window", 0.0)
    C, best = np.geomspace(g * 1e-3, g, n), (np.inf,)
    for seq in (s for k in (1, 2, 3) for s in it.permutations(range(len(laws)), k)):
        if all(allowed[a, b] for a, b in zip(seq, seq[1:])):
            grid = np.meshgrid(*[C] * (len(seq) - 1), indexing="ij")
            with np.errstate(all="ignore"):                   # f_P past its range: inf, and no path there
                total, ok, rows = follow(laws, seq, grid, target, S, transfer)
                if seq[:2] in transfer.get("spread", {}):     # over the seeds (target + sd z), if its typical one saves
                    E = target + tau(transfer["spread"], *seq[:2], grid[0])[..., None] * offsets()
                    rows = [(p, *(np.asarray(x)[..., None] for x in r)) for p, *r in rows]
                    total = np.where(total <= g, np.minimum(reach(laws, rows, E, w), g).mean(-1), np.inf)
            i = np.unravel_index(np.argmin(total := np.where(ok, total, np.inf)), np.shape(total))
            best = min(best, (float(total[i]), seq, [float(x[i]) for x in grid]), key=lambda b: b[0])
    return follow(laws, best[1], best[2], target, S, transfer)[2], best[0]


# The seeds' spread (beyond the paper): each seed is judged against its own best static run's final error, and its
# pilots land its switched model at its own distance from it (transfer.json's "spread"). A plan reaching the target as
# its switch pays can only lose to that: of the plans whose typical seed saves, the least mean cost over seeds wins.

offsets = lambda n=64: np.array([NormalDist().inv_cdf((k + 0.5) / n) for k in range(n)])   # N(0, 1)'s n quantiles


def reach(laws, rows, E, window):  # the cost at which a path (follow's rows) first reaches E after its first switch
    cost = None                    # (the spread is the switched model's), no sooner than the window, on its stage's law
    for k, (p, c0, c1, e0, e1) in reversed(list(enumerate(rows))[1:]):
        on = c0 + np.maximum(laws[p].inverse(E) - laws[p].inverse(e0), window if k == 1 else 0.0)
        cost = on if cost is None else np.where(E >= e1, on, cost)
    return cost


def target_for(laws, target_error=None, budget=None):
    """The error to reach: --target-error, or the best static configuration's error at --budget."""
    _need((target_error is None) != (budget is None), "give exactly one of --target-error E or --budget FLOPS")
    _need(budget is None or gt0(budget), f"--budget must be a finite number > 0 (got {budget!r})")
    target_error = target_error if budget is None else min(float(l(float(budget))) for l in laws)
    _need(gt0(target_error), f"--target-error must be a finite number > 0 (got {target_error!r})")
    target_error, low, first = float(target_error), min(laws, key=lambda l: l.c), min(laws, key=lambda l: l.start)
    _need(target_error > low.c, f"target error {target_error:g} is at or below every law's c (lowest: c={low.c:g} "
                                f"for '{low.name}'): no configuration reaches it; choose a higher target")
    _need(target_error < first.start, f"target error {target_error:g} is at or above f(0)={first.start:g} of "
                                      f"'{first.name}': it is reached with no compute; choose a lower target")
    return target_error


def with_flops(laws, stages):
    """Add flops_start/flops_end, which trainers switch on: cost "wall" (seconds) times each law's flops_per_second."""
    total = 0.0
    for s in stages:
        s["flops_start"], s["flops_end"] = (s["cost_start"], s["cost_end"]) if laws[s["law"]].cost == "flops" else \
            (total, total + (s["cost_end"] - s["cost_start"]) * laws[s["law"]].flops_per_second)
        total = s["flops_end"]
    return stages


def predicted(laws, target, total, total_flops):
    """The schedule's cost against every static configuration's g_P(target): the predicted savings."""
    static = [{"name": l.name, "config": l.config, "cost": g if math.isfinite(g := float(l.inverse(target))) else None,
               "flops": g * (1.0 if l.cost == "flops" else l.flops_per_second) if math.isfinite(g) else None}
              for l in laws]  # cost None: never (at or below its c, or past a float's range)
    best = min((s for s in static if s["cost"] is not None), key=lambda s: s["cost"])
    saving = lambda ours, theirs: 1.0 - ours / theirs if theirs > 0 else 0.0
    return {"unit": UNITS[laws[0].cost], "cost": total, "flops": total_flops, "best_static": best, "static": static,
            "savings": saving(total, best["cost"]), "savings_flops": saving(total_flops, best["flops"])}


def make_schedule(laws, target, rules=None, switch_cost=0.0, switch_cost_key=None, grid=2000, metric=None,
                  transfer=None):
    """The law schedule as a schedule.json dict: stages (zero-compute ones left out) and the predicted savings.
    transfer {(Q, P): [(switch cost, tau)]}: plan with the measured transfers (transfer_path), else Eq. 2."""
    rules, S = DEFAULT_RULES if rules is None else rules, switch_costs(laws, switch_cost, switch_cost_key)
    if transfer is None:
        path, method = solve(laws, target, rules, S, grid)
        rows = [(p, c0, c1, e0, e1) for (p, e0, e1), (c0, c1) in zip(path, path_flops(laws, path, S))]
    else:
        (rows, cost), method = transfer_path(laws, target, allowed_matrix(laws, rules), S, transfer), "transfer"
    stages = with_flops(laws, [{"config": laws[p].config, "name": laws[p].name, "law": p, "error_start": float(e0),
                                "error_end": float(e1), "cost_start": float(c0), "cost_end": float(c1)}
                               for p, c0, c1, e0, e1 in rows if not (e0 == e1 and c0 == c1)])
    _need(math.isfinite(stages[-1]["flops_end"]), f"the cost to reach {target:g} overflows a float (check the laws)")
    pr, spread = predicted(laws, target, rows[-1][2], stages[-1]["flops_end"]), (transfer or {}).get("spread", {})
    for a, b in zip(stages[:2], stages[1:2]) if transfer is not None else ():  # the transfer planned at the switch
        b["transfer"] = float(tau(transfer, a["law"], b["law"], b["cost_start"]))
        if (a["law"], b["law"]) in spread:
            b["spread"] = float(tau(spread, a["law"], b["law"], b["cost_start"]))
    pr.update({"expected_savings": 1.0 - cost / pr["best_static"]["cost"]} if spread else {})   # over the seeds
    return {"version": VERSION, "kind": "law" if transfer is None else "transfer", "random": False, "metric": metric,
            "cost": laws[0].cost,
            "target_error": target, "method": method, "rules": rules, "switch_cost": switch_cost,
            "switch_cost_key": switch_cost_key or {}, "stages": stages, "predicted": pr}


# ============================================================================ the files, checked at the boundary

def strict_json(x):  # can x be written as strict JSON (no NaN, no Infinity)? schedule.py copies configs out
    with contextlib.suppress(TypeError, ValueError, RecursionError):
        return json.dumps(x, allow_nan=False) is not None
    return False


# field -> (test, what it must be[, its default]); a test sees None for a field that is not there
opt, obj = (lambda test: lambda x: x is None or test(x)), (lambda x: isinstance(x, dict) and len(x) > 0)
RANGE = (opt(lambda r: isinstance(r, list) and len(r) == 2 and ge0(r[0]) and r[0] < 1e300 and (r[1] is None or (
    r[1] == math.inf or num(r[1]) and r[1] < 1e300) and r[0] <= r[1])), "[lo, hi], 0 <= lo <= hi, hi null if open")
LAWS_FILE = {"version": (lambda x: x == VERSION, str(VERSION)),
             "laws": (lambda x: isinstance(x, list) and len(x) > 0, "a non-empty list"),
             "cost": (lambda x: x in ("flops", "wall"), "'flops' or 'wall'", "flops"),
             "metric": (opt(lambda x: isinstance(x, str)), "text or null")}
LAW = {"config": (lambda x: obj(x) and strict_json(x), 'a non-empty object such as {"patch": 7}, no NaN or Infinity'),
       **{k: (gt0 if k in "ab" else ge0, f"a finite number {'>' if k in 'ab' else '>='} 0 (the law is "
                                         "E = a*(C+d)**(-b) + c)") for k in "abcd"},
       "flops_range": RANGE, "cost_range": RANGE, "at_bound": (lambda x: not x or isinstance(x, list), "a list"),
       "extrapolation": (lambda x: not x or obj(x) and opt(ge0)(x.get("rel_max")), '{"rel_max": 0.05}, rel_max >= 0')}
WALL_LAW = {"flops_per_second": (gt0, "a finite number > 0 (needed with cost 'wall', from fit_laws.py --cost wall)")}
SCHEDULE_FILE = {"version": LAWS_FILE["version"], "stages": LAWS_FILE["laws"], "target_error": (opt(num), "a number")}
TRANSFER_FILE = {"version": LAWS_FILE["version"], "cost": LAWS_FILE["cost"], "transitions": (
    lambda x: isinstance(x, list), "a list"), "window": (ge0, "a finite number >= 0 (cost)", 0.0)}
TRANSITION = {"from": LAW["config"], "to": LAW["config"], "points": LAWS_FILE["laws"]}
POINT = {"switch": (gt0, "a finite number > 0"), "transfer": (num, "a finite number (the cost gained; < 0: lost)"),
         "spread": (opt(ge0), "a finite number >= 0 or null (the seeds' sd of error against their own targets)")}
STAGE = {"config": (obj, 'a non-empty object such as {"patch": 7}'), "flops_start": (ge0, "a finite number >= 0"),
         **{k: (opt(ge0), "a finite number >= 0 or null") for k in ("error_start", "error_end", "flops_end")}}


def check(row, table, src, at=""):
    """The one check of file content: row against table -> {field: value}, or ScheduleError naming the field."""
    _need(isinstance(row, dict), f"{src}: {f'field {at[:-1]!r}' if at else 'the file'} must be an object ({row!r:.60})")
    for name, (test, what, *default) in table.items():
        if not test(x := row.get(name, *default)):
            key = next((f".{k}" for k, v in x.items() if not strict_json(v)), "") if isinstance(x, dict) else ""
            raise ScheduleError(f"{src}: field '{at}{name}{key}' must be {what} "
                                f"({f'got {x!r:.60}' if name in row else 'missing'})")
    return {name: float(x) if num(x := row.get(name, *d)) else x for name, (_, _, *d) in table.items()}


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as e:  # gone, a folder; bad JSON or UTF-8, 5000 digits, [[[[...]]]]
        raise ScheduleError(f"{path}: " + ("file not found" if isinstance(e, FileNotFoundError) else f"cannot read "
              f"({e.strerror})" if isinstance(e, OSError) else f"not valid JSON ({type(e).__name__}: {str(e)[:200]})"))


def _atomic(path, write):  # write(path.tmp), then rename it to path: no half-written file, no .tmp left on failure
    try:
        write(path + ".tmp")
        os.replace(path + ".tmp", path)
    finally:
        Path(path + ".tmp").unlink(missing_ok=True)


def write_json(path, obj):  # strict JSON (the checks keep NaN and Infinity out), atomically
    _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n"))


def load_laws(path, max_extrap_error=math.inf, allow_bound_laws=False):
    """laws.json -> list[Law], less those fit_laws.py could not trust (extrapolation off; a parameter at a bound)."""
    data = check(_read_json(src := str(path)), LAWS_FILE, src)
    laws, seen, left, cost = [], {}, [], data["cost"]
    for i, r in enumerate(data["laws"]):
        v = check(r, {**LAW, **(WALL_LAW if cost == "wall" else {})}, src, f"laws[{i}].")
        lo = {k: (float(v[k][0]) or None) if v[k] else None for k in ("flops_range", "cost_range")}
        law = Law(str(r.get("name") or ",".join(f"{k}={x}" for k, x in v["config"].items())), dict(v["config"]),
                  *(v[k] for k in "abcd"), flops_lo=lo["flops_range"],
                  cost_lo=lo["cost_range"] if "cost_range" in r else lo["flops_range"] if cost == "flops" else None,
                  flops_per_second=v.get("flops_per_second"), at_bound=tuple(map(str, v["at_bound"] or [])),
                  metric=data["metric"], cost=cost)
        key, seed = json.dumps(law.config, sort_keys=True), r.get("seed") is not None
        _need(key not in seen, f"{src}: field 'laws[{i}].config' repeats laws[{seen.get(key)}].config {law.config}"
              + (" (fitted --per-seed: fit_laws.py without it pools the seeds, one law per config)" if seed else ""))
        seen[key], x, bound = i, (v["extrapolation"] or {}).get("rel_max"), ", ".join(law.at_bound)
        if x is not None and x > max_extrap_error:
            why = f"its extrapolation check misses by {x:.0%} > --max-extrap-error {max_extrap_error:.0%}"
            left.append(f"{law.name} (extrapolation off by {x:.0%})")
        elif law.at_bound and not allow_bound_laws:
            why = (f"its parameter {bound} sits at a limit of fit_laws.py's search box, set by the box, not the data "
                   "(--allow-bound-laws keeps it)")
            left.append(f"{law.name} ({bound} at the fit's bound)")
        else:
            laws.append(law)
            continue
        print(f"schedule.py: warning: law {law.name} left out: {why}", file=sys.stderr)
    n = f"{len(laws)} law{'' if len(laws) == 1 else 's'}"  # too few left by the checks: say which, and how to keep
    _need(len(laws) >= 2 or not left, f"{src}: {n} left after leaving out {', '.join(left)}: nothing to schedule "
                                      "(train longer, or keep them with --max-extrap-error / --allow-bound-laws)")
    _need(len(laws) >= 2, f"{src}: field 'laws' holds a single configuration: nothing to schedule (fit two or more)")
    return laws


def load_transfer(path, laws, rules):
    """transfer.json -> ({(Q, P): [(switch, tau)], "window", "spread": {(Q, P): [(switch, sd)]}}, Eq. 2's switches)"""
    data, src, out, spread = check(_read_json(str(path)), TRANSFER_FILE, str(path)), str(path), {}, {}
    _need(data["cost"] == laws[0].cost, f"{src}: field 'cost' is {data['cost']!r}, the laws' is {laws[0].cost!r}")
    key = lambda c: json.dumps(c, sort_keys=True)                            # noqa: E731
    index = {key(l.config): i for i, l in enumerate(laws)}                   # a law left out: its transitions too
    for i, t in enumerate(data["transitions"]):
        v = check(t, TRANSITION, src, f"transitions[{i}].")
        ends = [index.get(key(v[k])) for k in ("from", "to")]
        pts = [check(x, POINT, src, f"transitions[{i}].points[{j}].") for j, x in enumerate(v["points"])]
        for d, k in ((out, "transfer"), (spread, "spread")) if None not in ends else ():    # a spread: at every point
            d.update({tuple(ends): [(x["switch"], x[k]) for x in pts]} if None not in (x[k] for x in pts) else {})
    eq2 = [f"{laws[q].name} -> {laws[p].name}" for q, p in zip(*np.nonzero(allowed_matrix(laws, rules)))
           if q != p and (q, p) not in out]
    return {**out, "window": data["window"], **({"spread": spread} if spread else {})}, eq2


# ============================================================================ the reader the trainers use

Stage = make_dataclass("Stage", "index config error_start error_end flops_start flops_end".split(), frozen=True)


@dataclass
class Schedule:
    """schedule.json, read: Schedule.load("schedule.json").stage_at(flops=3e12).config is the stage now."""
    stages: list
    kind: str = "law"
    random: bool = False  # FlexiViT: sample uniformly among the stages' configs at every step
    metric: str | None = None
    target_error: float | None = None
    predicted: dict = field(default_factory=dict)
    path: str = "<dict>"
    configs = property(lambda self: [dict(s.config) for s in self.stages])
    load = classmethod(lambda cls, path: cls.from_dict(_read_json(str(path)), source=str(path)))
    digest = property(lambda self: hashlib.sha256(json.dumps(  # its identity, which a resumed run compares
        [self.kind, [asdict(s) for s in self.stages]], sort_keys=True, default=str).encode()).hexdigest()[:16])

    @classmethod
    def from_dict(cls, data, source="<dict>"):
        """Check (version, non-empty stages, a config per stage, numbers, flops_start non-decreasing) and read."""
        top, stages = check(data, SCHEDULE_FILE, source), []
        for i, s in enumerate(top["stages"]):
            v, last = check(s, STAGE, source, f"stages[{i}]."), stages[-1].flops_start if stages else 0.0
            _need(v["flops_start"] >= last, f"{source}: field 'stages[{i}].flops_start' must not decrease "
                                            f"({v['flops_start']:g} < {last:g})")
            stages.append(Stage(i, dict(v.pop("config")), **v))
        return cls(stages, kind := str(data.get("kind", "law")), data.get("random", kind) in (True, "random"),
                   data.get("metric"), top["target_error"], data.get("predicted") or {}, source)

    def stage_at(self, *, flops=None, error=None):
        """The Stage in force at cumulative `flops` (last flops_start <= it) or measured `error` (first error_end <)."""
        if flops is not None:
            return ([s for s in self.stages if s.flops_start <= flops] or self.stages[:1])[-1]
        return next((s for s in self.stages if s.error_end is not None and s.error_end < error), self.stages[-1])

    check_transitions = lambda self, rules=None: check_transitions(self.configs, rules, source=self.path)


# ============================================================================ the command line, the plot

@dataclass
class Config:
    laws: str = "laws.json"  # laws.json from fit_laws.py (one law E = a*(C+d)**(-b) + c per configuration)
    target_error: float | None = None  # error to reach (or give --budget)
    budget: float | None = None  # in the laws' cost (FLOPs; seconds: wall): the target is the best static error there
    out: str = "schedule.json"  # where to write the schedule (schedule.png goes next to it)
    allow_any: bool = False  # allow any transition (default: patch never grows; the other keys never shrink)
    rules: tuple[str, ...] = ()  # per-key rules KEY=up|down|any (up: never shrinks, down: never grows)
    switch_cost: tuple[str, ...] = ()  # cost per switch in the laws' cost, FLOPS and/or KEY=FLOPS (e.g. width=2e12)
    plot: bool = True  # write schedule.png (paper Fig. 3)
    grid: int = 2000  # error grid points (the greedy partition before brentq; the DP when rules or costs bind)
    max_extrap_error: float = 0.3  # leave out laws whose extrapolation check (fit_laws.py) misses by more
    allow_bound_laws: bool = False  # keep laws with a parameter at a limit of fit_laws.py's search box (at_bound)
    check: str | None = None  # only validate this existing schedule.json against the rules (nothing is written)
    transfer: str | None = None  # transfer.json (lab/transfer.py): plan with each switch's measured transfer


def parse_rules(allow_any=False, items=()):
    rules = {k: "any" for k in DEFAULT_RULES} if allow_any else dict(DEFAULT_RULES)
    for item in items:
        key, _, rule = item.partition("=")
        _need(key and rule in RULE_WORDS, f"--rules: '{item}' must look like KEY=up|down|any (e.g. patch=any)")
        rules[key] = rule
    return rules


def parse_switch_cost(items):  # ("1e11", "width=2e12") -> (1e11, {"width": 2e12})
    costs = {"": 0.0}
    for item in items:
        key, _, v = item.rpartition("=")
        with contextlib.suppress(ValueError):
            costs[key] = v = float(v)
        _need(ge0(v), f"--switch-cost: '{item}' must be FLOPS or KEY=FLOPS with FLOPS >= 0")
    return costs.pop(""), costs


def report(doc, target):
    pr, unit, wall = doc["predicted"], doc["predicted"]["unit"], doc["cost"] == "wall"
    return [f"{'stage':>5}  {'config':<24} {'error':^22} {unit:^22}" + (f" {'FLOPs':^22}" if wall else "")] + [
        f"{i:>5}  {s['name']:<24} {s['error_start']:>9.4g} -> {s['error_end']:<9.4g} {s['cost_start']:>9.3g} -> "
        f"{s['cost_end']:<9.3g}" + (f" {s['flops_start']:>9.3g} -> {s['flops_end']:<9.3g}" if wall else "")
        for i, s in enumerate(doc["stages"])] + [
        f"target error {target:.4g} ({doc['method']}): schedule {pr['cost']:.3g} {unit}, best static "
        f"{pr['best_static']['name']} {pr['best_static']['cost']:.3g}: predicted savings {100 * pr['savings']:.1f}% "
        f"of {unit}" + (f" ({100 * pr['savings_flops']:.1f}% of FLOPs)" if wall else ""),
        "static: " + ", ".join(f"{s['name']} " + (f"{s['cost']:.3g}" if s["cost"] else "never") for s in pr["static"])
    ] + [f"over the seeds' spread (sd {s['spread']:.3g}): {100 * pr['expected_savings']:.1f}%" for s in doc["stages"]
         if "spread" in s] + [f"{t}: no measured transfer, Eq. 2 (a free switch)" for t in doc.get("transfer", {})
                              .get("eq2", [])]


def main(cfg):
    rules = parse_rules(cfg.allow_any, cfg.rules)
    if cfg.check:
        Schedule.load(cfg.check).check_transitions(rules)
        return print(f"{cfg.check}: all transitions allowed")
    out, out_dir = os.path.abspath(cfg.out), os.path.dirname(os.path.abspath(cfg.out))  # the flags, before any work
    _need(not (os.path.isdir(out) or cfg.out.endswith(os.sep)),
          f"--out {cfg.out} is a folder; give a file name such as {os.path.join(cfg.out, 'schedule.json')}")
    _need(not out.lower().endswith(".png"), f"--out {cfg.out} ends in .png, the plot's own path; give a .json name")
    _need(out != os.path.abspath(cfg.laws), f"--out {cfg.out} is also --laws's path; give another name")
    _need(cfg.max_extrap_error >= 0, f"--max-extrap-error {cfg.max_extrap_error}: give a relative error >= 0")
    _need(10 <= cfg.grid <= 1_000_000, f"--grid must be 10 to 1000000 error levels (got {cfg.grid})")
    base, per_key = parse_switch_cost(cfg.switch_cost)
    laws = load_laws(cfg.laws, cfg.max_extrap_error, cfg.allow_bound_laws)
    target = target_for(laws, cfg.target_error, cfg.budget)
    transfer, eq2 = load_transfer(cfg.transfer, laws, rules) if cfg.transfer else (None, [])
    doc = {**make_schedule(laws, target, rules, base, per_key, cfg.grid, laws[0].metric, transfer), "laws": cfg.laws,
           "budget": cfg.budget, **({"transfer": {"file": cfg.transfer, "eq2": eq2, "window": transfer["window"]}}
                                    if cfg.transfer else {})}
    os.makedirs(out_dir, exist_ok=True)
    if cfg.plot:
        plot(laws, doc, os.path.splitext(cfg.out)[0] + ".png")
    write_json(cfg.out, doc)
    print("\n".join(report(doc, target)))


def cli(args=None):
    """The command line: bad input (a flag, a file) is one line on stderr and exit code 2; a bug keeps its traceback."""
    import tyro
    box = io.StringIO()
    try:
        with contextlib.redirect_stderr(box):
            cfg = tyro.cli(Config, args=args, prog="schedule.py")
        return main(cfg) or 0
    except SystemExit as e:
        if not e.code:                                                  # --help
            raise
        ls = [ln.strip("\u2502\u256d\u2570\u256e\u256f| ").strip("\u2500 ") for ln in box.getvalue().splitlines()]
        para = ls[:1] + list(it.dropwhile(lambda ln: not ln.strip("-"), ls[1:]))  # tyro's box: title, 1st paragraph
        para = it.takewhile(lambda ln: ln.strip("-") and not ln.startswith(("For full", "Argument", "Perhaps")), para)
        print(f"schedule.py: error: {' '.join(para) or 'bad flags'}; see schedule.py --help", file=sys.stderr)
    except (ScheduleError, OSError) as e:
        print(f"schedule.py: error: {e}", file=sys.stderr)
    return 2


def plot(laws, doc, path):
    """Fig. 3: the laws f_P with the schedule (black), the inverse laws g_P, and |q_P| with the partition shaded."""
    import matplotlib
    from matplotlib.figure import Figure                       # no pyplot: no GUI backend, no global figure
    st, F, c_lo, unit = doc["stages"], doc["predicted"]["cost"], min(l.c for l in laws), UNITS[doc["cost"]]
    E = c_lo + np.geomspace(st[0]["error_start"] - c_lo, (doc["target_error"] - c_lo) * 0.7, 400)
    C, colors = np.geomspace(F * 1e-4, F * 10, 400), matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(laws)))
    ax = (fig := Figure(figsize=(16, 4.5))).subplots(1, 3)
    for l, col in zip(laws, colors):
        ax[0].loglog(C, l(C), color=col, label=l.name)
        ax[1].semilogy(E, l.inverse(E), color=col)
        ax[2].semilogy(E, -l.inverse_slope(E), color=col)
    for s in st:
        i, e = s["law"], np.linspace(s["error_start"], s["error_end"], 100)
        ax[0].loglog(s["cost_end"] - (laws[i].inverse(s["error_end"]) - laws[i].inverse(e)), e, "k", lw=2)
        ax[0].plot(s["cost_end"], s["error_end"], "kx")
        ax[2].axvspan(s["error_end"], s["error_start"], color=colors[i], alpha=0.2)
    x = dict(xlabel="error E", xlim=(E[0], E[-1]), xscale="log" if E[0] - c_lo > 30 * (E[-1] - c_lo) else "linear")
    ax[0].set(xlabel=f"cost C ({unit})", ylabel="error E", title="laws f_P; black: the schedule")
    ax[1].set(**x, ylabel=f"g_P(E) ({unit})", title="inverse laws", ylim=(F * 1e-4, F * 1e2))
    ax[2].set(**x, ylabel="|dg_P/dE|", title="inverse slopes; shaded: the partition")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


if __name__ == "__main__":
    sys.exit(cli())
