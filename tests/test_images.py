"""The image pipeline (issue 17): prepare_images.py (layout, resize and crop, resume after a kill, atomic finish,
every bad input), the memory-mapped reader (training, resume, crops and flips, rank shards, the streamed order)
and --plan on the trainers and the pipeline."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
from lab import planner
from lab import prepare_images
from lab import reproduce
import runtime
import train_lm
import train_vit
from conftest import make_image_folder

ROOT = Path(__file__).resolve().parent.parent


def prep(src, out, *extra):
    return prepare_images.cli(["--src", str(src), "--out", str(out), "--resolution", "24", "--workers", "2",
                               "--chunk", "5", "--no-progress", *map(str, extra)])


def one_line_error(capsys, *names):
    """The last stderr line is the error, naming each of `names`; no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "error:" in last and all(str(n) in last for n in names), err
    return last


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A prepared folder of 3 classes x 14 images (train and val), 24 px, and its source."""
    root = tmp_path_factory.mktemp("images")
    src = make_image_folder(root / "src", per_class=14)
    assert prep(src, root / "out") == 0
    return src, root / "out"


# ----------------------------------------------------------------------------- preparation

def test_prepared_files_hold_every_image_resized_and_cropped(folder):
    src, out = folder
    x, y, tx, ty = data.load_dataset(out)
    meta = json.loads((out / "train.json").read_text())
    assert isinstance(x, data.Images) and x.shape == (42, 3, 24, 24) and tx.shape == (42, 3, 24, 24)
    assert meta["classes"] == ["c0", "c1", "c2"] and meta["counts"] == [14, 14, 14] and meta["resolution"] == 24
    assert meta["bytes"] == os.path.getsize(out / "train.u8") == 42 * 24 * 24 * 3
    assert np.load(out / "train.labels.npy").dtype == np.int32
    # a row is the decoded file: shorter side to 24, centre crop; its class is its brightest channel
    files = prepare_images.list_split(src, "train")[1]
    for i in (0, 17, 41):
        want, _ = prepare_images.decode(src / "train" / files[i][0], 24, 3)
        assert torch.equal(x[[i]][0], torch.from_numpy(want).permute(2, 0, 1))
        assert int(y[[i]][0]) == files[i][1] == int(x[[i]][0].float().mean((1, 2)).argmax())
    assert sorted(os.listdir(out)) == sorted(f"{s}{e}" for s in ("train", "val") for e in (".u8", ".labels.npy", ".json"))


def test_rerun_of_a_finished_preparation_changes_nothing(folder, capsys):
    src, out = folder
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert prep(src, out) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_preparation_stopped_mid_way_resumes_to_the_same_files(folder, tmp_path):
    src, whole = folder
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "lab" / "prepare_images.py"), "--src", str(src), "--out", str(out), "--resolution", "24",
           "--workers", "1", "--chunk", "2", "--no-progress"]
    # stopped as if killed after 3 chunks: nothing under a final name, the progress recorded
    r = subprocess.run([*cmd, "--stop-after-chunks", "3"], capture_output=True, text=True)
    assert r.returncode == 137, r.stderr
    assert not (out / "train.u8").exists() and not (out / "train.json").exists()
    assert json.loads((out / "train.progress.json").read_text())["done"] == 3
    with pytest.raises(runtime.UserError, match="did not finish"):
        data.read_meta(out, "train")
    # and killed for real at some moment of a second attempt, then the same command completes
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    for name in ("train.u8", "val.u8", "train.labels.npy", "val.labels.npy"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    assert not list(out.glob("*.partial")) and not list(out.glob("*progress*")) and not list(out.glob(".*tmp*"))


@pytest.mark.parametrize("damage", ["truncated", "done-text", "done-huge", "bad-rows", "garbage"])
def test_a_damaged_partial_preparation_is_repaired(folder, tmp_path, damage):
    """Issue 25: the partial file cut short, or the progress file edited, after a kill: the rerun says so in a warning
    and prepares the split afresh, to the same files as an undisturbed preparation."""
    src, whole = folder
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "lab" / "prepare_images.py"), "--src", str(src), "--out", str(out), "--resolution",
           "24", "--workers", "1", "--chunk", "2", "--no-progress"]
    assert subprocess.run([*cmd, "--stop-after-chunks", "3"], capture_output=True).returncode == 137
    prog = out / "train.progress.json"
    doc = json.loads(prog.read_text())
    if damage == "truncated":
        os.truncate(out / "train.u8.partial", 100)
    elif damage == "garbage":
        prog.write_bytes(b"\xff{not json")
    else:
        prog.write_text(json.dumps({**doc, **{"done-text": {"done": "3"}, "done-huge": {"done": 10 ** 9},
                                              "bad-rows": {"bad": [[10 ** 6, "x.jpg", "?"]]}}[damage]}))
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "warning:" in r.stderr and ("cut short" in r.stderr or "damaged" in r.stderr), r.stderr
    for name in ("train.u8", "val.u8", "train.labels.npy", "val.labels.npy"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name


def test_corrupt_images_are_skipped_named_and_counted_up_to_max_bad(tmp_path, capsys):
    src = make_image_folder(tmp_path / "src", per_class=12)
    (src / "train" / "c1" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (src / "train" / "c2" / "empty.png").write_bytes(b"")
    assert prep(src, tmp_path / "a", "--max-bad", 2) == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "empty.png" in err
    meta = json.loads((tmp_path / "a" / "train.json").read_text())
    assert meta["shape"][0] == 36 and meta["counts"] == [12, 12, 12] and len(meta["skipped"]) == 2
    # the rows left are exactly the good images, with their labels
    x, y, _ = data.open_split(tmp_path / "a", "train")
    assert all(int(y[[i]][0]) == int(x[[i]][0].float().mean((1, 2)).argmax()) for i in range(36))
    assert prep(src, tmp_path / "b", "--max-bad", 1) == 2
    one_line_error(capsys, "failed to decode", "--max-bad 1")
    assert not (tmp_path / "b" / "train.u8").exists()


def test_bad_folders_are_one_line_naming_them(tmp_path, capsys):
    src = make_image_folder(tmp_path / "src", per_class=3)
    (src / "train" / "c9").mkdir()                            # an empty class folder
    assert prep(src, tmp_path / "o") == 2
    one_line_error(capsys, src / "train" / "c9", "empty class folder")
    (src / "train" / "c9").rmdir()
    (src / "val" / "zebra").mkdir()                           # a val class the train split lacks
    Image.new("RGB", (30, 30)).save(src / "val" / "zebra" / "z.jpg")
    assert prep(src, tmp_path / "o") == 2
    one_line_error(capsys, src / "val" / "zebra", "not in the train split")
    assert not (tmp_path / "o").exists()                       # every folder is checked before any work
    assert prep(tmp_path / "nowhere", tmp_path / "o") == 2
    one_line_error(capsys, "nowhere")


def test_mixed_channel_counts_are_refused_unless_converted(tmp_path, capsys):
    src = make_image_folder(tmp_path / "src", splits=("train",), per_class=4)
    Image.new("L", (30, 40), 99).save(src / "train" / "c1" / "gray.jpg")
    assert prep(src, tmp_path / "o", "--splits", "train") == 2
    one_line_error(capsys, "gray.jpg", "mixed channel counts")
    assert prep(src, tmp_path / "o", "--splits", "train", "--channels", 3) == 0
    assert json.loads((tmp_path / "o" / "train.json").read_text())["shape"] == [13, 24, 24, 3]


def test_a_resolution_no_patch_size_divides_is_refused(folder, tmp_path, capsys):
    src, out = folder
    assert prepare_images.cli(["--src", str(src), "--out", str(tmp_path), "--resolution", "121"]) == 2
    one_line_error(capsys, "--resolution 121", "none of the patch sizes")
    # the pipeline checks a prepared folder against its preset: smoke's patch 14 does not divide 24
    assert runtime.run_cli(reproduce.main, reproduce.Config, "reproduce.py", [
        "--experiment", "patch", "--preset", "smoke", "--data-dir", str(out), "--plan"]) == 2
    one_line_error(capsys, out / "train.json", "14")


def test_truncated_or_foreign_prepared_files_are_refused(folder, tmp_path, capsys):
    _, out = folder
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in out.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "train.u8").write_bytes((out / "train.u8").read_bytes()[:-100])
    args = ["--data-dir", str(bad), "--model", "V32-2", "--patch", "12", "--steps", "2", "--out-dir", str(tmp_path / "r")]
    assert train_vit.cli(args) == 2
    one_line_error(capsys, bad / "train.u8", "truncated")
    (bad / "train.u8").write_bytes((out / "train.u8").read_bytes())
    (bad / "val.json").write_text((out / "val.json").read_text().replace('"version": 1', '"version": 7'))
    assert train_vit.cli(args) == 2
    one_line_error(capsys, bad / "val.json", "version 7")
    assert not (tmp_path / "r").exists()


def test_prepared_labels_out_of_range_are_refused(folder, tmp_path, capsys):
    """Issue 25: a label of -1 (or past the class list) in a prepared folder is one line, not a traceback."""
    _, out = folder
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    labels = np.load(out / "val.labels.npy")
    labels[3] = -1
    np.save(bad / "val.labels.npy", labels)
    args = ["--data-dir", str(bad), "--model", "V32-2", "--patch", "12", "--steps", "2", "--out-dir", str(tmp_path / "r")]
    assert train_vit.cli(args) == 2
    one_line_error(capsys, bad, "test class labels must lie in [0, 3)", "-1")
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- training from the file

def vit_flags(out_dir, run_dir, *extra):
    return ["--data-dir", str(out_dir), "--model", "V32-2", "--patch", "12", "--batch-size", "8", "--warmup", "2",
            "--evals", "3", "--fewshot-support", "42", "--fewshot-query", "42", "--fewshot-seeds", "2", "--test-size",
            "42", "--train-size", "10", "--out-dir", str(run_dir), "--no-progress", "--threads", "1", *extra]


def evals(run_dir):
    return [r for r in runtime.RunLog(Path(run_dir) / "log.jsonl").records() if r["type"] == "eval"]


def test_training_from_the_file_learns_and_resumes_exactly(folder, tmp_path):
    _, out = folder
    assert train_vit.cli(vit_flags(out, tmp_path / "a", "--steps", "30", "--fewshot-data", str(out))) == 0
    whole = evals(tmp_path / "a")
    assert whole[-1]["train_loss"] < whole[0]["train_loss"] and whole[-1]["test_error"] < 0.5
    assert train_vit.cli(vit_flags(out, tmp_path / "b", "--steps", "30", "--fewshot-data", str(out),
                                   "--stop-after-steps", "13")) == 0
    assert train_vit.cli(vit_flags(out, tmp_path / "b", "--steps", "30", "--fewshot-data", str(out), "--resume")) == 0
    drop = ("wall",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in evals(tmp_path / "b")] == \
        [{k: v for k, v in r.items() if k not in drop} for r in whole]


def test_crops_flips_and_rank_shards_of_a_file_batch_match_the_whole_batch(folder):
    _, out = folder
    x, y, _, _ = data.load_dataset(out)
    whole = torch.from_numpy(np.fromfile(out / "train.u8", np.uint8).reshape(42, 24, 24, 3)).permute(0, 3, 1, 2)
    bs, reads = 8, []
    x._account = lambda nbytes: reads.append(nbytes // x.page_bytes)       # rows each read touches
    idx = data.batch_indices(len(x), 37, bs, seed=3, streamed=True)       # crosses an epoch boundary
    full = data.augment(whole[idx], data.generator("augment", 3, 5), True)
    assert torch.equal(data.augment(x[idx], data.generator("augment", 3, 5), True), full)
    for world in (2, 4):                                                 # each rank: its rows only, same pixels
        parts = []
        for rank in range(world):
            lo, hi = rank * bs // world, (rank + 1) * bs // world
            parts.append(data.augment(x[idx[lo:hi]], data.generator("augment", 3, 5), True, rows=(lo, bs)))
        assert torch.equal(torch.cat(parts), full)
    assert reads == [8, 4, 4, 2, 2, 2, 2]
    assert torch.equal(y[idx], torch.from_numpy(np.load(out / "train.labels.npy")[idx.numpy()]).long())


@pytest.mark.parametrize("n", [1, 2, 7, 42, 1000, 4099])
def test_the_streamed_order_is_a_permutation_per_epoch_fixed_by_seed_and_epoch(n):
    b = 5 if n < 100 else 97
    epoch = torch.cat([data.batch_indices(n, s, b, 0, True) for s in range(0, n, b)])[:n]
    assert sorted(epoch.tolist()) == list(range(n))
    assert torch.equal(data.feistel_permutation(n, 0, 0, 0, n), epoch)
    if n > 7:
        assert not torch.equal(data.feistel_permutation(n, 0, 1, 0, n), epoch)
        assert not torch.equal(data.feistel_permutation(n, 1, 0, 0, n), epoch)


# ----------------------------------------------------------------------------- the planner

def plan_rows(text):
    return [ln for ln in text.splitlines() if " steps " in ln and "total" not in ln]


def test_plan_counts_the_steps_the_run_takes_and_writes_nothing(folder, tmp_path, capsys):
    _, out = folder
    flags = vit_flags(out, tmp_path / "run", "--flops", "3e8")
    assert planner.cli(["train_vit.py", *flags, "--plan-steps", "2"]) == 0
    text = capsys.readouterr().out
    assert not (tmp_path / "run").exists()
    assert train_vit.cli(flags) == 0
    last = evals(tmp_path / "run")[-1]
    total = next(ln for ln in text.splitlines() if "total:" in ln)
    assert f"total: {last['step']:,} steps, {last['samples']:,} examples" in total
    assert "ms/step" in text and "peak memory" in text and "3 evals" in plan_rows(text)[0]


def test_plan_splits_a_schedule_as_the_trainer_switches(folder, tmp_path, capsys):
    _, out = folder
    sched = tmp_path / "s.json"
    sched.write_text(json.dumps({"version": 1, "kind": "law", "stages": [{"config": {"patch": 12}, "flops_start": 0},
                                                                          {"config": {"patch": 6}, "flops_start": 1e8}]}))
    flags = [f for f in vit_flags(out, tmp_path / "run", "--flops", "4e8", "--schedule", str(sched)) if f != "12"]
    flags.remove("--patch")
    assert planner.cli(["train_vit.py", *flags, "--plan-steps", "1"]) == 0
    rows = plan_rows(capsys.readouterr().out)
    assert train_vit.cli(flags) == 0
    recs = evals(tmp_path / "run")
    switch = next(r["step"] for r in recs if r["config"]["patch"] == 6)    # first evaluation at patch 6
    planned = [int(r.split("steps")[0].split()[-1].replace(",", "")) for r in rows]
    assert len(rows) == 2 and sum(planned) == recs[-1]["step"] and planned[0] < switch


def test_lm_and_pipeline_plans_write_nothing(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    assert planner.cli(["train_lm.py", "--data", str(corpus), "--model", "L32-2", "--context", "16", "--tokens-per-step", "128",
                         "--val-tokens", "256", "--steps", "40", "--out-dir", str(tmp_path / "lm"), "--cache-dir",
                         str(tmp_path / "cache"), "--threads", "1", "--plan-steps", "1"]) == 0
    assert "total: 40 steps, 5,120 tokens" in capsys.readouterr().out and not (tmp_path / "lm").exists()
    assert train_lm.cli(["--data", str(corpus), "--steps", "4", "--plan"]) == 2      # the old spelling: one line
    assert "moved to the lab: python lab/planner.py train_lm.py" in capsys.readouterr().err
    assert runtime.run_cli(reproduce.main, reproduce.Config, "reproduce.py", [
        "--experiment", "context", "--preset", "smoke", "--set", "contexts=16,8", f"data={corpus}", "val_tokens=256",
        "tokens_per_step=128", "--flops", "2e9", "--out-dir",
        str(tmp_path / "sweep"), "--threads", "1", "--plan"]) == 0
    text = capsys.readouterr().out
    assert "sweep: 2 static runs" in text and "scheduled runs" in text and not (tmp_path / "sweep").exists()


def test_split_steps_follows_flops_and_step_budgets():
    stages = [{"flops_start": 0, "step_flops": 10.0}, {"flops_start": 95, "step_flops": 40.0}]
    assert planner.split_steps(300, "flops", stages) == [10, 5]      # 100 FLOPs, then 200 more: 5 steps
    assert planner.split_steps(12, "steps", stages) == [10, 2]
    assert planner.split_steps(50, "flops", stages) == [5, 0]
    assert planner.evals_per_stage([1, 50, 100, 300], "flops", stages, [10, 5]) == [3, 1]


@pytest.mark.parametrize("flag, value", [("--patch-sizes", "0"), ("--stop-after-chunks", "0"), ("--chunk", "0"),
                                         ("--resolution", "0")])
def test_every_flag_of_prepare_images_is_checked(tmp_path, capsys, flag, value):
    """Issue 25: a zero patch size traced back, --stop-after-chunks 0 killed the process; now one line each."""
    src = make_image_folder(tmp_path / "src", per_class=2)
    assert prepare_images.cli(["--src", str(src), "--out", str(tmp_path / "o"), flag, value]) == 2
    one_line_error(capsys, flag)
    assert not (tmp_path / "o").exists()
