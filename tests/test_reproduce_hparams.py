"""reproduce_hparams.verdict: the claim of Sec. 6.2 read off compare.py's comparison.json."""
import json
import math

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
