"""Tests for fit_laws.py: the law and its inverse, fitting, laws.json, the command line and bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fit_laws import Law, UserError, fit_law, load_laws, read_logs, save_laws

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRUE = dict(a=3.0e4, b=0.4, c=0.08, d=2.0e11)  # E(1e11) ~ 0.86, E(1e14) ~ 0.23


def write_log(path, C, E, config, run=None, metric="fewshot10_error"):
    """A log.jsonl in the trainers' format: header, then one eval record per (C, E)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps({"version": 1, "type": "header", "run": run or os.path.basename(os.path.dirname(path)),
                            "config": {"model": "V64-4", **config}, "metrics": [metric, "test_error"]}) + "\n")
        for i, (c, e) in enumerate(zip(C, E)):
            f.write(json.dumps({"type": "eval", "step": 10 * i, "samples": 1280 * i, "flops": c, "config": config,
                                "train_loss": 1.0, metric: e, "test_error": 0.9 * e, "wall": float(i)}) + "\n")


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


def test_inverse_of_law_is_identity():
    law = Law(**TRUE)
    C = np.geomspace(1e10, 1e16, 25)
    np.testing.assert_allclose(law.inverse(law(C)), C, rtol=1e-9)
    assert isinstance(law(1e12), float) and law.inverse(law(1e12)) == pytest.approx(1e12)
    assert np.isinf(law.inverse(TRUE["c"])) and np.isinf(law.inverse_slope(0.5 * TRUE["c"]))


def test_inverse_slope_matches_finite_differences():
    law = Law(**TRUE)
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
    config, C7, E7 = curves["patch=7"]
    assert config == {"patch": 7} and len(C7) > 40 and np.all(np.diff(C7) >= 0) and C7.min() >= 2e11


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


def bad_empty(root):
    (root / "bad").mkdir()
    (root / "bad" / "log.jsonl").write_text("")


@pytest.mark.parametrize("make_bad,expect", [
    (bad_nan, "nan"), (bad_order, "not increasing"), (bad_few, "need at least 5"),
    (bad_scheduled, "scheduled"), (bad_empty, "empty log")])
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
