"""Depth growth of the language model: expand.py on lm.py's LM (exact, optimiser carried), and train_lm.py's
depth stages (grow at the switch, FLOPs of the deeper model, a run killed after growth resumes exactly)."""
import dataclasses
import inspect
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import expand
import lm
import runtime
import train_lm
from train_lm import Config, UserError, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trained_like(name="L32-2", seed=0):
    """A tiny LM whose output layers are not near zero (as after training), so an inexact growth would show."""
    torch.manual_seed(seed)
    model = lm.LM(**lm.model_args(name, 256, 32))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("where", ["interleave", "end"])
def test_depth_growth_keeps_the_function_and_carries_adamw(where):
    model, x = trained_like(), torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    opt.step()
    old_params, old_state = list(model.parameters()), {p: {k: v.clone() for k, v in opt.state[p].items()}
                                                       for p in model.parameters()}
    with torch.no_grad():
        before = model(x)
    mapping = expand.expand_depth(model, 4, preserve=True, where=where)   # lm.py's layout recognised: proj, down
    expand.expand_optimizer(opt, mapping)
    with torch.no_grad():
        after = model(x)
    assert (after - before).abs().max().item() <= 1e-6
    assert len(model.blocks) == 4 and model.model_args()["depth"] == 4
    assert model.macs_per_token(32) == lm.macs_per_token(32, 4, 128, 32)
    new = [p for p in model.parameters() if not any(p is q for q in old_params)]
    assert len(new) == 2 * len(list(model.blocks[0].parameters())) == len(mapping)
    for name, p in model.named_parameters():                             # the new blocks' output layers are zero
        if any(p is q for q in new) and name.endswith(("proj.weight", "down.weight")):
            assert not p.any()
    group = opt.param_groups[0]["params"]
    assert len(group) == len(old_params) + len(new) and all(any(p is q for q in group) for p in new)
    for p in old_params:                                                 # moments and step kept as they were
        assert all(torch.equal(opt.state[p][k], v) for k, v in old_state[p].items())
    assert not any(p in opt.state for p in new)                          # Adam starts the new ones fresh
    F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    opt.step()                                                           # and the grown model trains
    assert all(p in opt.state for p in new)
    with torch.no_grad():
        assert not torch.equal(model(x), after)


def test_depth_growth_refuses_what_is_not_whole_blocks():
    model = trained_like()
    for bad in (1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="whole number of blocks"):
            expand.expand_depth(model, bad, preserve=True)


def test_expand_grows_lm_copied_alone(tmp_path):
    """expand.py and lm.py, each copied alone into an empty folder: the LM grows exactly (no project import)."""
    for module in ("expand.py", "lm.py"):
        shutil.copy(os.path.join(ROOT, module), tmp_path / module)
    code = ("import torch, lm, expand\ntorch.manual_seed(0)\nm = lm.LM(**lm.model_args('L32-2', 256, 16))\n"
            "x = torch.randint(0, 256, (2, 16))\nwith torch.no_grad():\n    a = m(x)\n"
            "expand.expand_depth(m, 6, preserve=True, where='interleave')\n"
            "with torch.no_grad():\n    b = m(x)\nassert len(m.blocks) == 6 and (a - b).abs().max() <= 1e-6\nprint('ok')")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": ""})
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("".join(inspect.getsource(m) for m in (json, dataclasses, inspect)))
    return str(path)


def tiny(tmp_path, corpus, **kw):
    base = dict(out_dir=str(tmp_path / "run"), data=corpus, model="L32-2", context=16, tokens_per_step=256,
                steps=12, warmup=4, evals=6, eval_from=0.1, val_tokens=512, cache_dir=str(tmp_path / "cache"))
    return Config(**{**base, **kw})


def records(cfg):
    with open(os.path.join(cfg.out_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def write_schedule(path, stages):
    path.write_text(json.dumps({"version": 1, "kind": "law", "metric": "val_loss", "stages": stages}))
    return str(path)


def test_depth_schedule_grows_and_resumes_exactly(tmp_path, corpus):
    flops = {d: 6 * lm.macs_per_token(32, d, 128, 16) * 256 for d in (1, 3)}
    schedule = write_schedule(tmp_path / "schedule.json", [
        {"config": {"depth": 1}, "flops_start": 0.0},
        {"config": {"depth": 3}, "flops_start": 5.5 * flops[1]}])          # grows before step 7
    whole = tiny(tmp_path / "a", corpus, schedule=schedule, rewarm=3)
    main(whole)
    head, *logged = records(whole)
    assert head["model_args"]["depth"] == 1
    assert [r["config"] for r in logged][-2:] == [{"depth": 3}] * 2 and logged[0]["config"] == {"depth": 1}
    assert logged[-1]["flops"] == pytest.approx(6 * flops[1] + 6 * flops[3], rel=1e-12)
    assert all(math.isfinite(r["val_loss"]) for r in logged)
    ckpt = torch.load(os.path.join(whole.out_dir, "ckpt.pt"), weights_only=False)
    assert ckpt["grown_args"]["depth"] == 3 and ckpt["state"]["rewarm_from"] == 6

    cut = dataclasses.replace(whole, out_dir=str(tmp_path / "b" / "run"))
    main(dataclasses.replace(cut, stop_after_steps=8))                     # killed after the growth
    main(dataclasses.replace(cut, resume=True))
    _, *resumed = records(cut)
    assert len(resumed) == len(logged)
    for a, b in zip(logged, resumed):
        for key in set(a) - {"wall"}:
            assert a[key] == (pytest.approx(b[key], rel=1e-6, abs=1e-6) if isinstance(a[key], float) else b[key])


def test_a_later_stage_gets_evaluations_of_its_own_dense_after_its_switch(tmp_path, corpus):
    """As in train_vit.py: a FLOPs schedule adds its later stages' 1/16, 1/8, 1/4, 1/2 and 3/4 points to the log-spaced
    evaluations, so compare.py (which reads a stage from 3 evaluations on) can read a growth at 60% of the budget."""
    step = {d: 6 * lm.macs_per_token(32, d, 128, 16) * 256 for d in (1, 2)}
    switch = 24 * step[1]
    budget = switch + 16 * step[2]
    schedule = write_schedule(tmp_path / "schedule.json", [
        {"config": {"depth": 1}, "flops_start": 0.0}, {"config": {"depth": 2}, "flops_start": switch}])
    cfg = tiny(tmp_path, corpus, schedule=schedule, steps=None, flops=budget, evals=4)
    main(cfg)
    late = [r["flops"] for r in records(cfg)[1:] if r["config"] == {"depth": 2}]
    assert len(late) >= 6 and late[-1] >= budget * (1 - 1e-9)
    for f in runtime.STAGE_EVALS:                                # each added point: the first step at or past it
        point = switch + f * (budget - switch)
        assert 0 <= min(x for x in late if x >= point) - point < step[2] * (1 + 1e-9)


def test_static_depth_is_in_the_logged_shape(tmp_path, corpus):
    cfg = tiny(tmp_path, corpus, depth=3, steps=4, evals=2)
    main(cfg)
    head, *logged = records(cfg)
    assert head["model_args"]["depth"] == 3 and {json.dumps(r["config"]) for r in logged} == {
        json.dumps({"context": 16, "depth": 3})}


@pytest.mark.parametrize("stages, says", [
    ([{"depth": 4}, {"depth": 2}], "would remove blocks"),
    ([{"depth": 2}, {"depth": 0}], "is not a context length or depth"),
    ([{"depth": 2}, {"depth": 2.5}], "is not a context length or depth"),
])
def test_bad_depth_schedules_are_refused_before_training(tmp_path, corpus, stages, says):
    path = write_schedule(tmp_path / "bad.json", [{"config": c, "flops_start": float(i)} for i, c in enumerate(stages)])
    with pytest.raises(UserError, match=says):
        train_lm.load_stages(tiny(tmp_path, corpus, schedule=path))


@pytest.mark.parametrize("new_width", [64, 96])
def test_width_growth_of_the_lm_is_exact_under_rmsnorm(new_width):
    model, x = trained_like(), torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    opt.step()
    with torch.no_grad():
        before = model(x)
    expand.expand_optimizer(opt, expand.expand_width(model, new_width, preserve=True))
    with torch.no_grad():
        after = model(x)
    assert (after - before).abs().max().item() <= 1e-5
    assert model.model_args() == lm.model_args(f"L{new_width}-2", 256, 32)       # head size 32 kept
    rebuilt = lm.LM(**model.model_args())                           # the grown shape is an ordinary LM
    rebuilt.load_state_dict(model.state_dict())
    opt.zero_grad()
    F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    opt.step()                                                       # moments carried: the step runs, the model moves
    with torch.no_grad():
        assert not torch.equal(model(x), after)
    assert all(opt.state[p]["exp_avg"].shape == p.shape for p in model.parameters())
