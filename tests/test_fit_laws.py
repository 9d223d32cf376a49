"""Tests for fit_laws.py: the law and its inverse, fitting, laws.json, the command line and bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fit_laws import Law, UserError, fit_law, load_laws, read_logs, save_laws, summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRUE = dict(a=3.0e4, b=0.4, c=0.08, d=2.0e11)  # E(1e11) ~ 0.86, E(1e14) ~ 0.23


def write_log(path, C, E, config, run=None, metric="fewshot10_error", header=None, steps=None, wall=None):
    """A log.jsonl in the trainers' format: header (its config: model, config, `header`), then one eval record
    per (C, E) at `steps` (default 10 i) with training seconds `wall` (default i; False: no "wall")."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    steps = [10 * i for i in range(len(C))] if steps is None else steps
    wall = [float(i) for i in range(len(C))] if wall is None else wall
    with open(path, "w") as f:
        f.write(json.dumps({"version": 1, "type": "header", "run": run or os.path.basename(os.path.dirname(path)),
                            "config": {"model": "V64-4", **config, **(header or {})},
                            "metrics": [metric, "test_error"]}) + "\n")
        for i, (c, e) in enumerate(zip(C, E)):
            rec = {"type": "eval", "step": steps[i], "samples": 1280 * steps[i], "flops": c, "config": config,
                   "train_loss": 1.0, metric: e, "test_error": 0.9 * e}
            f.write(json.dumps({**rec, **({"wall": float(wall[i])} if wall is not False else {})}) + "\n")


def curve(n=40, noise=0.0, seed=0, **kw):
    law = Law(**{**TRUE, **kw})
    C = np.geomspace(1e11, 1e14, n)
    return C, law(C) * np.exp(noise * np.random.default_rng(seed).standard_normal(n))


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "fit_laws.py"), *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)


# --- the law -------------------------------------------------------------------------------------------------

def test_fit_recovers_noiseless_law():
    C, E = curve()
    law = fit_law(C, E, extrap_frac=None)
    for k, v in TRUE.items():
        assert getattr(law, k) == pytest.approx(v, rel=0.02), k
    assert np.max(np.abs(law(C) / E - 1)) < 1e-3
    assert law.starts_converged >= 1 and law.starts_at_best >= 1 and law.residual < 1e-3
    assert law.flops_range == (1e11, 1e14)


def test_law_is_eq_1():
    law = Law(**TRUE)
    C = np.geomspace(1e10, 1e16, 25)
    np.testing.assert_allclose(law(C), TRUE["a"] * (C + TRUE["d"]) ** -TRUE["b"] + TRUE["c"], rtol=1e-12)
    assert isinstance(law(1e12), float)


def test_inverse_slope_matches_finite_differences():
    import schedule                                      # the inverse (Eq. 2's g_P) and its slope q_P: schedule.py's
    law = schedule.Law("x", {}, **TRUE)
    C = np.geomspace(1e10, 1e16, 25)
    np.testing.assert_allclose(law.inverse(law(C)), C, rtol=1e-9)
    assert np.isinf(law.inverse(TRUE["c"])) and np.isinf(law.inverse(0.5 * TRUE["c"]))
    E = np.linspace(0.1, 0.8, 15)
    h = 1e-6
    fd = (law.inverse(E + h) - law.inverse(E - h)) / (2 * h)
    np.testing.assert_allclose(law.inverse_slope(E), fd, rtol=1e-5)
    assert np.all(law.inverse_slope(E) < 0)


def test_noisy_fit_interval_and_extrapolation():
    C, E = curve(n=120, noise=0.01)
    law = fit_law(C, E, bootstrap=20, seed=0, predict_at=[3e14])
    assert law.ci["n"] == 20 and law.boot.shape == (20, 4)
    lo, hi = law.ci["b"]
    assert lo <= law.b <= hi
    (last,) = [p for p in law.ci["E"] if p["flops"] == 3e14]
    assert last["lo"] <= law(3e14) <= last["hi"]
    ex = law.extrapolation
    assert ex["n_test"] > 0 and ex["rel_last"] < 0.05 and ex["log_rmse"] < 0.05
    assert fit_law(C, E, bootstrap=20, seed=0, predict_at=[3e14], extrap_frac=None).ci == law.ci  # fixed seed


def test_fit_law_rejects_bad_input():
    C, E = curve(n=10)
    with pytest.raises(UserError, match="at least 5"):
        fit_law(C[:4], E[:4])
    with pytest.raises(UserError, match="finite"):
        fit_law(C, np.where(np.arange(10) == 3, np.nan, E))


def test_laws_json_round_trip(tmp_path):
    C, E = curve(n=60, noise=0.01)
    laws = [fit_law(C, E, name="patch=7", config={"patch": 7}, bootstrap=5),
            fit_law(C, E * 1.1, name="patch=14", config={"patch": 14}, extrap_frac=None)]
    path = tmp_path / "laws.json"
    save_laws(laws, path, metric="fewshot10_error")
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and doc["metric"] == "fewshot10_error" and doc["form"] == "E = a*(C+d)**(-b) + c"
    back = load_laws(path)
    for old, new in zip(laws, back):
        for k in ("name", "config", "a", "b", "c", "d", "flops_range", "ci", "extrapolation", "starts_converged"):
            assert getattr(new, k) == getattr(old, k), k
        assert new.metric == "fewshot10_error" and new(1e13) == old(1e13)
    # a hand-written file with only the contract's fields reads too
    path.write_text(json.dumps({"version": 1, "metric": "val_loss", "laws": [{"config": {"context": 64}, **TRUE}]}))
    (law,) = load_laws(path)
    assert law.name == "context=64" and law(1e12) == Law(**TRUE)(1e12)
    path.write_text(json.dumps({"version": 1, "laws": [{"config": {}, **TRUE, "b": -1}]}))
    with pytest.raises(UserError, match=r"laws\[0\].*'b'"):
        load_laws(path)


# --- logs and the command line -----------------------------------------------------------------------------

def make_runs(root, noise=0.01):
    for i, (patch, scale) in enumerate([(14, 1.0), (7, 1.15)]):
        C, E = curve(n=30, noise=noise, seed=i)
        write_log(root / f"p{patch}" / "log.jsonl", np.r_[0.0, C], np.r_[0.9, E * scale], {"patch": patch})


def test_read_logs_groups_by_config(tmp_path):
    make_runs(tmp_path / "runs")
    C, E = curve(n=30, seed=5)
    write_log(tmp_path / "runs" / "p7-seed1" / "log.jsonl", C * 1.01, E, {"patch": 7})  # pooled with p7
    curves = read_logs([str(tmp_path / "runs")], "fewshot10_error", min_flops=2e11)
    assert set(curves) == {"patch=14", "patch=7"}
    config, C7, E7 = curves["patch=7"].config, curves["patch=7"].C, curves["patch=7"].E
    assert config == {"patch": 7} and len(C7) > 40 and np.all(np.diff(C7) >= 0) and C7.min() >= 2e11
    assert len(E7) == len(C7) and np.all((E7 > 0) & (E7 < 1))    # the two seeds' errors, beside their FLOPs


def test_cli_writes_laws_and_plot(tmp_path):
    make_runs(tmp_path / "runs")
    out = tmp_path / "fit" / "laws.json"
    r = run_cli("--logs", tmp_path / "runs" / "p*", "--out", out, "--bootstrap", 10, "--predict-at", 1e15)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert [law["config"] for law in doc["laws"]] == [{"patch": 14}, {"patch": 7}]
    assert doc["laws"][0]["ci"]["n"] == 10 and "rel_last" in doc["laws"][0]["extrapolation"]
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "patch=14" in r.stdout and not list(tmp_path.glob("fit/*.tmp"))
    laws = load_laws(out)
    assert laws[1](1e14) == pytest.approx(1.15 * Law(**TRUE)(1e14), rel=0.03)


def bad_nan(root):
    C, E = curve(n=20)
    write_log(root / "bad" / "log.jsonl", C, np.where(np.arange(20) == 7, np.nan, E), {"patch": 4})


def bad_order(root):
    C, E = curve(n=20)
    write_log(root / "bad" / "log.jsonl", C[[0, 1, 2, 4, 3, *range(5, 20)]], E, {"patch": 4})


def bad_few(root):
    C, E = curve(n=4)
    write_log(root / "bad" / "log.jsonl", C, E, {"patch": 4})


def bad_scheduled(root):
    C, E = curve(n=20)
    write_log(root / "bad" / "log.jsonl", C, E, {"patch": 4})
    lines = (root / "bad" / "log.jsonl").read_text().splitlines()
    lines[-1] = lines[-1].replace('"patch": 4', '"patch": 2')
    (root / "bad" / "log.jsonl").write_text("\n".join(lines) + "\n")


def bad_subnormal(root):          # issue 25: a metric too small for the log-log fit
    C, E = curve(n=20)
    E[5] = 5e-324
    write_log(root / "bad" / "log.jsonl", C, E, {"patch": 4})


def bad_empty(root):
    (root / "bad").mkdir()
    (root / "bad" / "log.jsonl").write_text("")


@pytest.mark.parametrize("make_bad,expect", [
    (bad_nan, "nan"), (bad_order, "not increasing"), (bad_few, "need at least 5"),
    (bad_scheduled, "scheduled"), (bad_empty, "empty log"), (bad_subnormal, "5e-324")])
def test_cli_bad_run_exit_2_and_skip_bad(tmp_path, make_bad, expect):
    make_runs(tmp_path / "runs")
    make_bad(tmp_path / "runs")
    out = tmp_path / "laws.json"
    out.write_text("GOOD")
    r = run_cli("--logs", tmp_path / "runs", "--out", out, "--bootstrap", 3)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("fit_laws.py: error:")
    assert expect in r.stderr.lower() and "bad" in r.stderr, r.stderr
    assert out.read_text() == "GOOD" and not (tmp_path / "laws.png").exists()
    if make_bad is bad_nan:  # --skip-bad: a warning, the other configurations fitted
        r = run_cli("--logs", tmp_path / "runs", "--out", out, "--bootstrap", 3, "--no-plot", "--skip-bad")
        assert r.returncode == 0 and "warning" in r.stderr and "bad" in r.stderr, r.stderr
        assert [law.name for law in load_laws(out)] == ["patch=14", "patch=7"]


@pytest.mark.parametrize("args,expect", [
    (["--logs", "MISSING"], "no such file"), (["--logs", "runs/nothing*"], "no file or folder matches"),
    (["--logs", "runs", "--metric", "top5_error"], "fewshot10_error, test_error, train_loss")])
def test_cli_missing_logs_and_unknown_metric(tmp_path, args, expect):
    make_runs(tmp_path / "runs")
    (tmp_path / "laws.json").write_text("GOOD")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "fit_laws.py"), *args, "--no-plot"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and expect in r.stderr, r.stderr
    assert (tmp_path / "laws.json").read_text() == "GOOD"


# --- warm-up -------------------------------------------------------------------------------------------------

FPS = 1e10  # FLOPs per step of the warm-up test runs (so the end of warm-up is at warmup * FPS FLOPs)


def warm_run(path, warmup, n=40, seed=0, config=None, junk=True):
    """A run of n evals every 25 steps (FLOPs = FPS * step) on the TRUE law, whose points before the end of
    warm-up (step < warmup) are, with junk, a flat 0.95: not on the law."""
    steps = [25 * (i + 1) for i in range(n)]
    C = np.array(steps, float) * FPS * 100  # 2.5e13 .. 1e15
    E = Law(**{**TRUE, "d": 2e13})(C)
    E = np.where(np.array(steps) < warmup, 0.95, E) if junk else E
    write_log(path, C, E, config or {"patch": 7}, header={"warmup": warmup, "seed": seed}, steps=steps)
    return C, E


def test_warmup_points_are_dropped_at_the_interpolated_end_of_warmup(tmp_path):
    C, _ = warm_run(tmp_path / "r" / "log.jsonl", warmup=110)  # between the evals at steps 100 and 125
    warm = 110 * FPS * 100
    cv = read_logs([str(tmp_path / "r")], "fewshot10_error")["patch=7"]
    assert cv.C.min() >= warm and cv.warmup_dropped == int((C < warm).sum()) == 4
    assert len(cv.C) == len(C) - 4 and cv.runs == ["r"] and cv.seeds == [0]
    kept = read_logs([str(tmp_path / "r")], "fewshot10_error", keep_warmup=True)["patch=7"]
    assert len(kept.C) == len(C) and kept.warmup_dropped == 0


def test_warmup_before_the_first_eval_is_placed_at_the_runs_flops_per_step(tmp_path):
    write_log(tmp_path / "r" / "log.jsonl", np.arange(1, 21) * 1e12, np.geomspace(0.9, 0.3, 20), {"patch": 7},
              header={"warmup": 35}, steps=list(range(10, 210, 10)))  # 1e11 FLOPs a step: warm-up ends at 3.5e12
    cv = read_logs([str(tmp_path / "r")], "fewshot10_error")["patch=7"]
    assert cv.C.min() == 4e12 and cv.warmup_dropped == 3


def test_fit_past_warmup_recovers_the_law_that_warmup_points_spoil(tmp_path):
    warm_run(tmp_path / "r" / "log.jsonl", warmup=200)
    out = tmp_path / "laws.json"
    r = run_cli("--logs", tmp_path / "r", "--out", out, "--bootstrap", 0, "--no-plot")
    assert r.returncode == 0, r.stderr
    assert "dropped 7 points" in r.stdout and "warm-up" in r.stdout
    (law,) = load_laws(out)
    assert law.b == pytest.approx(TRUE["b"], rel=0.02) and law.warmup_dropped == 7 and law.at_bound == []
    r = run_cli("--logs", tmp_path / "r", "--out", out, "--bootstrap", 0, "--no-plot", "--keep-warmup")
    assert r.returncode == 0 and "kept (--keep-warmup)" in r.stdout, r.stderr
    assert load_laws(out)[0].b != pytest.approx(TRUE["b"], rel=0.02)  # the flat warm-up bends the fit


def test_warmup_past_every_point_is_one_line_error(tmp_path):
    warm_run(tmp_path / "r" / "log.jsonl", warmup=10 ** 6, junk=False)
    r = run_cli("--logs", tmp_path / "r", "--out", tmp_path / "laws.json", "--no-plot")
    assert r.returncode == 2 and "past warm-up" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# --- parameters at a bound -------------------------------------------------------------------------------------

def test_parameter_at_the_search_box_limit_is_flagged(tmp_path):
    C = np.geomspace(1e11, 1e14, 40)
    steep = Law(a=0.8 * (1e11 + 1e13) ** 8, b=8.0, c=0.1, d=1e13)  # b = 8 is beyond the box's b <= 5
    law = fit_law(C, steep(C), name="steep", extrap_frac=None)
    assert law.b == pytest.approx(5.0) and law.at_bound == ["b"]
    assert "law steep: b = 5 at a limit" in summary([law])
    ok = fit_law(C, Law(**TRUE)(C), extrap_frac=None)
    assert ok.at_bound == [] and ok.at_zero == []
    pure = fit_law(C, Law(a=3e4, b=0.4, c=0.0, d=0.0)(C), extrap_frac=None)  # no floor: c = 0, a valid law
    assert pure.at_bound == [] and pure.at_zero == ["c"]
    path = tmp_path / "laws.json"
    save_laws([law, ok], path)
    doc = json.loads(path.read_text())
    assert [d["at_bound"] for d in doc["laws"]] == [["b"], []]
    assert load_laws(path)[0].at_bound == ["b"]


# --- seeds -----------------------------------------------------------------------------------------------------

def seed_runs(root):
    for seed in (0, 1, 2):
        C, E = curve(n=30, noise=0.02, seed=seed)
        write_log(root / f"p7-s{seed}" / "log.jsonl", C, E, {"patch": 7}, header={"seed": seed, "warmup": 0})
    C, E = curve(n=30, noise=0.02, seed=9)
    write_log(root / "p14-s0" / "log.jsonl", C, 1.1 * E, {"patch": 14}, header={"seed": 0, "warmup": 0})


def test_seeds_pooled_by_default_and_per_seed_on_request(tmp_path):
    seed_runs(tmp_path / "runs")
    out = tmp_path / "laws.json"
    r = run_cli("--logs", tmp_path / "runs", "--out", out, "--bootstrap", 0, "--no-plot")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    p7 = next(d for d in doc["laws"] if d["config"] == {"patch": 7})
    assert len(doc["laws"]) == 2 and p7["seeds"] == [0, 1, 2] and p7["runs"] == ["p7-s0", "p7-s1", "p7-s2"]
    assert p7["n_raw"] == 90 and p7["seed"] is None
    r = run_cli("--logs", tmp_path / "runs", "--out", out, "--bootstrap", 0, "--no-plot", "--per-seed")
    assert r.returncode == 0, r.stderr
    laws = load_laws(out)
    assert sorted(law.name for law in laws) == ["patch=14 seed=0", "patch=7 seed=0", "patch=7 seed=1",
                                                "patch=7 seed=2"]
    one = next(law for law in laws if law.name == "patch=7 seed=1")
    assert one.seed == 1 and one.seeds == [1] and one.n_raw == 30 and one.config == {"patch": 7}
    assert len({round(law.b, 6) for law in laws if law.config == {"patch": 7}}) == 3  # three different fits


# --- time as the cost ------------------------------------------------------------------------------------------

def test_cost_wall_fits_on_seconds_and_records_flops_per_second(tmp_path):
    C, E = curve(n=30, noise=0.005)
    rate = 2e10  # FLOPs a second
    write_log(tmp_path / "p7" / "log.jsonl", C, E, {"patch": 7}, wall=C / rate)
    write_log(tmp_path / "p14" / "log.jsonl", C, E + 0.05, {"patch": 14}, wall=C / (2 * rate))  # faster, worse
    out = tmp_path / "laws.json"
    r = run_cli("--logs", tmp_path / "p7", tmp_path / "p14", "--out", out, "--bootstrap", 3, "--cost", "wall")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["cost"] == "wall" and "seconds" in doc["laws"][0]["ci"]["E"][0]
    p7, p14 = load_laws(out)
    assert p7.cost == "wall" and p7.flops_per_second == pytest.approx(rate) and p14.flops_per_second == \
        pytest.approx(2 * rate)
    assert p7.cost_range == pytest.approx((C[0] / rate, C[-1] / rate))
    assert p7.flops_range == pytest.approx((C[0], C[-1]))
    assert p7(C[10] / rate) == pytest.approx(Law(**TRUE)(C[10]), rel=0.02)  # the same curve, seconds on the x-axis
    # schedule.py reads it: a schedule in seconds whose switch points the trainers get in FLOPs
    r = subprocess.run([sys.executable, os.path.join(ROOT, "schedule.py"), "--laws", str(out), "--budget",
                        str(C[-1] / rate), "--out", str(tmp_path / "s.json"), "--no-plot"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sched = json.loads((tmp_path / "s.json").read_text())
    assert sched["cost"] == "wall" and [s["name"] for s in sched["stages"]] == ["patch=14", "patch=7"]
    first = sched["stages"][0]
    assert first["flops_end"] == pytest.approx(first["cost_end"] * 2 * rate)
    assert json.loads(run_cli("--logs", tmp_path / "p7", tmp_path / "p14", "--out", out, "--bootstrap", 0,
                              "--no-plot").returncode == 0 and out.read_text())["cost"] == "flops"


def test_cost_wall_refuses_logs_without_wall(tmp_path):
    C, E = curve(n=20)
    write_log(tmp_path / "old" / "log.jsonl", C, E, {"patch": 7}, wall=False)
    (tmp_path / "laws.json").write_text("GOOD")
    r = run_cli("--logs", tmp_path / "old", "--out", tmp_path / "laws.json", "--cost", "wall")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "'wall'" in r.stderr and "old" in r.stderr and (tmp_path / "laws.json").read_text() == "GOOD"
    r = run_cli("--logs", tmp_path / "old", "--out", tmp_path / "laws.json", "--cost", "seconds")
    assert r.returncode == 2 and "--cost" in r.stderr


# --- strict JSON and output paths --------------------------------------------------------------------------

def strict_json(text):
    def bad(token):
        raise AssertionError(f"not strict JSON: {token}")
    return json.loads(text, parse_constant=bad)


def test_extreme_inputs_never_write_infinity(tmp_path):
    s = 1.7e308
    C = np.geomspace(1e306, s, 30)
    E = 0.9 * ((C / s + 100) / 100) ** -0.5  # wants d = 100 x the largest compute: overflows float64
    with pytest.raises(UserError, match="d = inf is not finite"):
        fit_law(C, E)
    write_log(tmp_path / "runs" / "huge" / "log.jsonl", C, E, {"patch": 2})
    make_runs(tmp_path / "runs")
    out = tmp_path / "laws.json"
    r = run_cli("--logs", tmp_path / "runs", "--out", out, "--bootstrap", 3, "--no-plot")
    assert r.returncode == 2 and "not finite" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("--logs", tmp_path / "runs", "--out", out, "--bootstrap", 3, "--no-plot", "--skip-bad")
    assert r.returncode == 0 and "not finite" in r.stderr, r.stderr
    assert [d["name"] for d in strict_json(out.read_text())["laws"]] == ["patch=14", "patch=7"]
    # a value in the intervals that is not finite is written as null, with its reason
    law = fit_law(*curve(n=30), bootstrap=3)
    law.ci["a"][1] = float("inf")
    save_laws([law], out)
    d = strict_json(out.read_text())["laws"][0]
    assert d["ci"]["a"][1] is None and "ci.a[1]" in d["null_reason"]
    save_laws([Law(name="hand", config={"patch": 7}, **TRUE)], out)  # a hand-made law: open range (0, inf)
    assert strict_json(out.read_text())["laws"][0]["flops_range"] == [0.0, None]
    assert load_laws(out)[0].flops_range == (0.0, float("inf"))


@pytest.mark.parametrize("out, expect", [("folder", "is a folder"), ("laws.png", "plot's own path")])
def test_out_folder_or_plot_path_refused_before_any_work(tmp_path, out, expect):
    make_runs(tmp_path / "runs")
    (tmp_path / "folder").mkdir()
    r = run_cli("--logs", tmp_path / "runs", "--out", tmp_path / out)
    assert r.returncode == 2 and expect in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["folder", "runs"]
    assert not list((tmp_path / "folder").iterdir())


# --- one vocabulary with schedule.py -------------------------------------------------------------------------

def test_law_vocabulary_matches_schedule():
    import schedule
    for p in (TRUE, dict(a=2.0, b=0.7, c=0.1, d=0.5)):  # d < 1: starts at C = 1
        ours, theirs = Law(**p), schedule.Law("x", {"patch": 7}, **p)
        C = np.r_[0.0, np.geomspace(1.0, 1e16, 30)]
        np.testing.assert_allclose(ours(C), theirs(C), rtol=1e-12)
        assert theirs.inverse(ours(0.0) * 1.5) == 0.0 and theirs.inverse_slope(p["c"]) == -np.inf
        assert isinstance(ours(1e12), float) and isinstance(theirs(1e12), float)
        assert isinstance(theirs.inverse(0.3), float)


def test_both_loaders_return_a_list_of_laws(tmp_path):
    import schedule
    C, E = curve(n=30)
    laws = [fit_law(C, E, name="patch=7", config={"patch": 7}), fit_law(C, E * 1.1, name="patch=14",
                                                                      config={"patch": 14})]
    save_laws(laws, tmp_path / "laws.json", metric="val_loss")
    ours, theirs = load_laws(tmp_path / "laws.json"), schedule.load_laws(tmp_path / "laws.json")
    assert [law.name for law in ours] == [law.name for law in theirs] == ["patch=7", "patch=14"]
    assert {law.metric for law in ours + theirs} == {"val_loss"} and {law.cost for law in ours + theirs} == {"flops"}
    assert [law(1e13) for law in ours] == [law(1e13) for law in theirs]
