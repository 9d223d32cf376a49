"""Seeded fuzzing of the two files users hand-edit: laws.json and schedule.json. Each mutant (a field deleted,
retyped, NaN, infinite, huge, negative, nested 100000 deep; the text truncated; a wrong version) goes through the
CLIs in-process and through schedule.Schedule.from_dict / Schedule.load; 30 go through train_vit.py --schedule
on tiny data. Every outcome is exit code 0 or 2 with one error line, never a traceback."""
import copy
import json
import random

import numpy as np
import pytest

import fit_laws
import schedule
import train_vit
from conftest import make_images
from test_badinput import write_log

N_LAWS, N_SCHEDULES, N_TRAIN = 300, 300, 30
OPS = ("delete", "str", "list", "dict", "null", "bool", "nan", "inf", "-inf", "bigexp", "hugeint", "negative",
       "zero", "nested", "empty", "version", "truncate", "root")
TEXT = {'"__NESTED__"': "[" * 100000 + "]" * 100000, '"__HUGEINT__"': "1" + "0" * 400, '"__BIGEXP__"': "1e400"}


def paths(node, at=()):
    """Every place in a JSON tree, as a key path."""
    out = [at] if at else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, at + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, at + (i,))
    return out


def mutate(doc, rng):
    """One seeded mutation of a JSON document -> its text (possibly not JSON at all)."""
    doc, op = copy.deepcopy(doc), rng.choice(OPS)
    if op == "truncate":
        text = json.dumps(doc)
        return text[:rng.randrange(len(text))]
    if op == "version":
        doc["version"] = rng.choice([0, 2, "1", 1.5, None, [1]])
        return json.dumps(doc)
    if op == "root":
        return rng.choice(["[]", "null", "1", '"laws"', "{}", ""])
    where = rng.choice(paths(doc))
    parent = doc
    for k in where[:-1]:
        parent = parent[k]
    key, old = where[-1], parent[where[-1]]
    if op == "delete":
        del parent[key]
    else:
        num = old if isinstance(old, (int, float)) and not isinstance(old, bool) else 1.0
        parent[key] = {"str": "x", "list": [old], "dict": {"v": old}, "null": None, "bool": True,
                       "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "bigexp": "__BIGEXP__",
                       "hugeint": "__HUGEINT__", "negative": -abs(num) or -1.0, "zero": 0, "nested": "__NESTED__",
                       "empty": type(old)() if isinstance(old, (list, dict, str)) else ""}[op]
    text = json.dumps(doc)
    for k, v in TEXT.items():
        text = text.replace(k, v)
    return text


def check(rc, err, script):
    lines = err.strip().splitlines()
    assert rc in (0, 2) and "Traceback" not in err, (rc, err[-2000:])
    if rc == 2:
        errors = [ln for ln in lines if ln.startswith(f"{script}: error:")]
        assert len(errors) == 1 and all(ln.startswith(f"{script}: ") for ln in lines), lines


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    write_log(d / "logs", configs=({"patch": 7}, {"patch": 14}, {"patch": 4}))
    assert fit_laws.cli(["--logs", str(d / "logs"), "--out", str(d / "laws.json"), "--bootstrap", "0",
                         "--no-plot"]) == 0
    laws = json.loads((d / "laws.json").read_text())
    for law, (b, c, dd) in zip(laws["laws"], [(0.3, 0.1, 1e10), (0.6, 0.1, 1e12), (0.45, 0.1, 1e11)]):
        law.update(a=0.8 * dd ** b, b=b, c=c, d=dd)       # laws that cross: a schedule of several stages
    (d / "laws.json").write_text(json.dumps(laws))
    assert schedule.cli(["--laws", str(d / "laws.json"), "--target-error", "0.12", "--out", str(d / "schedule.json"),
                         "--no-plot", "--grid", "200"]) == 0
    sched = json.loads((d / "schedule.json").read_text())
    assert len(sched["stages"]) >= 2
    return d, laws, sched


def test_fuzzed_laws_json(valid, tmp_path, capsys):
    d, laws, _ = valid
    rng, outcomes = random.Random(0), {0: 0, 2: 0}
    for i in range(N_LAWS):
        path = tmp_path / "laws.json"
        path.write_text(mutate(laws, rng))
        capsys.readouterr()
        rc = schedule.cli(["--laws", str(path), "--target-error", "0.12", "--out", str(tmp_path / "s.json"), "--no-plot",
                           "--grid", "200"])
        check(rc, capsys.readouterr().err, "schedule.py")
        outcomes[rc] += 1
        try:
            fit_laws.load_laws(path)                     # compare.py and fit_laws.py read laws.json with this
        except fit_laws.UserError:
            pass
        assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
        if rc == 2 and (tmp_path / "s.json").exists():
            (tmp_path / "s.json").unlink()
    assert outcomes[0] > 10 and outcomes[2] > 100, outcomes     # the mutants are neither all harmless nor all fatal


def test_fuzzed_schedule_json(valid, tmp_path, capsys):
    d, _, sched = valid
    rng, refused = random.Random(1), 0
    for i in range(N_SCHEDULES):
        text = mutate(sched, rng)
        path = tmp_path / "schedule.json"
        path.write_text(text)
        capsys.readouterr()
        rc = schedule.cli(["--check", str(path)])
        check(rc, capsys.readouterr().err, "schedule.py")
        for read in (lambda: schedule.Schedule.load(path), lambda: schedule.Schedule.from_dict(json.loads(text))):
            try:
                s = read()
                s.stage_at(flops=1e12), s.configs
            except schedule.ScheduleError:
                refused += 1
            except (ValueError, RecursionError):         # json.loads itself, for the from_dict route
                pass
    assert refused > 100


def trainer_schedule():
    """Two stages on 16x16 images: patch 8, then patch 4 from the first step's FLOPs on."""
    return {"version": 1, "kind": "law", "metric": "fewshot10_error", "target_error": 0.5,
            "stages": [{"config": {"patch": 8}, "error_start": 0.9, "error_end": 0.7, "flops_start": 0.0,
                        "flops_end": 1.0},
                       {"config": {"patch": 4}, "error_start": 0.7, "error_end": 0.5, "flops_start": 1.0,
                        "flops_end": None}]}


def test_fuzzed_schedules_through_train_vit(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, y = make_images(300, rng)
    np.savez(tmp_path / "tiny.npz", x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    mut, codes = random.Random(2), []
    for i in range(N_TRAIN):
        path = tmp_path / f"s{i}.json"
        path.write_text(mutate(trainer_schedule(), mut))
        capsys.readouterr()
        rc = train_vit.cli([str(a) for a in [
            "--data-dir", tmp_path / "tiny.npz", "--model", "V32-2", "--schedule", path, "--steps", 2,
            "--batch-size", 16, "--warmup", 1, "--evals", 1, "--fewshot-support", 200, "--fewshot-query", 40,
            "--fewshot-seeds", 1, "--test-size", 40, "--train-size", 0, "--out-dir", tmp_path / f"r{i}",
            "--no-progress", "--threads", 1]])
        check(rc, capsys.readouterr().err, "train_vit.py")
        codes.append(rc)
        if rc == 2:
            assert not (tmp_path / f"r{i}" / "log.jsonl").exists()     # a refused start leaves no log
    assert codes.count(0) >= 3 and codes.count(2) >= 10, codes
