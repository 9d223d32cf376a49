"""Compute-optimal shape schedules from scaling laws (paper Sec. 4 Eq. 2, Fig. 3, Fig. 7; Sec. 6; App. D).

A configuration P (a dict: {"patch": 7}, {"width": 384}, {"patch": 20, "width": 192}, ...) has a law
E = f_P(C) = a (C + d)^-b + c (laws.json, from fit_laws.py); its inverse g_P(E) = ((E - c)/a)^(-1/b) - d is
the compute to reach error E, and |q_P(E)| = |dg_P/dE| (Eq. 2) FLOPs buy one unit of error decrease at E.
Taking at every level the P with the largest q_P (smallest |q_P|) partitions the error axis into stages.

Cost model: a training state is its error E. A stage following P from E_start to E_end costs
g_P(E_end) - g_P(E_start); law P covers c_P < E <= f_P(0) only (f at one FLOP when d < 1). The first stage
starts at C = 0 of its law, a later one at any level its law covers. So the optimum starts in Q, the law with
the lowest f(0), and costs the integral of min_P |q_P| from the target up to f_Q(0); if another law is
cheaper right there, it starts in Q's initial state and switches at once (that zero-compute stage is left
out of schedule.json). Transitions per key (default: patch never grows; width, depth, context, batch_size
never shrink; other keys free; configs compare on shared keys): when the greedy partition breaks them, or
switches cost FLOPs (--switch-cost), a DP over an error grid finds the cheapest allowed path (exact on the
grid; any configuration may start fresh at any level), then each switch moves off the grid where it pays.
Baselines (Fig. 7): the same configurations and total compute F switched at linear compute F k/K, at log
compute F_lo (F/F_lo)^(k/K) (F_lo: smallest fitted compute, laws[].flops_range[0], else F/1000), and
FlexiViT's uniform random sampling. Stages also carry "name" and "law" (index into laws.json's list).
Cost (App. F, Fig. 22): all of this runs on laws.json's "cost" axis: "flops", or "wall" (fit_laws.py
--cost wall: training seconds). Stages carry cost_start/cost_end in that unit and flops_start/flops_end, the
same numbers for "flops", for "wall" the seconds times each law's flops_per_second, so that the trainers
(which switch on cumulative FLOPs) follow a schedule in seconds unchanged; --budget and --switch-cost are in
the cost's unit and "predicted" gives the savings in it ("savings"; "savings_flops" in FLOPs).
Laws left out, with a warning: those whose extrapolation check misses by more than --max-extrap-error, and
those with a parameter at a limit of fit_laws.py's search box ("at_bound"), unless --allow-bound-laws.

    python schedule.py --laws laws.json --target-error 0.12 --out runs/schedule.json --baselines
    python schedule.py --laws laws.json --budget 5e14 --rules patch=any --switch-cost width=2e12
    python schedule.py --check my_schedule.json          # a hand-written schedule against the rules

Laws (numpy only; the same vocabulary as fit_laws.Law, without importing it):
    laws = load_laws("laws.json");  law = laws[0];  law(1e13);  law.inverse(0.2);  law.inverse_slope(0.2)

Reader for trainers and users (numpy only):
    from schedule import Schedule
    s = Schedule.load("schedule.json"); s.stage_at(flops=3e12).config; s.stage_at(error=0.4).config
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

VERSION = 1
DEFAULT_RULES = {"patch": "down", "width": "up", "depth": "up", "context": "up", "batch_size": "up",
                 "objective": "any"}
UNITS = {"flops": "FLOPs", "wall": "seconds"}  # laws.json's cost -> its unit
RULE_WORDS = {"up": "never shrinks", "down": "never grows", "any": "may change freely"}


class ScheduleError(ValueError):
    """Unusable laws, schedule or request; the message is one line naming the file and the field."""


# ----------------------------------------------------------------------------- the reader (trainers use this)

@dataclass(frozen=True)
class Stage:
    index: int
    config: dict
    error_start: Optional[float]
    error_end: Optional[float]
    flops_start: float
    flops_end: Optional[float]


def _number(x, where, optional=False, low=None, strict=False):
    if x is None and optional:
        return None
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) > 1e300:
        x = math.inf                                   # a 400-digit integer: no float holds it
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) \
            or (low is not None and (x <= low if strict else x < low)):
        bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        raise ScheduleError(f"{where} must be a finite number{bound} (got {x!r})")
    return float(x)


def _read_json(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ScheduleError(f"{path}: file not found") from None
    except OSError as e:                               # a folder, no permission, ...
        raise ScheduleError(f"{path}: cannot read ({e.strerror})") from None
    except (ValueError, RecursionError) as e:          # bad JSON or UTF-8, a 5000-digit number, [[[[...]]]]
        raise ScheduleError(f"{path}: not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        got = data.get("version") if isinstance(data, dict) else data
        raise ScheduleError(f"{path}: field 'version' must be {VERSION} (got {got!r})")
    return data


@dataclass
class Schedule:
    stages: list
    kind: str = "law"
    random: bool = False  # FlexiViT: sample uniformly among the stages' configs at every step
    metric: Optional[str] = None
    target_error: Optional[float] = None
    predicted: dict = field(default_factory=dict)
    path: str = "<dict>"

    @classmethod
    def load(cls, path):
        return cls.from_dict(_read_json(str(path)), source=str(path))

    @classmethod
    def from_dict(cls, data, source="<dict>"):
        """Validate: version, non-empty stages, a config dict per stage, numbers, flops_start non-decreasing."""
        w = lambda name: f"{source}: field '{name}'"
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ScheduleError(f"{w('version')} must be {VERSION}")
        kind, raw = str(data.get("kind", "law")), data.get("stages")
        if not isinstance(raw, list) or not raw:
            raise ScheduleError(f"{w('stages')} must be a non-empty list")
        stages = []
        for i, s in enumerate(raw):
            if not isinstance(s, dict) or not isinstance(s.get("config"), dict) or not s["config"]:
                raise ScheduleError(f"{w(f'stages[{i}].config')} must be a non-empty object such as {{\"patch\": 7}}")
            if "flops_start" not in s:
                raise ScheduleError(f"{w(f'stages[{i}].flops_start')} is missing")
            v = {k: _number(s.get(k), w(f"stages[{i}].{k}"), optional=k != "flops_start", low=0.0)
                 for k in ("error_start", "error_end", "flops_start", "flops_end")}
            if stages and v["flops_start"] < stages[-1].flops_start:
                raise ScheduleError(f"{w(f'stages[{i}].flops_start')} must not decrease "
                                    f"({v['flops_start']:g} < {stages[-1].flops_start:g})")
            stages.append(Stage(i, dict(s["config"]), **v))
        target = _number(data.get("target_error"), w("target_error"), optional=True)
        return cls(stages, kind, data.get("random", kind) in (True, "random"), data.get("metric"), target,
                   data.get("predicted") or {}, source)

    @property
    def configs(self):
        return [dict(s.config) for s in self.stages]

    def stage_at(self, *, flops=None, error=None):
        """The Stage in force at cumulative compute `flops` (the last stage whose flops_start <= flops), or at
        measured `error` (the first stage whose error_end < error; the last stage if none)."""
        if (flops is None) == (error is None):
            raise TypeError("stage_at takes exactly one of flops=..., error=...")
        if flops is not None:
            live = [s for s in self.stages if s.flops_start <= flops]
            return live[-1] if live else self.stages[0]
        return next((s for s in self.stages if s.error_end is not None and s.error_end < error), self.stages[-1])

    def check_transitions(self, rules=None):
        check_transitions(self.configs, rules, source=self.path)


# ----------------------------------------------------------------------------- allowed transitions

def transition_error(prev, nxt, rules=None):
    """Why prev -> nxt breaks the per-key rules ("up", "down", "any"), or None if it is allowed."""
    rules = DEFAULT_RULES if rules is None else rules
    for key in sorted(set(prev) & set(nxt)):
        rule, a, b = rules.get(key, "any"), prev[key], nxt[key]
        try:
            bad = (rule == "up" and b < a) or (rule == "down" and b > a)
        except TypeError:
            return f"{key} values {a!r} and {b!r} cannot be ordered for the rule '{key}={rule}'"
        if bad:
            return f"{key} {a} -> {b} breaks the rule '{key}={rule}' ({key} {RULE_WORDS[rule]})"
    return None


def check_transitions(configs, rules=None, source="schedule"):
    """Raise ScheduleError if consecutive configs break the rules (trainers call this before training)."""
    for k in range(len(configs) - 1):
        why = transition_error(configs[k], configs[k + 1], rules)
        if why:
            raise ScheduleError(f"{source}: stages[{k}] -> stages[{k + 1}]: {why} "
                                "(change the schedule or relax the rules, e.g. --allow-any)")


def parse_rules(allow_any=False, items=()):
    rules = {k: "any" for k in DEFAULT_RULES} if allow_any else dict(DEFAULT_RULES)
    for item in items:
        key, _, rule = item.partition("=")
        if not key or rule not in RULE_WORDS:
            raise ScheduleError(f"--rules: '{item}' must look like KEY=up|down|any (e.g. patch=any)")
        rules[key] = rule
    return rules


# ----------------------------------------------------------------------------- the laws

@dataclass(frozen=True)
class Law:
    """E = a (C + d)^-b + c for one configuration, C the cost (FLOPs, or seconds with cost "wall"). The same
    vocabulary as fit_laws.Law (this file carries its own copy of the maths so that it can be copied alone):
    law(C) -> E;  law.inverse(E) -> C;  law.inverse_slope(E) -> dC/dE;  law.start -> E where the law starts.
    Vectorised over numpy arrays; a scalar in gives a float out."""
    name: str
    config: dict
    a: float
    b: float
    c: float
    d: float
    flops_lo: Optional[float] = None  # smallest FLOPs fitted (laws[].flops_range[0]), if given
    cost_lo: Optional[float] = None  # smallest cost fitted (laws[].cost_range[0], else flops_lo)
    flops_per_second: Optional[float] = None  # cost "wall": FLOPs a second of this configuration's training
    at_bound: tuple = ()  # parameters fit_laws.py found at a limit of its search box
    metric: Optional[str] = None  # laws.json's metric
    cost: str = "flops"  # laws.json's cost: "flops" or "wall"

    def __call__(self, C):
        """Eq. 1: predicted error after cost C."""
        with np.errstate(divide="ignore", over="ignore"):
            return (self.a * (np.asarray(C, float) + self.d) ** -self.b + self.c)[()]

    @property
    def start(self):
        """Where the law starts: law(0), or law(1) when d < 1 (d = 0 would give infinity)."""
        return float(self.a * max(self.d, 1.0) ** -self.b + self.c)

    def inverse(self, E):
        """Cost at which the law reaches E, clamped at 0: 0 for E >= law(0) (reached before any cost);
        inf for E <= c (never reached)."""
        E = np.asarray(E, float)
        with np.errstate(all="ignore"):
            C = ((E - self.c) / self.a) ** (-1.0 / self.b) - self.d
        return np.where(E > self.c, np.maximum(C, 0.0), np.inf)[()]

    def inverse_slope(self, E):
        """dC/dE of the unclamped inverse at E (Eq. 2's q_P; negative: less error costs more);
        -inf for E <= c."""
        return (-np.exp(self.log_abs_slope(E)))[()]

    def log_abs_slope(self, E):
        """log |dC/dE| = -log(a b) - (1 + 1/b) log((E - c)/a); +inf at or below c (unreachable)."""
        E = np.asarray(E, float)
        with np.errstate(all="ignore"):
            v = -math.log(self.a * self.b) - (1 + 1 / self.b) * np.log((E - self.c) / self.a)
        return np.where(E > self.c, v, np.inf)


def _law_from(r, w, cost):
    """One laws.json row -> (Law, extrapolation rel_max); ScheduleError naming the field."""
    cfg = r.get("config") if isinstance(r, dict) else None
    if not isinstance(cfg, dict) or not cfg:
        raise ScheduleError(f"{w}.config' must be a non-empty object such as {{\"patch\": 7}}")
    for k in "abcd":
        if k not in r:
            raise ScheduleError(f"{w}.{k}' is missing (the law is E = a*(C+d)**(-b) + c)")
    p = {k: _number(r[k], f"{w}.{k}'", low=0.0, strict=k in "ab") for k in "abcd"}
    lo = {}
    for k in ("flops_range", "cost_range"):
        fr = r.get(k)
        if fr is not None and not (isinstance(fr, list) and len(fr) == 2 and type(fr[0]) in (int, float)
                                   and 0 <= fr[0] < 1e300 and (fr[1] is None or (type(fr[1]) in (int, float)
                                                                                  and fr[0] <= fr[1] and
                                                                                  (fr[1] < 1e300 or fr[1] == math.inf)))):
            raise ScheduleError(f"{w}.{k}' must be [lo, hi], 0 <= lo <= hi, hi null if open (got {fr!r})")
        lo[k] = (float(fr[0]) or None) if fr else None
    fps = r.get("flops_per_second")
    if cost == "wall":
        fps = _number(fps, f"{w}.flops_per_second' (needed with cost 'wall', from fit_laws.py --cost wall)",
                      low=0.0, strict=True)
    bound = r.get("at_bound") or []
    if not isinstance(bound, list):
        raise ScheduleError(f"{w}.at_bound' must be a list of parameter names (got {bound!r})")
    name = str(r.get("name") or ",".join(f"{k}={v}" for k, v in cfg.items()))
    law = Law(name, dict(cfg), **p, flops_lo=lo["flops_range"],
              cost_lo=lo["cost_range"] if "cost_range" in r else (lo["flops_range"] if cost == "flops" else None),
              flops_per_second=fps if cost == "wall" else None, at_bound=tuple(map(str, bound)), cost=cost)
    ex = r.get("extrapolation") or {}
    if not isinstance(ex, dict):
        raise ScheduleError(f"{w}.extrapolation' must be an object such as {{\"rel_max\": 0.05}} (got {ex!r:.60})")
    return law, _number(ex.get("rel_max"), f"{w}.extrapolation.rel_max'", optional=True, low=0.0)


def load_laws(path, max_extrap_error=math.inf, allow_bound_laws=False):
    """laws.json -> list[Law] (each with the file's metric and cost), as fit_laws.load_laws; every problem is
    a one-line ScheduleError naming the field. Left out with a warning:
    - a law whose extrapolation check (fit_laws.py: refit on the first 30% of compute, worst relative error
      on the rest, `extrapolation.rel_max`) exceeds max_extrap_error: its derivative, which Eq. 2 acts on,
      is not to be trusted past the data;
    - unless allow_bound_laws, a law with a parameter at a limit of the fit's search box (`at_bound`):
      the box, not the data, set that parameter."""
    src = str(path)
    data, laws, seen, left = _read_json(src), [], {}, []
    if not isinstance(data.get("laws"), list) or not data["laws"]:
        raise ScheduleError(f"{src}: field 'laws' must be a non-empty list")
    cost = data.get("cost", "flops")
    if cost not in ("flops", "wall"):
        raise ScheduleError(f"{src}: field 'cost' must be 'flops' or 'wall' (got {cost!r})")
    for i, r in enumerate(data["laws"]):
        w = f"{src}: field 'laws[{i}]"
        law, extrap = _law_from(r, w, cost)
        key = json.dumps(law.config, sort_keys=True)
        if key in seen:
            seeds = " (fitted --per-seed: fit_laws.py without it pools the seeds, one law per config)" \
                if r.get("seed") is not None else ""
            raise ScheduleError(f"{w}.config' repeats laws[{seen[key]}].config {law.config}{seeds}")
        seen[key] = i
        if type(extrap) in (int, float) and extrap > max_extrap_error:
            print(f"schedule.py: warning: law {law.name} left out: its extrapolation check misses by "
                  f"{extrap:.0%} > --max-extrap-error {max_extrap_error:.0%}", file=sys.stderr)
            left.append(f"{law.name} (extrapolation off by {extrap:.0%})")
            continue
        if law.at_bound and not allow_bound_laws:
            print(f"schedule.py: warning: law {law.name} left out: its parameter {', '.join(law.at_bound)} sits at "
                  "a limit of fit_laws.py's search box, set by the box, not the data (--allow-bound-laws keeps "
                  "it)", file=sys.stderr)
            left.append(f"{law.name} ({', '.join(law.at_bound)} at the fit's bound)")
            continue
        laws.append(dataclasses.replace(law, metric=data.get("metric")))
    if len(laws) < 2 and left:      # an outcome of the checks, not a malformed file: say which and how to keep them
        n = f"{len(laws)} law{'' if len(laws) == 1 else 's'}"
        raise ScheduleError(f"{src}: {n} left after leaving out {', '.join(left)}: nothing to schedule (train "
                            "longer, or keep them with --max-extrap-error / --allow-bound-laws)")
    if len(laws) < 2:
        raise ScheduleError(f"{src}: field 'laws' holds a single configuration: nothing to schedule "
                            "(fit laws for two or more configurations)")
    return laws


# ----------------------------------------------------------------------------- switch points

def error_grid(laws, target, top, n):
    """n error levels from top down to target, geometric in E - min c (fine where the slopes change fast)."""
    c_lo = min(l.c for l in laws)
    return c_lo + np.geomspace(top - c_lo, target - c_lo, n)


def _root(h, lo, hi):
    from scipy.optimize import brentq
    return brentq(h, lo, hi, xtol=1e-14 * abs(hi - lo) + 1e-300, rtol=1e-15)


def greedy_path(laws, target, n=2000):
    """Eq. 2: at every level from E_top = min f(0) down to the target, the law with the smallest |dg/dE|,
    found on a grid, each switch refined by brentq on log|g_P'| - log|g_Q'|. -> [(law, E_start, E_end)]"""
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
    bounds.append(float(target))
    stages = [(p, bounds[k], bounds[k + 1]) for k, p in enumerate(seq)]
    start = seq[0] if f0[seq[0]] <= top * (1 + 1e-12) else int(np.argmin(f0))  # ties in f(0): no extra stage
    return ([(start, top, top)] if seq[0] != start else []) + stages


def dp_path(laws, target, n, allowed, S):
    """Cheapest path over the error grid (levels from max f(0) down to the target) with only allowed[Q, P]
    switches, each costing S[Q, P] FLOPs. Level by level: arrive in P by continuing P through the cell above
    or by starting P fresh (g_P from its C = 0), then optionally switch. -> (stages, cost on the grid)"""
    M, f0 = len(laws), np.array([l.start for l in laws])
    E = error_grid(laws, target, f0.max(), n)
    G = np.stack([l.inverse(E) for l in laws], 1)
    G[(E[:, None] > f0[None]) | ~np.isfinite(G)] = np.inf  # outside c < E <= f(0)
    T = np.where(allowed, S, np.inf)
    np.fill_diagonal(T, 0.0)
    fresh, parent = np.zeros((n, M), bool), np.zeros((n, M), int)
    U, V, fresh[0], cols = G[0].copy(), None, True, np.arange(M)
    for i in range(n):
        if i:
            ok = np.isfinite(G[i]) & np.isfinite(G[i - 1])
            with np.errstate(invalid="ignore"):
                cont = np.where(ok, V + np.where(ok, G[i] - G[i - 1], 0.0), np.inf)
            fresh[i] = G[i] < cont
            U = np.where(fresh[i], G[i], cont)
        W = U[:, None] + T  # one round of switches suffices: the rules and costs make chains no cheaper
        parent[i] = np.argmin(W, 0)
        V = W[parent[i], cols]
    cur, i, end, stages = int(np.argmin(U)), n - 1, float(target), []
    if not np.isfinite(U[cur]):
        raise ScheduleError("no allowed path reaches the target (check the rules and the laws' c)")
    while not fresh[i, cur]:
        i -= 1
        q = int(parent[i, cur])
        if q != cur:
            stages.append((cur, float(E[i]), end))
            end, cur = float(E[i]), q
    stages.append((cur, float(f0[cur]), end))
    return stages[::-1], float(U.min())


def refine(laws, stages, E):
    """Move each switch from its grid level to the best level within the neighbouring cells: a switch
    P -> R at b contributes g_P(b) - g_R(b), which is stationary where the slopes cross."""
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
    """Cumulative (flops_start, flops_end) per stage; stage k costs S[prev, P] + g_P(E_end) - g_P(E_start)."""
    out, total, prev = [], 0.0, None
    for p, e0, e1 in stages:
        start = total
        total += (S[prev, p] if prev is not None else 0.0) + float(laws[p].inverse(e1) - laws[p].inverse(e0))
        out.append((start, total))
        prev = p
    return out


def switch_costs(laws, switch_cost=0.0, per_key=None):
    """S[Q, P]: FLOPs charged when switching Q -> P: switch_cost plus per_key[k] for each key k that changes."""
    return np.array([[0.0 if q is p else switch_cost + sum(v for k, v in (per_key or {}).items()
                                                             if q.config.get(k) != p.config.get(k))
                      for p in laws] for q in laws])


def solve(laws, target, rules=None, S=None, n=2000):
    """The cheapest allowed path: the exact greedy partition when it is allowed and switches are free,
    else the grid DP (refined), or the greedy path if allowed and cheaper. -> (stages, method)"""
    S = np.zeros((len(laws),) * 2) if S is None else np.asarray(S, float)
    allowed = np.array([[transition_error(q.config, p.config, rules) is None for p in laws] for q in laws])
    greedy = greedy_path(laws, target, n)
    ok = all(allowed[a[0], b[0]] for a, b in zip(greedy, greedy[1:]))
    if ok and not S.any():
        return greedy, "greedy"
    dp, _ = dp_path(laws, target, n, allowed, S)
    E = error_grid(laws, target, max(l.start for l in laws), n)
    cands = [(refine(laws, dp, E), "dp")] + ([(greedy, "greedy")] if ok else [])
    return min(cands, key=lambda c: path_flops(laws, c[0], S)[-1][1])


# ----------------------------------------------------------------------------- schedule.json documents

def target_for(laws, target_error=None, budget=None):
    """The error to reach: --target-error, or the best static configuration's error at --budget FLOPs."""
    if (target_error is None) == (budget is None):
        raise ScheduleError("give exactly one of --target-error E or --budget FLOPS")
    if budget is not None:
        target_error = min(float(l(_number(budget, "--budget", low=0.0, strict=True))) for l in laws)
    target_error = _number(target_error, "--target-error", low=0.0, strict=True)
    low, first = min(laws, key=lambda l: l.c), min(laws, key=lambda l: l.start)
    if target_error <= low.c:
        raise ScheduleError(f"target error {target_error:g} is at or below every law's c (lowest: c={low.c:g} "
                            f"for '{low.name}'): no configuration reaches it; choose a higher target")
    if target_error >= first.start:
        raise ScheduleError(f"target error {target_error:g} is at or above f(0)={first.start:g} of '{first.name}': "
                            "it is reached with no compute; choose a lower target")
    return target_error


def with_flops(laws, stages):
    """Stage dicts with cost_start/cost_end -> also flops_start/flops_end, which the trainers switch on. With
    cost "flops" they are the same numbers; with cost "wall" each stage's seconds times its law's
    flops_per_second (fit_laws.py --cost wall), accumulated over the stages."""
    total = 0.0
    for s in stages:
        law = laws[s["law"]]
        if law.cost == "flops":
            s["flops_start"], s["flops_end"] = s["cost_start"], s["cost_end"]
        else:
            s["flops_start"] = total
            s["flops_end"] = total + (s["cost_end"] - s["cost_start"]) * law.flops_per_second
        total = s["flops_end"]
    return stages


def make_schedule(laws, target, rules=None, switch_cost=0.0, switch_cost_key=None, grid=2000, metric=None):
    """The law schedule as a schedule.json dict: stages and the predicted cost vs every static config.
    The maths runs on the laws' cost axis (FLOPs, or seconds with cost "wall"; switch costs in that unit);
    each stage carries cost_start/cost_end and, converted, flops_start/flops_end (see with_flops)."""
    if not 10 <= grid <= 1_000_000:
        raise ScheduleError(f"--grid must be 10 to 1000000 error levels (got {grid})")
    rules = DEFAULT_RULES if rules is None else rules
    cost = laws[0].cost
    S = switch_costs(laws, switch_cost, switch_cost_key)
    path, method = solve(laws, target, rules, S, grid)
    spent = path_flops(laws, path, S)
    stages = with_flops(laws, [
        {"config": laws[p].config, "name": laws[p].name, "law": p, "error_start": e0, "error_end": e1,
         "cost_start": c0, "cost_end": c1}
        for (p, e0, e1), (c0, c1) in zip(path, spent) if not (e0 == e1 and c0 == c1)])
    rate = lambda l: 1.0 if cost == "flops" else l.flops_per_second
    static = [{"name": l.name, "config": l.config, "cost": float(l.inverse(target)) if target > l.c else None}
              for l in laws]
    for s, l in zip(static, laws):
        s["flops"] = None if s["cost"] is None else s["cost"] * rate(l)
    best = min((s for s in static if s["cost"] is not None), key=lambda s: s["cost"])
    total, total_flops = spent[-1][1], stages[-1]["flops_end"]
    saving = lambda ours, theirs: 1.0 - ours / theirs if theirs > 0 else 0.0
    predicted = {"unit": UNITS[cost], "cost": total, "flops": total_flops, "best_static": best, "static": static,
                 "savings": saving(total, best["cost"]), "savings_flops": saving(total_flops, best["flops"])}
    return {"version": VERSION, "kind": "law", "random": False, "metric": metric, "cost": cost,
            "target_error": target, "method": method, "rules": rules, "switch_cost": switch_cost,
            "switch_cost_key": switch_cost_key or {}, "stages": stages, "predicted": predicted}


def baseline_schedules(laws, doc, switch_cost=0.0, switch_cost_key=None):
    """Fig. 7 baselines with the law schedule's configurations and total cost F: linear and log-spaced
    switches (predicted errors by traversing the laws), and FlexiViT's uniform random sampling over every
    configuration of laws.json (as FlexiViT samples its whole set of patch sizes; with cost "wall" its FLOPs
    are F times the configurations' mean FLOPs per second, the rate of a uniform mix being unknown)."""
    seq = [s["law"] for s in doc["stages"]]
    S, K, F = switch_costs(laws, switch_cost, switch_cost_key), len(seq), doc["predicted"]["cost"]
    lo = min((laws[p].cost_lo for p in seq if laws[p].cost_lo), default=None)
    lo = lo if lo and lo < F else F / 1000
    head = lambda kind: {"version": VERSION, "kind": kind, "random": kind == "random", "metric": doc["metric"],
                         "cost": doc["cost"], "target_error": doc["target_error"]}
    out = {}
    for kind, bd in {"linear": [F * k / K for k in range(K + 1)],
                     "log": [0.0] + [lo * (F / lo) ** (k / K) for k in range(1, K)] + [F]}.items():
        stages, E, prev = [], None, None
        for k, p in enumerate(seq):
            law, spend = laws[p], bd[k + 1] - bd[k] - (S[prev, p] if prev is not None else 0.0)
            e0 = law.start if E is None else E
            # a law entered above its f(0) starts at its C = 0; one that cannot get below e0 makes no progress
            e1 = e0 if e0 <= law.c else float(law(float(law.inverse(min(e0, law.start))) + max(spend, 0.0)))
            stages.append({"config": law.config, "name": law.name, "law": p, "error_start": e0, "error_end": e1,
                           "cost_start": bd[k], "cost_end": bd[k + 1]})
            E, prev = e1, p
        with_flops(laws, stages)
        out[kind] = {**head(kind), "stages": stages, "predicted": {"cost": F, "flops": stages[-1]["flops_end"],
                                                                   "error": E}}
    out["log"]["log_start_cost"] = lo
    if doc["cost"] == "flops":
        out["log"]["log_start_flops"] = lo
    fps = 1.0 if doc["cost"] == "flops" else float(np.mean([l.flops_per_second for l in laws]))
    out["random"] = {**head("random"), "predicted": {"cost": F, "flops": F * fps, "error": None},
                     "stages": [{"config": laws[p].config, "name": laws[p].name, "law": p, "error_start": None,
                                 "error_end": None, "cost_start": 0.0, "cost_end": F, "flops_start": 0.0,
                                 "flops_end": F * fps} for p in range(len(laws))]}
    return out


def write_json(path, obj):
    """Strict JSON (no NaN/Infinity: one would be a bug here), atomically; no .tmp left on failure."""
    text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
    try:
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    finally:
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")


def plot(laws, doc, path):
    """Fig. 3: the laws with the schedule's trajectory, the inverse laws, and |dg/dE| with the partition."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(laws)))
    st, F, c_lo, unit = doc["stages"], doc["predicted"]["cost"], min(l.c for l in laws), UNITS[doc["cost"]]
    E = c_lo + np.geomspace(st[0]["error_start"] - c_lo, (doc["target_error"] - c_lo) * 0.7, 400)
    C = np.geomspace(F * 1e-4, F * 10, 400)
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    for l, col in zip(laws, colors):
        ax[0].loglog(C, l(C), color=col, label=l.name)
        ax[1].semilogy(E, l.inverse(E), color=col)
        ax[2].semilogy(E, -l.inverse_slope(E), color=col)
    for s in st:
        i = s["law"]
        e = np.linspace(s["error_start"], s["error_end"], 100)
        ax[0].loglog(s["cost_end"] - (laws[i].inverse(s["error_end"]) - laws[i].inverse(e)), e, "k", lw=2)
        ax[0].plot(s["cost_end"], s["error_end"], "kx")
        ax[2].axvspan(s["error_end"], s["error_start"], color=colors[i], alpha=0.2)
    ax[0].set(xlabel=f"cost C ({unit})", ylabel="error E", title="laws f_P; black: the schedule")
    ax[1].set(xlabel="error E", ylabel=f"g_P(E) ({unit})", title="inverse laws", ylim=(F * 1e-4, F * 1e2))
    ax[2].set(xlabel="error E", ylabel="|dg_P/dE|", title="inverse slopes; shaded: the partition")
    for a in ax[1:]:
        a.set(xlim=(E[0], E[-1]), xscale="log" if E[0] - c_lo > 30 * (E[-1] - c_lo) else "linear")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path + ".tmp", format="png", dpi=110)
        os.replace(path + ".tmp", path)
    finally:
        plt.close(fig)
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")


# ----------------------------------------------------------------------------- the command line

@dataclass
class Config:
    laws: str = "laws.json"
    """laws.json from fit_laws.py (one law E = a*(C+d)**(-b) + c per configuration)"""
    target_error: Optional[float] = None
    """error to reach (or give --budget)"""
    budget: Optional[float] = None
    """budget in the laws' cost (FLOPs; seconds for laws fitted with --cost wall): the target is the best static
    configuration's predicted error there"""
    out: str = "schedule.json"
    """where to write the schedule (schedule.png and the baselines go next to it)"""
    allow_any: bool = False
    """allow any transition (default: patch never grows; width, depth, context, batch_size never shrink)"""
    rules: tuple[str, ...] = ()
    """per-key rules KEY=up|down|any (up: never shrinks, down: never grows), e.g. --rules patch=any"""
    switch_cost: tuple[str, ...] = ()
    """cost per switch, in the laws' cost (e.g. recovery after a width growth): FLOPS and/or KEY=FLOPS, e.g.
    1e11 width=2e12"""
    baselines: bool = False
    """also write schedule_linear.json, schedule_log.json, schedule_random.json (paper Fig. 7)"""
    plot: bool = True
    """write schedule.png (paper Fig. 3)"""
    grid: int = 2000
    """error grid points (the greedy partition before brentq refinement; the DP when rules or costs bind)"""
    max_extrap_error: float = 0.3
    """leave out laws whose extrapolation check (fit_laws.py, extrapolation.rel_max) misses by more"""
    allow_bound_laws: bool = False
    """keep laws with a parameter at a limit of fit_laws.py's search box (laws[].at_bound; left out by default)"""
    check: Optional[str] = None
    """only validate this existing schedule.json against the rules (nothing is written)"""


def parse_switch_cost(items):
    """("1e11", "width=2e12") -> (1e11, {"width": 2e12})"""
    costs = {"": 0.0}
    for item in items:
        key, _, v = item.rpartition("=")
        try:
            costs[key] = _number(float(v), "", low=0.0)
        except ValueError:
            raise ScheduleError(f"--switch-cost: '{item}' must be FLOPS or KEY=FLOPS with FLOPS >= 0") from None
    return costs.pop(""), costs


def check_out(cfg):
    """Refuse, before any work, an --out that is a folder or would be overwritten by another output."""
    out = os.path.abspath(cfg.out)
    if os.path.isdir(out) or cfg.out.endswith(os.sep):
        raise ScheduleError(f"--out {cfg.out} is a folder; give a file name such as "
                            f"{os.path.join(cfg.out, 'schedule.json')}")
    if out.lower().endswith(".png"):
        raise ScheduleError(f"--out {cfg.out} ends in .png, the plot's own path; give a .json name")
    others = [os.path.abspath(cfg.laws)] + [os.path.join(os.path.dirname(out), f"schedule_{k}.json")
                                              for k in ("linear", "log", "random") if cfg.baselines]
    if out in others:
        raise ScheduleError(f"--out {cfg.out} is also {'--laws' if out == others[0] else 'a baseline'}'s path; "
                            "give another name")


def report(doc, target):
    """The printed table: stages in error and cost, the predicted savings, the static configurations."""
    pr, unit, wall = doc["predicted"], doc["predicted"]["unit"], doc["cost"] == "wall"
    lines = [f"{'stage':>5}  {'config':<24} {'error':^22} {unit:^22}" + (f" {'FLOPs':^22}" if wall else "")]
    for i, s in enumerate(doc["stages"]):
        lines.append(f"{i:>5}  {s['name']:<24} {s['error_start']:>9.4g} -> {s['error_end']:<9.4g} "
                     f"{s['cost_start']:>9.3g} -> {s['cost_end']:<9.3g}"
                     + (f" {s['flops_start']:>9.3g} -> {s['flops_end']:<9.3g}" if wall else ""))
    lines.append(f"target error {target:.4g} ({doc['method']}): schedule {pr['cost']:.3g} {unit}, best static "
                 f"{pr['best_static']['name']} {pr['best_static']['cost']:.3g}: predicted savings "
                 f"{100 * pr['savings']:.1f}% of {unit}"
                 + (f" ({100 * pr['savings_flops']:.1f}% of FLOPs)" if wall else ""))
    lines.append("static: " + ", ".join(f"{s['name']} " + (f"{s['cost']:.3g}" if s["cost"] else "never")
                                        for s in pr["static"]))
    return lines


def main(cfg):
    rules = parse_rules(cfg.allow_any, cfg.rules)
    if cfg.check:
        Schedule.load(cfg.check).check_transitions(rules)
        return print(f"{cfg.check}: all transitions allowed")
    check_out(cfg)
    if not cfg.max_extrap_error >= 0:
        raise ScheduleError(f"--max-extrap-error {cfg.max_extrap_error}: give a relative error >= 0 (e.g. 0.3)")
    base, per_key = parse_switch_cost(cfg.switch_cost)
    laws = load_laws(cfg.laws, cfg.max_extrap_error, cfg.allow_bound_laws)
    target = target_for(laws, cfg.target_error, cfg.budget)
    doc = make_schedule(laws, target, rules, base, per_key, cfg.grid, laws[0].metric)
    doc.update({"laws": cfg.laws, "budget": cfg.budget})
    out_dir = os.path.dirname(os.path.abspath(cfg.out))
    os.makedirs(out_dir, exist_ok=True)
    if cfg.plot:
        plot(laws, doc, os.path.splitext(cfg.out)[0] + ".png")
    lines = report(doc, target)
    if cfg.baselines:
        for kind, b in baseline_schedules(laws, doc, base, per_key).items():
            write_json(os.path.join(out_dir, f"schedule_{kind}.json"), b)
            if b["predicted"]["error"] is not None:
                lines.append(f"baseline {kind}: same cost, predicted error {b['predicted']['error']:.4g}")
    write_json(cfg.out, doc)
    print("\n".join(lines))
    return doc


def cli(args=None):
    """The command line: tyro's flags, bad input (a flag, a file) as one line on stderr and exit code 2; any
    other exception is a bug and keeps its traceback. Returns the exit code."""
    import contextlib
    import io

    import tyro
    box = io.StringIO()
    try:
        with contextlib.redirect_stderr(box):
            cfg = tyro.cli(Config, args=args, prog="schedule.py")
    except SystemExit as e:                      # tyro's 6-15-line box, cut to its first paragraph
        if not e.code:
            sys.stderr.write(box.getvalue())
            raise
        words = []
        for ln in (ln.strip("\u2502\u256d\u2570\u256e\u256f| ").strip("\u2500 ") for ln in box.getvalue().splitlines()):
            if ln.startswith(("For full", "Argument", "Perhaps")) or (len(words) > 1 and not ln.strip("-")):
                break
            words += [ln] if ln.strip("-") else []   # the title, then its first paragraph
        print(f"schedule.py: error: {' '.join(words) or 'bad flags'}; see schedule.py --help", file=sys.stderr)
        return 2
    try:
        main(cfg)
    except (ScheduleError, OSError) as e:
        print(f"schedule.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
