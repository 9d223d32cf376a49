"""Tests for schedule.py: Eq. 2 switch points against closed form, the DP against brute force, the reader, the CLI."""
import itertools
import json
import math
import re
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.integrate import quad

import schedule as sch
from lab import baselines
from schedule import Law, Schedule, ScheduleError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def law(name, config, c, b, d, f0=0.9):
    """A law through error f0 at C = 0."""
    return Law(name, config, (f0 - c) * d ** b, b, c, d)


def write_laws(path, laws, **extra):
    rows = [{"name": l.name, "config": l.config, "a": l.a, "b": l.b, "c": l.c, "d": l.d,
             "flops_range": [1e9, 1e16]} for l in laws]
    path.write_text(json.dumps({"version": 1, "metric": "fewshot10_error", "laws": rows, **extra}))
    return str(path)


def cost(laws, stages, S=None):
    S = np.zeros((len(laws), len(laws))) if S is None else S
    return sch.path_flops(laws, stages, S)[-1][1]


# two laws with the same c: log|g'| is linear in log(E - c), so the slopes cross in closed form
PAIR = [law("patch=14", {"patch": 14}, 0.1, 0.3, 1e10), law("patch=7", {"patch": 7}, 0.1, 0.6, 1e12)]


def closed_form_crossing(p, q):
    line = lambda l: (-math.log(l.a * l.b) + (1 + 1 / l.b) * math.log(l.a), 1 + 1 / l.b)  # log|g'| = al - be*x
    (ap, bp), (aq, bq) = line(p), line(q)
    return p.c + math.exp((ap - aq) / (bp - bq))


@pytest.mark.parametrize("grid", [50, 2000])
def test_switch_point_and_compute_match_closed_form(grid):
    target = 0.12
    stages = sch.greedy_path(PAIR, target, grid)
    assert [p for p, _, _ in stages] == [0, 1]
    e_star = closed_form_crossing(*PAIR)
    assert stages[0][2] == pytest.approx(e_star, rel=1e-6)
    # predicted compute == integral of min_P |g_P'(E)| from the target up to the start f(0)
    m = lambda E: min(-l.inverse_slope(E) for l in PAIR)
    top = min(l.start for l in PAIR)
    integral = quad(m, target, e_star, epsrel=1e-12, limit=200)[0] + quad(m, e_star, top, epsrel=1e-12, limit=200)[0]
    assert cost(PAIR, stages) == pytest.approx(integral, rel=1e-6)
    doc = sch.make_schedule(PAIR, target, rules=sch.parse_rules(allow_any=True), grid=grid)
    assert doc["method"] == "greedy" and doc["predicted"]["flops"] == pytest.approx(integral, rel=1e-6)
    # the schedule beats (or ties) every static configuration
    assert doc["predicted"]["savings"] > 0
    assert all(s["flops"] is None or s["flops"] >= doc["predicted"]["flops"] for s in doc["predicted"]["static"])


def test_dp_without_constraints_finds_the_greedy_optimum():
    M = len(PAIR)
    dp, _ = sch.dp_path(PAIR, 0.12, 400, np.ones((M, M), bool), np.zeros((M, M)))
    E = sch.error_grid(PAIR, 0.12, max(l.start for l in PAIR), 400)
    refined = sch.refine(PAIR, dp, E)
    assert cost(PAIR, refined) == pytest.approx(cost(PAIR, sch.greedy_path(PAIR, 0.12)), rel=1e-9)


# patch=7 is cheapest early, patch=14 late: the greedy partition goes 7 -> 14, which "patch never grows" forbids;
# patch=4 starts higher (f(0) = 1.2), so fresh starts at different levels are exercised too
CONFLICT = [law("patch=7", {"patch": 7}, 0.25, 0.3, 1e10), law("patch=14", {"patch": 14}, 0.1, 0.6, 1e12),
            law("patch=4", {"patch": 4}, 0.05, 0.5, 1e13, f0=1.2)]


def brute_force(laws, E, allowed, S):
    """Every grid path: start fresh in R at level E[j] (compute g_R from its C = 0), switch only at levels."""
    def g(p, e):
        l = laws[p]
        return ((e - l.c) / l.a) ** (-1 / l.b) - l.d if l.c < e <= l.start else None
    best, n, M = math.inf, len(E), len(laws)
    for j, R in itertools.product(range(n), range(M)):
        if g(R, E[j]) is None:
            continue
        for labels in itertools.product(range(M), repeat=n - 1 - j):
            total, prev = g(R, E[j]), R
            for k, L in enumerate(labels, start=j):
                if L != prev:
                    if not allowed[prev][L]:
                        break
                    total += S[prev][L]
                ga, gb = g(L, E[k]), g(L, E[k + 1])
                if ga is None or gb is None:
                    break
                total, prev = total + gb - ga, L
            else:
                best = min(best, total)
    return best


# the greedy partition starts in patch=7 (lowest f(0)) for zero compute, then 14 -> 7: the DP must find 14 -> 7
CONFLICT2 = [law("patch=14", {"patch": 14}, 0.178, 0.678, 2.7e10, f0=0.992),
             law("patch=7", {"patch": 7}, 0.128, 0.44, 3.0e12, f0=0.911),
             law("patch=4", {"patch": 4}, 0.187, 0.262, 1.8e12, f0=0.931)]


@pytest.mark.parametrize("allow_any", [False, True])
@pytest.mark.parametrize("switch", [0.0, 3e11])
@pytest.mark.parametrize("laws, target, n", [(CONFLICT, 0.13, 7), (CONFLICT2, 0.148, 7), (CONFLICT2, 0.148, 8)])
def test_dp_matches_brute_force_on_small_grid(allow_any, switch, laws, target, n):
    rules = sch.parse_rules(allow_any)
    greedy = sch.greedy_path(laws, target)
    assert any(sch.transition_error(laws[a[0]].config, laws[b[0]].config) for a, b in zip(greedy, greedy[1:]))
    allowed = np.array([[sch.transition_error(q.config, p.config, rules) is None for p in laws] for q in laws])
    S = sch.switch_costs(laws, switch)
    stages, grid_cost = sch.dp_path(laws, target, n, allowed, S)
    E = sch.error_grid(laws, target, max(l.start for l in laws), n)
    assert grid_cost == pytest.approx(brute_force(laws, E, allowed, S), rel=1e-9)
    assert cost(laws, stages, S) == pytest.approx(grid_cost, rel=1e-9)  # the returned path costs what the DP says
    sch.check_transitions([laws[p].config for p, _, _ in stages], rules)
    assert cost(laws, sch.refine(laws, stages, E), S) <= grid_cost * (1 + 1e-12)


def test_constrained_schedule_is_allowed_and_no_worse_than_other_allowed_paths():
    doc = sch.make_schedule(CONFLICT, 0.13, grid=400)
    assert doc["method"] == "dp"
    sch.check_transitions([s["config"] for s in doc["stages"]])
    # any allowed path on the same grid costs at least as much (up to the grid error the refinement removes)
    allowed = np.array([[sch.transition_error(q.config, p.config) is None for p in CONFLICT] for q in CONFLICT])
    E = sch.error_grid(CONFLICT, 0.13, 1.2, 7)
    assert doc["predicted"]["flops"] <= brute_force(CONFLICT, E, allowed, np.zeros((3, 3))) * (1 + 1e-9)
    free = sch.make_schedule(CONFLICT, 0.13, rules=sch.parse_rules(allow_any=True))
    assert free["method"] == "greedy" and free["predicted"]["flops"] < doc["predicted"]["flops"]


def test_dp_finds_a_multi_stage_allowed_path():
    greedy = sch.greedy_path(CONFLICT2, 0.148)
    assert [CONFLICT2[p].name for p, _, _ in greedy] == ["patch=7", "patch=14", "patch=7"]
    doc = sch.make_schedule(CONFLICT2, 0.148)
    assert doc["method"] == "dp" and [s["name"] for s in doc["stages"]] == ["patch=14", "patch=7"]
    first, second = doc["stages"]
    assert first["error_start"] == pytest.approx(CONFLICT2[0].start) and first["flops_start"] == 0.0
    # off the grid, the 14 -> 7 switch sits where the slopes cross (the greedy's crossing)
    assert first["error_end"] == pytest.approx(greedy[1][2], rel=1e-9)
    fine = sch.make_schedule(CONFLICT2, 0.148, grid=20000)
    assert doc["predicted"]["flops"] == pytest.approx(fine["predicted"]["flops"], rel=1e-9)


def test_switch_cost_enters_the_optimisation():
    free = sch.make_schedule(PAIR, 0.12, grid=400)
    assert len(free["stages"]) == 2
    huge = sch.make_schedule(PAIR, 0.12, switch_cost=1e30, grid=400)
    assert len(huge["stages"]) == 1  # a switch that costs more than it saves is not taken
    per_key = sch.make_schedule(PAIR, 0.12, switch_cost_key={"patch": 1e30}, grid=400)
    assert len(per_key["stages"]) == 1
    some = sch.make_schedule(PAIR, 0.12, switch_cost=1e9, grid=400)
    s = some["stages"]
    assert s[1]["flops_end"] - s[1]["flops_start"] == pytest.approx(
        1e9 + float(PAIR[1].inverse(0.12) - PAIR[1].inverse(s[1]["error_start"])), rel=1e-9)


def test_parse_switch_cost():
    assert sch.parse_switch_cost(["1e11", "width=2e12"]) == (1e11, {"width": 2e12})
    assert sch.parse_switch_cost([]) == (0.0, {})
    for bad in (["-1"], ["width=x"], ["nan"]):
        with pytest.raises(ScheduleError, match="--switch-cost"):
            sch.parse_switch_cost(bad)


def test_twenty_configurations_joint_keys():
    rng = np.random.default_rng(0)
    laws = [law(f"p{p}w{w}", {"patch": p, "width": w}, rng.uniform(0.05, 0.3), rng.uniform(0.25, 0.7),
                10 ** rng.uniform(10, 13), f0=rng.uniform(0.85, 1.0))
            for p, w in itertools.product((28, 14, 7, 4), (64, 128, 192, 256, 384))]
    target = min(l.c for l in laws) + 0.02
    for rules in (None, sch.parse_rules(allow_any=True)):
        doc = sch.make_schedule(laws, target, rules=rules)  # timing: bench/bench_schedule.py
        sch.check_transitions([s["config"] for s in doc["stages"]], rules)
        assert doc["predicted"]["flops"] <= doc["predicted"]["best_static"]["flops"] * (1 + 1e-9)


def test_objective_has_no_rule_and_keys_compare_one_by_one():
    assert sch.transition_error({"objective": "distill"}, {"objective": "supervised"}) is None
    assert sch.transition_error({"patch": 7}, {"width": 64}) is None  # no shared key
    assert "width" in sch.transition_error({"patch": 14, "width": 384}, {"patch": 7, "width": 192})
    assert "patch" in sch.transition_error({"patch": 7, "width": 192}, {"patch": 14, "width": 384})
    assert sch.transition_error({"patch": 7}, {"patch": 14}, sch.parse_rules(items=["patch=any"])) is None


def test_budget_target_is_the_best_static_error():
    target = sch.target_for(PAIR, budget=1e14)
    assert target == pytest.approx(min(float(l(1e14)) for l in PAIR))
    doc = sch.make_schedule(PAIR, target)
    assert doc["predicted"]["best_static"]["flops"] == pytest.approx(1e14, rel=1e-9)


def test_baselines_share_configs_and_compute():
    doc = sch.make_schedule(PAIR, 0.12)
    F = doc["predicted"]["flops"]
    out = baselines.baseline_schedules(PAIR, doc)
    lin, log, rnd = out["linear"], out["log"], out["random"]
    assert [s["config"] for s in lin["stages"]] == [s["config"] for s in doc["stages"]]
    assert [s["flops_start"] for s in lin["stages"]] == pytest.approx([0, F / 2])
    assert log["stages"][1]["flops_start"] == pytest.approx(math.sqrt(log["log_start_flops"] * F))
    for b in (lin, log):
        assert b["stages"][-1]["flops_end"] == pytest.approx(F)
        assert b["predicted"]["error"] >= 0.12 * (1 - 1e-9)  # the law schedule is optimal in the model
    assert rnd["random"] and rnd["kind"] == "random"
    for kind, b in out.items():
        s = Schedule.from_dict(json.loads(json.dumps(b)))
        assert s.kind == kind and s.random == (kind == "random")


# ----------------------------------------------------------------------------- the reader

DOC = {"version": 1, "kind": "law", "target_error": 0.1,
       "stages": [{"config": {"patch": 14}, "error_start": 0.9, "error_end": 0.3, "flops_start": 0.0, "flops_end": 10.0},
                  {"config": {"patch": 7}, "error_start": 0.3, "error_end": 0.15, "flops_start": 10.0, "flops_end": 50.0},
                  {"config": {"patch": 4}, "error_start": 0.15, "error_end": 0.1, "flops_start": 50.0, "flops_end": 90.0}]}


def test_load_and_stage_at(tmp_path):
    p = tmp_path / "schedule.json"
    p.write_text(json.dumps(DOC))
    s = Schedule.load(p)
    assert s.kind == "law" and not s.random and len(s.stages) == 3
    assert s.configs == [{"patch": 14}, {"patch": 7}, {"patch": 4}]
    assert s.stages[1] == sch.Stage(1, {"patch": 7}, 0.3, 0.15, 10.0, 50.0)
    assert [s.stage_at(flops=x).index for x in (-1, 0, 9.9, 10, 49, 50, 1e9)] == [0, 0, 0, 1, 1, 2, 2]
    assert [s.stage_at(error=e).index for e in (0.95, 0.31, 0.3, 0.2, 0.15, 0.12, 0.05)] == [0, 0, 1, 1, 2, 2, 2]
    s.check_transitions()
    with pytest.raises(TypeError):
        s.stage_at()


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(version=2), "'version'"),
    (lambda d: d.update(stages=[]), "'stages'"),
    (lambda d: d["stages"][1].pop("config"), "'stages[1].config'"),
    (lambda d: d["stages"][2].update(flops_start=5.0), "'stages[2].flops_start'"),
    (lambda d: d["stages"][0].update(error_end="x"), "'stages[0].error_end'"),
    (lambda d: d["stages"][0].pop("flops_start"), "'stages[0].flops_start'"),
])
def test_load_rejects_bad_schedules(tmp_path, edit, field):
    d = json.loads(json.dumps(DOC))
    edit(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ScheduleError, match=re.escape(field)) as e:
        Schedule.load(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_load_missing_and_malformed_files(tmp_path):
    with pytest.raises(ScheduleError, match="not found"):
        Schedule.load(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ScheduleError, match="not valid JSON"):
        Schedule.load(tmp_path / "x.json")


def test_forbidden_transition_in_a_schedule():
    d = json.loads(json.dumps(DOC))
    d["stages"][2]["config"] = {"patch": 14}
    s = Schedule.from_dict(d, source="hand.json")
    with pytest.raises(ScheduleError, match=r"hand.json: stages\[1\] -> stages\[2\]: patch 7 -> 14"):
        s.check_transitions()
    s.check_transitions(sch.parse_rules(allow_any=True))


# ----------------------------------------------------------------------------- bad laws

@pytest.mark.parametrize("edit, field", [
    (lambda d: d["laws"][1].pop("b"), "laws[1].b"),
    (lambda d: d["laws"][0].update(a=float("nan")), "laws[0].a"),
    (lambda d: d["laws"][0].update(d=-1.0), "laws[0].d"),
    (lambda d: d["laws"][0].update(c="0.1"), "laws[0].c"),
    (lambda d: d["laws"][1].pop("config"), "laws[1].config"),
    (lambda d: d.update(laws=d["laws"][:1]), "single configuration"),
    (lambda d: d.pop("version"), "'version'"),
    (lambda d: d["laws"][1].update(config={"patch": 14}), "repeats"),
    (lambda d: d["laws"][0].update(flops_range=[1]), "flops_range"),
    (lambda d: d["laws"][0].update(flops_range=[float("nan"), 1.0]), "flops_range"),
])
def test_bad_laws(tmp_path, edit, field):
    p = write_laws(tmp_path / "laws.json", PAIR)
    d = json.loads(open(p).read())
    edit(d)
    open(p, "w").write(json.dumps(d))
    with pytest.raises(ScheduleError, match=re.escape(field)):
        sch.load_laws(p)


@pytest.mark.parametrize("old, new, field", [('{"patch": 7}', '{"patch": Infinity}', "'laws[1].config.patch'"),
                                             ('{"patch": 7}', '{"patch": NaN}', "'laws[1].config.patch'"),
                                             ('{"patch": 7}', '{"patch": 7, "w": [1, -Infinity]}', "'laws[1].config.w'"),
                                             ('"fewshot10_error"', "NaN", "'metric'")])
def test_non_finite_config_or_metric_is_refused_where_the_file_is_read(tmp_path, capsys, old, new, field):
    """Issue 26, item 3: Infinity or NaN in a config (or the metric) would go into schedule.json, which is strict JSON:
    refused on reading laws.json, one line naming the file and the field, exit code 2, nothing written."""
    p = write_laws(tmp_path / "laws.json", PAIR)
    sch.write_json(str(good := tmp_path / "good.json"), sch.make_schedule(PAIR, 0.12, metric="fewshot10_error"))
    text = open(p).read()
    assert text.count(old) == 1
    open(p, "w").write(text.replace(old, new))
    with pytest.raises(ScheduleError, match=re.escape(field)):
        sch.load_laws(p)
    out = tmp_path / "s.json"
    assert sch.cli(["--laws", p, "--target-error", "0.12", "--out", str(out), "--no-plot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"schedule.py: error: {p}: field {field}"), err
    assert not out.exists()
    assert baselines.cli(["--schedule", str(good), "--laws", p]) == 2      # the baselines read the laws the same way
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"baselines.py: error: {p}: field {field}"), err
    assert not list(tmp_path.glob("schedule_*.json"))


def test_everything_written_is_strict_json(tmp_path):
    """A configuration whose cost to the target overflows a float is "never" (null), not Infinity."""
    huge = Law("p14", {"patch": 14}, 1.0, 0.005, 0.1, 1e10)  # g(0.1001) = 1e4**200 - d: past a float's range
    p = write_laws(tmp_path / "laws.json", [huge, law("p7", {"patch": 7}, 0.05, 0.5, 1e12)])
    assert sch.cli(["--laws", p, "--target-error", "0.1001", "--out", str(tmp_path / "s.json"), "--no-plot"]) == 0
    assert baselines.cli(["--schedule", str(tmp_path / "s.json"), "--laws", p]) == 0
    for f in ("s.json", "schedule_linear.json", "schedule_log.json", "schedule_random.json"):
        json.loads((tmp_path / f).read_text(), parse_constant=lambda c: pytest.fail(f"{f} holds {c}"))
    assert json.loads((tmp_path / "s.json").read_text())["predicted"]["static"][0]["cost"] is None


def test_laws_from_fit_laws_style_files_load(tmp_path):
    p = write_laws(tmp_path / "laws.json", PAIR, form="E = a*(C+d)**(-b) + c")
    d = json.loads(open(p).read())
    d["laws"][0].update(flops_range=[0.0, float("inf")], residual=0.01, ci={"b": [0.2, 0.4]})  # extra fields
    open(p, "w").write(json.dumps(d))
    laws = sch.load_laws(p)
    assert laws[0].metric == "fewshot10_error" and [l.config for l in laws] == [{"patch": 14}, {"patch": 7}]
    assert laws[0].flops_lo is None and laws[1].flops_lo == 1e9


def test_bad_targets():
    with pytest.raises(ScheduleError, match="below every law's c"):
        sch.target_for(PAIR, target_error=0.05)
    with pytest.raises(ScheduleError, match="no compute"):
        sch.target_for(PAIR, target_error=0.95)
    with pytest.raises(ScheduleError, match="exactly one"):
        sch.target_for(PAIR)
    with pytest.raises(ScheduleError, match="--budget"):
        sch.target_for(PAIR, budget=-1.0)


# ----------------------------------------------------------------------------- the command line

def run_cli(*args, script="schedule.py"):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT)


def test_cli_writes_schedule_png_and_baselines(tmp_path):
    laws = write_laws(tmp_path / "laws.json", PAIR)
    out = tmp_path / "run" / "schedule.json"
    r = run_cli("--laws", laws, "--target-error", "0.12", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "savings" in r.stdout and "patch=7" in r.stdout
    s = Schedule.load(out)
    assert s.configs == [{"patch": 14}, {"patch": 7}] and s.stages[0].flops_start == 0.0
    assert os.path.getsize(tmp_path / "run" / "schedule.png") > 1000
    assert not list((tmp_path / "run").glob("schedule_*.json"))          # the baselines are lab/baselines.py's
    r = run_cli("--schedule", str(out), "--laws", laws, script="lab/baselines.py")
    assert r.returncode == 0, r.stderr
    assert [ln.split(":")[0] for ln in r.stdout.splitlines()] == ["baseline linear", "baseline log"], r.stdout
    assert "same cost, predicted error" in r.stdout
    for kind in ("linear", "log", "random"):
        assert Schedule.load(tmp_path / "run" / f"schedule_{kind}.json").kind == kind
    assert not [f for f in os.listdir(tmp_path / "run") if f.endswith(".tmp")]
    r = run_cli("--check", str(out))
    assert r.returncode == 0 and "allowed" in r.stdout


def test_cli_budget_and_switch_cost(tmp_path):
    laws = write_laws(tmp_path / "laws.json", PAIR)
    r = run_cli("--laws", laws, "--budget", "1e14", "--out", str(tmp_path / "s.json"), "--no-plot",
                "--switch-cost", "1e9", "patch=1e9", "--allow-any")
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "s.json").read_text())
    assert d["budget"] == 1e14 and d["switch_cost"] == 1e9 and d["switch_cost_key"] == {"patch": 1e9}
    assert d["predicted"]["best_static"]["flops"] == pytest.approx(1e14) and not (tmp_path / "s.png").exists()
    assert baselines.cli(["--schedule", str(tmp_path / "s.json"), "--laws", laws]) == 0   # the schedule's switch costs
    want = baselines.baseline_schedules(loaded := sch.load_laws(laws), d, 1e9, {"patch": 1e9})
    for kind in ("linear", "log"):
        got = json.loads((tmp_path / f"schedule_{kind}.json").read_text())
        assert got["predicted"]["error"] == pytest.approx(want[kind]["predicted"]["error"], rel=1e-12)
    free = baselines.baseline_schedules(loaded, d)                        # a switch that costs: a worse baseline
    assert want["linear"]["predicted"]["error"] > free["linear"]["predicted"]["error"]


def test_baselines_refuse_a_missing_schedule_in_one_line(tmp_path):
    laws = write_laws(tmp_path / "laws.json", PAIR)
    missing = tmp_path / "none.json"
    r = run_cli("--schedule", str(missing), "--laws", laws, script="lab/baselines.py")
    assert r.returncode == 2 and r.stderr.strip() == f"baselines.py: error: {missing}: file not found", r.stderr
    assert sorted(os.listdir(tmp_path)) == ["laws.json"]


def test_baselines_need_the_laws_schedule_py_had(tmp_path, capsys):
    """The stages name their laws by place among those the filters keep: other filters are refused, not misread;
    a baseline's own path as --schedule is refused before any work."""
    p = write_laws(tmp_path / "laws.json", [law("p28", {"patch": 28}, 0.3, 0.3, 1e13), *PAIR])
    doc = json.loads(open(p).read())
    doc["laws"][0]["extrapolation"] = {"rel_max": 0.5}
    open(p, "w").write(json.dumps(doc))
    out = str(tmp_path / "s.json")
    assert sch.cli(["--laws", p, "--target-error", "0.12", "--out", out, "--no-plot", "--max-extrap-error", "1"]) == 0
    assert [s["law"] for s in json.loads(open(out).read())["stages"]] == [1, 2]
    capsys.readouterr()
    assert baselines.cli(["--schedule", out, "--laws", p]) == 2
    err = capsys.readouterr().err.strip().splitlines()      # after load_laws's warning: the law left out
    assert len(err) == 2 and "law p28 left out" in err[0] and err[1].startswith(f"baselines.py: error: {out}: "), err
    assert "field 'stages[0].law'" in err[1] and "--max-extrap-error" in err[1], err
    assert not list(tmp_path.glob("schedule_*.json"))
    assert baselines.cli(["--schedule", out, "--laws", p, "--max-extrap-error", "1"]) == 0
    lin = tmp_path / "schedule_linear.json"
    assert Schedule.load(lin).configs == [{"patch": 14}, {"patch": 7}]
    before = lin.read_text()
    assert baselines.cli(["--schedule", str(lin), "--laws", p, "--max-extrap-error", "1"]) == 2
    assert "linear baseline's own path" in capsys.readouterr().err and lin.read_text() == before


@pytest.mark.parametrize("args, needle", [
    (["--target-error", "0.01"], "below every law's c"),
    (["--budget", "1e14", "--target-error", "0.2"], "exactly one"),
    (["--target-error", "0.12", "--rules", "patch=sideways"], "--rules"),
    (["--target-error", "0.12", "--grid", "3"], "--grid"),
    (["--target-error", "0.12", "--switch-cost", "width=-3"], "--switch-cost"),
    (["--target-error", "0.95"], "no compute"),
])
def test_cli_bad_input_exits_2_without_traceback(tmp_path, args, needle):
    laws = write_laws(tmp_path / "laws.json", PAIR)
    out = tmp_path / "schedule.json"
    r = run_cli("--laws", laws, "--out", str(out), "--no-plot", *args)
    assert r.returncode == 2 and needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "schedule.json.tmp").exists()


def test_cli_bad_laws_and_forbidden_schedule(tmp_path):
    p = tmp_path / "laws.json"
    p.write_text(json.dumps({"version": 1, "laws": [{"config": {"patch": 7}, "a": 1.0, "b": float("nan"),
                                                     "c": 0.1, "d": 1.0}]}))
    r = run_cli("--laws", str(p), "--target-error", "0.2", "--out", str(tmp_path / "s.json"))
    assert r.returncode == 2 and "laws[0].b" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s.json").exists()
    d = json.loads(json.dumps(DOC))
    d["stages"][1]["config"] = {"patch": 28}
    (tmp_path / "hand.json").write_text(json.dumps(d))
    r = run_cli("--check", str(tmp_path / "hand.json"))
    assert r.returncode == 2 and "patch 14 -> 28" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_untrusted_laws_are_left_out(tmp_path, capsys):
    """A law whose extrapolation check missed by more than --max-extrap-error does not take part."""
    laws = [law("p14", {"patch": 14}, 0.2, 0.5, 1e10), law("p7", {"patch": 7}, 0.1, 0.5, 1e11),
            law("p4", {"patch": 4}, 0.05, 0.5, 1e12)]
    p = tmp_path / "laws.json"
    write_laws(p, laws)
    doc = json.loads(p.read_text())
    doc["laws"][2]["extrapolation"] = {"rel_max": 0.75}
    doc["laws"][1]["extrapolation"] = {"rel_max": 0.05}
    p.write_text(json.dumps(doc))
    kept = sch.load_laws(p, max_extrap_error=0.3)
    assert [l.name for l in kept] == ["p14", "p7"]
    assert "p4 left out" in capsys.readouterr().err
    assert len(sch.load_laws(p)) == 3  # no threshold: all laws


# ----------------------------------------------------------------------------- laws at a bound, cost, --out

THREE = [law("p14", {"patch": 14}, 0.2, 0.5, 1e10), law("p7", {"patch": 7}, 0.1, 0.5, 1e11),
         law("p4", {"patch": 4}, 0.05, 0.5, 1e12)]


def test_law_at_a_bound_is_left_out_unless_allowed(tmp_path, capsys):
    p = tmp_path / "laws.json"
    write_laws(p, THREE)
    doc = json.loads(p.read_text())
    doc["laws"][2]["at_bound"] = ["b"]
    doc["laws"][0]["at_bound"] = []
    p.write_text(json.dumps(doc))
    assert [l.name for l in sch.load_laws(p)] == ["p14", "p7"]
    err = capsys.readouterr().err
    assert "p4 left out" in err and "parameter b" in err and "--allow-bound-laws" in err
    assert [l.name for l in sch.load_laws(p, allow_bound_laws=True)] == ["p14", "p7", "p4"]
    r = run_cli("--laws", str(p), "--target-error", "0.08", "--out", str(tmp_path / "s.json"), "--no-plot")
    assert r.returncode == 2 and "p4 left out" in r.stderr and "c=0.1" in r.stderr  # 0.08 needs p4
    r = run_cli("--laws", str(p), "--target-error", "0.08", "--out", str(tmp_path / "s.json"), "--no-plot",
                "--allow-bound-laws")
    assert r.returncode == 0 and json.loads((tmp_path / "s.json").read_text())["stages"][-1]["name"] == "p4"


def wall_laws(path, rates):
    write_laws(path, THREE)
    doc = json.loads(path.read_text())
    doc["cost"] = "wall"
    for row, rate in zip(doc["laws"], rates):
        row["flops_per_second"] = rate
        row["cost_range"] = [10.0, 1e6]
    path.write_text(json.dumps(doc))
    return str(path)


def test_cost_wall_schedules_seconds_and_converts_switch_points_to_flops(tmp_path):
    rates = [4e9, 2e9, 1e9]  # the better configurations are slower per second
    p = wall_laws(tmp_path / "laws.json", rates)
    laws = sch.load_laws(p)
    assert [l.cost for l in laws] == ["wall"] * 3 and laws[2].flops_per_second == 1e9 and laws[0].cost_lo == 10.0
    out = tmp_path / "run" / "schedule.json"
    r = run_cli("--laws", p, "--target-error", "0.07", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert baselines.cli(["--schedule", str(out), "--laws", p]) == 0
    doc = json.loads(out.read_text())
    assert doc["cost"] == "wall" and doc["predicted"]["unit"] == "seconds" and "% of seconds" in r.stdout
    st = doc["stages"]
    assert len(st) >= 2 and st[0]["flops_start"] == st[0]["cost_start"] == 0.0
    for a, b in zip(st, st[1:]):
        assert a["cost_end"] == b["cost_start"] and a["flops_end"] == b["flops_start"]
    for s in st:
        assert s["flops_end"] - s["flops_start"] == pytest.approx((s["cost_end"] - s["cost_start"]) * rates[s["law"]])
    pr = doc["predicted"]
    assert pr["cost"] == pytest.approx(st[-1]["cost_end"]) and pr["flops"] == pytest.approx(st[-1]["flops_end"])
    assert pr["savings"] == pytest.approx(1 - pr["cost"] / pr["best_static"]["cost"])
    assert pr["best_static"]["flops"] == pytest.approx(pr["best_static"]["cost"] * rates[[l.name for l in laws].index(
        pr["best_static"]["name"])])
    # the same maths on the seconds axis as on a FLOPs axis: the stages' errors match a flops-cost schedule
    flops_doc = sch.make_schedule(THREE, 0.07)
    assert [s["error_end"] for s in st] == pytest.approx([s["error_end"] for s in flops_doc["stages"]])
    # the trainers follow it unchanged: the reader switches on cumulative FLOPs
    s = Schedule.load(out)
    assert s.stage_at(flops=st[1]["flops_start"] * 1.001).config == st[1]["config"]
    lin = json.loads((tmp_path / "run" / "schedule_linear.json").read_text())
    assert lin["cost"] == "wall" and lin["stages"][-1]["cost_end"] == pytest.approx(pr["cost"])


def test_cost_wall_needs_flops_per_second_and_old_files_mean_flops(tmp_path):
    p = wall_laws(tmp_path / "laws.json", [4e9, 2e9, 1e9])
    doc = json.loads(open(p).read())
    doc["laws"][1].pop("flops_per_second")
    open(p, "w").write(json.dumps(doc))
    with pytest.raises(ScheduleError, match=re.escape("laws[1].flops_per_second")):
        sch.load_laws(p)
    old = write_laws(tmp_path / "old.json", THREE)  # no "cost": FLOPs
    doc = sch.make_schedule(sch.load_laws(old), 0.07)
    assert doc["cost"] == "flops" and all(s["cost_start"] == s["flops_start"] for s in doc["stages"])
    assert doc["predicted"]["savings_flops"] == doc["predicted"]["savings"]


def test_per_seed_laws_are_refused_with_the_reason(tmp_path):
    p = write_laws(tmp_path / "laws.json", PAIR)
    doc = json.loads(open(p).read())
    doc["laws"][1].update(config={"patch": 14}, seed=1)
    open(p, "w").write(json.dumps(doc))
    with pytest.raises(ScheduleError, match="per-seed"):
        sch.load_laws(p)


@pytest.mark.parametrize("out, needle", [("s.png", ".png"), ("folder", "is a folder"), ("laws.json", "--laws")])
def test_cli_out_png_folder_or_laws_refused_before_any_work(tmp_path, out, needle):
    laws = write_laws(tmp_path / "laws.json", PAIR)
    (tmp_path / "folder").mkdir()
    before = (tmp_path / "laws.json").read_text()
    r = run_cli("--laws", laws, "--target-error", "0.12", "--out", str(tmp_path / out))
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["folder", "laws.json"] and not os.listdir(tmp_path / "folder")
    assert (tmp_path / "laws.json").read_text() == before
