"""The README's "use it in your own loop" example runs exactly as printed, and does what it says."""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def test_own_loop_example_runs_as_printed(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- own-loop -->\n```python\n(.*?)```\n<!-- /own-loop -->", text, re.S)[1]
    import flexivit
    macs = lambda p, w: flexivit.build(f"V{w}-4", image_size=28).macs(p) * 6 * 32   # noqa: E731  one step
    switch, end = 3 * macs(14, 64), 3 * macs(14, 64) + 2 * macs(7, 128)           # 3 steps, then 2
    (tmp_path / "schedule.json").write_text(json.dumps({
        "version": 1, "metric": "fewshot10_error", "target_error": 0.1, "kind": "law", "predicted": {},
        "stages": [{"config": {"patch": 14}, "error_start": 1.0, "error_end": 0.5, "flops_start": 0.0,
                    "flops_end": switch},
                   {"config": {"patch": 7, "width": 128}, "error_start": 0.5, "error_end": 0.1,
                    "flops_start": switch, "flops_end": end}]}))
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    model, opt = scope["model"], scope["opt"]
    assert model.width == 128 and model.heads == 4                 # grown at the switch
    assert scope["flops"] == end                                   # 3 steps at patch 14, 2 at patch 7
    assert all(p in opt.state for p in model.parameters())        # every (grown) parameter is in AdamW
