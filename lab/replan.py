"""Re-plan a finished pipeline with today's planner and train only its transfer runs: an A/B on the same static runs,
pilots and targets (issue 24). The pilots' transfer.json is measured again (with the seeds' spread, lab/transfer.py),
schedule.py --transfer plans for the trained plan's target, each transfer run is trained again with its own recorded
flags but the new plan, and compare.py reads the new runs against the pipeline's static runs.

    python lab/replan.py --pipeline results/depth-demo-s192021-transfer --out runs/replanned-s192021

Its output folder: transfer.json, schedule_transfer.json (.txt), sched_transfer_s<seed>/, comparison.json,
compare.txt. A killed run resumes: the same command trains what is unfinished.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the core, at the repository root
from lab import load, report, transfer, write_json  # noqa: E402
from lab.reproduce import Bar, Job, schedule_step, step, train  # noqa: E402
from runtime import UserError, run_cli  # noqa: E402


@dataclasses.dataclass
class Config:
    pipeline: str  # a finished reproduce.py folder with pilots and transfer runs (results/depth-demo-s192021-transfer)
    out: str  # the folder for the re-planned runs (not the pipeline's own)
    jobs: int = 2  # runs trained at once


def recorded(run: Path) -> list[str]:
    """The trainer command a run was started with: the first line of its stdout.txt ("$ python train_vit.py ...")."""
    line = next((ln for ln in (run / "stdout.txt").read_text().splitlines() if ln.startswith("$ ")), None) \
        if (run / "stdout.txt").is_file() else None
    if line is None:
        raise UserError(f"{run}/stdout.txt holds no recorded command: re-plan a pipeline reproduce.py trained")
    return shlex.split(line[2:])


def with_flag(cmd: list[str], flag: str, value: str) -> list[str]:   # cmd with `flag`'s value replaced
    return [value if k and cmd[k - 1] == flag else x for k, x in enumerate(cmd)]


def main(cfg: Config) -> None:
    src, out = Path(cfg.pipeline), Path(cfg.out)
    man, plan, old = load(src / "pipeline.json"), load(src / "pilots.json"), load(src / "schedule_transfer.json")
    runs = sorted(src.glob("sched_transfer_s*"))
    if not (man and plan and old and runs) or out.resolve() == src.resolve() or cfg.jobs < 1:
        raise UserError(f"--pipeline {src} needs pipeline.json, pilots.json, schedule_transfer.json and transfer runs "
                        f"(sched_transfer_s*), --out another folder, --jobs >= 1")
    out.mkdir(parents=True, exist_ok=True)
    metric, p = man["params"]["metric"], man["params"]
    transfer.remeasure(src, out)                                          # with the seeds' spread
    write_json(out / "laws.json", load(src / "laws.json"))               # the pipeline's laws, planned on as it did
    if not schedule_step(p, out, man["budget"], "schedule_transfer.json", ("--transfer", str(out / "transfer.json")),
                         target=old["target_error"], baselines=False):
        raise UserError(f"{out / 'schedule_transfer.txt'}: fewer than two laws pass the checks: nothing to re-plan")
    jobs = []
    for run in runs:
        cmd = with_flag(with_flag(recorded(run), "--schedule", str(out / "schedule_transfer.json")), "--out-dir",
                        str(out / run.name))
        jobs.append(Job(run.name, "transfer", int(run.name.rsplit("_s", 1)[1]), float(cmd[cmd.index("--flops") + 1]),
                        out / run.name, 1, [sys.executable, *cmd[1:]]))
    train(jobs, cfg.jobs, Bar(jobs), "re-planned transfer runs")
    step("compare.py", [sys.executable, "lab/compare.py", "--runs", *[str(r) for r in sorted(src.glob("static_*"))],
                        *[str(j.out) for j in jobs], "--metric", p.get("compare_metric", metric), "--out-dir",
                        str(out)], out / "compare.txt")
    new, comp, tr = (load(out / f) for f in ("schedule_transfer.json", "comparison.json", "transfer.json"))
    got = next((g["flops_savings"] for g in comp["groups"] if g["kind"] == "transfer"), None) or {}
    sp = report.seeds_spread(tr, new)     # as report.md's "mean over the seeds' spread": against the static budget
    vs = sp and report.expected_savings(new, load(out / "laws.json"), comp["target_error"], sp[0], man["budget"])
    print(f"trained: switch at {old['stages'][1]['flops_start']:.3g}; re-planned: "
          + (f"at {new['stages'][1]['flops_start']:.3g}" if len(new["stages"]) > 1 else "stay")
          + f", predicted over the seeds {new['predicted'].get('expected_savings', new['predicted']['savings']):.1%}"
          + (f" against the best static law ({vs:.1%} against the budget)" if sp else "")
          + f"; achieved per seed {json.dumps(got.get('per_seed'))}, mean {got.get('mean')}, 95% CI {got.get('ci95')}")


if __name__ == "__main__":
    sys.exit(run_cli(main, Config, "replan.py"))
