"""Switch costs measured, fed back into the schedule (paper Sec. 6.1, App. C; schedule.py --switch-cost).

schedule.py's DP charges a switch P -> Q a fixed number of FLOPs S: the stage after it costs
S + g_Q(E_end) - g_Q(E_start), as if the run, S FLOPs late, then followed Q's law from the error it switched at.
This script measures S from a pipeline's law-scheduled runs (reproduce.py's sched_law_s<seed>/log.jsonl):
for each switch of each seed,
  E_switch  the error at the switch: the last evaluation before it, carried along the old law to the switch FLOPs;
  jump      the first evaluation after the switch minus E_switch (the error lost by growing);
  lost      at every evaluation (C_i, E_i) of the new stage: (C_i - C_switch) - (g_Q(E_i) - g_Q(E_switch)), the FLOPs
            spent beyond what Q's law needs for that progress; the switch cost is their median over the stage's
            last half of evaluations (past the spike, which no law describes);
then per changed key (width, depth, patch) the mean over seeds with a 95% interval. Or it takes the cost from
bench_growth_init.py's recovery FLOPs (--growth, --variant: the FLOPs to get back to the pre-growth error).

With the costs (clipped at 0) it plans schedule_switch-cost.json (schedule.py --switch-cost KEY=S, the same target as
schedule.json) and prints both plans' predicted FLOPs. --train trains it once per seed like the law run (its
command from sched_law_s<seed>/stdout.txt), then reruns compare.py and report.py over the folder, so report.md
shows predicted and achieved savings of the plan with measured switch costs beside the one without.

    python bench/bench_switch_cost.py --pipeline runs/width-demo                   # measure, plan
    python bench/bench_switch_cost.py --pipeline runs/width-demo --train           # and train, compare, report
    python bench/bench_switch_cost.py --pipeline runs/width-demo --growth results/growth-init/growth_init.json
"""
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from lab import write_json  # noqa: E402
from runtime import UserError, run_cli  # noqa: E402


@dataclass
class Config:
    pipeline: str
    """a reproduce.py output folder holding laws.json, schedule.json and sched_law_s<seed>/"""
    growth: str | None = None
    """take the width cost from bench_growth_init.py's JSON (recovery FLOPs) instead of the law runs"""
    variant: str = "g1"
    """with --growth: the growth variant whose recovery FLOPs to use (the one the pipeline grew with)"""
    budget: float | None = None
    """plan both schedules for this budget (the laws extrapolated past the runs) instead of schedule.json's target;
    the plan without switch costs is then written to schedule_no-switch-cost.json"""
    train: bool = False  # train schedule_switch-cost.json once per seed, then rerun compare.py and report.py
    metric: str = "fewshot10_error"
    runs: str = "sched_law_s*"
    """which scheduled runs of the folder to measure (a glob); each is read against the schedule it trained with"""


def law_g(x, E):
    return math.inf if E <= x["c"] else max(0.0, ((E - x["c"]) / x["a"]) ** (-1 / x["b"]) - x["d"])


def law_f(x, C):
    return x["a"] * max(C + x["d"], 1.0) ** -x["b"] + x["c"]


def find_law(laws, config):
    key = json.dumps(config, sort_keys=True)
    return next((x for x in laws["laws"] if json.dumps(x["config"], sort_keys=True) == key), None)


def evals(run: Path, metric: str):
    rows = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if ln.strip()]
    return [r for r in rows if r.get("type") == "eval" and metric in r]


def measure_run(run: Path, sched: dict, laws: dict, metric: str) -> list[dict]:
    """One law-scheduled run's switches: where, which keys changed, the jump and the FLOPs lost."""
    recs, out = evals(run, metric), []
    for k in range(1, len(sched["stages"])):
        old, new = sched["stages"][k - 1], sched["stages"][k]
        P, Q, Cs = find_law(laws, old["config"]), find_law(laws, new["config"]), new["flops_start"]
        before = [r for r in recs if r["flops"] < Cs]
        after = [r for r in recs if r["flops"] >= Cs and r.get("stage") == k]
        if not (P and Q and before and after):
            continue
        b = before[-1]
        E_s = law_f(P, law_g(P, b[metric]) + Cs - b["flops"])          # carried along the old law to the switch
        lost = [(r["flops"] - Cs) - (law_g(Q, r[metric]) - law_g(Q, E_s)) for r in after]
        lost = [v for v in lost if math.isfinite(v)]
        tail = lost[len(lost) // 2:]
        keys = sorted(key for key in new["config"] if new["config"][key] != old["config"].get(key))
        out.append({"run": run.name, "switch": k, "keys": keys, "from": old.get("name"), "to": new.get("name"),
                    "flops": Cs, "error_at_switch": E_s, "first_after": after[0][metric],
                    "jump": after[0][metric] - E_s, "lost_flops": float(np.median(tail)) if tail else None,
                    "evals_after": len(after)})
    return out


def trained_with(run: Path, root: Path) -> dict:
    """The schedule a run trained with (its header's --schedule), else the folder's schedule.json."""
    header = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    path = Path((header.get("config") or {}).get("schedule") or root / "schedule.json")
    path = path if path.is_absolute() else ROOT / path
    return json.loads(path.read_text())


def interval(v):
    from scipy import stats
    v = [x for x in v if x is not None]
    if not v:
        return {"mean": None, "ci95": None, "n": 0}
    m = float(np.mean(v))
    h = float(stats.t.ppf(0.975, len(v) - 1) * np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": m, "ci95": [m - h, m + h] if h is not None else None, "n": len(v)}


def schedule(root: Path, costs: dict, target: float, man: dict, name="switch-cost") -> dict:
    """schedule.py with --switch-cost KEY=S for the same laws and target -> schedule_<name>.json."""
    out, p = root / f"schedule_{name}.json", man.get("params", {})
    cmd = [sys.executable, str(ROOT / "schedule.py"), "--laws", str(root / "laws.json"), "--target-error", repr(target),
           "--max-extrap-error", str(p.get("max_extrap_error", 0.3)), "--out", str(out),
           *(["--allow-bound-laws"] if p.get("allow_bound_laws") else []),
           "--switch-cost", *[f"{k}={max(0.0, v):.6g}" for k, v in costs.items()]]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise UserError(f"schedule.py failed: {r.stderr.strip().splitlines()[-1]}")
    doc = json.loads(out.read_text())
    write_json(out, {**doc, "kind": name})
    return doc


def train(root: Path, seeds) -> None:
    """Each seed's switch-cost run with the law run's own command (its first line in stdout.txt)."""
    for seed in seeds:
        law, out = root / f"sched_law_s{seed}", root / f"sched_switch-cost_s{seed}"
        first = next(ln for ln in (law / "stdout.txt").read_text().splitlines() if ln.startswith("$ "))
        cmd = first[2:].split(" ")
        cmd = [a for a in cmd if a != "--resume"]
        cmd[cmd.index("--schedule") + 1] = str(root / "schedule_switch-cost.json")
        cmd[cmd.index("--out-dir") + 1] = str(out)
        if (out / "ckpt.pt").exists():
            cmd.append("--resume")
        out.mkdir(exist_ok=True)
        with open(out / "stdout.txt", "a") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, cwd=ROOT)
        print(f"= {out.name}: done", flush=True)


def main(cfg: Config):
    root = Path(cfg.pipeline).resolve()
    laws, sched, man = (json.loads((root / f).read_text()) for f in ("laws.json", "schedule.json", "pipeline.json"))
    runs = sorted(root.glob(cfg.runs), key=lambda p: int(re.sub(r"\D", "", p.name.rsplit("_s", 1)[1]) or 0))
    rows = [m for r in runs if (r / "log.jsonl").exists() for m in measure_run(r, trained_with(r, root), laws,
                                                                                  cfg.metric)]
    per_key = {}
    for m in rows:
        for key in m["keys"]:
            per_key.setdefault(key, []).append(m)
    summary = {k: {"jump": interval([m["jump"] for m in v]), "lost_flops": interval([m["lost_flops"] for m in v])}
               for k, v in per_key.items()}
    costs = {k: s["lost_flops"]["mean"] for k, s in summary.items() if s["lost_flops"]["mean"] is not None}
    source = f"scheduled runs {cfg.runs}"
    if cfg.growth:
        g = json.loads(Path(cfg.growth).read_text())["summary"][cfg.variant]["recovery_flops"]
        if g["mean"] is None:
            raise UserError(f"--growth {cfg.growth}: variant {cfg.variant} never recovered")
        costs, source = {"width": g["mean"]}, f"{cfg.growth} ({cfg.variant} recovery FLOPs)"
    for m in rows:
        print(f"{m['run']} switch {m['switch']} {m['from']} -> {m['to']} at {m['flops']:.3g}: jump {m['jump']:+.4f}, "
              f"lost {m['lost_flops'] if m['lost_flops'] is None else format(m['lost_flops'], '.3g')} FLOPs")
    if not costs:
        raise UserError(f"{root}: no switch measured (no law run with a switch and evaluations after it)")
    if cfg.budget is not None:       # the target: the best static law's error at --budget
        target = min(law_f(x, cfg.budget) for x in laws["laws"])
        sched = schedule(root, {k: 0.0 for k in costs}, target, man, "no-switch-cost")
    doc = schedule(root, costs, sched["target_error"], man)
    pr0, pr1 = sched["predicted"], doc["predicted"]
    print(f"switch costs ({source}): " + ", ".join(f"{k}={v:.3g}" for k, v in costs.items()))
    print(f"planned without: {pr0['flops']:.4g} FLOPs, path {' -> '.join(s['name'] for s in sched['stages'])}")
    print(f"planned with:    {pr1['flops']:.4g} FLOPs (switch costs included), path "
          f"{' -> '.join(s['name'] for s in doc['stages'])}")
    write_json(root / "switch_cost.json", {"version": 1, "source": source, "budget": cfg.budget,
                                            "target_error": sched["target_error"], "switches": rows, "per_key": summary,
                                            "costs": costs, "planned_without": pr0, "planned_with": pr1})
    if cfg.train:
        if len(doc["stages"]) < 2:
            print("the plan with switch costs has one stage (a static run): nothing to train")
            return
        train(root, man["seeds"])
        py = sys.executable
        static = [str(root / r["name"]) for r in man["runs"] if r["kind"] == "static"]
        sched_runs = [str(p) for p in sorted(root.glob("sched_*_s*")) if (p / "log.jsonl").exists()]
        subprocess.run([py, str(ROOT / "compare.py"), "--runs", *static, *sched_runs, "--metric",
                        man["params"].get("compare_metric", cfg.metric), "--out-dir", str(root)], check=True)
        subprocess.run([py, str(ROOT / "report.py"), "--out-dir", str(root)], check=True)


if __name__ == "__main__":
    sys.exit(run_cli(main, Config, "bench_switch_cost.py"))
