"""Issue 25, a run folder changed between runs: every tampering with what a resume reads is refused in one line (exit
code 2) and leaves the folder byte-identical; WORLD_SIZE set without torchrun is refused before any process group;
reproduce.py with its manifest gone refuses a command whose settings differ from the runs already there."""
import json
import shutil

import numpy as np
import pytest

import runtime
import train_lm
import train_vit
from conftest import make_images
from lab import reproduce
from test_badinput import lm, snapshot, vit


@pytest.fixture(scope="module")
def b(tmp_path_factory):
    """Tiny images, a corpus, and one finished run of each trainer (log.jsonl and ckpt.pt), made once."""
    d = tmp_path_factory.mktemp("runs")
    x, y = make_images(300, np.random.default_rng(0))
    np.savez(d / "tiny.npz", x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    (d / "corpus.txt").write_bytes(bytes(np.random.default_rng(1).integers(32, 127, 40000).astype(np.uint8)))
    b = type("B", (), dict(root=d, npz=d / "tiny.npz", corpus=d / "corpus.txt", cache=d / "cache"))
    assert train_vit.cli([str(a) for a in vit(b, d / "vit", "--steps", 2)]) == 0
    assert train_lm.cli([str(a) for a in lm(b, d / "lm", "--steps", 2)]) == 0
    return b


def garbage(run):
    (run / "log.jsonl").write_bytes(b"\xff\xfe\x00 not a log\n\x89PNG\n")


def not_an_object(run):
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join([lines[0], "[1, 2]", *lines[1:]]) + "\n")


def deleted(run):
    (run / "log.jsonl").unlink()


def emptied(run):
    (run / "log.jsonl").write_text("")


def foreign(run):                                     # another run's log (seed 7) copied in over this one's
    lines = (run / "log.jsonl").read_text().splitlines()
    head = json.loads(lines[0])
    head["config"]["seed"] = 7
    (run / "log.jsonl").write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")


def dangling(run):
    (run / "ckpt.pt").unlink()
    (run / "ckpt.pt").symlink_to(run / "gone" / "ckpt.pt")


@pytest.mark.parametrize("trainer", ["vit", "lm"])
@pytest.mark.parametrize("tamper, says", [(garbage, "log.jsonl: line 1"), (not_an_object, "log.jsonl: line 2"),
                                          (deleted, "log.jsonl is missing"), (emptied, "log.jsonl is missing"),
                                          (dangling, "ckpt.pt is a link"), (foreign, "seed=7")])
def test_a_tampered_run_folder_is_refused_on_resume(b, tmp_path, capsys, trainer, tamper, says):
    run = tmp_path / "run"
    shutil.copytree(b.root / trainer, run)
    tamper(run)
    cli, args, script = (train_vit.cli, vit, "train_vit.py") if trainer == "vit" else (train_lm.cli, lm, "train_lm.py")
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli([str(a) for a in args(b, run, "--steps", 4, "--resume")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{script}: error:") and says in err[0], err
    assert "--out-dir" in err[0] or "link" in err[0]                   # what to do: another folder, or the link
    assert snapshot(tmp_path) == before and (tamper is not dangling or (run / "ckpt.pt").is_symlink())


def test_a_log_cut_short_by_a_kill_still_resumes(b, tmp_path):
    """The one damage a kill leaves, half a last line, is dropped; the records before it are kept."""
    run = tmp_path / "run"
    shutil.copytree(b.root / "vit", run)
    with open(run / "log.jsonl", "a") as f:
        f.write('{"type": "eval", "step": 9')
    evals = [r for r in runtime.RunLog(run / "log.jsonl").records() if r["type"] == "eval"]
    assert train_vit.cli([str(a) for a in vit(b, run, "--steps", 4, "--resume")]) == 0
    after = [r for r in runtime.RunLog(run / "log.jsonl").records() if r["type"] == "eval"]
    assert after[:len(evals)] == evals and after[-1]["step"] == 4


def test_a_resume_on_other_data_is_refused(b, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(b.root / "vit", run)
    other = tmp_path / "other.npz"
    shutil.copy(b.npz, other)
    before = snapshot(run)
    args = [str(a) for a in vit(b, run, "--steps", 4, "--resume")]
    args[args.index(str(b.npz))] = str(other)
    assert train_vit.cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data_dir" in err[0] and "--out-dir" in err[0], err
    assert snapshot(run) == before


@pytest.mark.parametrize("script", ["train_vit.py", "train_lm.py"])
def test_world_size_without_torchrun_is_one_line(b, tmp_path, capsys, monkeypatch, script):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    cli, args = (train_vit.cli, vit) if script == "train_vit.py" else (train_lm.cli, lm)
    assert cli([str(a) for a in args(b, tmp_path / "r", "--steps", 2)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "WORLD_SIZE=2" in err[0] and "torchrun" in err[0], err
    assert not (tmp_path / "r").exists()


def test_reproduce_without_its_manifest_refuses_other_settings(tmp_path, capsys):
    """pipeline.json deleted, run folders left: a rerun with other settings is refused, the same settings are not."""
    root = tmp_path / "p"
    cfg = runtime.parse(reproduce.Config, "reproduce.py", ["--preset", "smoke", "--out-dir", str(root)])
    p = reproduce.resolve(cfg)
    static, sched = reproduce.plan(cfg, p, root, (0,), 1)
    job = static[0]
    flags = runtime.parse(train_vit.Config, "train_vit.py", job.cmd[2:])
    job.out.mkdir(parents=True)
    header = {"version": 1, "type": "header", "run": job.name, "config": json.loads(runtime.dumps(vars(flags)))}
    (job.out / "log.jsonl").write_text(json.dumps({**header, "config": {**header["config"], "threads": 7}}) + "\n")
    reproduce.check_orphans(root, static + sched)                       # the same settings: no complaint
    (job.out / "log.jsonl").write_text(json.dumps({**header, "config": {**header["config"], "lr": 0.5}}) + "\n")
    before = snapshot(tmp_path)
    assert runtime.run_cli(reproduce.main, reproduce.Config, "reproduce.py",
                           ["--preset", "smoke", "--out-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no pipeline.json" in err[0] and job.name in err[0] and "lr" in err[0], err
    assert snapshot(tmp_path) == before and not (root / "pipeline.json").exists()
