"""Switch pilots and measured transfer (issue 24): --keep-at / --start-from in both trainers, lab/transfer.py's
effective-compute reading, and schedule.py --transfer.

The pilot's promise: a run started from a static run's --keep-at checkpoint with a schedule that switches there is
the same run as that schedule trained from scratch (the LR is constant after warm-up and every draw is keyed by
(seed, step)), so a pilot costs only its stretch after the switch."""
import inspect
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import make_images  # noqa: E402
import runtime  # noqa: E402
import train_vit  # noqa: E402


def tiny(tmp):
    rng = np.random.default_rng(0)
    (xt, yt), (xs, ys) = make_images(300, rng), make_images(100, rng)
    np.savez(tmp / "tiny.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return ["--data-dir", str(tmp / "tiny.npz"), "--model", "V32-1", "--batch-size", "32", "--warmup", "4",
            "--evals", "4", "--fewshot-support", "200", "--fewshot-query", "60", "--fewshot-seeds", "2", "--no-progress"]


def weights(run):
    return torch.load(run / "ckpt.pt", weights_only=False)["model"]


def test_a_pilot_from_a_kept_checkpoint_is_the_scheduled_run_from_scratch(tmp_path):
    flags, keep = tiny(tmp_path), 6e7
    assert train_vit.cli(flags + ["--patch", "8", "--flops", "1.5e8", "--keep-at", str(keep),
                                  "--out-dir", str(tmp_path / "static")]) == 0
    kept = runtime.kept_path(tmp_path / "static", keep)
    at = torch.load(kept, weights_only=False)["state"]["flops"]
    assert keep <= at < keep * 1.5
    logged = [r["flops"] for r in map(json.loads, (tmp_path / "static" / "log.jsonl").read_text().splitlines())
              if r.get("type") == "eval"]
    assert at in logged                                           # the kept point is evaluated: the pilot's start
    sched = tmp_path / "pilot.json"
    sched.write_text(json.dumps({"version": 1, "stages": [{"config": {"patch": 8}, "flops_start": 0.0},
                                                          {"config": {"patch": 4, "depth": 2}, "flops_start": at}]}))
    pilot = ["--schedule", str(sched), "--flops", "1.2e8"]
    assert train_vit.cli(flags + pilot + ["--start-from", str(kept), "--out-dir", str(tmp_path / "pilot")]) == 0
    assert train_vit.cli(flags + pilot + ["--out-dir", str(tmp_path / "scratch")]) == 0
    a, b = weights(tmp_path / "pilot"), weights(tmp_path / "scratch")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = json.loads((tmp_path / "pilot" / "log.jsonl").read_text().splitlines()[1])
    assert first["flops"] > at and first["config"]["depth"] == 2   # the pilot logs only its stretch after the switch


def test_start_from_refuses_another_seed_in_one_line(tmp_path, capsys):
    flags = tiny(tmp_path)
    assert train_vit.cli(flags + ["--patch", "8", "--flops", "8e7", "--keep-at", "4e7",
                                  "--out-dir", str(tmp_path / "static")]) == 0
    kept = str(runtime.kept_path(tmp_path / "static", 4e7))
    assert train_vit.cli(flags + ["--patch", "8", "--flops", "8e7", "--seed", "1", "--start-from", kept,
                                  "--out-dir", str(tmp_path / "p")]) == 2
    assert "seed=0" in capsys.readouterr().err
    assert train_vit.cli(flags + ["--patch", "8", "--flops", "8e7", "--keep-at", "9e7",
                                  "--out-dir", str(tmp_path / "q")]) == 2      # past the budget: out of range


# ----------------------------------------------------------------------------- train_lm.py: the same promise

import train_lm  # noqa: E402


def lm_flags(tmp):
    (tmp / "corpus.txt").write_text("".join(inspect.getsource(m) for m in (json, inspect)))
    return ["--data", str(tmp / "corpus.txt"), "--model", "L32-2", "--tokens-per-step", "256", "--warmup", "4",
            "--evals", "4", "--val-tokens", "512", "--cache-dir", str(tmp / "cache"), "--no-progress"]


def test_an_lm_pilot_from_a_kept_checkpoint_is_the_context_schedule_from_scratch(tmp_path):
    flags, keep = lm_flags(tmp_path), 3e8                         # a step at context 16: 5.3e7 FLOPs
    assert train_lm.cli(flags + ["--context", "16", "--flops", "6.4e8", "--keep-at", str(keep),
                                 "--out-dir", str(tmp_path / "static")]) == 0
    kept = runtime.kept_path(tmp_path / "static", keep)
    at = torch.load(kept, weights_only=False)["state"]["flops"]
    assert keep <= at < keep * 1.2 and at in [r["flops"] for r in runtime.RunLog(tmp_path / "static" / "log.jsonl")
                                              .records() if r.get("type") == "eval"]   # a kept point is evaluated
    sched = tmp_path / "pilot.json"
    sched.write_text(json.dumps({"version": 1, "stages": [{"config": {"context": 16}, "flops_start": 0.0},
                                                          {"config": {"context": 32}, "flops_start": at}]}))
    pilot = ["--schedule", str(sched), "--flops", "9e8"]
    assert train_lm.cli(flags + pilot + ["--start-from", str(kept), "--out-dir", str(tmp_path / "pilot")]) == 0
    assert train_lm.cli(flags + pilot + ["--out-dir", str(tmp_path / "scratch")]) == 0
    a, b = weights(tmp_path / "pilot"), weights(tmp_path / "scratch")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = json.loads((tmp_path / "pilot" / "log.jsonl").read_text().splitlines()[1])
    assert first["flops"] > at and first["config"] == {"context": 32}   # only its stretch after the switch


def test_an_lm_start_from_refuses_another_seed_in_one_line(tmp_path, capsys):
    flags = lm_flags(tmp_path) + ["--context", "16", "--flops", "2e8"]
    assert train_lm.cli(flags + ["--keep-at", "1e8", "--out-dir", str(tmp_path / "static")]) == 0
    kept = str(runtime.kept_path(tmp_path / "static", 1e8))
    capsys.readouterr()
    assert train_lm.cli(flags + ["--seed", "1", "--start-from", kept, "--out-dir", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--start-from" in err and "seed=0" in err
    assert not (tmp_path / "p" / "ckpt.pt").exists()
    assert train_lm.cli(flags + ["--keep-at", "3e8", "--out-dir", str(tmp_path / "q")]) == 2   # past the budget


# ----------------------------------------------------------------------------- schedule.py --transfer

import schedule as sch  # noqa: E402
from test_schedule import PAIR, law, write_laws  # noqa: E402

TARGET = 0.12


def total(doc):
    return doc["predicted"]["cost"]


def test_with_no_measured_transfer_the_search_finds_eq2s_schedule():
    eq2, searched = sch.make_schedule(PAIR, TARGET), sch.make_schedule(PAIR, TARGET, transfer={})
    assert [s["name"] for s in searched["stages"]] == [s["name"] for s in eq2["stages"]] == ["patch=14", "patch=7"]
    assert searched["method"] == "transfer" and searched["kind"] == "transfer"
    assert total(searched) == pytest.approx(total(eq2), rel=2e-3)       # the grid's resolution, no more
    assert total(searched) >= total(eq2) * (1 - 1e-9)                   # Eq. 2 is optimal when switches are free


def test_a_loss_at_the_switch_costs_its_flops_and_a_gain_saves_them():
    eq2 = total(sch.make_schedule(PAIR, TARGET, transfer={}))
    static = min(float(l.inverse(TARGET)) for l in PAIR)
    for t in (-0.02 * eq2, 0.02 * eq2):
        doc = sch.make_schedule(PAIR, TARGET, transfer={(0, 1): [(1e3, t), (1e20, t)]})
        a, b = doc["stages"]
        assert b["transfer"] == pytest.approx(t)
        # the plan is what it says: Q to its switch, then P from g_P(f_Q(C_s)) + tau to the target
        again = a["cost_end"] + PAIR[1].inverse(TARGET) - (PAIR[1].inverse(PAIR[0](a["cost_end"])) + t)
        assert total(doc) == pytest.approx(again, rel=1e-9) and total(doc) < static
        assert (total(doc) > eq2) if t < 0 else (total(doc) < eq2)
    huge = sch.make_schedule(PAIR, TARGET, transfer={(0, 1): [(1.0, -10 * static)]})
    assert [s["name"] for s in huge["stages"]] == ["patch=7"]          # a switch dearer than it saves: none


def test_the_cli_plans_with_a_transfer_file_and_names_the_switches_it_left_to_eq2(tmp_path):
    laws = write_laws(tmp_path / "laws.json", PAIR + [law("patch=4", {"patch": 4}, 0.1, 0.9, 1e13)])
    tr = tmp_path / "transfer.json"
    tr.write_text(json.dumps({"version": 1, "cost": "flops", "transitions": [
        {"from": {"patch": 14}, "to": {"patch": 7}, "points": [{"switch": 1e10, "transfer": -1e9}]}]}))
    out = tmp_path / "s.json"
    assert sch.cli(["--laws", laws, "--target-error", str(TARGET), "--out", str(out), "--transfer", str(tr),
                    "--no-plot"]) == 0
    doc = json.loads(out.read_text())
    assert doc["kind"] == "transfer" and doc["transfer"]["eq2"] == ["patch=14 -> patch=4", "patch=7 -> patch=4"]
    assert sch.Schedule.load(out).stages[0].config == {"patch": 14}     # the trainers read it as any schedule


@pytest.mark.parametrize("body, field", [
    (None, "file not found"),
    ("{", "not valid JSON"),
    ({"version": 1, "cost": "flops"}, "'transitions'"),
    ({"version": 1, "cost": "wall", "transitions": []}, "'cost'"),
    ({"version": 1, "transitions": [{"from": {"patch": 14}, "to": {"patch": 7}, "points": []}]},
     "'transitions[0].points'"),
    ({"version": 1, "transitions": [{"from": {"patch": 14}, "to": {"patch": 7},
                                     "points": [{"switch": 1e10, "transfer": "NaN"}]}]}, "'transitions[0].points[0].transfer'"),
    ({"version": 1, "transitions": [{"from": [], "to": {"patch": 7}, "points": [{"switch": 1, "transfer": 0}]}]},
     "'transitions[0].from'"),
    ({"version": 1, "transitions": [{"from": {"patch": 14}, "to": {"patch": 7},
                                     "points": [{"switch": 1e10, "transfer": 0, "spread": -0.01}]}]},
     "'transitions[0].points[0].spread'"),
])
def test_a_bad_transfer_file_is_one_line_and_exit_2(tmp_path, capsys, body, field):
    laws, tr, out = write_laws(tmp_path / "laws.json", PAIR), tmp_path / "transfer.json", tmp_path / "s.json"
    if body is not None:
        tr.write_text(body if isinstance(body, str) else json.dumps(body))
    assert sch.cli(["--laws", laws, "--target-error", str(TARGET), "--out", str(out), "--transfer", str(tr)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err and str(tr) in err and not out.exists()


# ----------------------------------------------------------------------------- lab/transfer.py: tau from a pilot

sys.path.insert(0, str(ROOT / "lab"))
from lab import transfer  # noqa: E402


def test_fit_tau_recovers_a_known_transfer_from_noisy_evaluations():
    (q, p), at = PAIR, 2e10
    start = float(p.inverse(q(at)))
    C = at + np.linspace(0.3, 1.0, 6) * 4e10
    rng = np.random.default_rng(0)
    for t in (-1e10, 0.0, 3e10):
        E = p(start + (C - at) + t) + rng.normal(0, 2e-4, len(C))
        assert transfer.fit_tau(q, p, at, C, E, scale=1e11) == pytest.approx(t, abs=0.05 * abs(start) + 1e8)


def test_measure_leaves_a_failed_or_thin_pilot_unmeasured_and_averages_the_rest(tmp_path):
    q, p = PAIR
    at, stretch = 2e10, 4e10
    start = float(p.inverse(q(at)))

    def pilot(name, seed, t, n=6, ok=True):
        (tmp_path / name).mkdir()
        C = at + np.linspace(0.3, 1.0, n) * stretch
        recs = [{"type": "header"}] + [{"type": "eval", "flops": float(c), "m": float(p(start + c - at + t))} for c in C]
        (tmp_path / name / "log.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
        return {"run": name, "seed": seed, "point": 2e10, "at": at, "stretch": stretch, "finished": ok,
                "from_config": q.config, "to_config": p.config}

    plan = [pilot("a", 0, 1e10), pilot("b", 1, 2e10), pilot("c", 2, 0.0, ok=False), pilot("d", 3, 0.0, n=1)]
    doc = transfer.measure(tmp_path, PAIR, plan, "m", 1e11)
    (t,) = doc["transitions"]
    assert t["name"] == "patch=14 -> patch=7" and t["points"][0]["n"] == 2
    assert t["points"][0]["transfer"] == pytest.approx(1.5e10, rel=0.02)
    assert t["points"][0]["ci95"][0] < 1.5e10 < t["points"][0]["ci95"][1]
    assert [(u["pilot"], "did not finish" in u["why"] or "evaluation" in u["why"]) for u in doc["unmeasured"]] == [
        ("c", True), ("d", True)]
    assert doc["pilots_flops"] == pytest.approx(4 * stretch - 0.7 * stretch)   # d's one record sits at 0.3
    # a switch from an error below P's floor c: P's law cannot place it (g_P is infinite), so it measures nothing
    high = dataclasses.replace(p, c=float(q(at)) + 0.01)
    doc = transfer.measure(tmp_path, [q, high], plan[:1], "m", 1e11)
    assert doc["transitions"] == [] and "floor" in doc["unmeasured"][0]["why"], doc["unmeasured"]


def test_against_staying_is_the_pilots_last_error_less_the_static_run_it_left(tmp_path):
    """No law: the pilot's last error against its static run's at the same FLOPs (log-interpolated), per point."""
    def log(name, pts):
        (tmp_path / name).mkdir()
        recs = [{"type": "header"}] + [{"type": "eval", "flops": c, "m": e} for c, e in pts]
        (tmp_path / name / "log.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    log("static_a_s0", [(1e10, 0.5), (1e11, 0.3), (1e12, 0.2)])
    log("pilot_a-b_at0_s0", [(2e10, 0.45), (1e11, 0.26)])          # 0.04 below staying at 1e11: it paid
    log("pilot_a-b_at0_s1", [(2e10, 0.45), (1e11, 0.33)])          # its static run is missing: left out
    pl = {"point": 1e10, "at": 1e10, "from_config": {"w": 1}, "to_config": {"w": 2}}
    (g,) = transfer.against_staying(tmp_path, [{**pl, "run": "pilot_a-b_at0_s0", "from_run": "static_a_s0"},
                                               {**pl, "run": "pilot_a-b_at0_s1", "from_run": "static_a_s1"}], "m")
    assert g["delta"] == [pytest.approx(-0.04)] and g["mean"] == pytest.approx(-0.04) and g["at"] == 1e11


def test_the_pilot_plan_is_every_allowed_transition_at_each_kept_point():
    shapes = {f"static_d{d}_s0": {"patch": 14, "depth": d} for d in (2, 4, 6)}
    plan = transfer.pilot_plan({"flops": 1e12, "pilot_points": (0.1, 0.5)}, shapes)
    assert {(x["from"][8], x["to"][8]) for x in plan} == {("2", "4"), ("2", "6"), ("4", "6")}   # depth never shrinks
    assert len(plan) == 6 and len({x["name"] for x in plan}) == 6 and {x["point"] for x in plan} == {1e11, 5e11}
    assert transfer.keep_flags({"flops": 1e12, "pilot_points": (0.1, 0.5)}) == ["--keep-at", "100000000000.0",
                                                                               "500000000000.0"]
    assert transfer.keep_flags({"flops": 1e12}) == []


def test_a_plan_takes_tau_at_its_first_switch_only_and_reaches_its_target_no_sooner_than_the_window():
    eq2 = total(sch.make_schedule(PAIR, TARGET, transfer={}))
    huge = {(0, 1): [(1.0, 10 * eq2)], "window": 0.05 * eq2}        # a gain past the target: the window binds
    a, b = sch.make_schedule(PAIR, TARGET, transfer=huge)["stages"]
    assert b["cost_end"] - b["cost_start"] == pytest.approx(0.05 * eq2)
    third = PAIR + [law("patch=4", {"patch": 4}, 0.1, 0.9, 1e13)]
    S, Cs = np.zeros((3, 3)), [np.array(0.1 * eq2), np.array(0.3 * eq2)]
    first = {(0, 1): [(1.0, 0.3 * eq2)]}
    both = {**first, (1, 2): [(1.0, 10 * eq2)]}                      # the second switch's gain is not believed
    assert sch.follow(third, (0, 1, 2), Cs, TARGET, S, both)[0] == sch.follow(third, (0, 1, 2), Cs, TARGET, S, first)[0]
    assert sch.follow(third, (1, 2), Cs[:1], TARGET, S, both)[0] < sch.follow(third, (1, 2), Cs[:1], TARGET, S, {})[0]


def test_a_transfer_plans_prediction_has_an_interval_from_the_pilots_spread():
    """report.md's prediction for a transfer plan, redone with tau at the 95% bounds its pilots measured (the committed
    depth demo: tau 5.5e12 at the switch, bounds interpolated as schedule.tau does): the bounds bracket it."""
    from lab import report
    root = ROOT / "results" / "depth-demo-3s-transfer"
    laws, sched = (json.loads((root / f).read_text()) for f in ("laws.json", "schedule_transfer.json"))
    doc = json.loads((root / "transfer.json").read_text())
    lo, hi = report.tau_bounds(doc, sched)
    assert lo["stages"][1]["transfer"] < sched["stages"][1]["transfer"] < hi["stages"][1]["transfer"]
    C, C_lo, C_hi = (report.predicted_flops(s, laws, 0.186) for s in (sched, lo, hi))
    assert C_hi <= C < C_lo                          # less transfer, more compute (the window floors the gain)
    assert report.tau_bounds(doc, json.loads((root / "schedule.json").read_text())) == []   # Eq. 2: no tau


def test_the_verdict_says_when_the_measured_transfer_says_stay_while_eq2_switches():
    """Eq. 2 switches, the plan with the measured transfer stays and every pilot lost against staying: the verdict on
    Eq. 2's schedule says so; a pilot that gained, or a transfer plan that switches, leaves it unsaid."""
    from lab import report
    eq2 = {"stages": [{"name": "patch=12"}, {"name": "patch=8"}]}
    stay, lost = {"stages": [{"name": "patch=12"}]}, {"against_staying": [{"mean": 0.02}, {"mean": 0.03}]}
    note = report.stay_note(eq2, stay, lost)
    assert "stay at patch=12" in note and "0.02 to 0.03 above" in note
    assert "agree" not in report.stay_note(eq2, stay, {"against_staying": [{"mean": -0.01}, {"mean": 0.03}]})
    assert report.stay_note(eq2, eq2, lost) == "" and report.stay_note(stay, stay, lost) == ""


def test_as_trained_fits_each_scheduled_runs_own_tau_on_its_switched_stage(tmp_path):
    """report.md's 'Planned and trained': tau fitted to a scheduled run's own evaluations from the window on, as a
    pilot's. On the committed depth plan (2 -> 4 at 1.1e12), runs made to follow known taus give them back; an
    evaluation inside the window (here far off the curve) is left out."""
    src = ROOT / "results" / "depth-demo-s789-transfer"
    (tmp_path / "laws.json").write_text((src / "laws.json").read_text())
    plan = json.loads((src / "schedule_transfer.json").read_text())
    laws = {json.dumps(x.config, sort_keys=True): x for x in sch.load_laws(src / "laws.json", float("inf"), True)}
    q, p = (laws[json.dumps(s["config"], sort_keys=True)] for s in plan["stages"][:2])
    at, window = plan["stages"][1]["flops_start"], plan["transfer"]["window"]
    taus = {"sched_transfer_s0": 1e12, "sched_transfer_s1": 3e12}
    for name, t in taus.items():
        C = at + np.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.0]) * window
        E = p(float(p.inverse(q(at))) + C - at + t) + np.array([0.05, 0, 0, 0, 0, 0])
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.jsonl").write_text("\n".join(json.dumps(r) for r in [{"type": "header"}, *[
            {"type": "eval", "flops": float(c), "m": float(e)} for c, e in zip(C, E)]]))
    comp = {"runs": [{"run": n, "kind": "transfer"} for n in taus] + [{"run": "static_d4_s0", "kind": "static"}]}
    rows = transfer.as_trained(tmp_path, plan, comp, "m", 3e12)
    assert [r["run"] for r in rows] == list(taus) and [r["evaluations"] for r in rows] == [5, 5]
    assert [r["tau as trained"] for r in rows] == pytest.approx(list(taus.values()), rel=0.01)
    assert all(r["planned tau"] == plan["stages"][1]["transfer"] for r in rows)
    assert transfer.as_trained(tmp_path, {**plan, "stages": plan["stages"][:1]}, comp, "m", 3e12) == []   # it stays


def test_the_reports_sensitivity_is_the_laws_flops_per_thousandth_of_error():
    """'How far a saving moves with the error': FLOPs per 0.001 of error at the target on the law the plan ends on,
    checked against the law's inverse by a finite difference, and the seeds' spread of targets in the same units."""
    from lab import report
    root = ROOT / "results" / "depth-demo-s789-transfer"
    laws, comp = (json.loads((root / f).read_text()) for f in ("laws.json", "comparison.json"))
    sched = json.loads((root / "schedule_transfer.json").read_text())
    (line,) = report.sensitivity(sched, laws, comp, "transfer", 0.1907, 3e12)
    x = next(x for x in laws["laws"] if x["name"] == "depth=4")
    per = report._g(x, 0.1907 - 5e-4) - report._g(x, 0.1907 + 5e-4)
    assert f"falls 0.001 in {report.cell(per)[:4]}" in line and f"{100 * per / 3e12:.1f} points" in line
    assert "depth=4" in line and "spread by sd" in line
    assert report.sensitivity(sched, laws, comp, "transfer", x["c"] - 0.01, 3e12) == []   # below the floor: no slope
    assert report.sensitivity(None, laws, comp, "transfer", 0.1907, 3e12) == []           # no such schedule


def test_the_spread_is_the_sd_over_seeds_of_where_each_seeds_pilot_lands_against_its_own_target(tmp_path):
    """lab/transfer.py: each pilot's gap, f_P(g_P(f_Q(C_s)) + tau + window) - its seed's target, checked against
    schedule.Law's maths; per point the gaps' sd over seeds; none from one seed or without targets."""
    q, p = PAIR
    at, stretch, taus, targets = 2e10, 4e10, {0: 1e10, 1: 2e10, 2: 4e10}, {0: 0.13, 1: 0.125, 2: 0.128}
    start, plan = float(p.inverse(q(at))), []
    for seed, t in taus.items():
        (tmp_path / f"s{seed}").mkdir()
        C = at + np.linspace(0.3, 1.0, 6) * stretch
        recs = [{"type": "header"}] + [{"type": "eval", "flops": float(c), "m": float(p(start + c - at + t))} for c in C]
        (tmp_path / f"s{seed}" / "log.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
        plan.append({"run": f"s{seed}", "seed": seed, "point": at, "at": at, "stretch": stretch, "finished": True,
                     "from_config": q.config, "to_config": p.config})
    (pt,) = transfer.measure(tmp_path, PAIR, plan, "m", 1e11, targets)["transitions"][0]["points"]
    fitted = {x["seed"]: x["transfer"] for x in pt["pilots"]}
    gaps = [float(p(start + fitted[s] + 0.25 * stretch)) - targets[s] for s in taus]
    assert [x["gap"] for x in pt["pilots"]] == pytest.approx(gaps, rel=1e-9)
    assert pt["spread"] == pytest.approx(float(np.std(gaps, ddof=1)), rel=1e-9) and pt["spread"] > 0
    assert transfer.measure(tmp_path, PAIR, plan, "m", 1e11)["transitions"][0]["points"][0]["spread"] is None
    assert transfer.measure(tmp_path, PAIR, plan[:1], "m", 1e11, targets)["transitions"][0]["points"][0][
        "spread"] is None                                                                        # one seed


def test_with_the_seeds_spread_the_plan_is_the_cheapest_on_average_over_the_seeds():
    """schedule.py with transfer.json's spread: spread 0 plans as the point does; a gain that makes the point plan
    reach its target one window after its switch (a knife edge) is left for a plan whose mean cost over the seeds,
    each aiming at target + sd z after its switch and capped at staying's, is lower; predicted.expected_savings is
    that mean. A switch whose typical seed loses is not planned, though its luckiest seeds would gain."""
    eq2 = total(sch.make_schedule(PAIR, TARGET, transfer={}))
    gain = {(0, 1): [(1.0, 0.05 * eq2), (10 * eq2, 2.0 * eq2)], "window": 0.02 * eq2}   # more gain from later
    point = sch.make_schedule(PAIR, TARGET, transfer=gain)
    zero = sch.make_schedule(PAIR, TARGET, transfer={**gain, "spread": {(0, 1): [(1.0, 0.0)]}})
    assert [s["cost_start"] for s in zero["stages"]] == [s["cost_start"] for s in point["stages"]]
    assert zero["predicted"]["expected_savings"] == pytest.approx(point["predicted"]["savings"], abs=1e-9)
    wide = {**gain, "spread": {(0, 1): [(1.0, 0.004)]}}
    robust = sch.make_schedule(PAIR, TARGET, transfer=wide)
    g = min(float(l.inverse(TARGET)) for l in PAIR)

    def mean_cost(doc):   # the plan's cost to each seed's target after its switch, capped, averaged: reach on its rows
        rows = sch.follow(PAIR, (0, 1), [np.array(doc["stages"][1]["cost_start"])], TARGET, np.zeros((2, 2)), wide)[2]
        return float(np.mean(np.minimum(g, sch.reach(PAIR, [(p, *(np.asarray(x)[..., None] for x in r)) for p, *r
                                                            in rows], TARGET + 0.004 * sch.offsets(), wide["window"]))))
    assert mean_cost(robust) < mean_cost(point) and robust["stages"][1]["cost_start"] > point["stages"][1]["cost_start"]
    assert robust["predicted"]["expected_savings"] == pytest.approx(1 - mean_cost(robust) / g, rel=1e-6)
    assert robust["predicted"]["expected_savings"] < robust["predicted"]["savings"]
    assert robust["stages"][1]["spread"] == 0.004
    loss = {(0, 1): [(1.0, -0.3 * eq2)], "window": 0.02 * eq2, "spread": {(0, 1): [(1.0, 0.01)]}}
    assert [s["name"] for s in sch.make_schedule(PAIR, TARGET, transfer=loss)["stages"]] == ["patch=7"]


def test_the_reports_mean_over_the_seeds_spread_is_the_point_prediction_spread_by_where_each_seed_lands():
    """report.md's 'mean over the seeds' spread': seeds_spread reads transfer.json's spread at the planned switch
    (interpolated in log C as tau is); expected_savings is the point prediction at sd 0, below it and falling with
    the sd for a plan that reaches its target just as its switch pays (the committed depth plan), 0 where no seed can
    reach it."""
    from lab import report
    root = ROOT / "results" / "depth-demo-s789-transfer"
    laws, comp = (json.loads((root / f).read_text()) for f in ("laws.json", "comparison.json"))
    plan = json.loads((root / "schedule_transfer.json").read_text())
    st = plan["stages"]
    pts = [{"switch": c, "transfer": 0.0, "spread": sd, "n": 3} for c, sd in ((7.5e11, 0.002), (1.5e12, 0.004))]
    doc = {"transitions": [{"from": st[0]["config"], "to": st[1]["config"], "points": pts}]}
    sd, n = report.seeds_spread(doc, plan)
    f = np.log(st[1]["flops_start"] / 7.5e11) / np.log(2)
    assert n == 3 and sd == pytest.approx(0.002 + 0.002 * f)
    assert report.seeds_spread(doc, {**plan, "stages": st[:1]}) is None                     # a plan that stays
    assert report.seeds_spread({"transitions": [{**doc["transitions"][0], "points": [{**pts[0], "spread": None}]}]},
                               plan) is None                                                # one seed: no spread
    T, ref = comp["target_error"], 3e12
    point = 1 - report.predicted_flops(plan, laws, T) / ref
    assert report.expected_savings(plan, laws, T, 0.0, ref) == pytest.approx(point)
    near, far = (report.expected_savings(plan, laws, T, s, ref) for s in (0.002, 0.006))
    assert point > near > far > 0
    x = next(x for x in laws["laws"] if x["config"] == st[1]["config"])
    assert report.expected_savings(plan, laws, x["c"] - 0.05, 1e-4, ref) == 0.0             # below its floor


def test_replan_trains_a_run_again_with_its_own_recorded_flags_and_refuses_a_folder_without_runs(tmp_path, capsys):
    """lab/replan.py: a transfer run's command is read from its stdout.txt and only --schedule and --out-dir change;
    a folder that is no finished transfer pipeline is one line and exit 2, nothing written."""
    from lab import replan
    run = tmp_path / "sched_transfer_s4"
    run.mkdir()
    (run / "stdout.txt").write_text("$ python train_vit.py --schedule a.json --seed 4 --out-dir runs/x --flops 3e12\n"
                                    "step 99 flops 3.02e+10\n$ python train_vit.py --resume\n")
    cmd = replan.with_flag(replan.with_flag(replan.recorded(run), "--schedule", "b.json"), "--out-dir", "out/y")
    assert cmd == ["python", "train_vit.py", "--schedule", "b.json", "--seed", "4", "--out-dir", "out/y",
                   "--flops", "3e12"]
    assert runtime.run_cli(replan.main, replan.Config, "replan.py",
                           args=["--pipeline", str(tmp_path), "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pipeline.json" in err and not (tmp_path / "new").exists()
