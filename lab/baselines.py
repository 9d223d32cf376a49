"""The paper's Fig. 7 baselines for a schedule that schedule.py wrote: the same configurations, in the same order,
for the same compute F (the law schedule's predicted cost), switched at other points:

  linear   switches at F k/K (K stages),
  log      switches at F_lo (F/F_lo)^(k/K), F_lo the smallest cost the stages' laws were fitted from,
  random   FlexiViT's mix: every step a configuration drawn uniformly from the laws (train_vit.py's random mode).

Their predicted errors follow the laws (a switch pays --switch-cost, as in the schedule). Written next to the
schedule: schedule_linear.json, schedule_log.json, schedule_random.json, which the trainers read as any schedule.

    python lab/baselines.py --schedule runs/x/schedule.json --laws runs/x/laws.json

Give the law filters (--max-extrap-error, --allow-bound-laws) schedule.py was given: the schedule's stages name
their laws by their place among the laws those filters keep.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the core, at the repository root
import runtime  # noqa: E402
import schedule  # noqa: E402
from runtime import UserError  # noqa: E402
from schedule import ScheduleError, VERSION, switch_costs, with_flops  # noqa: E402

KINDS = ("linear", "log", "random")


def need(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def baseline_schedules(laws, doc, switch_cost=0.0, switch_cost_key=None):
    """Fig. 7, same configurations and cost F: switches at F k/K, at F_lo (F/F_lo)^(k/K), or FlexiViT's random mix."""
    seq, F, flops = [s["law"] for s in doc["stages"]], doc["predicted"]["cost"], doc["cost"] == "flops"
    S, K = switch_costs(laws, switch_cost, switch_cost_key), len(seq)
    lo = min((laws[p].cost_lo for p in seq if laws[p].cost_lo), default=None)
    lo = lo if lo and lo < F else F / 1000
    head = lambda kind: {"version": VERSION, "kind": kind, "random": kind == "random", "metric": doc["metric"],
                         "cost": doc["cost"], "target_error": doc["target_error"]}
    out = {}
    for kind, bd in {"linear": [F * k / K for k in range(K + 1)],
                     "log": [0.0] + [lo * (F / lo) ** (k / K) for k in range(1, K)] + [F]}.items():
        stages, E, prev = [], laws[seq[0]].start, None
        for k, p in enumerate(seq):  # the errors along the laws; one entered above its f(0) starts at its C = 0
            law, spend = laws[p], bd[k + 1] - bd[k] - (S[prev, p] if prev is not None else 0.0)
            e1 = E if E <= law.c else float(law(float(law.inverse(min(E, law.start))) + max(spend, 0.0)))
            stages.append({"config": law.config, "name": law.name, "law": p, "error_start": E, "error_end": e1,
                           "cost_start": bd[k], "cost_end": bd[k + 1]})
            E, prev = e1, p
        out[kind] = {**head(kind), "stages": with_flops(laws, stages),
                     "predicted": {"cost": F, "flops": stages[-1]["flops_end"], "error": E}}
    out["log"].update(log_start_cost=lo, **({"log_start_flops": lo} if flops else {}))
    fps = 1.0 if flops else float(np.mean([l.flops_per_second for l in laws]))
    out["random"] = {**head("random"), "predicted": {"cost": F, "flops": F * fps, "error": None}, "stages": [
        {"config": l.config, "name": l.name, "law": p, "error_start": None, "error_end": None, "cost_start": 0.0,
         "cost_end": F, "flops_start": 0.0, "flops_end": F * fps} for p, l in enumerate(laws)]}
    return out


@dataclasses.dataclass
class Config:
    schedule: str  # schedule.json from schedule.py (a law or --transfer plan); the baselines are written next to it
    laws: str  # the laws.json that schedule.py planned it from
    max_extrap_error: float = 0.3  # the filter schedule.py was given: laws whose extrapolation misses by more are out
    allow_bound_laws: bool = False  # as schedule.py was given it: keep laws with a parameter at a fit bound
    switch_cost: tuple[str, ...] = ()  # cost per switch, FLOPS and/or KEY=FLOPS; default: the schedule's own


def load(cfg: Config) -> tuple[list, dict, float, dict]:
    """(the laws, the schedule, its switch costs), checked against each other: every stage's law is the one the
    stage names (the same filters), the same cost axis; else one line naming the file and the field."""
    src, ge0 = cfg.schedule, schedule.ge0
    schedule.Schedule.load(src)                              # version, stages, configs, numbers
    laws = schedule.load_laws(cfg.laws, cfg.max_extrap_error, cfg.allow_bound_laws)
    raw = json.loads(Path(src).read_text())
    doc = {**raw, **schedule.check(raw, {
        "kind": (lambda x: x not in KINDS, "not a baseline's (linear, log, random): give the law schedule"),
        "cost": (lambda x: x == laws[0].cost, f"the laws' cost, {laws[0].cost!r}", "flops"),
        "metric": (lambda x: x is None or isinstance(x, str), "text or null"),
        "predicted": (lambda x: isinstance(x, dict) and schedule.gt0(x.get("cost")), 'an object with "cost" > 0'),
        "switch_cost": (lambda x: x is None or ge0(x), "a number >= 0"),
        "switch_cost_key": (lambda x: not x or isinstance(x, dict) and all(map(ge0, x.values())), "KEY: number >= 0"),
    }, src)}
    for i, s in enumerate(raw["stages"]):
        p = s.get("law")
        need(type(p) is int and 0 <= p < len(laws) and laws[p].config == s["config"],
             f"{src}: field 'stages[{i}].law' must be the index of {s['config']} among the {len(laws)} laws "
             f"{cfg.laws} keeps (got {p!r}); give the --max-extrap-error / --allow-bound-laws schedule.py had")
    if cfg.switch_cost:
        return laws, doc, *schedule.parse_switch_cost(cfg.switch_cost)
    return laws, doc, float(doc["switch_cost"] or 0.0), dict(doc["switch_cost_key"] or {})


def main(cfg: Config) -> None:
    src, out_dir = os.path.abspath(cfg.schedule), os.path.dirname(os.path.abspath(cfg.schedule))
    paths = {kind: os.path.join(out_dir, f"schedule_{kind}.json") for kind in KINDS}
    taken = {src: "--schedule", os.path.abspath(cfg.laws): "--laws"}
    for kind, path in paths.items():      # before any work: a baseline never overwrites its inputs
        need(path not in taken, f"{taken.get(path)} {path} is the {kind} baseline's own path; rename it")
    need(cfg.max_extrap_error >= 0, f"--max-extrap-error {cfg.max_extrap_error}: give a relative error >= 0")
    laws, doc, base, per_key = load(cfg)
    out = baseline_schedules(laws, doc, base, per_key)
    for kind, b in out.items():
        schedule.write_json(paths[kind], b)
    for kind, b in out.items():
        if b["predicted"]["error"] is not None:
            print(f"baseline {kind}: same cost, predicted error {b['predicted']['error']:.4g}")


def cli(args=None) -> int:
    """Flags in, exit code out: bad input (a flag, a file) is one line and code 2 (runtime.run_cli)."""
    return runtime.run_cli(main, Config, "baselines.py", args, errors=(ScheduleError,))


if __name__ == "__main__":
    sys.exit(cli())
