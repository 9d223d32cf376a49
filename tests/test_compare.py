"""compare.py: savings read off fitted curves, never off a stretch shared with a static run; seeds,
intervals, wall cost, train/test gap and bad input. Logs are tiny synthetic curves from known laws."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

from lab import compare

ROOT = Path(__file__).resolve().parent.parent
C = np.geomspace(1e11, 1e13, 14)       # 14 log-spaced evaluations, like the real runs
WOBBLE = 0.004 * np.array([1, -1, 0.5, -0.5, 1, 0, -1, 1, -0.5, 0.5, -1, 0, 1, -1])  # fixed, +-0.004
QUIET = WOBBLE / 4   # where a saving is checked to +-3 points: +-0.004 on flat curves moves it by ~7 (bench)


def law7(c):     # patch 7: slower start, lower end (the best static run)
    return 9.2e4 * (c + 3e10) ** -0.48 + 0.12


def law14(c):    # patch 14: fast start, plateaus above patch 7's end
    return 2.19e5 * (c + 3e10) ** -0.53 + 0.158


def write_run(path, errors, configs, seed=0, kind=None, flops=C, wall=None, extra=None):
    """A log.jsonl like train_vit.py's: a header, then one eval record per evaluation."""
    path.mkdir(parents=True, exist_ok=True)
    header = {"type": "header", "run": path.name, "schedule_kind": kind,
              "config": {"seed": seed, "schedule": "schedule.json" if kind else None, "random": False}}
    wall = flops / 1e11 if wall is None else wall
    lines = [json.dumps(header)]
    for i, (f, e, cfg) in enumerate(zip(flops, errors, configs)):
        rec = {"type": "eval", "step": 10 * (i + 1), "flops": float(f), "config": cfg, "fewshot10_error": float(e),
               "test_error": float(e) - 0.03, "wall": float(wall[i]), "stage": int(cfg != configs[0])}
        rec.update({k: float(v[i]) for k, v in (extra or {}).items()})
        lines.append(json.dumps(rec))
    (path / "log.jsonl").write_text("\n".join(lines) + "\n")
    return str(path)


def statics(root, seed=0, wobble=QUIET):
    return [write_run(root / "static_p7", law7(C) + wobble, [{"patch": 7}] * 14, seed),
            write_run(root / "static_p14", law14(C) + wobble[::-1], [{"patch": 14}] * 14, seed)]


def scheduled(root, stage2, switch=7, seed=0, kind="law", name="sched_law", first=None, **kw):
    """Patch 14 up to evaluation `switch` (the static p14 run's own records), then patch 7 (stage2)."""
    first = law14(C) + QUIET[::-1] if first is None else first
    e = np.concatenate([first[:switch], stage2[switch:]])
    cfg = [{"patch": 14}] * switch + [{"patch": 7}] * (14 - switch)
    return write_run(root / name, e, cfg, seed, kind, **kw)


def run(paths, **kw):
    return compare.compare([compare.read_run(p, kw.pop("metric", "fewshot10_error")) for p in paths], **kw)


def row(result, name, seed=0):
    return next(r for r in result["runs"] if r["run"] == name and r["seed"] == seed)


def test_shared_stretch_dip_is_never_credited(tmp_path):
    """Seed 1 of `make reproduce`: the schedule's first stage is the static p14 run itself; one
    evaluation of that shared stretch reads below the target; the run ends worse than static p7.
    The raw first crossing credits it with savings, the measure does not."""
    dip = law14(C) + WOBBLE[::-1]
    dip[5] = law7(C[-1]) - 0.012                            # one noisy evaluation below the target
    paths = [write_run(tmp_path / "static_p7", law7(C) + WOBBLE, [{"patch": 7}] * 14),
             write_run(tmp_path / "static_p14", dip, [{"patch": 14}] * 14)]
    worse = law7(C * 0.5) + 0.01                            # after the switch: behind static p7, ends worse
    paths.append(scheduled(tmp_path, worse, switch=9, first=dip))
    paths.append(scheduled(tmp_path, worse, switch=9, first=dip, kind="linear", name="sched_linear"))
    res = run(paths)
    for name in ("sched_law", "sched_linear"):
        r = row(res, name)
        assert r["raw"]["flops_savings"] > 0.2                # the old figure: the dip counted
        assert r["flops_savings"] is None and r["flops_to_target"] is None
        assert r["shares_first_stage_with"] == "static_p14" and r["counts_from_flops"] == C[9]
        assert "never reaches" in r["reason"]
    assert row(res, "static_p14")["flops_savings"] is None    # one dip does not make a static run reach


def test_crossing_inside_the_shared_stretch_counts_only_after_the_switch(tmp_path):
    paths = statics(tmp_path)
    paths.append(scheduled(tmp_path, law7(C * 0.5) + 0.01, switch=9))
    res = run(paths, target=0.25)                           # static p14 reaches 0.25 before the switch
    assert row(res, "static_p14")["flops_to_target"] < C[9]
    r = row(res, "sched_law")
    assert r["flops_to_target"] >= C[9] and r["raw"]["flops_to_target"] < C[9]
    paths.append(scheduled(tmp_path, law7(C * 0.3) + 0.03, switch=9, name="sched_slow"))
    only_shared = row(run(paths, target=0.23), "sched_slow")  # stage 2 never gets to 0.23, p14 does
    assert only_shared["flops_to_target"] is None and "shares with static static_p14" in only_shared["reason"]


def test_known_saving_is_recovered_and_one_evaluation_barely_moves_it(tmp_path):
    paths = statics(tmp_path)
    s = 0.3                                                 # stage 2 = static p7 shifted: 30% fewer FLOPs
    ahead = law7(C / (1 - s)) + QUIET
    got = row(run(paths + [scheduled(tmp_path, ahead)]), "sched_law")
    assert got["flops_savings"] == pytest.approx(s, abs=0.03)
    assert got["stages"][0]["read"] == "fit"
    assert got["stages"][1]["compute_factor"] == pytest.approx(1 / (1 - s), rel=0.1)
    moves = []
    for i in (10, 11, 12, 13):                              # one evaluation near the crossing moved by 0.01
        moved = ahead.copy()
        moved[i] -= 0.01
        r = row(run(paths + [scheduled(tmp_path, moved, name=f"m{i}")]), f"m{i}")
        moves.append((abs(r["flops_savings"] - got["flops_savings"]),
                      abs(r["raw"]["flops_savings"] - got["raw"]["flops_savings"])))
    fitted, raw = np.max(moves, axis=0)
    assert fitted < 0.10 and raw > fitted                   # the issue: one wobble moves it by < 10 points


def test_same_as_static_is_labelled_and_never_credited(tmp_path):
    paths = statics(tmp_path)
    one_stage = write_run(tmp_path / "sched_log", law7(C / 0.8), [{"patch": 7}] * 14, kind="log")  # better, but p7
    r = row(run(paths + [one_stage]), "sched_log")
    assert r["same_as_static"] == "static_p7"
    assert r["flops_savings"] is None and r["wall_savings"] is None and "same as static" in r["reason"]


def test_seeds_give_per_seed_savings_mean_and_t_interval(tmp_path):
    paths = []
    for seed, s in zip((0, 1, 2), (0.2, 0.3, 0.4)):
        root = tmp_path / f"seed{seed}"
        paths += statics(root, seed) + [scheduled(root, law7(C / (1 - s)), seed=seed)]
    res = compare.main(compare.Config(runs=tuple(paths), out_dir=str(tmp_path / "out"), plot=True))
    g = next(g for g in res["groups"] if g["group"] == "sched_law")
    per = g["flops_savings"]["per_seed"]
    assert g["seeds"] == [0, 1, 2] and per == pytest.approx([0.2, 0.3, 0.4], abs=0.03)
    half = student_t.ppf(0.975, 2) * np.std(per, ddof=1) / math.sqrt(3)
    assert g["flops_savings"]["mean"] == pytest.approx(np.mean(per))
    assert g["flops_savings"]["ci95"] == pytest.approx([np.mean(per) - half, np.mean(per) + half])
    assert g["savings"] == g["flops_savings"]                       # --cost flops: the headline
    assert [s["best_static"] for s in res["seeds"]] == ["static_p7"] * 3
    doc = json.loads((tmp_path / "out" / "comparison.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"{c} in comparison.json"))
    assert doc["groups"][0]["flops_savings"]["n"] == 3 and (tmp_path / "out" / "comparison.png").stat().st_size > 0
    p14 = next(g for g in doc["groups"] if g["group"] == "static_p14")
    assert p14["flops_savings"]["mean"] is None and "no value in 3 of 3 seeds" in p14["flops_savings"]["reason"]


def test_one_seed_has_no_interval(tmp_path):
    g = next(g for g in run(statics(tmp_path) + [scheduled(tmp_path, law7(C / 0.7))])["groups"]
             if g["group"] == "sched_law")
    assert g["flops_savings"]["ci95"] is None and g["flops_savings"]["reason"] == "one seed: no interval"


def test_wall_cost_is_the_headline_and_both_are_reported(tmp_path, capsys):
    paths = statics(tmp_path)
    wall = C / 1e11 * np.where(np.arange(14) < 7, 1.0, 2.0)   # patch-7 steps of the schedule: twice as slow
    paths.append(scheduled(tmp_path, law7(C / 0.7), wall=np.cumsum(np.diff(C, prepend=0) / 1e11 * wall / (C / 1e11))))
    res = compare.main(compare.Config(runs=tuple(paths), out_dir=str(tmp_path / "out"), plot=False, cost="wall"))
    r = row(res, "sched_law")
    assert res["cost"] == "wall" and r["flops_savings"] > r["wall_savings"]
    g = next(g for g in res["groups"] if g["group"] == "sched_law")
    assert g["savings"] == g["wall_savings"] and g["savings"] != g["flops_savings"]
    out = capsys.readouterr().out
    assert "wall to target" in out and "flops saved" in out


def test_train_test_gap_per_run_and_kind(tmp_path):
    train = {"train_error": law7(C) - 0.05}
    paths = [write_run(tmp_path / "static_p7", law7(C), [{"patch": 7}] * 14, extra=train),
             write_run(tmp_path / "static_p14", law14(C), [{"patch": 14}] * 14,
                       extra={"train_error": law14(C) - 0.07})]
    res = run(paths)
    # test_error = fewshot10_error - 0.03 in these logs
    assert row(res, "static_p7")["final_train_test_gap"] == pytest.approx(0.02)
    assert res["final_train_test_gap_by_kind"]["static"] == pytest.approx(0.03)
    assert run(statics(tmp_path / "none"))["final_train_test_gap_by_kind"] == {}


def test_duplicate_run_of_one_seed_is_refused(tmp_path):
    paths = statics(tmp_path / "a") + statics(tmp_path / "b")
    with pytest.raises(compare.UserError, match="both run .static_p7. of seed 0"):
        run(paths)


def cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "lab" / "compare.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def cli_here(capsys, *args):
    """compare.cli in this process (what `python lab/compare.py` runs): (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = compare.cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys):
    paths = statics(tmp_path)
    out = tmp_path / "out"
    laws = tmp_path / "laws.json"
    laws.write_text(json.dumps({"version": 1, "metric": "test_error", "laws": []}))
    nometric = write_run(tmp_path / "other", law7(C), [{"patch": 7}] * 14)
    text = (Path(nometric) / "log.jsonl").read_text().replace("fewshot10_error", "val_loss")
    (Path(nometric) / "log.jsonl").write_text(text)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "log.jsonl").write_text('{"type": "header"}\n{"type": "eval", "flops": 1e11,\n')
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "log.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [((*paths, "--laws", laws), "runs fitted on another metric"),
             ((*paths, nometric), f"{Path(nometric) / 'log.jsonl'}: no record has metric"),
             ((*paths, broken), f"{broken / 'log.jsonl'}:2: cannot read"),
             ((*paths, binary), f"{binary / 'log.jsonl'}"),
             ((*paths, tmp_path / "missing"), "no such log"),
             ((*paths, tmp_path / "laws.json"), "laws.json")]
    for i, (args, msg) in enumerate(cases):     # the first in a real process, the others through the same cli()
        if i == 0:
            r = cli("--runs", *args, "--out-dir", out, "--no-plot")
            code, err = r.returncode, r.stderr
        else:
            code, _, err = cli_here(capsys, "--runs", *args, "--out-dir", out, "--no-plot")
        assert code == 2 and msg in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()
    code, _, err = cli_here(capsys, "--runs", *paths, "--out-dir", afile, "--no-plot")
    assert code == 2 and "is a file" in err and afile.read_text() == "x"


def test_given_target_without_a_static_run_reaching_it(tmp_path):
    r = run([scheduled(tmp_path, law7(C / 0.7))], target=0.2)["runs"][0]
    assert r["flops_to_target"] is not None and r["flops_savings"] is None
    assert r["reason"] == "no static run reaches the target: nothing to compare with"


def test_cli_as_the_pipeline_calls_it(tmp_path):
    paths = statics(tmp_path) + [scheduled(tmp_path, law7(C / 0.7))]
    laws = tmp_path / "laws.json"
    laws.write_text(json.dumps({"version": 1, "metric": "fewshot10_error", "laws": []}))
    r = cli("--runs", *paths, "--metric", "fewshot10_error", "--out-dir", tmp_path / "out", "--laws", laws)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert doc["best_static"] == "static_p7" and doc["metric"] == "fewshot10_error"
    assert row(doc, "sched_law")["flops_savings"] == pytest.approx(0.3, abs=0.03)
    assert not list((tmp_path / "out").glob("*.tmp*")) and (tmp_path / "out" / "comparison.png").exists()
    assert "sched_law" in r.stdout and "raw" in r.stdout


def test_pipeline_run_names_group_across_seeds():
    assert [compare.group_of(n) for n in ("static_p7_s0", "sched_law_s12", "ctx128_s1", "static_bs32", "seed3-x")] == \
        ["static_p7", "sched_law", "ctx128", "static_bs32", "x"]


@pytest.mark.parametrize("field, value", [("flops", "NaN"), ("flops", '"3e11"'), ("fewshot10_error", "Infinity"),
                                          ("fewshot10_error", '"0.2"'), ("fewshot10_error", "true")])
def test_a_record_that_is_not_a_finite_number_is_refused_naming_it(tmp_path, field, value):
    """Issue 25: no comparison is computed from NaN, infinite or string FLOPs and metrics; the line is named."""
    runs = statics(tmp_path)
    log = Path(runs[0]) / "log.jsonl"
    lines = log.read_text().splitlines()
    rec = json.loads(lines[3])
    lines[3] = json.dumps(rec).replace(f'"{field}": {json.dumps(rec[field])}', f'"{field}": {value}')
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(compare.UserError, match=rf"log.jsonl:4: {field} .* is not a finite number"):
        run(runs)


def test_a_stage_below_the_static_shapes_asymptote_is_read_raw_not_missed(tmp_path):
    """A grown model can end below the law of its shape trained from scratch (issue 24: depth growth); law(k C)
    cannot follow it for any k, so the stage is read off its own evaluations instead of 'never reached'."""
    paths = statics(tmp_path)
    below = np.linspace(law7(C[7]), 0.11, 14) + QUIET            # ends under patch 7's c = 0.12
    got = row(run(paths + [scheduled(tmp_path, below)]), "sched_law")
    assert got["stages"][1]["read"] == "raw"
    assert got["flops_savings"] is not None and got["flops_savings"] > 0.3
    ahead = law7(C / 0.7) + QUIET                                # one the shifted law follows: still fitted
    assert row(run(paths + [scheduled(tmp_path, ahead, name="f")]), "f")["stages"][1]["read"] == "fit"
