"""The golden test: fixed-seed tiny runs of both trainers, static and scheduled, whose evaluation records must stay
bit-identical through any rewrite of the code (issue 23: the core and the lab).

Four runs, through each trainer's command line:
  vit-static   a V32-2 FlexiViT at patch 4
  vit-sched    patch 8, then patch 4 at width 64 (a patch switch and a width growth in one stage change)
  lm-static    an L32-2 LM at context 16
  lm-sched     context 16 at depth 1, then context 32 at depth 2 (a context switch and a depth growth)

`python tests/test_golden.py --write` records them in tests/golden.json (done once, on the code before the
rewrite). Floating-point results depend on the CPU's kernels: where the recorded machine's vector unit
(torch.backends.cpu.get_cpu_capability()) is not this one's, the records are compared to 1e-4 instead, and the
test says so.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden.json"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import make_images  # noqa: E402
import train_lm  # noqa: E402
import train_vit  # noqa: E402


def inputs(tmp):
    """The tiny image set (npz), a word corpus, and the two schedules, all from fixed seeds."""
    rng = np.random.default_rng(0)
    (xt, yt), (xs, ys) = make_images(300, rng), make_images(100, rng)
    np.savez(tmp / "tiny.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    words = ["def", "return", "self", "import", "for", "in", "if", "else", "(", ")", ":", "=", "x", "y", "\n"]
    (tmp / "corpus.txt").write_text(" ".join(words[i] for i in np.random.default_rng(1).integers(0, len(words), 6000)))
    (tmp / "vit.json").write_text(json.dumps({"version": 1, "kind": "law", "metric": "fewshot10_error", "stages": [
        {"config": {"patch": 8}, "flops_start": 0.0}, {"config": {"patch": 4, "width": 64}, "flops_start": 1.0e8}]}))
    (tmp / "lm.json").write_text(json.dumps({"version": 1, "kind": "law", "metric": "val_loss", "stages": [
        {"config": {"context": 16, "depth": 1}, "flops_start": 0.0},
        {"config": {"context": 32, "depth": 2}, "flops_start": 1.5e8}]}))


def runs(tmp):
    vit = ["--data-dir", str(tmp / "tiny.npz"), "--model", "V32-2", "--steps", "16", "--batch-size", "32",
           "--warmup", "4", "--evals", "6", "--fewshot-support", "200", "--fewshot-query", "60", "--fewshot-seeds", "2",
           "--no-progress"]
    lm = ["--data", str(tmp / "corpus.txt"), "--model", "L32-2", "--tokens-per-step", "256", "--steps", "14",
          "--warmup", "4", "--evals", "5", "--eval-from", "0.1", "--val-tokens", "512", "--cache-dir", str(tmp / "cache"),
          "--no-progress"]
    return {"vit-static": (train_vit, vit + ["--patch", "4"]),
            "vit-sched": (train_vit, vit + ["--schedule", str(tmp / "vit.json"), "--rewarm", "2"]),
            "lm-static": (train_lm, lm + ["--context", "16"]),
            "lm-sched": (train_lm, lm + ["--context", "16", "--schedule", str(tmp / "lm.json"), "--rewarm", "2"])}


def records(tmp):
    """Every run's evaluation records, less the seconds it took."""
    inputs(tmp)
    out = {}
    for name, (script, args) in runs(tmp).items():
        assert script.cli(args + ["--out-dir", str(tmp / name)]) == 0, name
        rows = [json.loads(line) for line in (tmp / name / "log.jsonl").read_text().splitlines()]
        out[name] = [{k: v for k, v in r.items() if k != "wall"} for r in rows if r.get("type") == "eval"]
    return out


def test_the_records_are_bit_identical(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    got = records(tmp_path)
    assert set(got) == set(golden["runs"])
    exact = golden["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    for name, rows in golden["runs"].items():
        assert [r["step"] for r in got[name]] == [r["step"] for r in rows], name
        for a, b in zip(got[name], rows):
            assert a.keys() == b.keys(), (name, a["step"])
            for k in a:
                if exact or not isinstance(b[k], float):
                    assert a[k] == b[k], (name, a["step"], k)
                else:
                    assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (name, a["step"], k)
    if not exact:
        pytest.skip(f"recorded on {golden['cpu_capability']}, this CPU is {torch.backends.cpu.get_cpu_capability()}: "
                    f"matched to 1e-4, not bit for bit")


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        got = records(Path(d))
    GOLDEN.write_text(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "runs": got}, indent=1))
    print(f"wrote {GOLDEN}: " + ", ".join(f"{k} {len(v)} records" for k, v in got.items()))
