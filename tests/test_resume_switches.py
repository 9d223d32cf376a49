"""A run stopped one step after a stage change and resumed gives bit-identical records and weights (issue 26): every kind of
switch, in both trainers (ViT: patch, width, depth, batch size, objective; LM: context, batch size, depth)."""
import json
import math

import numpy as np
import pytest
import torch

from conftest import make_images
import train_lm
import train_vit

VIT_STEP = 81788928        # the FLOPs of one V32-2 step at patch 4, batch 32, 16-pixel images (6 x MACs x 32)
LM_STEP = 53477376         # the FLOPs of one L32-2 step at context 16, 256 tokens


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("switches")
    rng = np.random.default_rng(0)
    (xt, yt), (xs, ys) = make_images(300, rng), make_images(100, rng)
    np.savez(d / "tiny.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    words = ["def", "return", "self", "import", "for", "in", "if", "(", ")", ":", "=", "x", "\n"]
    (d / "corpus.txt").write_text(" ".join(words[i] for i in np.random.default_rng(1).integers(0, len(words), 6000)))
    assert train_vit.cli(vit_flags(d, d / "teacher", "--steps", "3", "--patch", "4")) == 0   # for the objective
    return d


def vit_flags(d, out, *more):
    return ["--data-dir", str(d / "tiny.npz"), "--model", "V32-2", "--batch-size", "32", "--warmup", "4",
            "--fewshot-support", "200", "--fewshot-query", "60", "--fewshot-seeds", "2", "--no-progress",
            "--out-dir", str(out), *more]


def lm_flags(d, out, *more):
    return ["--data", str(d / "corpus.txt"), "--model", "L32-2", "--context", "16", "--tokens-per-step", "256",
            "--warmup", "4", "--eval-from", "0.1", "--val-tokens", "512", "--cache-dir", str(d / "cache"),
            "--no-progress", "--out-dir", str(out), *more]


def records(out):
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall"} for r in rows if r.get("type") == "eval"]


def stopped_and_resumed(script, flags, d, first, then, step_flops, name):
    """The whole run and the same run stopped one step after the switch and resumed: their records."""
    start = 3.5 * step_flops                                  # the switch comes at step 5
    (d / f"{name}.json").write_text(json.dumps({"version": 1, "kind": "law", "stages": [
        {"config": first, "flops_start": 0.0}, {"config": then, "flops_start": start}]}))
    common = ["--steps", "9", "--evals", "9", "--schedule", str(d / f"{name}.json"), "--rewarm", "2", "--ckpt-every", "1"]
    whole, cut = d / f"{name}-whole", d / f"{name}-cut"
    assert script.cli(flags(d, whole, *common)) == 0
    assert script.cli(flags(d, cut, *common, "--stop-after-steps", str(math.ceil(3.5) + 2))) == 0
    assert script.cli(flags(d, cut, *common, "--resume")) == 0
    a, b = (torch.load(out / "ckpt.pt", weights_only=False)["model"] for out in (whole, cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the final weights differ"
    return records(whole), records(cut)


@pytest.mark.parametrize("then", [{"patch": 8}, {"width": 64}, {"depth": 3}, {"batch_size": 64},
                                  {"objective": "distill"}], ids=lambda c: next(iter(c)))
def test_vit_resumes_exactly_after_each_kind_of_switch(inputs, then):
    extra = ("--teacher", str(inputs / "teacher" / "ckpt.pt")) if "objective" in then else ()
    flags = lambda d, out, *more: vit_flags(d, out, *extra, *more)
    whole, resumed = stopped_and_resumed(train_vit, flags, inputs, {"patch": 4}, {"patch": 4, **then}, VIT_STEP,
                                         f"vit-{next(iter(then))}")
    assert any(r["stage"] == 1 for r in whole)                # the switch happened
    assert resumed == whole


@pytest.mark.parametrize("then", [{"context": 32}, {"batch_size": 32}, {"depth": 3}], ids=lambda c: next(iter(c)))
def test_lm_resumes_exactly_after_each_kind_of_switch(inputs, then):
    whole, resumed = stopped_and_resumed(train_lm, lm_flags, inputs, {"context": 16}, {"context": 16, **then},
                                         LM_STEP, f"lm-{next(iter(then))}")
    assert any(r.get("stage") == 1 for r in whole) or whole[-1]["config"] != whole[0]["config"]
    assert resumed == whole
