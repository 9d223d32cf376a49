"""The language model's pipelines (issue 16): lm-depth's plan, the context experiment's batch tuned per context
(App. B.5), attention's share of the FLOPs in report.md, and bad input refused before any run (one line, exit 2)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab import report
from lab import reproduce
import train_lm
from lab.reproduce import Config

ROOT = Path(__file__).resolve().parent.parent


def flag(cmd, name):
    assert cmd.count(name) == 1, (name, cmd)
    return cmd[cmd.index(name) + 1]


def make_plan(tmp_path, **kw):
    cfg = Config(**kw)
    p = reproduce.resolve(cfg)
    return p, *reproduce.plan(cfg, p, tmp_path, reproduce.check_seeds(cfg.seeds), 1)


def test_lm_depth_plan_logs_depth_and_grows_from_the_smallest(tmp_path):
    p, static, sched = make_plan(tmp_path, experiment="lm-depth", preset="demo", seeds=(0, 1))
    assert [(flag(j.cmd, "--model"), flag(j.cmd, "--depth")) for j in static[:3]] == [
        ("L64-2", "2"), ("L64-4", "4"), ("L64-6", "6")]
    assert all(flag(j.cmd, "--context") == "128" and flag(j.cmd, "--rewarm") == "25" for j in static + sched)
    assert {flag(j.cmd, "--model") for j in sched} == {"L64-2"} and "--depth" not in sched[0].cmd
    assert [j.kind for j in sched] == ["law", "linear", "log"] * 2


def write_log(run: Path, val_loss: float, flops=1e9):
    run.mkdir(parents=True)
    (run / "log.jsonl").write_text(json.dumps({"type": "header"}) + "\n" + json.dumps(
        {"type": "eval", "step": 5, "flops": flops, "config": {}, "val_loss": val_loss}) + "\n")


def test_tuned_batch_per_context_reaches_static_runs_and_schedules(tmp_path):
    p, static, sched = make_plan(tmp_path, experiment="context", preset="smoke", seeds=(3, 4), set=("batch=tuned",))
    tune = [j for j in static if j.kind == "tune"]
    assert len(tune) == 4 * 3 and {j.seed for j in tune} == {3} and {j.budget for j in tune} == {6e11 * 0.05}
    assert [flag(j.cmd, "--tokens-per-step") for j in tune[:3]] == ["2048", "4096", "8192"]
    for T in p["contexts"]:                                          # context T: T tokens a step would be best
        for n in p["tune_tokens"]:
            write_log(tmp_path / f"tune_ctx{T}_t{n}", abs(n - 1024 * T / 16) + 1.0)
    (tmp_path / "schedule.json").write_text(json.dumps({"version": 1, "stages": [
        {"config": {"context": 8}, "flops_start": 0.0}, {"config": {"context": 64}, "flops_start": 1e9}]}))
    tuned = reproduce.tuned_batches(tmp_path, p)
    assert tuned == {64: 4096, 32: 2048, 16: 2048, 8: 2048}
    reproduce.apply_tuning(tmp_path, static, tuned)
    runs = [j for j in static if j.kind == "static"]
    assert {(flag(j.cmd, "--context"), flag(j.cmd, "--tokens-per-step")) for j in runs} == {
        ("64", "4096"), ("32", "2048"), ("16", "2048"), ("8", "2048")}
    stages = json.loads((tmp_path / "schedule.json").read_text())["stages"]
    assert [s["config"] for s in stages] == [{"context": 8, "tokens_per_step": 2048},
                                             {"context": 64, "tokens_per_step": 4096}]
    doc = json.loads((tmp_path / "tuned.json").read_text())
    text = "\n".join(report.lm_section({"attention_share": reproduce.attention_share(p)}, doc))
    assert "| attention share | 1.5% | 3.0% | 5.9% | 11.1% |" in text     # L64: 2T / (16*64 + 2T)
    assert "| 64 | 2049 | 1 | 4097 | 4096 |" in text


def test_a_stage_tokens_per_step_sets_the_batch(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text(Path(train_lm.__file__).read_text() * 3)
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"version": 1, "kind": "law", "stages": [
        {"config": {"context": 16, "tokens_per_step": 512}, "flops_start": 0.0}]}))
    cfg = train_lm.Config(out_dir=str(tmp_path / "run"), data=str(corpus), model="L32-1", tokens_per_step=256,
                          steps=2, evals=2, val_tokens=256, schedule=str(path), cache_dir=str(tmp_path / "c"))
    train_lm.main(cfg)
    evals = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()][1:]
    assert evals[-1]["tokens"] == 2 * 512 and evals[-1]["config"] == {"context": 16, "tokens_per_step": 512}


def cli(tmp_path, *args):
    r = subprocess.run([sys.executable, str(ROOT / "lab" / "reproduce.py"), "--out-dir", str(tmp_path / "out"), *args],
                       capture_output=True, text=True, cwd=tmp_path)
    return r.returncode, r.stderr.strip()


@pytest.mark.parametrize("case, says", [
    ("short-corpus", "fewer than the largest context 32 x 128 validation windows"),
    ("token-ids", "token id 300 >= --vocab-size 256"),
    ("depths-repeat", "--experiment lm-depth: depths 2,2 has one value"),
    ("depths-one", "--experiment lm-depth: depths 3 has one value"), ("depths-twice", "depths 2,4,4 repeats a value"),
    ("depths-half", "whole number"), ("batch-mode", "batch=sometimes"),
])
def test_lm_bad_input_is_one_line_exit_2_before_any_run(tmp_path, case, says):
    short = tmp_path / "short.txt"
    short.write_text("x = 1\n" * 2000)                                  # 12 kB: a 600-token validation split
    ids = tmp_path / "ids.bin"
    np.array([1, 2, 300, 4] * 5000, dtype=np.uint16).tofile(ids)
    args = {"short-corpus": ["--set", f"data={short}"],
            "token-ids": ["--set", f"data={ids}", "vocab_size=256"],
            "depths-repeat": ["--set", "depths=2,2"], "depths-one": ["--set", "depths=3"],
            "depths-twice": ["--set", "depths=2,4,4"],
            "depths-half": ["--set", "depths=2,3.5"]}.get(case)
    experiment = ["--experiment", "context", "--set", "batch=sometimes"] if case == "batch-mode" else \
        ["--experiment", "lm-depth", *args]
    code, err = cli(tmp_path, "--preset", "smoke", *experiment)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("reproduce.py: error:") and says in err, err
    assert not (tmp_path / "out").exists()
