"""The pipeline's report: a verdict on the paper's claim and report.md beside the results (reproduce.py step 6).

    python report.py --out-dir runs/patch-demo      # (re)write runs/patch-demo/report.md from what is there

The claim (Sec. 4-6): a model whose shape follows the laws reaches the best static run's final error with fewer
FLOPs than every static run. report.md holds, readable on GitHub: the verdict; the laws (laws.json: a, b, c, d,
the compute fitted, flags); the schedule (schedule.json: stages, switch points, predicted savings); the
comparison (comparison.json, every block of it as a table); the plots; and the compute of the static sweep,
which the paper leaves out: the sweep plus one adaptive run against one static run of the best shape, and how
many adaptive runs on the same laws pay the sweep back.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the core, at the repository root
from fit_laws import name_of as shape_name  # noqa: E402  ({"width": 32} -> "width=32", as the laws are named)
import schedule  # noqa: E402  (tau_QP(C), interpolated as the planner does)
from runtime import UserError, atomic_write, run_cli  # noqa: E402
from lab import load, transfer  # noqa: E402  (load: a result file or None; transfer: tau, fitted as the pilots' is)


def last_eval(run: Path) -> dict | None:
    """The last evaluation record of run/log.jsonl (None before the first one)."""
    try:
        lines = (run / "log.jsonl").read_text().splitlines()
    except (OSError, ValueError):          # not there, or not text
        return None
    for line in reversed(lines):
        try:
            r = json.loads(line)
        except (ValueError, RecursionError):   # a line cut short by a kill, or garbage
            continue
        if isinstance(r, dict) and r.get("type", "eval") == "eval" and type(r.get("flops")) in (int, float) \
                and abs(r["flops"]) < 1e300:   # not NaN, inf or a 400-digit integer
            return r
    return None


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ----------------------------------------------------------------------------- cells and tables


def cell(v, key: str = "", keys=()) -> str:
    """One value as a table cell: numbers to 4 digits, savings as percent, switches as 'patch=7 at 8.6e12'."""
    if missing(v):
        return "never" if key.endswith("_to_target") else "—"
    if isinstance(v, bool) or isinstance(v, str):
        return str(v).replace("|", "\\|")
    if isinstance(v, (int, float)):
        if "saving" in key and abs(v) <= 10:
            return f"{100 * v:.1f}%"
        return f"{v:.4g}".replace("e+", "e") if isinstance(v, float) else str(v)
    if isinstance(v, dict):
        if {"lo", "hi"} <= v.keys():
            return f"[{cell(v['lo'], key)}, {cell(v['hi'], key)}]"
        if {"flops", "config"} <= v.keys():        # a switch: the shape entered, and when
            shape = ",".join(f"{k}={x}" for k, x in v["config"].items() if not keys or k in keys)
            return f"{shape} at {cell(v['flops'])}"
        return ", ".join(f"{k}={cell(x, k, keys)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        if len(v) == 2 and all(isinstance(x, (int, float)) for x in v) and key.endswith(("range", "ci")):
            return f"[{cell(v[0], key)}, {cell(v[1], key)}]"
        return "; ".join(cell(x, key, keys) for x in v) or "—"
    return str(v)


def table(rows: list[dict], keys=(), columns=None) -> str:
    """A markdown table of dicts; the columns in order of first appearance."""
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c), c, keys) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def blocks(doc: dict, keys=()) -> list[str]:
    """Every block of a JSON document as a table: its scalars, then each list of records or dict of records."""
    scalars = {k: v for k, v in doc.items() if not isinstance(v, (dict, list)) and k != "version"}
    out = [table([{"field": k, "value": v} for k, v in scalars.items()], keys)] if scalars else []
    for k, v in doc.items():
        if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            out += [f"**{k}**", table(v, keys)]
        elif isinstance(v, dict) and v and all(isinstance(r, dict) for r in v.values()):
            out += [f"**{k}**", table([{"name": name, **r} for name, r in v.items()], keys)]
        elif isinstance(v, dict) and v:
            out += [f"**{k}**", table([v], keys)]
    return out


# ----------------------------------------------------------------------------- the sections


def saved(s: dict | None) -> str:
    """A savings block {per_seed, n, mean, ci95, reason} as 'mean% [lo, hi]', or why there is none."""
    if not s:
        return "—"
    if s.get("mean") is None:
        reason = s.get("reason") or "—"
        return "never reached" if reason.startswith("no value") else reason
    ci = s.get("ci95")
    return f"{100 * s['mean']:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def summary(comp: dict) -> list[str]:
    """What a reader wants first: per group of runs (a shape or a schedule over its seeds) the final error and
    the savings with their 95% interval; then per run whether and why it reached the target."""
    groups = [{"runs": g["group"], "kind": g["kind"], "seeds": len(g.get("seeds", [])),
               "final error": cell((g.get("final_error") or {}).get("mean")),
               "FLOPs saved [95% CI]": saved(g.get("flops_savings")), "seconds saved": saved(g.get("wall_savings")),
               "raw first crossing": saved(g.get("raw_flops_savings")),
               "train/test gap": cell(g.get("final_train_test_gap"))} for g in comp.get("groups", [])]
    runs = [{"run": r["run"], "final error": cell(r.get("final_error")),
             "FLOPs to target": cell(r.get("flops_to_target"), "flops_to_target"),
             "saved": cell(r.get("flops_savings"), "flops_savings"),
             "raw": cell((r.get("raw") or {}).get("flops_savings"), "flops_savings"),
             "why": r.get("reason") or (f"same as {r['same_as_static']}" if r.get("same_as_static") else "—")}
            for r in comp.get("runs", [])]
    return [table(groups), table(runs)] if groups else []


def law_flags(law: dict, max_extrap: float) -> list[str]:
    """What to distrust in a law: its own flags (fit_laws.py), a failed extrapolation check."""
    flags = law.get("flags") or []
    flags = [flags] if isinstance(flags, str) else [str(f) for f in flags]
    if isinstance(law.get("b"), (int, float)) and not 0.0101 < law["b"] < 4.99:   # fit_laws.py's bounds on b
        flags.append(f"b = {law['b']:.3g} at its bound: the curve does not pin it down")
    rel = (law.get("extrapolation") or {}).get("rel_max")
    if isinstance(rel, (int, float)) and rel > max_extrap:
        flags.append(f"extrapolation off by {100 * rel:.0f}% (> {100 * max_extrap:.0f}%: schedule.py leaves it out)")
    return flags


def laws_section(laws: dict, max_extrap: float, warnings: list[str], png: bool) -> list[str]:
    rows = [{"law": x["name"], "a": x["a"], "b": x["b"], "c": x["c"], "d": x["d"], "fitted range": x.get("flops_range"),
             "residual": x.get("residual"), "flags": "; ".join(law_flags(x, max_extrap)) or "—"}
            for x in laws["laws"]]
    out = ["## Laws", f"E = a (C + d)^(-b) + c on `{laws.get('metric')}`, one law per shape (fit_laws.py, "
           "the static runs of every seed pooled).", table(rows, columns=list(rows[0]) if rows else None)]
    out += [f"fit_laws.py: {w}" for w in warnings]
    return out + (["![laws](laws.png)"] if png else [])


def schedule_section(sched: dict, baselines: list[str], png: bool) -> list[str]:
    rows = [{"stage": i, "shape": s.get("name"), "FLOPs from": s["flops_start"], "FLOPs to": s["flops_end"],
             "error from": s.get("error_start"), "error to": s.get("error_end")} for i, s in enumerate(sched["stages"])]
    pr = sched.get("predicted") or {}
    best = pr.get("best_static") or {}
    switches = ", ".join(f"{s.get('name')} at {cell(s['flops_start'])} FLOPs" for s in sched["stages"][1:]) or "none"
    out = ["## Schedule", f"Target {cell(sched.get('target_error'))} ({sched.get('method', '')}); "
           f"switch points: {switches}.", table(rows),
           f"Predicted: the schedule needs {cell(pr.get('flops'))} FLOPs, the best static shape "
           f"({best.get('name')}) {cell(best.get('flops'))}: predicted savings {cell(pr.get('savings'), 'savings')}."]
    if baselines:
        out.append("Baselines trained beside it (paper Fig. 7): " + ", ".join(f"`{b}`" for b in baselines) + ".")
    return out + (["![schedule](schedule.png)"] if png else [])


# The law-predicted FLOPs of a schedule as the trainer runs it: stages entered at their flops_start (never on the
# measured error), each following its configuration's law (Eq. 1) from the error the previous stage left.

def _law(laws: dict, config: dict) -> dict | None:
    key = json.dumps(config, sort_keys=True)
    return next((x for x in laws.get("laws", []) if json.dumps(x.get("config"), sort_keys=True) == key), None)


def _f(x: dict, C: float) -> float:
    return x["a"] * max(C + x["d"], 1.0) ** -x["b"] + x["c"]


def _g(x: dict, E: float) -> float:
    return math.inf if E <= x["c"] else max(0.0, ((E - x["c"]) / x["a"]) ** (-1 / x["b"]) - x["d"])


def predicted_flops(sched: dict, laws: dict, target: float) -> float | None:
    """FLOPs the laws say a run of `sched` needs to reach `target` (the last stage continues past its end);
    None where a stage has no law, inf where the target is below every law it ends on."""
    E = None
    for k, s in enumerate(sched["stages"]):
        x = _law(laws, s["config"])
        if x is None:
            return None
        if E is not None and E <= target:
            return s["flops_start"]
        C0 = 0.0 if E is None else max(_g(x, E) + s.get("transfer", 0.0), 0.0)   # schedule.py --transfer's tau
        floor = (sched.get("transfer") or {}).get("window", 0.0) if "transfer" in s else 0.0   # as schedule.py plans
        need, last = max(_g(x, target) - C0, floor), k == len(sched["stages"]) - 1
        if last or s["flops_start"] + need <= s["flops_end"]:
            return s["flops_start"] + need
        E = _f(x, C0 + s["flops_end"] - s["flops_start"])
    return None


def planned_points(doc: dict | None, sched: dict) -> list[dict]:
    """transfer.json's (`doc`) measured points of the switch `sched` plans with a transfer; [] without one."""
    st = sched.get("stages", [])
    return next((t["points"] for t in (doc or {}).get("transitions", []) if len(st) > 1 and "transfer" in st[1] and
                 [t.get("from"), t.get("to")] == [st[0]["config"], st[1]["config"]]), [])


def tau_bounds(doc: dict | None, sched: dict) -> list[dict]:
    """`sched` with its planned switch's tau at the 95% bounds measured around it (transfer.json's `doc`, interpolated
    in log C as schedule.py interpolates the means): a prediction's interval from the pilots' spread. [] without one."""
    st, pts = sched.get("stages", []), planned_points(doc, sched)
    bounds = [[(x["switch"], (x.get("ci95") or [x["transfer"]] * 2)[i]) for x in pts] for i in (0, 1)]
    return [{**sched, "stages": [st[0], {**st[1], "transfer": float(schedule.tau({(0, 1): b}, 0, 1, st[1][
        "flops_start"]))}, *st[2:]]} for b in bounds] if pts else []


def seeds_spread(doc: dict | None, sched: dict) -> tuple[float, int] | None:
    """(sd, seeds): the spread transfer.json (`doc`) measured at the planned switch (each seed's own pilots against
    its own target, lab/transfer.py), interpolated as schedule.py interpolates tau; None without one."""
    pts = [x for x in planned_points(doc, sched) if x.get("spread") is not None]
    return (float(schedule.tau({(0, 1): [(x["switch"], x["spread"]) for x in pts]}, 0, 1, sched["stages"][1][
        "flops_start"])), min(x["n"] for x in pts)) if pts else None


def expected_savings(sched: dict, laws: dict, target: float, sd: float, ref: float) -> float:
    """The mean over seeds of a schedule's savings against `ref` FLOPs when each seed aims at target + sd z,
    z ~ N(0, 1) (at schedule.py's offsets, as it plans); a seed that would need more than `ref` saves 0."""
    C = [predicted_flops(sched, laws, target + sd * z) for z in schedule.offsets()]
    return statistics.fmean(max(1 - c / ref, 0.0) if c is not None else 0.0 for c in C)


def predicted_section(root: Path, laws: dict, comp: dict, kinds: list[str], budget=None, tr=None,
                      read=None) -> list[str]:
    """Every trained schedule: its path, the law-predicted savings (at the comparison's target, for the run as the
    trainer follows it) beside the achieved ones (mean over seeds, 95% interval); joint: Fig. 19's comparison.
    Both from the laws: a schedule's FLOPs against the best static law's (as schedule.py predicts), so that where
    the laws misjudge a shape's cost (a law off at its run's end) the error cancels in the ratio."""
    target = comp.get("target_error")
    if missing(target) or not laws or laws.get("cost", "flops") != "flops":
        return []
    best = min((_g(x, target) for x in laws["laws"]), default=math.inf)   # the laws' own: their errors cancel
    measured = comp.get("best_static_flops") or budget      # the best static run's own (its budget: the target)
    groups = {g["kind"]: g for g in comp.get("groups", [])}
    rows, got, scheds = [], {}, dict(read or {})        # read: {kind: schedule} write_report has read already
    for kind in kinds:
        sched = scheds[kind] = scheds[kind] if kind in scheds else load(
            root / ("schedule.json" if kind == "law" else f"schedule_{kind}.json"))
        if not sched or kind == "random" or kind not in groups:
            continue
        C, *band = (predicted_flops(x, laws, target) for x in [sched, *tau_bounds(tr, sched)])
        sp = seeds_spread(tr, sched) if measured else None                 # (sd, seeds) where pilots measured each
        mean = f"{cell(expected_savings(sched, laws, target, sp[0], measured), 'savings')} (sd {cell(sp[0])}, " \
            f"{sp[1]} seeds)" if sp else "—"
        pred = None if C is None or not math.isfinite(best) else 1 - C / best
        got[kind] = (pred, (groups[kind].get("flops_savings") or {}).get("mean"))
        against = lambda ref, C=C, band=band: cell(None if C is None or not ref else 1 - C / ref, "savings") + (
            " [" + ", ".join(cell(1 - c / ref, "savings") for c in sorted(band, reverse=True)) + "]"
            if ref and None not in band and len(set(band)) > 1 else "")     # tau's 95% bounds: a prediction's interval
        rows.append({"schedule": kind, "path": " -> ".join(str(s.get("name")) for s in sched["stages"]),
                     "switches at (FLOPs)": ", ".join(cell(s["flops_start"]) for s in sched["stages"][1:]) or "—",
                     "predicted savings": against(best if math.isfinite(best) else None),
                     "against the static run's FLOPs": against(measured),
                     "mean over the seeds' spread": mean,
                     "achieved savings [95% CI]": saved(groups[kind].get("flops_savings"))})
    if not rows:
        return []
    out = ["## Predicted and achieved", f"Savings at the comparison's target {cell(target)} against the best static "
           f"law's {cell(best)} FLOPs: predicted by the laws for each schedule as trained (stages entered at their "
           "FLOPs, with the planned transfer where the schedule has one), achieved as measured (compare.py). Beside "
           f"it the same prediction against the best static run's measured {cell(measured)} FLOPs: where the two "
           "differ, the laws misjudge the static shape's cost. A planned transfer's prediction has in brackets the same "
           "prediction with tau at the 95% bounds its pilots measured. The mean over the seeds' spread: achieved is a "
           "mean over seeds, each against its own target; each seed's own pilots say where its switched model lands "
           "against its own target, and the sd of that over seeds (known before any scheduled run) spreads the "
           "prediction (`expected_savings`): a plan that reaches its target just as its switch pays can only lose to "
           "the spread.",
           table(rows)]
    kind = "transfer" if "transfer" in got else "law"
    out += sensitivity(scheds.get(kind), laws, comp, kind, target, measured)
    one = [k for k in ("width-only", "patch-only") if k in got]
    if "law" in got and one:   # App. D, Fig. 19: both axes against the better single axis
        for i, what in ((0, "predicted"), (1, "achieved")):
            vals = {k: got[k][i] for k in one if not missing(got[k][i])}
            if vals and not missing(got["law"][i]):
                k = max(vals, key=vals.get)
                out.append(f"Joint ({what}): {cell(got['law'][i], 'savings')} against {k}'s "
                           f"{cell(vals[k], 'savings')}, the better single axis: "
                           f"{100 * (got['law'][i] - vals[k]):+.1f} points.")
    return out


def sensitivity(sched: dict | None, laws: dict, comp: dict, kind: str, target: float, measured) -> list[str]:
    """How far a saving moves with the error: the slope, at the target, of the law the `kind` schedule `sched` ends on
    (|dC/dE| = (C + d) / (b (E - c)), the same on a curve shifted by tau), beside the spread of the seeds' targets."""
    x = _law(laws, sched["stages"][-1]["config"]) if sched and sched.get("stages") else None
    if x is None or not measured or target <= x["c"]:
        return []
    per = 1e-3 * (_g(x, target) + x["d"]) / (x["b"] * (target - x["c"]))     # FLOPs per 0.001 of error
    seeds = [s["target_error"] for s in comp.get("seeds", []) if not missing(s.get("target_error"))]
    sd = statistics.stdev(seeds) if len(seeds) > 1 else None     # the seeds' own targets: each best static run's error
    spread = f"; the seeds' own targets spread by sd {cell(sd)}, which moves it " \
        f"{100 * sd / 1e-3 * per / measured:.0f} points" if sd else ""
    return [f"How far a saving moves with the error: at the target, {x['name']} (where the {kind} schedule ends) falls "
            f"0.001 in {cell(per)} FLOPs: an error 0.001 off moves a saving {100 * per / measured:.1f} points of the "
            f"static run's {cell(measured)}{spread}."]


def switch_section(sc: dict | None) -> list[str]:
    """bench/bench_switch_cost.py's measurement: the error jump and FLOPs lost per growth, and the plan with them."""
    if not sc:
        return []
    rows = [{"key": k, "switches": v["jump"]["n"], "error jump": cell(v["jump"]["mean"]),
             "FLOPs lost": cell(v["lost_flops"]["mean"]),
             "95% CI": cell(v["lost_flops"]["ci95"])} for k, v in sc.get("per_key", {}).items()]
    w, o = sc.get("planned_without") or {}, sc.get("planned_with") or {}
    return ["## Switch costs", f"Measured after each switch of the scheduled runs (bench/bench_switch_cost.py); costs "
            f"charged ({sc.get('source')}): " + ", ".join(f"{k}={cell(v)}" for k, v in sc.get("costs", {}).items())
            + ".", table(rows) if rows else "", f"Planned without switch costs: {cell(w.get('flops'))} FLOPs "
            f"(predicted savings {cell(w.get('savings'), 'savings')}); with them: {cell(o.get('flops'))} FLOPs, "
            f"switch costs included (predicted savings {cell(o.get('savings'), 'savings')}); "
            "`schedule_switch-cost.json` is the plan with them."]


def change(a: dict, b: dict) -> str:
    """A switch as what it changes: {"width": 32, "depth": 4} -> {"width": 64, "depth": 4} is "width=32 -> width=64"."""
    keys = [k for k in a if a[k] != b.get(k)] or list(a)
    return f"{shape_name({k: a[k] for k in keys})} -> {shape_name({k: b.get(k) for k in keys})}"


def transfer_section(tr: dict | None, plan: dict | None, trained=()) -> list[str]:
    """lab/transfer.py's measurement: tau per transition and switch point (mean over seeds, 95% interval), what
    schedule_transfer.json planned with it, the transitions left to Eq. 2, and `trained` (transfer.as_trained): the
    tau each scheduled run's own evaluations give, beside the planned one."""
    if not tr:
        return []
    rows = [{"transition": t["name"], "switch at (FLOPs)": x["switch"], "tau (FLOPs)": x["transfer"],
             "95% CI": "—" if not x.get("ci95") else f"[{cell(x['ci95'][0])}, {cell(x['ci95'][1])}]",
             "pilots": x["n"]} for t in tr["transitions"] for x in t["points"]]
    out = ["## Switch transfer (pilots)", "Where each switch really goes on: tau is the effective compute a pilot "
           "switch gains (> 0) or loses (< 0) against Eq. 2's assumption g_P(f_Q(C_s)), fitted to its evaluations "
           f"(lab/transfer.py). The pilots cost {cell(tr.get('pilots_flops'))} FLOPs after their switches.",
           table(rows) if rows else "No pilot measured a transfer."]
    if tr.get("against_staying"):
        out += ["Against staying (no law needed): each pilot's last error less the error of the static run it left, "
                "at the same FLOPs; < 0: the switch had paid by the end of its stretch.", table([{
                    "transition": change(g["from"], g["to"]), "switch at (FLOPs)": g["switch"],
                    "pilots' end (FLOPs)": g["at"], "error difference, mean": g["mean"],
                    "per seed": ", ".join(f"{d:+.4f}" for d in g["delta"])} for g in tr["against_staying"]])]
    why = {}                      # the unmeasured pilots, one line per transition and reason
    for u in tr.get("unmeasured", []):
        why.setdefault((change(u["from"], u["to"]), re.sub(r"\d\.\d+", "x", u["why"])), []).append(u)
    out += [f"Unmeasured, {len(us)} pilot(s) {t} ({', '.join(u['pilot'] for u in us)}): {us[0]['why']}"
            + (", and likewise for the others" if len(us) > 1 else "") + "; Eq. 2 there." for (t, _), us in why.items()]
    if plan:
        out.append("Planned with it (`schedule_transfer.json`): " + " -> ".join(
            f"{s['name']}" + (f" at {cell(s['flops_start'])} (tau {cell(s.get('transfer'))})" if k else "")
            for k, s in enumerate(plan["stages"])) + f": predicted savings "
            f"{cell(plan['predicted'].get('savings'), 'savings')}" + "".join(
            f"; {t}: no measurement, Eq. 2" for t in (plan.get("transfer") or {}).get("eq2", [])) + ".")
    if taus := [r["tau as trained"] for r in trained if r["tau as trained"] is not None]:
        out += [f"Planned and trained: tau fitted to each scheduled run's own evaluations after its switch (from the "
                f"window on, as a pilot's): mean {cell(sum(taus) / len(taus))} over {len(taus)} run(s), planned "
                f"{cell(trained[0]['planned tau'])}.", table(list(trained))]
    return out


def sweep(static_flops: list[float], best_flops, law_flops: list) -> dict:
    """The compute of the static sweep, which the paper leaves out: sweep + one adaptive run against one static
    run of the best shape, and the adaptive runs on the same laws whose savings pay the sweep back."""
    S = float(sum(static_flops))
    reached = [f for f in law_flops if not missing(f)]
    A = sum(reached) / len(reached) if reached and len(reached) == len(law_flops) else None
    out = {"sweep_flops": S, "adaptive_flops": A, "best_static_flops": best_flops, "ratio": None, "payback_runs": None}
    if A is not None and not missing(best_flops) and best_flops > 0:
        out["ratio"] = (S + A) / best_flops
        out["payback_runs"] = math.ceil(S / (best_flops - A)) if best_flops > A else None
    return out


def sweep_section(s: dict, n_static: int, n_seeds: int, teacher, pilots: float = 0.0) -> list[str]:
    out = ["## The compute of the sweep", f"The static sweep ({n_static} runs, {n_seeds} seed(s)) cost "
           f"{cell(s['sweep_flops'])} FLOPs" + (f", its pilot switches' {cell(pilots)} included" if pilots else "")
           + (f"; the teacher {cell(teacher)} more." if teacher else ".")]
    if s["ratio"] is None:
        return out + ["No adaptive run reached the target, so nothing pays the sweep back."]
    out.append(f"Sweep plus one adaptive run (to the target: {cell(s['adaptive_flops'])} FLOPs, mean over seeds): "
               f"{cell(s['sweep_flops'] + s['adaptive_flops'])} FLOPs, {s['ratio']:.2f}x one static run of the best "
               f"shape ({cell(s['best_static_flops'])}). ")
    n = s["payback_runs"]
    out.append(f"Each adaptive run on these laws saves {cell(s['best_static_flops'] - s['adaptive_flops'])} FLOPs: "
               f"{n} adaptive runs pay the sweep back." if n else "An adaptive run saves nothing: the sweep never "
               "pays back.")
    return out


def teacher_line(teacher: dict | None, static: list, metric: str) -> list[str]:
    """Distillation can only win when the teacher ends well below what a student reaches on its own."""
    if not teacher or metric not in teacher:
        return []
    students = [r[metric] for r in static if r and r.get("config", {}).get("objective") != "distill" and metric in r]
    best = min(students, default=None)
    return [f"The teacher's final {metric} is {cell(teacher[metric])}; the best supervised student's "
            f"{cell(best)}" + ("." if best is None or teacher[metric] < best else
                               ": the teacher is no better, so distillation cannot win (train it longer).")]


# ----------------------------------------------------------------------------- the verdict, and report.md


def judge(comp: dict) -> tuple[bool, str]:
    """The claim: every law-scheduled run reaches the best static run's final error with fewer FLOPs than every
    static run that reaches it at all."""
    runs = comp["runs"]
    static = [r for r in runs if r["kind"] == "static"]
    law = [r for r in runs if r["kind"] == "transfer"] or [r for r in runs if r["kind"] == "law"]   # the plan
    reach = [r["flops_to_target"] for r in static if not missing(r["flops_to_target"])]
    ok = bool(law) and bool(reach) and all(not missing(r["flops_to_target"]) and r["flops_to_target"] < min(reach)
                                           for r in law)
    fmt = lambda x: "never" if missing(x) else f"{x:.3g} FLOPs"   # noqa: E731
    group = next((g for g in comp.get("groups", []) if law and g["kind"] == law[0]["kind"]), {})
    line = (f"== verdict: target {comp['target_error']:.4f} (final error of {comp['best_static']}); "
            f"{law[0]['kind'] if law else 'law'} schedule, {len(law)} run{'s' if len(law) > 1 else ''}: "
            f"{', '.join(fmt(r['flops_to_target']) for r in law) or 'none'}, saving "
            f"{saved(group.get('flops_savings'))}; static "
            f"runs: {', '.join(r['run'] + ' ' + fmt(r['flops_to_target']) for r in static)}: "
            + ("PASS" if ok else "FAIL"))
    if law and not any(r.get("switches") for r in law):
        line += " (the run never switched: the laws do not cross within the budget)"
    return ok, line


def verdict(root: Path) -> bool:
    """Print the verdict read off root/comparison.json; True when the claim holds."""
    ok, line = judge(load(Path(root) / "comparison.json"))
    print(line)
    return ok


def pilots_agree(tr: dict | None) -> str:   # every pilot lost against staying: "do not switch", measured
    stay = [g["mean"] for g in (tr or {}).get("against_staying", [])]
    return (f"the pilot switches agree: each ended {cell(min(stay))} to {cell(max(stay))} above the run it left, at the "
            "same FLOPs; predicted and achieved saving 0%") if stay and min(stay) > 0 else ""


def no_cross(sched: dict, budget, tr: dict | None = None) -> str:
    return (f"== verdict: the laws do not cross within {cell(budget)} FLOPs ({sched['stages'][0].get('name')} is best "
            "throughout), so a schedule has nothing to switch and saves nothing: FAIL; raise --flops or change the "
            "runs" + (f" ({agree})" if (agree := pilots_agree(tr)) else ""))


def stay_note(sched: dict | None, plan: dict | None, tr: dict | None) -> str:
    """Eq. 2 switches but the plan with the measured transfer stays: said beside the verdict on Eq. 2's schedule."""
    if not sched or len(sched["stages"]) < 2 or not plan or len(plan["stages"]) != 1:
        return ""
    return (f" (with the measured transfer the plan is to stay at {plan['stages'][0].get('name')}, no switch"
            + (f"; {agree})" if (agree := pilots_agree(tr)) else ")"))


def too_few_laws(root: Path) -> str | None:
    """The verdict when schedule.py left fewer than two laws (its error line in schedule.txt), else None."""
    log = root / "schedule.txt"
    why = [ln.split("error: ", 1)[-1] for ln in (log.read_text().splitlines() if log.exists() else [])
           if "left after leaving out" in ln]
    return f"== verdict: {why[-1].split(': ', 1)[-1]}: FAIL" if why else None


def lm_section(man: dict, tuned: dict | None) -> list[str]:
    """Language-model pipelines: attention's share of a token's block FLOPs at each context (2 T d of
    d (4 d + 3 h) + 2 T d a layer, lm.macs_per_token), and the tokens a step tuned per context (App. B.5)."""
    share = man.get("attention_share")
    if not share:
        return []
    out = ["## Attention's share of the FLOPs",
           "Of a token's block FLOPs (lm.macs_per_token: 4d² + 3dh + 2Td a layer), the share of the attention "
           "scores 2Td, per context T (the same at every depth):",
           "| context | " + " | ".join(share) + " |", "|---|" + "---|" * len(share),
           "| attention share | " + " | ".join(f"{v:.1%}" for v in share.values()) + " |"]
    if tuned:
        cands = [str(n) for n in tuned.get("candidates", [])]
        out += [f"Tokens a step per context (App. B.5), chosen by the lowest val_loss after {cell(tuned.get('budget'))} "
                "FLOPs of one seed (this compute is not counted in the savings):",
                "| context | " + " | ".join(f"val_loss at {n}" for n in cands) + " | chosen |",
                "|---|" + "---|" * (len(cands) + 1)]
        out += [f"| {T} | " + " | ".join(cell(c["val_loss"].get(n)) for n in cands) + f" | {c['tokens_per_step']} |"
                for T, c in tuned.get("contexts", {}).items()]
    return out


def write_report(root: Path) -> tuple[bool, str]:
    """Write root/report.md from what the pipeline left there; (the claim holds, the one-line verdict)."""
    root = Path(root)
    man, laws, sched, comp = (load(root / f) for f in ("pipeline.json", "laws.json", "schedule.json",
                                                       "comparison.json"))
    man = man or {}
    params = man.get("params", {})
    few = None if sched else too_few_laws(root)
    planned = bool(comp) and any(r["kind"] == "transfer" for r in comp["runs"])   # judged even if Eq. 2's is 1 stage
    tr, plan = load(root / "transfer.json"), load(root / "schedule_transfer.json")   # the pilots, the plan with them
    ok, line = (False, no_cross(sched, man.get("budget"), tr)) if sched and len(sched["stages"]) < 2 and not planned else \
        (False, few) if few else judge(comp) if comp else \
        (False, "== verdict: no comparison (no scheduled run finished): FAIL")
    line += "" if planned or not comp else stay_note(sched, plan, tr)
    out = [f"# {man.get('experiment', '?')} pipeline ({man.get('preset', '?')})",
           f"`{man.get('command', 'python lab/reproduce.py')}`", line.removeprefix("== ")]
    if laws:
        warnings = [ln.strip() for ln in (root / "laws.txt").read_text().splitlines() if "warning" in ln.lower()] \
            if (root / "laws.txt").exists() else []
        out += laws_section(laws, params.get("max_extrap_error", 0.3), warnings, (root / "laws.png").exists())
    if sched:
        kinds = dict.fromkeys(r["kind"] for r in (comp or {}).get("runs", []) if r["kind"] not in ("static", "law"))
        names = [f"schedule_{k}.json" for k in kinds if (root / f"schedule_{k}.json").exists()]
        out += schedule_section(sched, names, (root / "schedule.png").exists())
    if comp:
        keys = {part.split("=")[0] for x in (laws or {}).get("laws", []) for part in x["name"].split(",")}
        out += ["## Comparison", f"Each run's FLOPs and wall time to the best static run's final "
                f"`{comp.get('metric', params.get('metric'))}` (compare.py; savings read off fitted curves, the raw "
                "first crossing beside them)."] + summary(comp)
        out += ["<details><summary>Every field of comparison.json</summary>", *blocks(comp, keys), "</details>"]
        out += ["![comparison](comparison.png)"] if (root / "comparison.png").exists() else []
        out += predicted_section(root, laws, comp, ["law", *dict.fromkeys(r["kind"] for r in comp.get("runs", [])
                                                                        if r["kind"] not in ("static", "law"))],
                                 man.get("budget"), tr, {"law": sched, "transfer": plan})
    out += transfer_section(tr, plan, transfer.as_trained(root, plan, comp, params.get("metric"), man.get("budget"))
                            if laws else [])
    out += switch_section(load(root / "switch_cost.json"))
    out += lm_section(man, load(root / "tuned.json"))
    runs = man.get("runs", [])
    static = [last_eval(root / r["name"]) for r in runs if r["kind"] == "static"]
    teacher = [last_eval(root / r["name"]) for r in runs if r["kind"] == "teacher"]
    out += teacher_line(teacher[0] if teacher else None, static, params.get("metric"))
    if static and comp:
        law = [r["flops_to_target"] for r in comp["runs"] if r["kind"] == ("transfer" if planned else "law")]
        pilots = (tr or {}).get("pilots_flops") or 0.0                  # the pilots count in the sweep
        best = comp.get("best_static_flops") or man.get("budget")     # several seeds: each best run's own budget
        s = sweep([r["flops"] for r in static if r] + [pilots], best, law)
        out += sweep_section(s, len(static), len(man.get("seeds", [0])), teacher[0]["flops"] if teacher and
                             teacher[0] else None, pilots)
    text = "\n\n".join(out) + "\n"
    atomic_write(root / "report.md", lambda tmp: Path(tmp).write_text(text))
    return ok, line


@dataclasses.dataclass
class Config:
    out_dir: str
    """A pipeline's output folder (reproduce.py's --out-dir), holding pipeline.json and the results."""


def main(cfg: Config) -> None:
    if not (Path(cfg.out_dir) / "pipeline.json").exists():
        raise UserError(f"{cfg.out_dir}/pipeline.json: no pipeline there; give reproduce.py's --out-dir")
    print(write_report(Path(cfg.out_dir))[1])


if __name__ == "__main__":
    sys.exit(run_cli(main, Config, "report.py"))
