"""train_lm.py data parallel (dist.py): `torchrun --standalone --nproc_per_node 2` (gloo on CPU) against one process.

A tiny L32-2 run of 12 steps, evaluated after every step, whose schedule switches after step 4 from context 16 (16
rows of --tokens-per-step 256) to {"context": 32, "batch_size": 16} (512 tokens a step: LR x sqrt(2), --lr-scaling):
- 2 processes (killed after step 7, resumed) give one process's curve: train_loss and val_loss within RTOL = 1e-4
  relative (measured: ~1e-7, float sums in another order), and exactly the same tokens, FLOPs, configs and LRs;
- 2 processes killed and resumed give exactly the records of 2 processes uninterrupted (wall time aside);
- resuming on another number of processes, or a global batch that does not split across them: exit code 2, one line.
"""
import dataclasses
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_lm
from train_lm import LM, Config, model_args

ROOT = Path(__file__).resolve().parent.parent
RTOL = 1e-4
STEP_FLOPS = 6 * LM(**model_args("L32-2", 256, 32)).macs_per_token(16) * 256      # a step at context 16


def argv(cfg):
    """The command line of a Config (flags that differ from the defaults)."""
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value != f.default:
            name = "--" + f.name.replace("_", "-")
            out += ([name] if value is True else [f"--no-{name[2:]}"] if value is False else [name, str(value)])
    return out


def torchrun(cfg, n=2):
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                        "train_lm.py", *argv(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout


def read_log(out_dir):
    rows = [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]
    return rows[0], rows[1:]


def write_schedule(path, stages):
    path.write_text(json.dumps({"version": 1, "kind": "law", "metric": "val_loss",
                                "stages": [{"config": c, "flops_start": f} for c, f in stages]}))
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm_ddp")
    corpus = d / "text.txt"
    corpus.write_text("".join(inspect.getsource(m) for m in (json, dataclasses, inspect)))
    schedule = write_schedule(d / "schedule.json", [({"context": 16}, 0.0),
                                                    ({"context": 32, "batch_size": 16}, 3.5 * STEP_FLOPS)])
    cfg = Config(out_dir=str(d / "one"), data=str(corpus), model="L32-2", tokens_per_step=256, steps=12, warmup=4,
                 evals=100, val_tokens=512, cache_dir=str(d / "cache"), schedule=schedule, lr_scaling="sqrt")
    return d, cfg


@pytest.fixture(scope="module")
def runs(setup):
    """One process in this one; 2 processes uninterrupted; 2 processes stopped after step 7 and resumed."""
    d, cfg = setup
    train_lm.main(cfg)
    whole = dataclasses.replace(cfg, out_dir=str(d / "whole"))
    cut = dataclasses.replace(cfg, out_dir=str(d / "cut"))
    printed = torchrun(whole)
    torchrun(dataclasses.replace(cut, stop_after_steps=7))
    torchrun(dataclasses.replace(cut, resume=True))
    return {"one": cfg, "whole": whole, "cut": cut, "printed": printed}


def test_two_processes_give_one_process_curve_and_compute(runs):
    _, one = read_log(runs["one"].out_dir)
    header, two = read_log(runs["cut"].out_dir)
    assert header["world_size"] == 2
    assert torch.load(Path(runs["cut"].out_dir) / "ckpt.pt", weights_only=False)["state"]["world_size"] == 2
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, 13))   # rank 0 alone logs
    assert runs["printed"].count("step 1 ") == 1                                        # and prints
    for a, b in zip(one, two):
        assert (a["tokens"], a["flops"], a["config"], a["lr"]) == (b["tokens"], b["flops"], b["config"], b["lr"])
        for key in ("train_loss", "val_loss", "val_loss_max_context"):
            assert b[key] == pytest.approx(a[key], rel=RTOL), (a["step"], key)
    # the global batch sets the tokens, FLOPs and LR: 16 rows at both contexts, 8 a process
    assert [r["config"] for r in one[3:5]] == [{"context": 16}, {"context": 32, "batch_size": 16}]
    assert one[3]["tokens"] == 4 * 256 and one[-1]["tokens"] == 4 * 256 + 8 * 512
    big = 6 * LM(**model_args("L32-2", 256, 32)).macs_per_token(32) * 512
    assert one[-1]["flops"] == pytest.approx(4 * STEP_FLOPS + 8 * big, rel=1e-12)
    assert one[-1]["lr"] == pytest.approx(runs["one"].lr * 2 ** 0.5)
    loss = [r["train_loss"] for r in one]                    # the curve moves by far more than the tolerance
    assert max(loss) / min(loss) - 1 > 100 * RTOL


def test_resume_under_two_processes_reproduces_the_uninterrupted_log(runs):
    _, whole = read_log(runs["whole"].out_dir)
    _, cut = read_log(runs["cut"].out_dir)
    assert [{k: v for k, v in r.items() if k != "wall"} for r in cut] == \
        [{k: v for k, v in r.items() if k != "wall"} for r in whole]


def cli(capsys, cfg):
    capsys.readouterr()
    code = train_lm.cli(argv(cfg))
    return code, capsys.readouterr().err.strip().splitlines()


def test_resume_on_another_number_of_processes_is_refused(runs, capsys):
    log = (Path(runs["cut"].out_dir) / "log.jsonl").read_text()
    code, err = cli(capsys, dataclasses.replace(runs["cut"], resume=True, steps=14))     # here: 1 process
    assert code == 2 and len(err) == 1 and "trained on 2 process(es), this launch has 1" in err[0], err
    assert (Path(runs["cut"].out_dir) / "log.jsonl").read_text() == log


def test_a_global_batch_that_does_not_divide_is_refused(setup, capsys, monkeypatch):
    d, cfg = setup
    cfg = dataclasses.replace(cfg, out_dir=str(d / "w"), schedule="", context=16)
    for k, v in (("WORLD_SIZE", "3"), ("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")):
        monkeypatch.setenv(k, v)                              # as torchrun's rank 0 of 3: found before any collective
    code, err = cli(capsys, cfg)
    assert code == 2 and len(err) == 1 and "batch size 16 does not divide across 3 processes" in err[0], err
    odd = write_schedule(d / "odd.json", [({"context": 16}, 0.0), ({"context": 32, "batch_size": 10}, 1e9)])
    monkeypatch.setenv("WORLD_SIZE", "4")
    code, err = cli(capsys, dataclasses.replace(cfg, schedule=odd))
    assert code == 2 and len(err) == 1 and "stage 1 batch_size" in err[0] and "10 does not divide across 4" in err[0]
    monkeypatch.setenv("RANK", "1")                           # the same error; only rank 0 prints it
    code, err = cli(capsys, dataclasses.replace(cfg, schedule=odd))
    assert code == 2 and err == []
    assert not (d / "w").exists()
