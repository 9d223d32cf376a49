"""What a switch really does, measured by pilot switches (issue 24; beyond the paper's Eq. 2).

Eq. 2 assumes that a switch Q -> P at cost C_s is free and that the model goes on along P's law from the error it
had: at the effective cost g_P(f_Q(C_s)) on P's law (g = f^-1). A pilot measures where it really goes on:

  1. a static run of Q keeps checkpoints at a few costs (--keep-at of train_vit.py or train_lm.py; the first
     evaluation past each);
  2. a pilot starts from one (the trainer's --start-from), switches to P at once and trains a short stretch;
  3. its evaluations after the first quarter of the stretch, (C_k, E_k), are fitted by one number tau:
         E_k ~ f_P(g_P(f_Q(C_s)) + (C_k - C_s) + tau)          (least squares on E)
     tau is the effective cost transferred (Hernandez et al. 2021): tau < 0 a loss (a patch switch's jump),
     tau > 0 a gain (a grown model that keeps what it learnt). Eq. 2 is tau = 0.
  4. per transition and switch point: the mean of tau over seeds with its 95% interval, and the spread (the sd over
     seeds of where each seed's tau puts its switched model against its own target) -> transfer.json, which
     `schedule.py --transfer` plans with. A pilot that failed or has fewer than 2 evaluations in its window
     measures nothing: the transition is listed under "unmeasured" and schedule.py keeps Eq. 2 for it.
     "window" (a quarter of the stretch) is where tau holds from: a plan never reaches its target sooner after a switch.

Every pilot's FLOPs after its switch are its cost (it shares the static run's training before it).

    python lab/transfer.py --pipeline runs/depth-demo     # re-measure transfer.json from the pilots there
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import optimize, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the core, at the repository root
import schedule  # noqa: E402
import runtime  # noqa: E402
from lab import compare, load, write_json  # noqa: E402
from runtime import RunLog, UserError, run_cli  # noqa: E402


def evals(run: Path) -> list[dict]:
    """The evaluation records of run/log.jsonl (none if it is not there)."""
    log = RunLog(Path(run) / "log.jsonl")                  # the trainers' own reader: a line cut by a kill dropped
    return [r for r in (log.records() if log.path.exists() else []) if r.get("type") == "eval"]


def kept_at(static: Path, c: float) -> tuple[float, Path] | None:
    """(the FLOPs, the checkpoint) a static run kept for --keep-at c: its first evaluation at or past c."""
    at = next((r["flops"] for r in evals(static) if r["flops"] >= c), None)
    path = runtime.kept_path(static, c)
    return (float(at), path) if at is not None and path.exists() else None


def shape(run: Path) -> dict:
    """A run's shape as its records log it (the config fit_laws.py groups a law by)."""
    return evals(run)[-1]["config"]


def keep_flags(p: dict) -> list[str]:
    """A static run's --keep-at: the preset's pilot points (fractions of its budget); none without pilots."""
    return ["--keep-at", *[repr(f * p["flops"]) for f in p["pilot_points"]]] if "pilot_points" in p else []


def pilot_plan(p: dict, static: dict) -> list[dict]:
    """Every allowed transition Q -> P (schedule.py's default rules) between the static shapes, at each kept
    point: {name, from, to, point}. `static`: {static run name: shape}, one seed's."""
    names, short = list(static), lambda run: run.rsplit("_s", 1)[0].removeprefix("static_")   # static_d2_s0 -> d2
    return [{"name": f"pilot_{short(a)}-{short(b)}_at{i}", "from": a, "to": b, "point": f * p["flops"]}
            for a in names for b in names if a != b and schedule.transition_error(static[a], static[b]) is None
            for i, f in enumerate(p["pilot_points"])]


def pilot_schedule(q: dict, r: dict, at: float) -> dict:
    """A pilot's schedule: Q until the kept checkpoint's FLOPs, P from there."""
    return {"version": 1, "kind": "pilot", "stages": [{"config": q, "flops_start": 0.0},
                                                      {"config": r, "flops_start": at}]}


# ----------------------------------------------------------------------------- tau, from a pilot's records

def fit_tau(law_q: schedule.Law, law_p: schedule.Law, at: float, C: np.ndarray, E: np.ndarray, scale: float) -> float:
    """The effective cost transferred at a switch at `at`: the tau whose curve f_P(g_P(f_Q(at)) + C - at + tau)
    fits the measured errors E at costs C best (least squares); bounded to [-g_P(f_Q(at)), 100 x scale]."""
    start = float(law_p.inverse(min(float(law_q(at)), law_p.start)))
    curve = lambda t: law_p(start + (C - at) + t)                                  # noqa: E731
    res = optimize.minimize_scalar(lambda t: float(np.sum((curve(t * scale) - E) ** 2)),
                                   bounds=(-start / scale, 100.0), method="bounded", options={"xatol": 1e-6})
    return float(res.x * scale)


def laws_for(laws: list, *configs: dict) -> list:
    """The law of each config (None where laws.json has none), matched as fit_laws.py groups a law: by its config."""
    by_config = {json.dumps(law.config, sort_keys=True): law for law in laws}
    return [by_config.get(json.dumps(c, sort_keys=True)) for c in configs]


def measure(root: Path, laws: list, pilots: list[dict], metric: str, scale: float, targets: dict | None = None) -> dict:
    """transfer.json from the pilots: per transition and point the mean tau over seeds, its interval, the pilots;
    with `targets` ({seed: its best static run's final error}) each pilot's gap, the error its tau puts the switched
    model at one window after the switch, f_P(g_P(f_Q(C_s)) + tau + window), less its seed's target, and per point
    the spread: the gaps' sd over seeds (schedule.py plans for the mean over that spread)."""
    groups, unmeasured, cost, targets = {}, [], 0.0, targets or {}
    window = min((0.25 * pl["stretch"] for pl in pilots), default=0.0)   # tau is fitted from here on after a switch
    for pl in pilots:
        run, key = root / pl["run"], json.dumps([pl["from_config"], pl["to_config"]], sort_keys=True)
        recs = [r for r in evals(run) if r["flops"] > pl["at"]]
        cost += (recs[-1]["flops"] - pl["at"]) if recs else 0.0
        q, r = laws_for(laws, pl["from_config"], pl["to_config"])
        fit = [x for x in recs if x["flops"] - pl["at"] >= 0.25 * pl["stretch"] and math.isfinite(x[metric])]
        why = ("its shapes have no law in laws.json (left out)" if q is None or r is None else
               "it did not finish (diverged or failed: see its stdout.txt)" if not pl["finished"] else
               f"only {len(fit)} evaluation(s) after the first quarter of its stretch" if len(fit) < 2 else
               f"{q.name}'s error at the switch ({float(q(pl['at'])):.4g}) is at or below the floor c = {r.c:.4g} of "
               f"{r.name}'s law, which cannot place it" if not math.isfinite(r.inverse(min(float(q(pl["at"])), r.start)))
               else None)
        if why:
            unmeasured.append({"pilot": pl["run"], "from": pl["from_config"], "to": pl["to_config"], "why": why})
            continue
        C, E = (np.array([x[k] for x in fit], float) for k in ("flops", metric))
        t, start = fit_tau(q, r, pl["at"], C, E, scale), float(r.inverse(min(float(q(pl["at"])), r.start)))
        gap = float(r(max(start + t, 0.0) + window)) - targets[pl["seed"]] if pl["seed"] in targets else None
        groups.setdefault(key, {"from": q.config, "to": r.config, "name": f"{q.name} -> {r.name}", "points": {}})
        groups[key]["points"].setdefault(pl["point"], []).append({"pilot": pl["run"], "seed": pl["seed"],
                                                                  "switch": pl["at"], "transfer": t, "gap": gap})
    transitions = []
    for g in groups.values():
        pts = []
        for point, xs in sorted(g["points"].items()):
            t, gaps = np.array([x["transfer"] for x in xs]), [x["gap"] for x in xs if x["gap"] is not None]
            half = float(stats.t.ppf(0.975, len(t) - 1) * t.std(ddof=1) / math.sqrt(len(t))) if len(t) > 1 else None
            pts.append({"switch": float(np.mean([x["switch"] for x in xs])), "transfer": float(t.mean()),
                        "ci95": [float(t.mean() - half), float(t.mean() + half)] if half is not None else None,
                        "spread": float(np.std(gaps, ddof=1)) if len(gaps) > 1 else None, "n": len(t), "pilots": xs})
        transitions.append({"from": g["from"], "to": g["to"], "name": g["name"], "points": pts})
    return {"version": 1, "cost": "flops", "metric": metric, "pilots_flops": cost, "window": window,
            "transitions": transitions, "unmeasured": unmeasured, "against_staying": against_staying(root, pilots, metric)}


def against_staying(root: Path, pilots: list[dict], metric: str) -> list[dict]:
    """No law needed: each pilot's last error less its static run's (the shape it left) at the same FLOPs,
    interpolated in log FLOPs; per transition and point the mean over seeds. < 0: the switch had paid by then."""
    groups = {}
    for pl in (pl for pl in pilots if pl.get("from_run")):
        mine, stay = evals(root / pl["run"]), [r for r in evals(root / pl["from_run"]) if math.isfinite(r[metric])]
        if not mine or not math.isfinite(mine[-1][metric]) or len(stay) < 2 or mine[-1]["flops"] > stay[-1]["flops"]:
            continue
        there = np.interp(math.log(mine[-1]["flops"]), np.log([r["flops"] for r in stay]), [r[metric] for r in stay])
        key = json.dumps([pl["from_config"], pl["to_config"], pl["point"]], sort_keys=True)
        groups.setdefault(key, {"from": pl["from_config"], "to": pl["to_config"], "switch": pl["at"], "at": [],
                                "delta": []})
        groups[key]["at"].append(mine[-1]["flops"])
        groups[key]["delta"].append(float(mine[-1][metric] - there))
    return [{**g, "at": float(np.mean(g["at"])), "mean": float(np.mean(g["delta"]))} for g in groups.values()]


def as_trained(root: Path, plan: dict | None, comp: dict | None, metric: str, scale: float) -> list[dict]:
    """The transfer planned against the transfer trained: for each scheduled run of `plan` (schedule_transfer.json) in
    `comp` (comparison.json), tau fitted to its own evaluations on the switched stage (from the window on, as a
    pilot's) beside the tau it was planned with."""
    st = (plan or {}).get("stages", [])
    if len(st) < 2 or "transfer" not in st[1] or not comp:
        return []
    q, p = laws_for(schedule.load_laws(root / "laws.json", math.inf, True), st[0]["config"], st[1]["config"])
    at, end = st[1]["flops_start"], st[2]["flops_start"] if len(st) > 2 else math.inf
    window, rows = (plan.get("transfer") or {}).get("window", 0.0), []
    for run in (r for r in comp.get("runs", []) if r.get("kind") == "transfer" and q and p):
        fit = [x for x in evals(root / run["run"]) if at + window <= x["flops"] < end and math.isfinite(x[metric])]
        C, E = (np.array([x[k] for x in fit], float) for k in ("flops", metric))
        tau = fit_tau(q, p, at, C, E, scale) if len(fit) >= 2 else None
        rows.append({"run": run["run"], "switch at (FLOPs)": at, "planned tau": st[1]["transfer"],
                     "evaluations": len(fit), "tau as trained": tau})
    return rows


# ----------------------------------------------------------------------------- the command line

@dataclasses.dataclass
class Config:
    pipeline: str  # a pipeline folder of reproduce.py that trained pilots (pilots.json, laws.json)


def targets(root: Path, runs: list[dict], metric: str) -> dict:
    """{seed: the target its scheduled runs will be judged at}: its best static run's fitted final error, as
    compare.py reads it."""
    static = [compare.read_run(str(root / r["name"]), metric) for r in runs if r["kind"] == "static"]
    laws = {id(r): compare.fit_static(r) for r in static}
    return {s: compare.reference([r for r in static if r.seed == s], laws, None)["target_error"]
            for s in dict.fromkeys(r.seed for r in static)}


def remeasure(root: Path, out: Path | None = None) -> dict:
    """transfer.json again from root's pilots.json, laws.json and the pilots' logs, into `out` (root by default)."""
    man, plan = load(root / "pipeline.json"), load(root / "pilots.json")
    if not man or not plan:
        raise UserError(f"{root}: no pipeline.json or pilots.json: run reproduce.py with pilots there first")
    laws, metric = schedule.load_laws(root / "laws.json", math.inf, True), man["params"]["metric"]   # every law
    doc = measure(root, laws, plan["pilots"], metric, man["budget"],
                  targets(root, man["runs"], man["params"].get("compare_metric", metric)))
    write_json((out or root) / "transfer.json", doc)
    return doc


def main(cfg: Config) -> None:
    doc = remeasure(Path(cfg.pipeline))
    for t in doc["transitions"]:
        print(t["name"] + ": " + ", ".join(f"at {x['switch']:.3g}: tau {x['transfer']:+.3g}" for x in t["points"]))
    for u in doc["unmeasured"]:
        print(f"unmeasured: {u['pilot']}: {u['why']}")


if __name__ == "__main__":
    sys.exit(run_cli(main, Config, "transfer.py"))
