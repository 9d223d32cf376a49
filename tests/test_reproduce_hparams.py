"""reproduce_hparams: the verdict on the claim of Sec. 6.2 (read off compare.py's comparison.json), and the
pipeline's stop when the laws do not cross."""
import json
import math
from pathlib import Path

import pytest

from reproduce_hparams import verdict


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
    """A one-stage schedule can only repeat a static run: the pipeline stops with FAIL before training it."""
    import reproduce_hparams as rh
    trained, commands = [], []
    monkeypatch.setattr(rh, "train", lambda cfg, p, out, extra, threads, flops: trained.append((out.name, extra)))
    monkeypatch.setattr(rh, "parallel", lambda jobs, tasks: [t() for t in tasks])

    def fake_run(cmd, *args, **kwargs):   # fit_laws.py and schedule.py: schedule.py's one-stage answer
        commands.append(Path(cmd[1]).name)
        if Path(cmd[1]).name == "schedule.py":
            stage = {"config": {"batch_size": 32}, "name": "batch_size=32", "flops_start": 0.0}
            (tmp_path / "schedule.json").write_text(json.dumps({"version": 1, "stages": [stage]}))
    monkeypatch.setattr(rh, "run", fake_run)

    ok = rh.main(rh.Config(experiment="batch", preset="smoke", out_dir=str(tmp_path)))
    assert ok is False
    assert commands == ["fit_laws.py", "schedule.py"]                      # no compare.py either
    assert sorted(name for name, _ in trained) == ["static_bs128", "static_bs32"]
    assert not any("--schedule" in extra for _, extra in trained)
    assert "do not cross" in capsys.readouterr().out
