"""reproduce.py and report.py: the plan of each experiment and preset, seeds, the manifest, finished runs, a
failing step's cause, report.md, the verdict on the paper's claim, and one small pipeline end to end."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_images
from lab import report
from lab import reproduce
from lab.report import verdict
from lab.reproduce import Config, PRESETS

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "lab" / "reproduce.py"), *args], capture_output=True, text=True,
                          cwd=cwd)


def cli_here(capsys, *args):
    """What `python lab/reproduce.py ARGS` runs (its __main__ line), in this process: (exit code, stderr).
    Tests that spawn it (cli) prove the exit code and the absence of a traceback on a real process."""
    capsys.readouterr()
    code = reproduce.runtime.run_cli(reproduce.main, Config, "reproduce.py", list(args), errors=(reproduce.StepFailed,),
                                     interrupted="the same command resumes where it stopped")
    return code, capsys.readouterr().err


def flag(cmd, name):
    assert cmd.count(name) == 1, (name, cmd)
    return cmd[cmd.index(name) + 1]


def make_plan(tmp_path, **kw):
    cfg = Config(**kw)
    p = reproduce.resolve(cfg)
    return p, *reproduce.plan(cfg, p, tmp_path, reproduce.check_seeds(cfg.seeds), 1)


# ----------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("experiment, preset", [(e, k) for e in PRESETS for k in PRESETS[e]])
def test_every_run_of_every_preset_has_its_budget_seed_and_folder(tmp_path, experiment, preset):
    p, static, sched = make_plan(tmp_path, experiment=experiment, preset=preset, seeds=(0, 3))
    trainer = "train_lm.py" if experiment in ("context", "lm-depth") else "train_vit.py"
    for job in static + sched:
        assert Path(job.cmd[1]).name == trainer and "--steps" not in job.cmd and "--resume" not in job.cmd
        assert float(flag(job.cmd, "--flops")) == job.budget > 0
        assert flag(job.cmd, "--out-dir") == str(job.out) and job.out.name == job.name
        assert int(flag(job.cmd, "--seed")) == job.seed and "--no-progress" in job.cmd
        assert len({a for a in job.cmd if a.startswith("--")}) == sum(a.startswith("--") for a in job.cmd)
    runs = [j for j in static if j.kind == "static"]
    assert len(runs) == 2 * len({j.name.rsplit("_s", 1)[0] for j in runs}) and {j.seed for j in runs} == {0, 3}
    assert all("--schedule" not in j.cmd for j in static) and all("--schedule" in j.cmd for j in sched)
    pilots = ["transfer"] if "pilot_points" in p else []       # issue 24: the plan with measured transfer
    kinds = ["law", *pilots, *reproduce.BASELINES.get(experiment, reproduce.DEFAULT_BASELINES)]
    assert [j.kind for j in sched] == kinds * 2
    assert {flag(j.cmd, "--schedule") for j in sched} == {str(tmp_path / n) for n in (
        "schedule.json", *[f"schedule_{k}.json" for k in kinds[1:]])}
    assert all(("--keep-at" in j.cmd) == bool(pilots) for j in runs)   # the pilots' starting checkpoints


def test_patch_plan_resizes_the_demo_images(tmp_path):
    p, static, sched = make_plan(tmp_path, experiment="patch", preset="demo")
    budget = {flag(j.cmd, "--patch"): j.budget for j in static}
    assert budget == {"6": 6e12, "12": 6e12, "8": 6e12}
    assert [j.name for j in static] == ["static_p6_s0", "static_p12_s0", "static_p8_s0"]
    assert all(j.budget == 6e12 and flag(j.cmd, "--model") == "V64-4" for j in sched)
    assert all(flag(j.cmd, "--image-size") == "24" for j in static + sched)
    p, static, _ = make_plan(tmp_path, experiment="patch", preset="full")
    assert "--image-size" not in static[0].cmd                 # the data's own side
    assert "--precision" not in static[0].cmd          # auto: the trainer's own default
    _, static, _ = make_plan(tmp_path, experiment="patch", preset="full", precision="bf16", flops=1e13)
    assert flag(static[0].cmd, "--precision") == "bf16" and static[0].budget == 1e13


def test_context_plan_gives_scheduled_runs_a_margin(tmp_path):
    p, static, sched = make_plan(tmp_path, experiment="context", preset="full", flops=1e13)
    assert [flag(j.cmd, "--context") for j in static] == ["128", "64", "32", "16"]
    assert {j.budget for j in static} == {1e13} and [j.budget for j in sched] == pytest.approx([1.1e13] * 4)
    assert flag(static[0].cmd, "--tokens-per-step") == "4096" and "--data-dir" not in static[0].cmd


def test_batch_plan_scales_the_lr_of_the_static_runs_and_starts_the_schedule_small(tmp_path):
    p, static, sched = make_plan(tmp_path, experiment="batch", preset="full")
    lr = {flag(j.cmd, "--batch-size"): float(flag(j.cmd, "--lr")) for j in static}
    assert lr == {"32": 1e-3, "256": pytest.approx(1e-3 * math.sqrt(8))}
    assert flag(sched[0].cmd, "--batch-size") == "32" and flag(sched[0].cmd, "--lr-scaling") == "sqrt"


def test_distill_plan_trains_one_teacher_first_on_all_cores(tmp_path):
    p, static, sched = make_plan(tmp_path, experiment="distill", preset="full", seeds=(0, 1), jobs=2)
    teacher, ckpt = static[0], str(tmp_path / "teacher" / "ckpt.pt")
    assert [j.kind for j in static] == ["teacher"] + ["static"] * 4
    assert teacher.budget == 4e13 and flag(teacher.cmd, "--model") == "V96-4" and flag(teacher.cmd, "--evals") == "5"
    assert flag(static[1].cmd, "--teacher") == ckpt and flag(static[1].cmd, "--objective") == "distill"
    assert "--teacher" not in static[2].cmd and all(flag(j.cmd, "--teacher") == ckpt for j in sched)


def test_growth_plans_start_small_and_grow(tmp_path):
    _, static, sched = make_plan(tmp_path, experiment="width", preset="smoke")
    assert [flag(j.cmd, "--model") for j in static] == ["V32-2", "V64-2"] and flag(sched[0].cmd, "--model") == "V32-2"
    _, static, sched = make_plan(tmp_path, experiment="depth", preset="smoke")
    assert [flag(j.cmd, "--model") for j in static] == ["V32-1", "V32-2"] and flag(sched[0].cmd, "--model") == "V32-1"


# ----------------------------------------------------------------------------- bad input: one line, exit 2


@pytest.mark.parametrize("args, says", [
    (["--seeds", "0", "0"], "--seeds"), (["--seeds", "1", "-2"], "--seeds"),
    (["--flops", "-1"], "--flops"), (["--flops", "inf"], "--flops"), (["--flops", "nan"], "--flops"),
    (["--set", "evals=0"], "evals"), (["--set", "lr=abc"], "lr"), (["--set", "nope=1"], "KEY"),
    (["--set", "patches="], "patches"), (["--set", "evals=2.5"], "whole"),
    (["--experiment", "context", "--preset", "paper"], "presets"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, says):
    if args[0] == "--seeds" and args[1] == "0":       # one in a real process (exit code, no traceback), the rest here
        r = cli("--preset", "smoke", "--out-dir", str(tmp_path / "out"), *args)
        code, err = r.returncode, r.stderr
    else:
        code, err = cli_here(capsys, "--preset", "smoke", "--out-dir", str(tmp_path / "out"), *args)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and says in err
    assert not (tmp_path / "out").exists()


def test_a_rerun_of_another_setting_is_refused_and_loses_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(reproduce, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):         # the manifest is written before the first run starts
        reproduce.main(Config(preset="smoke", out_dir=str(out), seeds=(0, 1)))
    run = out / "static_p14_s0"
    run.mkdir()
    (run / "log.jsonl").write_text('{"type": "header"}\n')
    (run / "ckpt.pt").write_bytes(b"weights")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for args, says in [(["--seeds", "0"], "seeds"), (["--seeds", "0", "1", "--flops", "3e11"], "budget"),
                       (["--seeds", "0", "1", "--set", "evals=7"], "evals"),
                       (["--seeds", "0", "1", "--experiment", "batch"], "experiment"),
                       (["--seeds", "0", "1", "--precision", "fp32"], "precision")]:
        code, err = cli_here(capsys, "--preset", "smoke", "--out-dir", str(out), *args)   # a pass would train: 130
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert says in err and "pipeline.json" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(KeyboardInterrupt):         # the same setting again passes the check and resumes
        reproduce.main(Config(preset="smoke", out_dir=str(out), seeds=(0, 1)))


# ----------------------------------------------------------------------------- finished, resumed, failed


def write_log(run, flops, tail=""):
    run.mkdir(parents=True, exist_ok=True)
    rows = [{"type": "header", "run": run.name}] + [{"type": "eval", "flops": f, "fewshot10_error": 0.5} for f in flops]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_a_run_is_finished_only_when_its_log_reached_the_budget(tmp_path):
    assert not reproduce.finished(tmp_path / "none", 1e12)
    write_log(tmp_path / "a", [])
    assert not reproduce.finished(tmp_path / "a", 1e12)
    write_log(tmp_path / "b", [1e10, 1e12 * (1 - 1e-10)])
    assert reproduce.finished(tmp_path / "b", 1e12)
    write_log(tmp_path / "c", [1e10, 1e12 * (1 - 1e-6)])
    assert not reproduce.finished(tmp_path / "c", 1e12)
    write_log(tmp_path / "d", [1e12], tail='{"type": "eval", "flo')          # a record cut short by a kill
    assert reproduce.finished(tmp_path / "d", 1e12) and not reproduce.finished(tmp_path / "d", 2e12)


def job(tmp_path, name, code, budget=1e9):
    out = tmp_path / name
    return reproduce.Job(name, "static", 0, budget, out, 1, [sys.executable, "-c", code, "--out-dir", str(out)])


FINISH = ("import json, sys, pathlib; out = pathlib.Path(sys.argv[sys.argv.index('--out-dir') + 1]); "
          "print(' '.join(sys.argv[1:])); (out / 'log.jsonl').write_text(json.dumps({'flops': 1e9}) + '\\n')")


def test_finished_runs_are_kept_and_interrupted_ones_resume(tmp_path):
    done, cut = job(tmp_path, "done", FINISH), job(tmp_path, "cut", FINISH)
    write_log(done.out, [1e9])
    write_log(cut.out, [1e8])
    (cut.out / "ckpt.pt").write_bytes(b"")
    bar = reproduce.Bar([done, cut])
    reproduce.train([done, cut], 2, bar, "test")
    assert not (done.out / "stdout.txt").exists()                     # not started again
    assert "--resume" in (cut.out / "stdout.txt").read_text().splitlines()[-1]
    assert reproduce.finished(cut.out, 1e9) and bar.done == 2


def test_a_failing_run_stops_the_pipeline_with_its_one_line_cause(tmp_path):
    bad = job(tmp_path, "bad", "import sys; print('training...'); print('train_vit.py: error: --patch 5 does not "
                               "divide', file=sys.stderr); print(); sys.exit(2)")
    slow = job(tmp_path, "slow", "import time; time.sleep(60)")
    with pytest.raises(reproduce.StepFailed) as e:
        reproduce.train([slow, bad], 2, reproduce.Bar([slow, bad]), "test")
    assert str(e.value) == f"bad failed: train_vit.py: error: --patch 5 does not divide (output: {bad.out}/stdout.txt)"
    quiet = job(tmp_path, "quiet", "pass")                            # exit 0 without reaching its budget
    with pytest.raises(reproduce.UserError, match="before its budget"):
        reproduce.train([quiet], 1, reproduce.Bar([quiet]), "test")
    with pytest.raises(reproduce.StepFailed, match=r"fit_laws.py failed: oops \(output: .*laws.txt\)"):
        reproduce.step("fit_laws.py", [sys.executable, "-c", "import sys; sys.exit('oops')"], tmp_path / "laws.txt")


def test_the_cli_reports_a_failing_step_in_one_line(tmp_path):
    r = cli("--preset", "smoke", "--out-dir", str(tmp_path / "out"), "--data-dir", str(tmp_path / "nothing"),
            "--jobs", "1", "--threads", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "static_p14_s0 failed: train_vit.py: error:" in r.stderr and "stdout.txt" in r.stderr


# ----------------------------------------------------------------------------- the verdict and report.md


def write(tmp_path, static, sched, switches=({"flops": 1e12, "config": {"batch_size": 256}},)):
    runs = [{"run": n, "kind": "static", "flops_to_target": f, "switches": []} for n, f in static.items()]
    runs.append({"run": "sched_law", "kind": "law", "flops_to_target": sched, "switches": list(switches)})
    best = min(static, key=lambda n: static[n] if not math.isnan(static[n]) else math.inf)
    (tmp_path / "comparison.json").write_text(json.dumps({"target_error": 0.2, "best_static": best, "runs": runs}))
    return tmp_path


@pytest.mark.parametrize("static, sched, ok", [
    ({"static_bs32": 2e13, "static_bs256": math.nan}, 1.5e13, True),    # fewer FLOPs than the only one reaching
    ({"static_bs32": 2e13, "static_bs256": 1.9e13}, 1.95e13, False),     # beats one static run, not both
    ({"static_bs32": 2e13, "static_bs256": math.nan}, math.nan, False),  # never reaches the target
    ({"static_bs32": 2e13, "static_bs256": 1.8e13}, 1.2e13, True),
])
def test_verdict_needs_fewer_flops_than_every_static_run(tmp_path, capsys, static, sched, ok):
    assert verdict(write(tmp_path, static, sched)) is ok
    out = capsys.readouterr().out
    assert ("PASS" if ok else "FAIL") in out and "never switched" not in out


def test_verdict_says_when_the_run_never_switched(tmp_path, capsys):
    assert verdict(write(tmp_path, {"static_bs32": 2e13, "static_bs256": math.nan}, math.nan, switches=())) is False
    assert "never switched" in capsys.readouterr().out


def test_no_scheduled_run_when_the_laws_do_not_cross(tmp_path, monkeypatch, capsys):
    """A one-stage schedule can only repeat a static run: the pipeline trains no scheduled run and says FAIL; the
    comparison still reads the static runs (their finals with intervals for the report)."""
    trained, commands, compared = [], [], []
    monkeypatch.setattr(reproduce, "train", lambda jobs, parallel, bar, desc: trained.extend(jobs))

    def fake_step(name, cmd, log, mode="w"):   # fit_laws.py and schedule.py: schedule.py's one-stage answer
        commands.append(Path(cmd[1]).name)
        if Path(cmd[1]).name == "compare.py":
            compared.extend(Path(x).name for x in cmd[cmd.index("--runs") + 1:cmd.index("--metric")])
        if Path(cmd[1]).name == "schedule.py":
            stage = {"config": {"batch_size": 32}, "name": "batch_size=32", "flops_start": 0.0, "flops_end": 4e10}
            (tmp_path / "schedule.json").write_text(json.dumps({"version": 1, "stages": [stage]}))
    monkeypatch.setattr(reproduce, "step", fake_step)

    ok = reproduce.main(Config(experiment="batch", preset="smoke", out_dir=str(tmp_path)))
    assert ok is False
    assert commands == ["fit_laws.py", "schedule.py", "baselines.py", "compare.py"]
    assert sorted(j.name for j in trained) == sorted(compared) == ["static_bs128_s0", "static_bs32_s0"]
    assert not any("--schedule" in j.cmd for j in trained)
    assert "do not cross" in capsys.readouterr().out
    assert "do not cross" in (tmp_path / "report.md").read_text()


def synthetic(root):
    def law(name, rel):
        return {"name": name, "config": {"patch": int(name[6:]), "width": 64}, "a": 3.1e4, "b": 0.35, "c": 0.08,
                "d": 2e11, "flops_range": [1e11, 2e13], "residual": 0.01, "extrapolation": {"rel_max": rel}}
    (root / "laws.json").write_text(json.dumps({"version": 1, "metric": "fewshot10_error",
                                                "laws": [law("patch=14", 0.05), law("patch=7", 0.5)]}))
    stages = [{"name": "patch=14", "config": {"patch": 14}, "flops_start": 0.0, "flops_end": 7.2e12,
               "error_start": 0.68, "error_end": 0.186},
              {"name": "patch=7", "config": {"patch": 7}, "flops_start": 7.2e12, "flops_end": 1.64e13,
               "error_start": 0.186, "error_end": 0.1727}]
    predicted = {"flops": 1.64e13, "savings": 0.344, "best_static": {"name": "patch=7", "flops": 2.5e13}}
    (root / "schedule.json").write_text(json.dumps({"version": 1, "target_error": 0.1727, "method": "dp",
                                                    "stages": stages, "predicted": predicted}))
    runs = [{"run": "static_p14_s0", "kind": "static", "final_error": 0.186, "flops_to_target": float("nan"),
             "flops_savings": None, "switches": []},
            {"run": "static_p7_s0", "kind": "static", "final_error": 0.1733, "flops_to_target": 2e13,
             "flops_savings": 0.0, "switches": []},
            {"run": "sched_law_s0", "kind": "law", "final_error": 0.1627, "flops_to_target": 1.5e13,
             "flops_savings": 0.25, "switches": [{"flops": 8.6e12, "config": {"patch": 7, "width": 64}}]}]
    comp = {"version": 1, "target_error": 0.1733, "best_static": "static_p7_s0", "best_static_flops": 2e13,
            "runs": runs, "per_kind": {"law": {"mean_flops_savings": 0.25, "ci95": {"lo": 0.1, "hi": 0.4}}}}
    (root / "comparison.json").write_text(json.dumps(comp))        # NaN, as compare.py writes it
    man = {"experiment": "patch", "preset": "full", "seeds": [0], "budget": 2.5e13, "command": "python reproduce.py x",
           "params": {"max_extrap_error": 0.3},
           "runs": [{"name": n, "kind": "static"} for n in ("static_p14_s0", "static_p7_s0")]}
    (root / "pipeline.json").write_text(json.dumps(man))
    write_log(root / "static_p14_s0", [1e12, 1e13])
    write_log(root / "static_p7_s0", [1e12, 2e13])
    (root / "laws.png").write_bytes(b"png")


def test_report_renders_laws_schedule_comparison_and_the_sweeps_compute(tmp_path):
    synthetic(tmp_path)
    ok, line = report.write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert ok and "PASS" in line and line.removeprefix("== ") in text
    assert "| patch=14 | 3.1e04 | 0.35 | 0.08 | 2e11 | [1e11, 2e13] |" in text
    assert "extrapolation off by 50%" in text and text.count("extrapolation off") == 1
    assert "switch points: patch=7 at 7.2e12 FLOPs" in text and "predicted savings 34.4%" in text
    assert "| sched_law_s0 | law | 0.1627 | 1.5e13 | 25.0% | patch=7 at 8.6e12 |" in text
    assert "| static_p14_s0 | static | 0.186 | never | — | — |" in text
    assert "**per_kind**" in text and "| law | 25.0% | [0.1, 0.4] |" in text
    assert "![laws](laws.png)" in text and "schedule.png" not in text and "comparison.png" not in text
    # sweep 1e13 + 2e13 = 3e13; + the adaptive run 1.5e13 = 4.5e13 = 2.25 x 2e13; each saves 5e12: 6 runs pay back
    assert "cost 3e13 FLOPs" in text and "2.25x one static run" in text and "6 adaptive runs pay the sweep back" in text
    assert not list(tmp_path.glob("*.tmp"))


def test_report_of_a_sweep_that_cannot_pay_back():
    s = report.sweep([1e13, 2e13], 2e13, [2.1e13])
    assert s["payback_runs"] is None and s["ratio"] == pytest.approx(5.1e13 / 2e13)
    assert report.sweep([1e13], 2e13, [1.5e13, math.nan])["ratio"] is None     # a seed that never reached it


# ----------------------------------------------------------------------------- end to end


def test_smoke_pipeline_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    (xt, yt), (xs, ys) = make_images(300, rng), make_images(100, rng)
    np.savez(tmp_path / "tiny.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    args = ["--experiment", "patch", "--preset", "smoke", "--flops", "2e9", "--data-dir", str(tmp_path / "tiny.npz"),
            "--out-dir", str(tmp_path / "out"), "--jobs", "2", "--threads", "1", "--set", "model=V32-2",
            "patches=8,4", "fewshot_support=200", "fewshot_query=60", "test_size=100", "batch_size=32", "warmup=2",
            "evals=10", "allow_bound_laws=true"]                   # tiny curves: laws at the box's limits
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "out"
    text = (out / "report.md").read_text()
    assert "verdict" in r.stdout and "## Laws" in text and "patch=8" in text and "patch=4" in text
    man = json.loads((out / "pipeline.json").read_text())
    for run in man["runs"]:
        if (out / run["name"]).exists():
            assert reproduce.finished(out / run["name"], run["budget"])
    started = {p.parent.name: p.read_text().count("$ ") for p in out.glob("*/stdout.txt")}
    assert {"static_p8_s0", "static_p4_s0"} <= set(started) and set(started.values()) == {1}


def test_smoke_pipeline_with_time_as_the_cost(tmp_path, capsys):
    """--cost wall (App. F): laws on training seconds, a schedule in seconds turned into FLOPs switch points, and a
    comparison that shows both costs."""
    rng = np.random.default_rng(1)
    (xt, yt), (xs, ys) = make_images(300, rng), make_images(100, rng)
    np.savez(tmp_path / "tiny.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    args = ["--experiment", "patch", "--preset", "smoke", "--flops", "2e9", "--data-dir", str(tmp_path / "tiny.npz"),
            "--out-dir", str(tmp_path / "out"), "--jobs", "2", "--threads", "1", "--cost", "wall", "--set",
            "model=V32-2", "patches=8,4", "fewshot_support=200", "fewshot_query=60", "test_size=100", "batch_size=32",
            "warmup=2", "evals=10", "allow_bound_laws=true"]      # tiny curves: laws at the box's limits
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "out"
    laws, sched = (json.loads((out / f).read_text()) for f in ("laws.json", "schedule.json"))
    assert laws["cost"] == "wall" and all(law["flops_per_second"] > 0 for law in laws["laws"])
    assert sched["cost"] == "wall" and all("cost_start" in s and "flops_start" in s for s in sched["stages"])
    comp = json.loads((out / "comparison.json").read_text())
    assert comp["cost"] == "wall" and all("flops_savings" in g and "wall_savings" in g for g in comp["groups"])
    code, err = cli_here(capsys, *[a if a != "wall" else "flops" for a in args])   # the manifest remembers the cost
    assert code == 2 and "cost" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- growth: width, depth, patch x width


def test_growth_plans_keep_the_head_size_and_pass_the_growth_flags(tmp_path):
    p, static, sched = make_plan(tmp_path, experiment="joint", preset="demo", seeds=(0,))
    assert [j.name for j in static] == [f"static_p{q}_w{w}_s0" for q in (14, 7) for w in (32, 64, 128)]
    assert {flag(j.cmd, "--head-dim") for j in static + sched} == {"32"}
    assert [j.kind for j in sched] == ["law", "linear", "log", "width-only", "patch-only"]
    assert flag(sched[0].cmd, "--model") == "V32-4" and flag(sched[0].cmd, "--grow-gamma") == "1.0"
    assert flag(sched[3].cmd, "--schedule") == str(tmp_path / "schedule_width-only.json")
    _, static, sched = make_plan(tmp_path, experiment="depth", preset="demo")
    assert [flag(j.cmd, "--model") for j in static] == ["V64-2", "V64-4", "V64-6"] and flag(sched[0].cmd, "--model") == "V64-2"


@pytest.mark.parametrize("experiment, sets, says", [
    ("width", ["widths=32,48,64"], "--experiment width: width 48 is not a multiple of the head size 32"),
    ("width", ["widths=64"], "--experiment width: widths 64 has one value"),
    ("depth", ["depths=2,2.5"], "--experiment depth: --set depths=2.5: must be a whole number"),
    ("depth", ["width=48"], "--experiment depth: width 48 is not a multiple"),
    ("depth", ["depths=2,2,4"], "--experiment depth: depths 2,2,4 repeats a value"),
    ("depth", ["depths=2,2"], "--experiment depth: depths 2,2 has one value"),
    ("joint", ["patches=7"], "--experiment joint: patches 7 has one value"),
    ("joint", ["widths=128"], "--experiment joint: widths 128 has one value"),
    ("joint", ["widths=32,40"], "--experiment joint: width 40 is not a multiple"),
])
def test_bad_growth_grids_are_refused_before_any_training(tmp_path, experiment, sets, says):
    with pytest.raises(reproduce.UserError) as e:          # resolve() runs before the manifest and any run
        reproduce.resolve(Config(experiment=experiment, preset="smoke", set=tuple(sets)))
    assert str(e.value).startswith(says) and "\n" not in str(e.value)


def test_a_bad_growth_grid_is_one_line_exit_2_and_writes_nothing(tmp_path):
    r = cli("--experiment", "joint", "--preset", "smoke", "--out-dir", str(tmp_path / "out"), "--set", "widths=32,48")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "reproduce.py: error: --experiment joint: width 48 is not a multiple of the head size 32 (growth keeps the "
        "head size; use multiples of 32, or --set head_dim=...)"], r.stderr
    assert not (tmp_path / "out").exists()


def test_a_resumed_pipeline_with_another_grid_is_refused_naming_what_changed(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setattr(reproduce, "train", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        reproduce.main(Config(experiment="width", preset="smoke", out_dir=str(out)))
    code, err = cli_here(capsys, "--experiment", "width", "--preset", "smoke", "--out-dir", str(out), "--set",
                         "widths=32,96")                   # a pass would reach the training above: 130
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "pipeline.json" in err and "widths [32, 64] there, [32, 96] now" in err


def grid_laws(root):
    """Synthetic laws on patch {8, 4} x width {32, 64}: each config's curve E = A (C/k + 1e9)^-0.5 + c shifted right
    by its cost factor k (finer, wider: slower) and ending lower (c): the cheapest first, then finer, then wider."""
    def law(q, w, k, c):
        return {"name": f"patch={q},width={w}", "config": {"patch": q, "width": w, "depth": 2, "batch_size": 32},
                "a": 2 * 1e9 ** 0.5 * k ** 0.5, "b": 0.5, "c": c, "d": 1e9 * k, "flops_range": [1e9, 1e12],
                "extrapolation": {"rel_max": 0.01}}
    laws = {"version": 1, "metric": "fewshot10_error", "cost": "flops",
            "laws": [law(8, 32, 1, 0.30), law(8, 64, 4, 0.22), law(4, 32, 4, 0.20), law(4, 64, 16, 0.12)]}
    (root / "laws.json").write_text(json.dumps(laws))
    return laws


def test_one_axis_schedules_restrict_the_joint_laws_to_the_best_shapes_patch_or_width(tmp_path):
    laws = grid_laws(tmp_path)
    r = subprocess.run([sys.executable, str(ROOT / "schedule.py"), "--laws", str(tmp_path / "laws.json"), "--budget",
                        "3e12", "--out", str(tmp_path / "schedule.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    main = json.loads((tmp_path / "schedule.json").read_text())
    best = main["predicted"]["best_static"]["config"]
    assert len(main["stages"]) >= 2 and best["patch"] == 4 and best["width"] == 64
    p, _, sched = make_plan(tmp_path, experiment="joint", preset="smoke")
    kept = reproduce.one_axis_schedules(Config(experiment="joint", preset="smoke"), p, tmp_path, sched,
                                        reproduce.Bar(sched))
    for kind, fixed in (("width-only", "patch"), ("patch-only", "width")):
        doc = json.loads((tmp_path / f"schedule_{kind}.json").read_text())
        assert doc["kind"] == kind and doc["target_error"] == main["target_error"]
        assert {s["config"][fixed] for s in doc["stages"]} == {best[fixed]}
        sub = json.loads((tmp_path / f"laws_{kind}.json").read_text())["laws"]
        assert len(sub) == 2 and all(x["config"][fixed] == best[fixed] for x in sub)
        assert (kind in {j.kind for j in kept}) == (len(doc["stages"]) >= 2)
    # the law-predicted FLOPs of a schedule as trained (report.py) agree with schedule.py's at its own target
    assert report.predicted_flops(main, laws, main["target_error"]) == pytest.approx(main["predicted"]["flops"])


def test_switch_cost_is_read_back_from_a_run_that_lost_known_flops(tmp_path):
    """A law run that follows the new law S FLOPs late after its switch: the bench measures S."""
    sys.path.insert(0, str(ROOT / "lab" / "bench"))
    import bench_switch_cost as bsc
    laws = grid_laws(tmp_path)
    P, Q = laws["laws"][0], laws["laws"][3]
    sched = {"stages": [{"config": P["config"], "name": "a", "flops_start": 0.0, "flops_end": 1e11},
                        {"config": Q["config"], "name": "b", "flops_start": 1e11, "flops_end": 1e12}]}
    S, E_s = 5e10, bsc.law_f(P, 1e11)
    recs = [{"type": "eval", "flops": C, "stage": 0, "fewshot10_error": bsc.law_f(P, C)} for C in (2e10, 5e10, 1e11 - 1)]
    recs += [{"type": "eval", "flops": C, "stage": 1, "fewshot10_error":
              bsc.law_f(Q, bsc.law_g(Q, E_s) + max(C - 1e11 - S, 0.0))} for C in (1.2e11, 2e11, 4e11, 7e11, 1e12)]
    run = tmp_path / "sched_law_s0"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [{"type": "header"}, *recs]))
    (m,) = bsc.measure_run(run, sched, laws, "fewshot10_error")
    assert m["keys"] == ["patch", "width"] and m["lost_flops"] == pytest.approx(S, rel=1e-3)
    assert m["jump"] == pytest.approx(recs[3]["fewshot10_error"] - E_s)


def test_joint_smoke_pipeline_end_to_end(tmp_path):
    """patch x width on tiny images: four static runs at the grown model's head size, laws, the schedule (and the
    one-axis schedules where the laws cross), report.md."""
    rng = np.random.default_rng(2)
    (xt, yt), (xs, ys) = make_images(300, rng), make_images(100, rng)
    np.savez(tmp_path / "tiny.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    r = cli("--experiment", "joint", "--preset", "smoke", "--flops", "2e9", "--data-dir", str(tmp_path / "tiny.npz"),
            "--out-dir", str(tmp_path / "out"), "--jobs", "2", "--threads", "1", "--set", "patches=8,4",
            "fewshot_support=200", "fewshot_query=60", "test_size=100", "batch_size=32", "warmup=2", "evals=10",
            "allow_bound_laws=true")
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "out"
    laws = json.loads((out / "laws.json").read_text())
    assert {(x["config"]["patch"], x["config"]["width"]) for x in laws["laws"]} <= {(8, 32), (8, 64), (4, 32), (4, 64)}
    header = json.loads((out / "static_p4_w64_s0" / "log.jsonl").read_text().splitlines()[0])
    assert header["model_args"]["heads"] == 2 and header["config"]["head_dim"] == 32
    assert "## Laws" in (out / "report.md").read_text()
    if len(json.loads((out / "schedule.json").read_text())["stages"]) > 1:
        assert (out / "schedule_width-only.json").exists() and (out / "schedule_patch-only.json").exists()


@pytest.mark.parametrize("keep", [True, False])
def test_growth_flags_reach_the_trainer_explicitly(keep):
    """A preset's growth mode is passed as --grow-preserve or --no-grow-preserve, never left to train_vit.py's
    default, so a change of that default cannot change what a pipeline's scheduled runs do."""
    import tyro
    import train_vit
    p = {**PRESETS["width"]["demo"], "grow_preserve": keep}
    flags = reproduce.schedule_flags("width", p, "")
    assert ("--grow-preserve" if keep else "--no-grow-preserve") in flags
    cfg = tyro.cli(train_vit.Config, args=[*flags, "--flops", "1e9"])
    assert cfg.grow_preserve is keep and cfg.grow_gamma == p["grow_gamma"] and cfg.head_dim == p["head_dim"]
    assert cfg.grow_depth == p["grow_depth"] == "copy"


def static_step_flops(e: str, p: dict) -> list[float]:
    """The FLOPs of one training step of each static run of a ViT preset (6 x block MACs x batch; + the
    teacher's forward when distilling), as train_vit.py counts them."""
    import flexivit
    macs = lambda name, patch: flexivit.build(name, image_size=p.get("image_size") or 28, in_chans=1,
                                              num_classes=10).macs(patch)
    bs = p["batch_size"]
    if e == "patch":
        return [6 * macs(p["model"], q) * bs for q in p["patches"]]
    if e == "batch":
        return [6 * macs(p["model"], p["patch"]) * b for b in p["batch_sizes"]]
    if e == "distill":
        s = macs(p["model"], p["patch"])
        return [6 * s * bs, (6 * s + 2 * macs(p["teacher_model"], p["teacher_patch"])) * bs]
    if e == "width":
        grid = [(p["patch"], f"V{w}-{p['depth']}") for w in p["widths"]]
    elif e == "depth":
        grid = [(p["patch"], f"V{p['width']}-{d}") for d in p["depths"]]
    else:
        grid = [(q, f"V{w}-{p['depth']}") for q in p["patches"] for w in p["widths"]]
    return [6 * macs(m, q) * bs for q, m in grid]


@pytest.mark.parametrize("e, size", [(e, s) for e in ("patch", "batch", "distill", "width", "depth", "joint")
                                     for s in ("demo", "full") if s in PRESETS[e]])
def test_a_preset_leaves_two_laws_their_points_past_the_warmup(e, size):
    """fit_laws.py drops the evaluations before the end of warm-up and fits a law from 5 points on; a preset whose
    warm-up eats its budget fails only after the whole static sweep (the batch and distill demos did, with 200
    warm-up steps: batch 256 kept 3 points, the distilled run 2). At least two shapes must keep 5."""
    import runtime
    p = PRESETS[e][size]
    points = runtime.eval_points(p["flops"], p["evals"])
    kept = [int(sum(x >= p["warmup"] * step for x in points)) for step in static_step_flops(e, p)]
    assert sum(k >= 5 for k in kept) >= 2, kept
    if e in ("batch", "distill"):                       # two shapes: both are needed
        assert min(kept) >= 5, kept


def test_too_few_laws_after_the_checks_is_a_verdict_not_a_crash(tmp_path):
    """Two laws fitted, one left out by schedule.py's checks (its b at the fit's bound): nothing can be scheduled.
    That is a finding of the sweep (the batch and distill demos), so the pipeline's schedule step returns False
    (no traceback, no scheduled run) and the report's verdict names the law left out and why."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_schedule import PAIR, write_laws
    doc = json.loads(Path(write_laws(tmp_path / "laws.json", PAIR)).read_text())
    doc["laws"][1]["at_bound"] = ["b"]
    (tmp_path / "laws.json").write_text(json.dumps(doc))
    p = {"max_extrap_error": 0.3, "allow_bound_laws": False}
    assert reproduce.schedule_step(p, tmp_path, 1e13) is False
    assert not (tmp_path / "schedule.json").exists()
    line = report.too_few_laws(tmp_path)
    name = doc["laws"][1].get("name") or ",".join(f"{k}={v}" for k, v in doc["laws"][1]["config"].items())
    assert line.startswith("== verdict: 1 law left after leaving out ") and name in line and "bound" in line
    assert line.endswith("FAIL")
    assert reproduce.schedule_step({**p, "allow_bound_laws": True}, tmp_path, 1e13) is True   # kept: it schedules
    doc["laws"] = doc["laws"][:1]                                   # a malformed file is still an error
    (tmp_path / "laws.json").write_text(json.dumps(doc))
    with pytest.raises(reproduce.StepFailed):
        reproduce.schedule_step(p, tmp_path, 1e13)


@pytest.mark.parametrize("bad, says", [("patches=5", "no patch size 5"), ("patches=14,7,3", "no patch size 3"),
                                       ("metric=bogus", "metric=bogus"), ("compare_metric=val_loss", "compare_metric"),
                                       ("warmup=-3", "warmup"), ("lr=0", "lr")])
def test_a_bad_set_is_refused_before_anything_is_written(tmp_path, capsys, bad, says):
    """Issue 26: every --set value, the metrics and every patch size against the images are checked before
    pipeline.json or any run exists, so the corrected command is not refused as another pipeline."""
    rng = np.random.default_rng(0)
    (xt, yt), (xs, ys) = make_images(60, rng, size=28), make_images(20, rng, size=28)
    np.savez(tmp_path / "t.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    out = tmp_path / "pipe"
    rc = reproduce.runtime.run_cli(reproduce.main, Config, "reproduce.py", [
        "--experiment", "patch", "--preset", "smoke", "--data-dir", str(tmp_path / "t.npz"), "--set", bad,
        "--out-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and says in err[0], err
    assert not out.exists()
