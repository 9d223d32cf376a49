"""train_vit.py on tiny generated data: the log, compute accounting, resume, random and scheduled shapes, errors.

Every run: a V32-2 FlexiViT on 16x16 images (10 classes, a few hundred images), a few dozen steps.
"""
import dataclasses
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_images
import data
import flexivit
import runtime
import train_vit
from train_vit import Config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    (xt, yt), (xs, ys) = make_images(300, rng), make_images(100, rng)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return path


def tiny(npz, out, **kw):
    base = dict(data_dir=str(npz), model="V32-2", patch=4, steps=24, batch_size=32, warmup=4, evals=6,
                fewshot_support=200, fewshot_query=60, fewshot_seeds=2, out_dir=str(out), progress=False)
    return Config(**{**base, **kw})


def read_log(out):
    rows = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return rows[0], rows[1:]


def same_records(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            if isinstance(ra[k], float) and k != "wall":
                assert ra[k] == pytest.approx(rb[k], abs=1e-6), (ra["step"], k)
            elif k != "wall":
                assert ra[k] == rb[k], (ra["step"], k)


def test_log_format_and_flops(npz, tmp_path):
    train_vit.main(tiny(npz, tmp_path / "r"))
    header, recs = read_log(tmp_path / "r")
    assert header["version"] == 1 and header["type"] == "header" and header["run"] == "r"
    assert header["config"]["patch"] == 4 and header["metrics"] == ["fewshot10_error", "test_error"]
    assert len(recs) >= 4 and recs[-1]["step"] == 24
    macs = flexivit.build("V32-2", image_size=16).macs(4)
    for r in recs:
        assert r["type"] == "eval" and r["config"] == {"patch": 4, "width": 32, "depth": 2, "batch_size": 32}
        assert r["samples"] == 32 * r["step"] and r["flops"] == 6 * macs * r["samples"]
        for k in ("train_loss", "fewshot10_error", "test_error", "wall"):
            assert isinstance(r[k], float) and np.isfinite(r[k]), k
        assert 0 <= r["fewshot10_error"] <= 1 and 0 <= r["test_error"] <= 1
    assert all(a["flops"] < b["flops"] and a["wall"] <= b["wall"] for a, b in zip(recs, recs[1:]))
    # the checkpoint rebuilds the model for eval_fewshot's CLI
    import eval_fewshot
    model, ck = eval_fewshot.load_checkpoint(str(tmp_path / "r" / "ckpt.pt"))
    assert ck["state"]["step"] == 24 and ck["patch"] == 4 and model.width == 32
    assert ck["model_args"]["width"] == 32 and ck["state"]["flops"] == recs[-1]["flops"]


def test_resume_reproduces_an_uninterrupted_run(npz, tmp_path):
    train_vit.main(tiny(npz, tmp_path / "a"))
    train_vit.main(tiny(npz, tmp_path / "b", stop_after_steps=15, ckpt_every=7))
    _, partial = read_log(tmp_path / "b")
    assert partial[-1]["step"] < 24
    step = torch.load(tmp_path / "b" / "ckpt.pt")["state"]["step"]
    with open(tmp_path / "b" / "log.jsonl", "a") as f:           # a record past the checkpoint, a cut line
        f.write(json.dumps({**partial[-1], "type": "eval", "step": step + 3}) + "\n" + '{"type": "ev')
    train_vit.main(tiny(npz, tmp_path / "b", resume=True))
    same_records(read_log(tmp_path / "a")[1], read_log(tmp_path / "b")[1])
    with pytest.raises(train_vit.UserError, match="patch"):      # another shape: refused
        train_vit.main(tiny(npz, tmp_path / "b", resume=True, patch=8))
    with pytest.raises(train_vit.UserError, match="--resume"):   # a fresh run over a finished one: refused
        train_vit.main(tiny(npz, tmp_path / "b"))


def test_random_patch_is_reproducible(npz, tmp_path):
    kw = dict(patch=None, random=True, patch_sizes=(8, 4, 2), steps=12, evals=3)
    train_vit.main(tiny(npz, tmp_path / "a", **kw))
    train_vit.main(tiny(npz, tmp_path / "b", **kw, stop_after_steps=5))
    train_vit.main(tiny(npz, tmp_path / "b", **kw, resume=True))
    header, recs = read_log(tmp_path / "a")
    same_records(recs, read_log(tmp_path / "b")[1])
    assert header["config"]["random"] and recs[-1]["config"]["random"] == [2, 4, 8]
    assert recs[-1]["config"]["patch"] == 2                        # evaluated at the smallest patch (Fig. 7)
    m = flexivit.build("V32-2", image_size=16)                    # every step's own patch size is counted
    drawn = [[2, 4, 8][torch.randint(3, (1,), generator=train_vit.generator("patch", 0, s)).item()] for s in range(12)]
    assert len(set(drawn)) > 1 and recs[-1]["flops"] == sum(6 * m.macs(p) * 32 for p in drawn)


def test_data_order_and_augmentation():
    n, seen = 10, torch.cat([train_vit.batch_indices(10, s, 4, seed=0) for s in range(0, 20, 4)])
    assert sorted(seen[:n].tolist()) == list(range(n)) and sorted(seen[n:].tolist()) == list(range(n))
    assert torch.equal(train_vit.batch_indices(10, 8, 4, 0), seen[8:12])   # the position is all a resume needs
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 3, 16, 16)
    a = train_vit.augment(x, train_vit.generator("augment", 0, 1), flip=True)
    b = train_vit.augment(x, train_vit.generator("augment", 0, 1), flip=True)
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    assert train_vit.normalize(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]


def test_load_idx_and_truncated_idx(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("t10k", 20)):
        x = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        img = b"\0\0\x08\x03" + np.array([n, 28, 28], ">u4").tobytes() + x.tobytes()
        lab = b"\0\0\x08\x01" + np.array([n], ">u4").tobytes() + rng.integers(0, 10, n).astype(np.uint8).tobytes()
        (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(img))
        (tmp_path / f"{split}-labels-idx1-ubyte").write_bytes(lab)
    tx, ty, vx, vy = data.load_dataset(tmp_path)
    assert tx.shape == (30, 1, 28, 28) and tx.dtype == torch.uint8 and ty.dtype == torch.int64 and len(vx) == 20
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(lab[:-3])
    with pytest.raises(train_vit.UserError, match="t10k-labels-idx1-ubyte"):
        data.load_dataset(tmp_path)


def test_load_cifar_and_channels_last_npz(tmp_path):
    import pickle
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), b"labels": list(range(4))}
        (d / name).write_bytes(pickle.dumps(batch))
    x, y, tx, ty = data.load_dataset(tmp_path)
    assert x.shape == (20, 3, 32, 32) and tx.shape == (4, 3, 32, 32) and y.tolist()[:4] == [0, 1, 2, 3]
    (d / "test_batch").write_bytes((d / "test_batch").read_bytes()[:100])
    with pytest.raises(train_vit.UserError, match="test_batch"):
        data.load_dataset(tmp_path)
    img = rng.integers(0, 256, (6, 8, 8, 3)).astype(np.uint8)
    np.savez(tmp_path / "hwc.npz", x_train=img, y_train=np.arange(6), x_test=img, y_test=np.arange(6))
    x, *_ = data.load_dataset(tmp_path / "hwc.npz")
    assert x.shape == (6, 3, 8, 8) and torch.equal(x[1, 2], torch.from_numpy(img[1, :, :, 2]))


def test_help_documents_every_flag(capsys):
    import tyro
    with pytest.raises(SystemExit):
        tyro.cli(Config, args=["--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(Config):
        assert f"--{f.name.replace('_', '-')}" in text, f.name
    assert text.count("(default") >= len(dataclasses.fields(Config)) - 2


def run_cli(capsys, *args):
    """train_vit.cli in this process: (exit code, stderr lines)."""
    capsys.readouterr()
    rc = train_vit.cli([str(a) for a in args])
    return rc, capsys.readouterr().err.strip().splitlines()


def test_bad_input_is_one_line_exit_2(npz, tmp_path, capsys):
    # one real process: the exit code and the message on stderr, no traceback
    p = subprocess.run([sys.executable, str(ROOT / "train_vit.py"), "--steps", "2", "--data-dir", str(tmp_path / "x")],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "apt-get install dataset-fashion-mnist" in err[0], p.stderr
    rc, err = run_cli(capsys, "--steps", 2, "--data-dir", npz, "--model", "V32-2", "--patch", 5,
                      "--out-dir", tmp_path / "p")
    assert rc == 2 and len(err) == 1 and "1 2 4 8 16" in err[0], err
    cut = tmp_path / "cut.npz"
    cut.write_bytes(npz.read_bytes()[:3000])
    rc, err = run_cli(capsys, "--steps", 2, "--data-dir", cut)
    assert rc == 2 and len(err) == 1 and str(cut) in err[0], err
    # --resume with no checkpoint yet starts the run afresh (the rule of both trainers), saying so
    rc, err = run_cli(capsys, "--steps", 2, "--data-dir", npz, "--model", "V32-2", "--patch", 4, "--batch-size", 8,
                      "--fewshot-support", 200, "--fewshot-query", 60, "--evals", 1, "--out-dir", tmp_path / "none",
                      "--resume", "--no-progress")
    assert rc == 0 and len(err) == 1 and "no checkpoint" in err[0] and (tmp_path / "none" / "ckpt.pt").exists(), err
    rc, err = run_cli(capsys, "--data-dir", npz, "--out-dir", tmp_path / "none")
    assert rc == 2 and len(err) == 1 and "--steps" in err[0], err


def test_diverging_loss_stops_and_keeps_the_checkpoint(npz, tmp_path, capsys):
    out = tmp_path / "nan"
    train_vit.main(tiny(npz, out, steps=6, evals=2))
    before = (out / "ckpt.pt").read_bytes()
    rc, err = run_cli(capsys, "--data-dir", npz, "--model", "V32-2", "--patch", 4, "--batch-size", 32, "--warmup", 4,
                      "--fewshot-support", 200, "--fewshot-query", 60, "--fewshot-seeds", 2, "--out-dir", out,
                      "--no-progress", "--steps", 12, "--evals", 1, "--lr", 1e30, "--resume")
    assert rc == 2 and len(err) == 1 and "diverged" in err[0] and "step 6" in err[0], err
    assert (out / "ckpt.pt").read_bytes() == before


# ----------------------------------------------------------------------------- schedules

def write_schedule(path, stages, kind="law"):
    path.write_text(json.dumps({"version": 1, "metric": "fewshot10_error", "target_error": 0.1, "kind": kind,
                                "stages": stages, "predicted": {}}))
    return path


def stage(config, flops_start, flops_end, error_start=1.0, error_end=0.0):
    return dict(config=config, error_start=error_start, error_end=error_end,
                flops_start=flops_start, flops_end=flops_end)


def test_schedule_switches_patch_and_width_at_flops_start(npz, tmp_path):
    pytest.importorskip("schedule")
    m = flexivit.build("V32-2", image_size=16)
    switch = 6 * m.macs(8) * 32 * 7.5                              # during step 8: the switch comes at step 9
    sched = write_schedule(tmp_path / "s.json", [stage({"patch": 8}, 0.0, switch),
                                                 stage({"patch": 4, "width": 64}, switch, 1e12)])
    kw = dict(patch=None, schedule=str(sched), steps=14, evals=100, rewarm=2)
    train_vit.main(tiny(npz, tmp_path / "a", **kw))
    header, recs = read_log(tmp_path / "a")
    assert header["schedule_kind"] == "law" and [r["step"] for r in recs] == list(range(1, 15))
    flops_before = [0.0] + [r["flops"] for r in recs[:-1]]
    for r, f0 in zip(recs, flops_before):
        assert r["config"] == ({"patch": 8, "width": 32, "depth": 2, "batch_size": 32} if f0 < switch else
                               {"patch": 4, "width": 64, "depth": 2, "batch_size": 32}), r["step"]
    assert recs[8]["step"] == 9 and recs[8]["config"]["width"] == 64
    assert recs[8]["flops"] - recs[7]["flops"] == 6 * flexivit.build("V64-2", image_size=16).macs(4) * 32
    # killed just after the switch, resumed: the same records
    train_vit.main(tiny(npz, tmp_path / "b", **kw, stop_after_steps=10))
    train_vit.main(tiny(npz, tmp_path / "b", **kw, resume=True))
    same_records(recs, read_log(tmp_path / "b")[1])
    with pytest.raises(train_vit.UserError, match="schedule"):
        write_schedule(sched, [stage({"patch": 8}, 0.0, 1.0), stage({"patch": 2, "width": 64}, 1.0, 1e12)])
        train_vit.main(tiny(npz, tmp_path / "b", **kw, resume=True))


@pytest.mark.parametrize("bad, match", [({"patch": 5}, "valid patch sizes: 1 2 4 8 16"),
                                        ({"patch": 4, "width": 16}, "shrink"),
                                        ({"patch": 4, "width": 48}, "head size 32"),
                                        ({"patch": 4, "objective": "distill"}, "needs a teacher")])
def test_bad_schedule_fails_before_training(npz, tmp_path, bad, match):
    pytest.importorskip("schedule")
    sched = write_schedule(tmp_path / "s.json", [stage({"patch": 8}, 0.0, 1e8), stage(bad, 1e8, 1e12)])
    with pytest.raises(train_vit.UserError, match=match) as e:
        train_vit.main(tiny(npz, tmp_path / "r", patch=None, schedule=str(sched)))
    assert "stage 1" in str(e.value) and not (tmp_path / "r").exists()


def test_schedule_switch_on_error_and_random_kind(npz, tmp_path):
    pytest.importorskip("schedule")
    sched = write_schedule(tmp_path / "e.json", [stage({"patch": 8}, 0.0, 1e12, error_end=1.01),
                                                 stage({"patch": 4}, 1e12, 1e13)])
    train_vit.main(tiny(npz, tmp_path / "e", patch=None, schedule=str(sched), switch_on="error", steps=4, evals=100))
    assert [r["config"]["patch"] for r in read_log(tmp_path / "e")[1]] == [8, 4, 4, 4]   # after the first eval
    sched = write_schedule(tmp_path / "r.json", [stage({"patch": 8}, 0.0, 1e8), stage({"patch": 4}, 1e8, 1e12)],
                           kind="random")
    train_vit.main(tiny(npz, tmp_path / "r", patch=None, schedule=str(sched), steps=6))
    header, recs = read_log(tmp_path / "r")
    assert header["schedule_kind"] == "random" and recs[-1]["config"]["random"] == [4, 8]
    assert recs[-1]["config"]["patch"] == 4


def test_image_size_resizes_train_and_evaluation_images(npz, tmp_path):
    """--image-size 12 trains on 12-pixel images (the 16-pixel data resized once): the FLOPs follow the 12-pixel
    token count, and the resize keeps a constant image constant."""
    train_vit.main(tiny(npz, tmp_path / "r", image_size=12, patch=6, steps=6))
    header, recs = read_log(tmp_path / "r")
    macs = flexivit.build("V32-2", image_size=12).macs(6)
    assert recs[-1]["flops"] == 6 * macs * 32 * 6
    assert header["data"]["image_size"] == 12
    with pytest.raises(train_vit.UserError, match="image_size"):            # a resume at another side is refused
        train_vit.main(tiny(npz, tmp_path / "r", image_size=8, patch=4, steps=8, resume=True))
    from data import resize_images
    x = torch.full((3, 1, 28, 28), 200, dtype=torch.uint8)
    assert resize_images(x, 24).shape == (3, 1, 24, 24) and (resize_images(x, 24) == 200).all()
    assert resize_images(x, 28) is x


def test_a_later_stage_gets_evaluations_of_its_own_dense_after_its_switch(npz, tmp_path):
    """Log-spaced evaluations thin out late; a FLOPs schedule adds its later stages' 1/16, 1/8, 1/4, 1/2 and 3/4 points, so
    compare.py (which reads a stage from 3 evaluations on) can read a switch at 60% of the budget."""
    pytest.importorskip("schedule")
    macs = flexivit.build("V32-2", image_size=16).macs(4)
    budget, switch = 6 * macs * 32 * 40, 6 * macs * 32 * 24
    sched = write_schedule(tmp_path / "s.json", [stage({"patch": 4}, 0.0, switch), stage({"patch": 8}, switch, budget)])
    train_vit.main(tiny(npz, tmp_path / "r", patch=None, steps=None, flops=float(budget), evals=4,
                        schedule=str(sched)))
    late = [r["flops"] for r in read_log(tmp_path / "r")[1] if r["config"]["patch"] == 8]
    assert len(late) >= 6 and late[-1] >= budget
    for f in runtime.STAGE_EVALS:                                # each added point: the first step at or past it
        point = switch + f * (budget - switch)
        assert min(x for x in late if x >= point) - point < 6 * macs * 32


def test_growth_flags_zero_init_preserve_and_head_dim(npz, tmp_path):
    """--grow-gamma 0: the new entries start at zero; --grow-preserve with --grow-depth identity: the grown model
    computes what the small one did; --grow-depth copy: a new block is its neighbour's copy; --head-dim: the heads of
    a static run match a grown model's (checked on resume)."""
    torch.manual_seed(0)
    x = torch.randn(3, 1, 16, 16)
    for gamma, preserve in ((0.0, False), (1.0, True)):
        model = flexivit.build("V32-2", image_size=16).eval()
        before = model(x, 4)
        opt = train_vit.make_optimizer(model, Config(), "cpu")
        cfg = Config(grow_gamma=gamma, grow_preserve=preserve, grow_depth="identity" if preserve else "copy")
        train_vit.grow(model, opt, {"width": 64, "depth": 3}, cfg, "cpu", 0)
        assert model.width == 64 and model.depth == 3 and model.head_dim == 32
        if not preserve:
            assert model.blocks[0].attn.qkv.weight[:, 32:].abs().sum() == 0     # new input columns: zero
            for a, b in zip(model.blocks[1].parameters(), model.blocks[2].parameters()):   # block 2: block 1's copy
                torch.testing.assert_close(a, b)
        else:
            torch.testing.assert_close(model(x, 4), before, atol=1e-5, rtol=1e-4)
    train_vit.main(tiny(npz, tmp_path / "h", model="V64-2", head_dim=16, steps=2, evals=1))
    ck = torch.load(tmp_path / "h" / "ckpt.pt", weights_only=False)
    assert ck["model_args"]["heads"] == 4
    with pytest.raises(train_vit.UserError, match="head_dim"):
        train_vit.main(tiny(npz, tmp_path / "h", model="V64-2", head_dim=32, steps=3, evals=1, resume=True))
    with pytest.raises(train_vit.UserError, match="--head-dim 24"):
        train_vit.main(tiny(npz, tmp_path / "g", model="V64-2", head_dim=24, steps=2))
