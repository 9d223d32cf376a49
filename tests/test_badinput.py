"""The reliability promise under hostile input, across all seven scripts: every bad flag or file gets exit code 2,
exactly one line on stderr naming what is wrong, no traceback, and every file written before is byte-identical
afterwards (no *.tmp, no header-only log, no clobbered laws.json / log.jsonl / ckpt.pt). Cases run in-process
(each script's cli / runtime.run_cli); a handful run end to end as subprocesses."""
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lab import compare, prepare_images
import eval_fewshot
import fit_laws
from lab import reproduce
import runtime
import schedule
import train_lm
import train_vit
from conftest import make_image_folder, make_images

ROOT = Path(__file__).resolve().parent.parent

CLIS = {"train_vit.py": train_vit.cli, "train_lm.py": train_lm.cli, "fit_laws.py": fit_laws.cli,
        "schedule.py": schedule.cli, "compare.py": compare.cli, "prepare_images.py": prepare_images.cli,
        "eval_fewshot.py": lambda a: runtime.run_cli(eval_fewshot.main, eval_fewshot.Config, "eval_fewshot.py", a),
        "reproduce.py": lambda a: runtime.run_cli(reproduce.main, reproduce.Config, "reproduce.py", a,
                                                  errors=(reproduce.StepFailed,))}


def vit(b, out, *extra):
    patch = [] if "--schedule" in extra else ["--patch", 4]
    return ["--data-dir", b.npz, "--model", "V32-2", *patch, "--batch-size", 16, "--warmup", 2, "--evals", 2,
            "--fewshot-support", 200, "--fewshot-query", 40, "--fewshot-seeds", 1, "--test-size", 40,
            "--train-size", 40, "--out-dir", out, "--no-progress", "--threads", 1, *extra]


def lm(b, out, *extra):
    return ["--data", b.corpus, "--model", "L32-2", "--context", 16, "--tokens-per-step", 128, "--val-tokens", 256,
            "--evals", 2, "--warmup", 2, "--out-dir", out, "--cache-dir", b.cache, "--no-progress", "--threads", 1,
            *extra]


def write_log(path, configs=({"patch": 7}, {"patch": 14}), n=24):
    """Synthetic static runs in the trainers' log format: one folder per config under `path`."""
    for cfg in configs:
        C = np.geomspace(1e11, 1e14, n)
        E = 3e4 * (C + 2e11) ** -0.4 * (7 / cfg["patch"]) ** 0.1 + 0.08
        d = Path(path) / f"static_p{cfg['patch']}"
        d.mkdir(parents=True, exist_ok=True)
        lines = [{"version": 1, "type": "header", "run": d.name, "config": {"model": "V64-4", "seed": 0, **cfg}}]
        lines += [{"type": "eval", "step": 10 * (i + 1), "flops": float(c), "config": cfg, "wall": float(i + 1),
                   "fewshot10_error": float(e), "test_error": float(e) - 0.02} for i, (c, e) in enumerate(zip(C, E))]
        (d / "log.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return Path(path)


@pytest.fixture(scope="module")
def b(tmp_path_factory):
    """Valid inputs, made once: tiny images, a corpus, two trained runs, synthetic logs, laws and a schedule."""
    d = tmp_path_factory.mktemp("base")
    rng = np.random.default_rng(0)
    x, y = make_images(300, rng)
    np.savez(d / "tiny.npz", x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    (d / "corpus.txt").write_bytes(bytes(rng.integers(32, 127, 40000).astype(np.uint8)))
    b = SimpleNamespace(root=d, npz=d / "tiny.npz", corpus=d / "corpus.txt", cache=d / "cache", logs=d / "logs")
    assert train_vit.cli([str(a) for a in vit(b, d / "vit", "--steps", 2)]) == 0
    assert train_lm.cli([str(a) for a in lm(b, d / "lm", "--steps", 2)]) == 0
    write_log(b.logs)
    b.laws, b.sched = d / "laws.json", d / "schedule.json"
    assert fit_laws.cli(["--logs", str(b.logs), "--out", str(b.laws), "--bootstrap", "0", "--no-plot"]) == 0
    assert schedule.cli(["--laws", str(b.laws), "--budget", "3e13", "--out", str(b.sched), "--no-plot"]) == 0
    b.vit_ckpt, b.lm_ckpt = d / "vit" / "ckpt.pt", d / "lm" / "ckpt.pt"
    return b


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture
def w(tmp_path, b):
    """A workspace holding earlier outputs that a refused command must leave byte-identical: a run folder
    (log.jsonl, ckpt.pt), laws.json, schedule.json, comparison.json; `in/` for the bad files a case writes."""
    out = tmp_path / "out"
    shutil.copytree(b.root / "vit", out)
    for f in (b.laws, b.sched):
        shutil.copy(f, out / f.name)
    (out / "comparison.json").write_text('{"rows": []}\n')
    (tmp_path / "in").mkdir()
    return tmp_path


def put(w, name, content):
    p = w / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
    return p


def jput(w, name, obj):
    return put(w, name, json.dumps(obj))


def npz(w, b, **change):
    with np.load(b.npz) as z:
        arrays = dict(z)
    arrays.update(change)
    for k in [k for k, v in change.items() if v is None]:
        del arrays[k]
    p = w / "in" / "bad.npz"
    np.savez(p, **arrays)
    return p


def laws_doc(base, **law_change):
    doc = json.loads(base.laws.read_text())
    doc["laws"][0].update(law_change)
    return doc


def sched_doc(b, **stage_change):
    doc = json.loads(b.sched.read_text())
    doc["stages"][0].update(stage_change)
    return doc


NESTED = "[" * 100000 + "]" * 100000
HUGE = '{"version": 1, "metric": "fewshot10_error", "laws": [{"name": "x", "a": 1e400, "b": 1, "c": 0, "d": 0}]}'


def idx_dir(w, b, corrupt):
    """Fashion-MNIST-style IDX files from the tiny images; `corrupt` mutates the named file's bytes."""
    with np.load(b.npz) as z:
        arrays = dict(z)
    d = w / "in" / "idx"
    d.mkdir()
    for stem, key in (("train-images-idx3-ubyte", "x_train"), ("train-labels-idx1-ubyte", "y_train"),
                      ("t10k-images-idx3-ubyte", "x_test"), ("t10k-labels-idx1-ubyte", "y_test")):
        a = arrays[key].astype(np.uint8)
        raw = bytes([0, 0, 8, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape) + a.tobytes()
        (d / stem).write_bytes(corrupt.get(stem, lambda r: r)(raw))
    return d


HUGEINT = "1" + "0" * 400


def text(content):
    """A run log holding `content`."""
    return lambda w, b: put(w, "r/log.jsonl", content)


def edited(old=None, new="", append="", keep=None):
    """A copy of a valid run log: `old` replaced by `new` everywhere, `append` added as a last line, or only the first
    `keep` lines."""
    def make(w, b):
        lines = (b.logs / "static_p7/log.jsonl").read_text().replace(old or "\0", new).splitlines()[:keep]
        return put(w, "r/log.jsonl", "\n".join(lines + ([append] if append else [])) + "\n")
    return make


def fit(log, *flags):
    """fit_laws.py on the valid logs (log None) or on one made by `log`, with `flags`, over the earlier laws.json."""
    return lambda w, b: ["--logs", log(w, b) if log else b.logs, *flags, "--out", w / "out/laws.json"]


def run_vit(*extra):
    return lambda w, b: vit(b, w / "new", *extra)


def run_lm(*extra):
    return lambda w, b: lm(b, w / "new", *extra)


# (script, make args from (workspace, base), what the one line must say)
CASES = {
    # ---- train_vit.py: numbers
    "vit-evals-neg": ("train_vit.py", run_vit("--steps", 2, "--evals", -1), "--evals"),
    "vit-evals-huge": ("train_vit.py", run_vit("--steps", 2, "--evals", 10**9), "--evals"),
    "lm-evals-huge": ("train_lm.py", run_lm("--steps", 2, "--evals", 10**9), "--evals"),
    "sch-grid-huge": ("schedule.py", lambda w, b: ["--laws", b.laws, "--budget", 3e13, "--grid", 10**10, "--out",
                                                   w / "out/schedule.json"], "--grid"),
    "vit-lr-neg": ("train_vit.py", run_vit("--steps", 2, "--lr", -1), "--lr"),
    "vit-lr-nan": ("train_vit.py", run_vit("--steps", 2, "--lr", "nan"), "--lr"),
    "vit-wd-neg": ("train_vit.py", run_vit("--steps", 2, "--weight-decay", -1), "--weight-decay"),
    "vit-patch-32": ("train_vit.py", run_vit("--steps", 2, "--patch", 32), "--patch"),
    "vit-patch-neg": ("train_vit.py", run_vit("--steps", 2, "--patch", -4), "--patch"),
    "vit-support-0": ("train_vit.py", run_vit("--steps", 2, "--fewshot-support", 0), "--fewshot-support"),
    "vit-query-0": ("train_vit.py", run_vit("--steps", 2, "--fewshot-query", 0), "--fewshot-query"),
    "vit-train-size-neg": ("train_vit.py", run_vit("--steps", 2, "--train-size", -1), "--train-size"),
    "vit-ckpt-every-neg": ("train_vit.py", run_vit("--steps", 2, "--ckpt-every", -1), "--ckpt-every"),
    "vit-ckpt-minutes-nan": ("train_vit.py", run_vit("--steps", 2, "--ckpt-minutes", "nan"), "--ckpt-minutes"),
    "vit-rewarm-neg": ("train_vit.py", run_vit("--steps", 2, "--rewarm", -1), "--rewarm"),
    "vit-temperature-0": ("train_vit.py", run_vit("--steps", 2, "--temperature", 0), "--temperature"),
    "vit-model-abc": ("train_vit.py", run_vit("--steps", 2, "--model", "Vabc"), "--model"),
    "vit-stop-after-0": ("train_vit.py", run_vit("--steps", 2, "--stop-after-steps", 0), "--stop-after-steps"),
    "vit-flops-1e400": ("train_vit.py", run_vit("--flops", "1e400"), "--flops"),
    "vit-random-sizes-0": ("train_vit.py", run_vit("--steps", 2, "--random", "--patch-sizes", 0, 4), "--patch-sizes"),
    "vit-teacher-missing": ("train_vit.py", run_vit("--steps", 2, "--objective", "distill", "--teacher", "/no/ckpt.pt"),
                            "--teacher"),
    "vit-distill-no-teacher": ("train_vit.py", run_vit("--steps", 2, "--objective", "distill"), "--teacher"),
    "vit-teacher-garbage": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--objective", "distill",
                                                            "--teacher", put(w, "t.pt", b"junk")), "t.pt"),
    "vit-teacher-lm-ckpt": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--objective", "distill",
                                                            "--teacher", b.lm_ckpt), "ckpt.pt"),
    # ---- train_vit.py: outputs and earlier runs
    "vit-out-is-file": ("train_vit.py", lambda w, b: vit(b, w / "out" / "laws.json", "--steps", 2), "--out-dir"),
    "vit-out-under-file": ("train_vit.py", lambda w, b: vit(b, w / "out" / "laws.json" / "sub", "--steps", 2), "--out-dir"),
    "lm-out-under-file": ("train_lm.py", lambda w, b: lm(b, w / "out" / "laws.json" / "sub", "--steps", 2), "--out-dir"),
    "sch-out-under-file": ("schedule.py", lambda w, b: ["--laws", b.laws, "--budget", 3e13, "--out",
                                                        w / "out/laws.json/x.json"], "laws.json"),
    "cmp-out-under-file": ("compare.py", lambda w, b: ["--runs", *b.logs.iterdir(), "--out-dir", w / "out/laws.json/x"],
                           "--out-dir"),
    "ev-out-under-file": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", b.npz, "--shots", 10,
                                                           "--out", w / "out/laws.json/x.json"], "laws.json"),
    "vit-fresh-over-run": ("train_vit.py", lambda w, b: vit(b, w / "out", "--steps", 2), "--resume"),
    "vit-resume-lm-ckpt": ("train_vit.py", lambda w, b: vit(b, shutil.copytree(b.root / "lm", w / "l"), "--steps", 4,
                                                          "--resume"), "ckpt.pt"),
    "vit-resume-half-ckpt": ("train_vit.py", lambda w, b: (
        (w / "h").mkdir(), (w / "h" / "ckpt.pt").write_bytes(b.vit_ckpt.read_bytes()[:5000]),
        vit(b, w / "h", "--steps", 4, "--resume"))[-1], "ckpt.pt"),
    "vit-resume-other-model": ("train_vit.py", lambda w, b: vit(b, w / "out", "--steps", 4, "--resume", "--model",
                                                              "V32-1"), "model"),
    # ---- train_vit.py: data files
    "vit-data-missing": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", w / "nope"), "nope"),
    "vit-npz-garbage": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir",
                                                       put(w, "g.npz", b"hello")), "g.npz"),
    "vit-npz-truncated": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir",
                                                         put(w, "t.npz", b.npz.read_bytes()[:3000])), "t.npz"),
    "vit-npz-no-ytest": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir",
                                                        npz(w, b, y_test=None)), "y_test"),
    "vit-npz-1d-images": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir",
                                                         npz(w, b, x_train=np.zeros(240, np.uint8))), "bad.npz"),
    "vit-npz-nan-labels": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir",
                                                          npz(w, b, y_test=np.full(60, np.nan))), "labels"),
    "vit-npz-label-count": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir",
                                                           npz(w, b, y_train=np.zeros(7, np.int64))), "bad.npz"),
    "vit-npz-string-labels": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", npz(
        w, b, y_train=np.array(["cat", "dog"] * 120))), "training labels must be a 1-d integer array"),
    "vit-npz-negative-label": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", npz(
        w, b, y_test=np.r_[-1, np.ones(59, np.int64)])), "test class labels must lie in [0, 65536)"),
    "vit-npz-one-class": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", npz(
        w, b, y_train=np.ones(240, np.int64), y_test=np.ones(60, np.int64))), "two classes"),
    "vit-npz-untrained-test-class": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", npz(
        w, b, y_test=np.full(60, 11))), "test class(es) [11] have no training image"),
    "vit-npz-empty-test": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", npz(
        w, b, x_test=np.zeros((0, 16, 16), np.uint8), y_test=np.zeros(0, np.int64))), "bad.npz"),
    "vit-npz-float-images": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", npz(
        w, b, x_train=np.zeros((240, 16, 16), np.float32))), "uint8"),
    "vit-idx-bad-magic": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", idx_dir(
        w, b, {"train-images-idx3-ubyte": lambda r: b"\x01\x02" + r[2:]})), "train-images"),
    "vit-idx-truncated": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", idx_dir(
        w, b, {"t10k-labels-idx1-ubyte": lambda r: r[:20]})), "t10k-labels"),
    "vit-idx-bad-gzip": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", idx_dir(
        w, b, {"t10k-images-idx3-ubyte": lambda r: gzip.compress(r)[:40]})), "t10k-images"),
    # ---- train_vit.py: schedule files
    "vit-sched-missing": ("train_vit.py", run_vit("--steps", 2, "--schedule", "/no/schedule.json"), "schedule.json"),
    "vit-sched-garbage": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--schedule",
                                                         put(w, "s.json", "{not json")), "s.json"),
    "vit-sched-nested": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--schedule",
                                                        put(w, "s.json", NESTED)), "s.json"),
    "vit-sched-huge": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--schedule", put(
        w, "s.json", b.sched.read_text().replace('"flops_end": ', '"flops_end": 1e400, "x": ', 1))), "s.json"),
    "vit-sched-patch-0": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--schedule", jput(
        w, "s.json", sched_doc(b, config={"patch": 0}))), "patch"),
    "vit-sched-patch-str": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--schedule", jput(
        w, "s.json", sched_doc(b, config={"patch": "seven"}))), "patch"),
    "vit-sched-no-stages": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--schedule", jput(
        w, "s.json", {**json.loads(b.sched.read_text()), "stages": []})), "s.json"),
    "vit-sched-list": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--schedule",
                                                      jput(w, "s.json", [1, 2])), "s.json"),
    "vit-sched-width-0": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--schedule", jput(
        w, "s.json", sched_doc(b, config={"patch": 4, "width": 0}))), "width"),
    # ---- train_lm.py
    "lm-data-missing": ("train_lm.py", lambda w, b: lm(b, w / "new", "--steps", 2, "--data", w / "nope.txt"), "nope"),
    "lm-data-empty": ("train_lm.py", lambda w, b: lm(b, w / "new", "--steps", 2, "--data", put(w, "e.txt", "")),
                      "e.txt"),
    "lm-data-empty-dir": ("train_lm.py", lambda w, b: lm(b, w / "new", "--steps", 2, "--data",
                                                       (w / "in" / "d").mkdir() or w / "in" / "d"), "--data"),
    "lm-data-odd-bin": ("train_lm.py", lambda w, b: lm(b, w / "new", "--steps", 2, "--vocab-size", 300, "--data",
                                                     put(w, "t.bin", b"\x01\x00\x02")), "t.bin"),
    "lm-data-bin-over-vocab": ("train_lm.py", lambda w, b: lm(b, w / "new", "--steps", 2, "--vocab-size", 300, "--data",
                                                            put(w, "t.bin", np.arange(4000, dtype=np.uint16).tobytes())),
                               "vocab"),
    "lm-glob-none": ("train_lm.py", lambda w, b: lm(b, w / "new", "--steps", 2, "--data", w / "in", "--glob", "*.zzz"),
                     "*.zzz"),
    "lm-context-0": ("train_lm.py", run_lm("--steps", 2, "--context", 0), "--context"),
    "lm-context-neg": ("train_lm.py", run_lm("--steps", 2, "--context", -16), "--context"),
    "lm-val-tokens-0": ("train_lm.py", run_lm("--steps", 2, "--val-tokens", 0), "--val-tokens"),
    "lm-lr-nan": ("train_lm.py", run_lm("--steps", 2, "--lr", "nan"), "--lr"),
    "lm-evals-neg": ("train_lm.py", run_lm("--steps", 2, "--evals", -1), "--evals"),
    "lm-model-depth-0": ("train_lm.py", run_lm("--steps", 2, "--model", "L32-0"), "--model"),
    "lm-model-foo": ("train_lm.py", run_lm("--steps", 2, "--model", "foo"), "--model"),
    "lm-vocab-neg": ("train_lm.py", run_lm("--steps", 2, "--vocab-size", -1), "--vocab-size"),
    "lm-eval-from-2": ("train_lm.py", run_lm("--steps", 2, "--eval-from", 2), "--eval-from"),
    "lm-wd-neg": ("train_lm.py", run_lm("--steps", 2, "--weight-decay", -1), "--weight-decay"),
    "lm-threads-neg": ("train_lm.py", run_lm("--steps", 2, "--threads", -1), "--threads"),
    "lm-ckpt-every-neg": ("train_lm.py", run_lm("--steps", 2, "--ckpt-every", -1), "--ckpt-every"),
    "lm-stop-after-neg": ("train_lm.py", run_lm("--steps", 2, "--stop-after-steps", -1), "--stop-after-steps"),
    "lm-out-is-file": ("train_lm.py", lambda w, b: lm(b, w / "out" / "log.jsonl", "--steps", 2), "--out-dir"),
    "lm-fresh-over-run": ("train_lm.py", lambda w, b: lm(b, shutil.copytree(b.root / "lm", w / "l"), "--steps", 2),
                          "--resume"),
    "lm-resume-vit-ckpt": ("train_lm.py", lambda w, b: lm(b, w / "out", "--steps", 4, "--resume"), "ckpt.pt"),
    "lm-resume-half-ckpt": ("train_lm.py", lambda w, b: (
        shutil.copytree(b.root / "lm", w / "l"), (w / "l" / "ckpt.pt").write_bytes(b.lm_ckpt.read_bytes()[:3000]),
        lm(b, w / "l", "--steps", 4, "--resume"))[-1], "ckpt.pt"),
    "lm-resume-other-context": ("train_lm.py", lambda w, b: lm(b, shutil.copytree(b.root / "lm", w / "l"), "--steps", 4,
                                                             "--resume", "--context", 8), "context"),
    "lm-sched-missing": ("train_lm.py", run_lm("--steps", 2, "--schedule", "/no/schedule.json"), "schedule.json"),
    "lm-sched-garbage": ("train_lm.py", lambda w, b: lm(b, w / "new", "--steps", 2, "--schedule",
                                                      put(w, "s.json", "\x00\xff")), "s.json"),
    "lm-sched-nested": ("train_lm.py", lambda w, b: lm(b, w / "new", "--steps", 2, "--schedule",
                                                     put(w, "s.json", '{"version": 1, "stages": ' + NESTED + "}")),
                        "s.json"),
    "lm-sched-context-0": ("train_lm.py", lambda w, b: lm(b, w / "new", "--steps", 2, "--schedule", jput(
        w, "s.json", sched_doc(b, config={"context": 0}))), "context"),
    # ---- sizes that cannot fit (issue 25): refused from an estimate, before the model is allocated
    "vit-mem-width": ("train_vit.py", run_vit("--steps", 2, "--model", "V100000000-4"), "GiB"),
    "vit-mem-depth": ("train_vit.py", run_vit("--steps", 2, "--model", "V64-100000"), "GiB"),
    "vit-mem-batch": ("train_vit.py", run_vit("--steps", 2, "--batch-size", 1000000000), "GiB"),
    "vit-mem-stage": ("train_vit.py", lambda w, b: vit(b, w / "new", "--steps", 2, "--schedule", jput(
        w, "s.json", sched_doc(b, config={"patch": 4, "width": 2 ** 40}))), "stage 0"),
    "lm-mem-width": ("train_lm.py", run_lm("--steps", 2, "--model", "L99999936-4"), "GiB"),
    "lm-mem-tokens": ("train_lm.py", run_lm("--steps", 2, "--tokens-per-step", 2 ** 40), "GiB"),
    "lm-mem-stage": ("train_lm.py", lambda w, b: lm(b, w / "new", "--steps", 2, "--schedule", jput(
        w, "s.json", sched_doc(b, config={"context": 16, "depth": 10 ** 9}))), "stage 0"),
    # lab/bench/hostile.py's findings: the underlying patch embedding and position grid counted (they allocated)
    "vit-mem-posemb-grid": ("train_vit.py", run_vit("--steps", 2, "--posemb-grid", 100000), "GiB"),
    "vit-mem-base-patch": ("train_vit.py", run_vit("--steps", 2, "--base-patch", 100000), "GiB"),
    "rep-mem-model": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--data-dir", b.npz, "--set", "patches=8,4",
                                                    "model=V100000000-4", "--out-dir", w / "p"], "GiB"),
    "rep-mem-batch": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--data-dir", b.npz, "--set", "patches=8,4",
                                                    "batch_size=1000000000", "--out-dir", w / "p"], "GiB"),
    "rep-model-unknown": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--data-dir", b.npz, "--set",
                                                        "patches=8,4", "model=Vabc", "--out-dir", w / "p"], "Vabc"),
    # ---- lab/prepare_images.py (hostile.py): a split that is a path wrote outside --out; workers forked unbounded;
    # an output the OS refuses was a note and the error (the note now comes last)
    "prep-splits-path": ("prepare_images.py", lambda w, b: ["--src", w / "in", "--out", w / "p", "--splits", "train",
                                                            "../val"], "--splits"),
    "prep-splits-absolute": ("prepare_images.py", lambda w, b: ["--src", w / "in", "--out", w / "p", "--splits",
                                                                "train", "/tmp"], "--splits"),
    "prep-workers-huge": ("prepare_images.py", lambda w, b: ["--src", w / "in", "--out", w / "p", "--workers", 10 ** 5],
                          "--workers"),
    "prep-out-proc": ("prepare_images.py", lambda w, b: ["--src", make_image_folder(w / "in" / "src", per_class=1),
                                                         "--out", "/proc/nope/p", "--no-progress"], "/proc/nope"),
    # ---- fit_laws.py
    "fit-logs-missing": ("fit_laws.py", fit(lambda w, b: w / "nope"), "nope"),
    "fit-log-empty": ("fit_laws.py", fit(text("")), "log.jsonl"),
    "fit-log-header-only": ("fit_laws.py", fit(edited(keep=1)), "log.jsonl"),
    "fit-log-garbage": ("fit_laws.py", fit(text("{oops\n[1,\n")), "log.jsonl"),
    "fit-log-binary": ("fit_laws.py", fit(text(b"\xff\xfe\x00" * 50)), "log.jsonl"),
    "fit-log-nan-metric": ("fit_laws.py", fit(edited('"fewshot10_error": 0', '"fewshot10_error": NaN, "o": 0')),
                           "log.jsonl"),
    "fit-log-nested": ("fit_laws.py", fit(edited(append=NESTED)), "log.jsonl"),
    "fit-log-huge-flops": ("fit_laws.py", fit(edited('"flops": ', '"flops": 1e400, "f": ')), "log.jsonl"),
    "fit-log-neg-flops": ("fit_laws.py", fit(edited('"flops": ', '"flops": -1, "f": ')), "log.jsonl"),
    "fit-log-hugeint-metric": ("fit_laws.py", fit(edited('"fewshot10_error": 0', f'"fewshot10_error": {HUGEINT}, "o": 0')),
                               "log.jsonl"),
    "fit-log-str-metric": ("fit_laws.py", fit(edited('"fewshot10_error": 0', '"fewshot10_error": "x", "o": 0')),
                           "log.jsonl"),
    "fit-log-record-list": ("fit_laws.py", fit(edited(append="[1, 2]")), "log.jsonl"),
    "fit-log-header-config-int": ("fit_laws.py", fit(edited('"config": {"model"', '"config": 5, "c": {"model"')),
                                  "log.jsonl"),
    "fit-metric-missing": ("fit_laws.py", fit(None, "--metric", "nope"), "nope"),
    "fit-points-2": ("fit_laws.py", fit(None, "--points", 2), "--points"),
    "fit-points-huge": ("fit_laws.py", fit(None, "--points", 10**9), "--points"),
    "fit-bootstrap-neg": ("fit_laws.py", fit(None, "--bootstrap", -1), "--bootstrap"),
    "fit-bootstrap-huge": ("fit_laws.py", fit(None, "--bootstrap", 10**9), "--bootstrap"),
    "fit-extrap-frac": ("fit_laws.py", fit(None, "--extrap-frac", 1.5), "--extrap-frac"),
    "fit-delta-0": ("fit_laws.py", fit(None, "--delta", 0), "--delta"),
    "fit-cost-foo": ("fit_laws.py", fit(None, "--cost", "foo"), "--cost"),
    "fit-min-flops-nan": ("fit_laws.py", fit(None, "--min-flops", "nan"), "--min-flops"),
    "fit-min-flops-frac-2": ("fit_laws.py", fit(None, "--min-flops-frac", 2), "--min-flops-frac"),
    "fit-predict-at-neg": ("fit_laws.py", fit(None, "--predict-at", -1), "--predict-at"),
    "fit-out-dir": ("fit_laws.py", lambda w, b: ["--logs", b.logs, "--out", w / "out"], "--out"),
    "fit-out-png": ("fit_laws.py", lambda w, b: ["--logs", b.logs, "--out", w / "out/laws.png"], "--out"),
    "fit-out-is-a-log": ("fit_laws.py", lambda w, b: ["--logs", b.logs, w / "out", "--out", w / "out/log.jsonl"], "--out"),
    "fit-out-under-file": ("fit_laws.py", lambda w, b: ["--logs", b.logs, "--out", w / "out/laws.json/x.json"], "laws.json"),
    "fit-points-abc": ("fit_laws.py", lambda w, b: ["--logs", b.logs, "--points", "abc"], "--points"),
    "fit-unknown-flag": ("fit_laws.py", lambda w, b: ["--logs", b.logs, "--pointz", 3], "--pointz"),
    # ---- schedule.py
    "sch-laws-missing": ("schedule.py", lambda w, b: ["--laws", w / "nope.json", "--budget", 3e13, "--out",
                                                      w / "out/schedule.json"], "nope.json"),
    "sch-laws-garbage": ("schedule.py", lambda w, b: ["--laws", put(w, "l.json", "{x"), "--budget", 3e13, "--out",
                                                      w / "out/schedule.json"], "l.json"),
    "sch-laws-truncated": ("schedule.py", lambda w, b: ["--laws", put(w, "l.json", b.laws.read_text()[:300]), "--budget",
                                                        3e13, "--out", w / "out/schedule.json"], "l.json"),
    "sch-laws-binary": ("schedule.py", lambda w, b: ["--laws", put(w, "l.json", b"\xff\xfe\xfd"), "--budget",
                                                     3e13, "--out", w / "out/schedule.json"], "l.json"),
    "sch-laws-version": ("schedule.py", lambda w, b: ["--laws", jput(w, "l.json", {**json.loads(b.laws.read_text()),
                                                                                  "version": 99}),
                                                      "--budget", 3e13, "--out", w / "out/schedule.json"], "version"),
    "sch-laws-empty": ("schedule.py", lambda w, b: ["--laws", jput(w, "l.json", {**json.loads(b.laws.read_text()),
                                                                                "laws": []}),
                                                    "--budget", 3e13, "--out", w / "out/schedule.json"], "l.json"),
    "sch-law-a-neg": ("schedule.py", lambda w, b: ["--laws", jput(w, "l.json", laws_doc(b, a=-1.0)), "--budget", 3e13,
                                                   "--out", w / "out/schedule.json"], "l.json"),
    "sch-law-b-nan": ("schedule.py", lambda w, b: ["--laws", put(w, "l.json", json.dumps(laws_doc(b, **{"b": float("nan")}))),
                                                   "--budget", 3e13, "--out", w / "out/schedule.json"], "l.json"),
    "sch-law-b-subnormal": ("schedule.py", lambda w, b: ["--laws", jput(w, "l.json", laws_doc(b, b=5e-324)), "--budget",
                                                         3e13, "--out", w / "out/schedule.json"], "l.json"),
    "sch-law-c-str": ("schedule.py", lambda w, b: ["--laws", jput(w, "l.json", laws_doc(b, c="x")), "--budget", 3e13,
                                                   "--out", w / "out/schedule.json"], "l.json"),
    "sch-law-config-int": ("schedule.py", lambda w, b: ["--laws", jput(w, "l.json", laws_doc(b, config=3)), "--budget",
                                                        3e13, "--out", w / "out/schedule.json"], "l.json"),
    "sch-laws-nested": ("schedule.py", lambda w, b: ["--laws", put(w, "l.json", NESTED), "--budget", 3e13,
                                                     "--out", w / "out/schedule.json"], "l.json"),
    "sch-laws-huge": ("schedule.py", lambda w, b: ["--laws", put(w, "l.json", HUGE), "--budget", 3e13,
                                                   "--out", w / "out/schedule.json"], "l.json"),
    "sch-laws-list": ("schedule.py", lambda w, b: ["--laws", jput(w, "l.json", [1]), "--budget", 3e13,
                                                   "--out", w / "out/schedule.json"], "l.json"),
    "sch-law-missing-c": ("schedule.py", lambda w, b: ["--laws", jput(w, "l.json", {
        **laws_doc(b), "laws": [{k: v for k, v in laws_doc(b)["laws"][0].items() if k != "c"}]}), "--budget", 3e13,
        "--out", w / "out/schedule.json"], "l.json"),
    "sch-target-neg": ("schedule.py", lambda w, b: ["--laws", b.laws, "--target-error", -1, "--out",
                                                    w / "out/schedule.json"], "--target-error"),
    "sch-target-nan": ("schedule.py", lambda w, b: ["--laws", b.laws, "--target-error", "nan", "--out",
                                                    w / "out/schedule.json"], "--target-error"),
    "sch-no-target": ("schedule.py", lambda w, b: ["--laws", b.laws, "--out", w / "out/schedule.json"], "--budget"),
    "sch-budget-neg": ("schedule.py", lambda w, b: ["--laws", b.laws, "--budget", -1, "--out", w / "out/schedule.json"],
                       "--budget"),
    "sch-budget-inf": ("schedule.py", lambda w, b: ["--laws", b.laws, "--budget", "inf", "--out", w / "out/schedule.json"],
                       "--budget"),
    "sch-out-dir": ("schedule.py", lambda w, b: ["--laws", b.laws, "--budget", 3e13, "--out", w / "out"], "--out"),
    "sch-out-png": ("schedule.py", lambda w, b: ["--laws", b.laws, "--budget", 3e13, "--out", w / "out/s.png"], "--out"),
    "sch-out-is-laws": ("schedule.py", lambda w, b: ["--laws", w / "out/laws.json", "--budget", 3e13, "--out",
                                                     w / "out/laws.json"], "--out"),
    "sch-grid-0": ("schedule.py", lambda w, b: ["--laws", b.laws, "--budget", 3e13, "--grid", 0, "--out",
                                                w / "out/schedule.json"], "--grid"),
    "sch-max-extrap-neg": ("schedule.py", lambda w, b: ["--laws", b.laws, "--budget", 3e13, "--max-extrap-error", -1,
                                                        "--out", w / "out/schedule.json"], "--max-extrap-error"),
    "sch-rules-bad-dir": ("schedule.py", lambda w, b: ["--laws", b.laws, "--budget", 3e13, "--rules", "patch=sideways",
                                                       "--out", w / "out/schedule.json"], "--rules"),
    "sch-rules-no-eq": ("schedule.py", lambda w, b: ["--laws", b.laws, "--budget", 3e13, "--rules", "bogus",
                                                     "--out", w / "out/schedule.json"], "--rules"),
    "sch-switch-cost-neg": ("schedule.py", lambda w, b: ["--laws", b.laws, "--budget", 3e13, "--switch-cost", -1,
                                                         "--out", w / "out/schedule.json"], "--switch-cost"),
    "sch-check-missing": ("schedule.py", lambda w, b: ["--check", w / "nope.json"], "nope.json"),
    "sch-check-garbage": ("schedule.py", lambda w, b: ["--check", put(w, "s.json", "[[[")], "s.json"),
    "sch-check-neg-flops": ("schedule.py", lambda w, b: ["--check", jput(w, "s.json", sched_doc(b, flops_end=-5.0))],
                            "s.json"),
    "sch-check-hugeint": ("schedule.py", lambda w, b: ["--check", put(w, "s.json", b.sched.read_text().replace(
        '"flops_start": ', '"flops_start": 1' + "0" * 400 + ', "x": ', 1))], "s.json"),
    "sch-check-nested": ("schedule.py", lambda w, b: ["--check", put(w, "s.json", NESTED)], "s.json"),
    "sch-grid-abc": ("schedule.py", lambda w, b: ["--grid", "abc"], "--grid"),
    # ---- compare.py
    "cmp-runs-missing": ("compare.py", lambda w, b: ["--runs", w / "nope", "--out-dir", w / "out"], "nope"),
    "cmp-run-no-log": ("compare.py", lambda w, b: ["--runs", w / "in", "--out-dir", w / "out"], "log.jsonl"),
    "cmp-log-empty": ("compare.py", lambda w, b: ["--runs", put(w, "r/log.jsonl", "").parent, "--out-dir", w / "out"],
                      "log.jsonl"),
    "cmp-log-garbage": ("compare.py", lambda w, b: ["--runs", put(w, "r/log.jsonl", "{\n").parent, "--out-dir",
                                                    w / "out"], "log.jsonl"),
    "cmp-log-binary": ("compare.py", lambda w, b: ["--runs", put(w, "r/log.jsonl", b"\xff\x00" * 9).parent, "--out-dir",
                                                   w / "out"], "log.jsonl"),
    "cmp-log-nested": ("compare.py", lambda w, b: ["--runs", put(w, "r/log.jsonl", NESTED).parent, "--out-dir",
                                                   w / "out"], "log.jsonl"),
    "cmp-log-huge-flops": ("compare.py", lambda w, b: ["--runs", edited('"flops": ', '"flops": 1e400, "f": ')(w, b),
                                                       "--out-dir", w / "out"], "log.jsonl"),
    "cmp-log-subnormal-metric": ("compare.py", lambda w, b: ["--runs", edited(
        '"fewshot10_error": 0', '"fewshot10_error": 5e-324, "o": 0')(w, b), "--out-dir", w / "out"], "log.jsonl"),
    "cmp-log-zero-metric": ("compare.py", lambda w, b: ["--runs", edited(
        '"fewshot10_error": 0', '"fewshot10_error": 0, "o": 0')(w, b), "--out-dir", w / "out"], "log.jsonl"),
    "cmp-log-negative-metric": ("compare.py", lambda w, b: ["--runs", edited(
        '"fewshot10_error": 0', '"fewshot10_error": -0.5, "o": 0')(w, b), "--out-dir", w / "out"], "log.jsonl"),
    "cmp-log-nan-wall": ("compare.py", lambda w, b: ["--runs", edited('"wall": ', '"wall": NaN, "x": ')(w, b),
                                                     "--out-dir", w / "out"], "log.jsonl"),
    "cmp-log-hugeint-flops": ("compare.py", lambda w, b: ["--runs", edited('"flops": ', f'"flops": {HUGEINT}, "f": ')(w, b),
                                                          "--out-dir", w / "out"], "log.jsonl"),
    "cmp-log-is-dir": ("compare.py", lambda w, b: ["--runs", ((w / "in/r/log.jsonl").mkdir(parents=True) or
                                                             w / "in/r"), "--out-dir", w / "out"], "log.jsonl"),
    "cmp-target-neg": ("compare.py", lambda w, b: ["--runs", *b.logs.iterdir(), "--target", -1, "--out-dir", w / "out"],
                       "--target"),
    "cmp-target-nan": ("compare.py", lambda w, b: ["--runs", *b.logs.iterdir(), "--target", "nan", "--out-dir",
                                                   w / "out"], "--target"),
    "cmp-out-is-file": ("compare.py", lambda w, b: ["--runs", *b.logs.iterdir(), "--out-dir", w / "out/laws.json"],
                        "--out-dir"),
    "cmp-laws-missing": ("compare.py", lambda w, b: ["--runs", *b.logs.iterdir(), "--laws", w / "nope.json",
                                                     "--out-dir", w / "out"], "nope.json"),
    "cmp-laws-garbage": ("compare.py", lambda w, b: ["--runs", *b.logs.iterdir(), "--laws", put(w, "l.json", "[["),
                                                     "--out-dir", w / "out"], "l.json"),
    "cmp-laws-nested": ("compare.py", lambda w, b: ["--runs", *b.logs.iterdir(), "--laws", put(w, "l.json", NESTED),
                                                    "--out-dir", w / "out"], "l.json"),
    "cmp-metric-missing": ("compare.py", lambda w, b: ["--runs", *b.logs.iterdir(), "--metric", "nope", "--out-dir",
                                                       w / "out"], "nope"),
    "cmp-same-run-twice": ("compare.py", lambda w, b: ["--runs", b.logs / "static_p7", b.logs / "static_p7",
                                                       "--out-dir", w / "out"], "static_p7"),
    "cmp-cost-foo": ("compare.py", lambda w, b: ["--runs", b.logs / "static_p7", "--cost", "foo"], "--cost"),
    # ---- eval_fewshot.py
    "ev-ckpt-missing": ("eval_fewshot.py", lambda w, b: ["--ckpt", w / "nope.pt", "--data-dir", b.npz], "nope.pt"),
    "ev-ckpt-garbage": ("eval_fewshot.py", lambda w, b: ["--ckpt", put(w, "c.pt", b"garbage"), "--data-dir", b.npz],
                        "c.pt"),
    "ev-ckpt-half": ("eval_fewshot.py", lambda w, b: ["--ckpt", put(w, "c.pt", b.vit_ckpt.read_bytes()[:4000]),
                                                      "--data-dir", b.npz], "c.pt"),
    "ev-ckpt-foreign": ("eval_fewshot.py", lambda w, b: (torch.save({"weights": torch.zeros(2)}, w / "in/c.pt"),
                                                         ["--ckpt", w / "in/c.pt", "--data-dir", b.npz])[-1], "c.pt"),
    "ev-ckpt-lm": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.lm_ckpt, "--data-dir", b.npz], "ckpt.pt"),
    "ev-ckpt-is-dir": ("eval_fewshot.py", lambda w, b: ["--ckpt", w / "out", "--data-dir", b.npz], "--ckpt"),
    "ev-data-garbage": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", put(w, "d.npz", b"PK\x03")],
                        "d.npz"),
    "ev-shots-0": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", b.npz, "--shots", 0], "--shots"),
    "ev-reg-neg": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", b.npz, "--reg", -1], "--reg"),
    "ev-seeds-0": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", b.npz, "--seeds", 0], "--seeds"),
    "ev-patch-neg": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", b.npz, "--patch", -2], "--patch"),
    "ev-patch-5": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", b.npz, "--shots", 10, "--patch", 5],
                   "--patch"),
    "ev-batch-0": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", b.npz, "--batch-size", 0],
                   "--batch-size"),
    "ev-pool-neg": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", b.npz, "--shots", 10, "--pool-size", -1],
                    "--pool-size"),
    "ev-data-missing": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", w / "nope"], "nope"),
    "ev-out-dir": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", b.npz, "--shots", 10, "--out", w / "out"],
                   "--out"),
    "ev-device-tpu": ("eval_fewshot.py", lambda w, b: ["--ckpt", b.vit_ckpt, "--data-dir", b.npz, "--device", "tpu"],
                      "--device"),
    # ---- reproduce.py (every case is refused before any run starts)
    "rep-flops-neg": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--flops", -1, "--out-dir", w / "out"],
                      "--flops"),
    "rep-flops-nan": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--flops", "nan", "--out-dir", w / "out"],
                      "--flops"),
    "rep-jobs-0": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--jobs", 0, "--out-dir", w / "out"], "--jobs"),
    "rep-threads-neg": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--threads", -1, "--out-dir", w / "out"],
                        "--threads"),
    "rep-set-unknown": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--set", "bogus=1", "--out-dir", w / "out"],
                        "bogus"),
    "rep-set-not-number": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--set", "evals=abc", "--out-dir",
                                                         w / "out"], "evals"),
    "rep-set-no-eq": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--set", "evals", "--out-dir", w / "out"],
                      "--set"),
    "rep-preset-unknown": ("reproduce.py", lambda w, b: ["--preset", "huge"], "--preset"),
    "rep-out-is-file": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--out-dir", w / "out/laws.json"],
                        "--out-dir"),
    "rep-teacher-missing": ("reproduce.py", lambda w, b: ["--experiment", "distill", "--preset", "smoke", "--set",
                                                          "teacher=/no/t.pt", "--out-dir", w / "out"], "teacher"),
    "rep-manifest-corrupt": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--out-dir", put(w, "p/pipeline.json",
                                                                                           "{oops").parent], "pipeline.json"),
    "rep-manifest-list": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--out-dir", put(w, "p/pipeline.json",
                                                                                        "[1]").parent], "pipeline.json"),
    "rep-seeds-dup": ("reproduce.py", lambda w, b: ["--preset", "smoke", "--seeds", 0, 0, "--out-dir", w / "out"],
                      "--seeds"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_loses_nothing(case, w, b, capsys):
    script, make, says = CASES[case]
    args = [str(a) for a in make(w, b)]
    before = snapshot(w)
    capsys.readouterr()
    rc = CLIS[script](args)
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"{script}: error:"), (rc, cap.err[-3000:])
    assert "Traceback" not in cap.err + cap.out
    assert says in err[0], err[0]
    assert snapshot(w) == before                          # nothing new, nothing changed, no *.tmp, no header-only log


@pytest.mark.parametrize("script", ["train_vit.py", "train_lm.py"])
@pytest.mark.parametrize("env, says", [({"WORLD_SIZE": "abc"}, "RANK"), ({"RANK": "5", "WORLD_SIZE": "2"}, "RANK"),
                                       ({"LOCAL_RANK": "x"}, "RANK"), ({"RANK": "1", "WORLD_SIZE": "2"}, "WORLD_SIZE=2"),
                                       *[({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                           "MASTER_PORT": port}, "port") for port in ("abc", "99999")]])
def test_bad_launcher_environment_is_one_line(script, env, says, w, b, capsys, monkeypatch):
    """torchrun's variables set by hand: every process, not only rank 0, says what is wrong (a rank 1 without torchrun
    was silent; a MASTER_PORT that is no port number a traceback: lab/bench/hostile.py)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    args = [str(a) for a in (vit if script == "train_vit.py" else lm)(b, w / "new", "--steps", 2)]
    before = snapshot(w)
    capsys.readouterr()
    rc = CLIS[script](args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and says in err[0] and snapshot(w) == before, err


@pytest.mark.parametrize("script", ["train_vit.py", "train_lm.py"])
def test_a_size_that_cannot_fit_is_refused_before_allocating(script, w, b, capsys, monkeypatch):
    """Issue 25: the memory check comes before the model exists (building it would be the allocation)."""
    def never(*a, **k):
        raise AssertionError("the model was built before the memory check")
    monkeypatch.setattr(*(("flexivit.build", never) if script == "train_vit.py" else ("train_lm.LM", never)))
    args = vit(b, w / "new", "--steps", 2, "--model", "V64-100000") if script == "train_vit.py" else \
        lm(b, w / "new", "--steps", 2, "--model", "L32-1000000000")
    assert CLIS[script]([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GiB is free here" in err[0] and "needs at least" in err[0], err


def saved_bytes(loss_fn, model):
    """The bytes autograd keeps for the backward pass, each storage once, the parameters' own left out."""
    own, seen = {p.untyped_storage().data_ptr() for p in model.parameters()}, {}
    def pack(t):
        if (s := t.untyped_storage()).data_ptr() not in own:
            seen[s.data_ptr()] = s.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn().backward()
    return sum(seen.values())


@pytest.mark.parametrize("kind", ["vit", "lm"])
def test_the_memory_estimate_is_a_floor_close_to_what_training_keeps(kind):
    """runtime.check_memory's need: never above what a step really holds (16 bytes a parameter + the activations
    autograd keeps), and not far below it (at least half), on a ViT and an LM."""
    import flexivit
    import lm as lm_model
    if kind == "vit":
        model, (w, d, bs, t) = flexivit.build("V128-4", image_size=28), (128, 4, 32, 49)
        kept = saved_bytes(lambda: model(torch.randn(bs, 1, 28, 28), 4).logsumexp(-1).mean(), model)
        args = (sum(p.numel() for p in model.parameters()), bs, t, w, d, model.heads)
    else:
        a = lm_model.model_args("L64-4", 256, 128)
        model, (w, d, bs, t) = lm_model.LM(**a), (64, 4, 16, 128)
        kept = saved_bytes(lambda: model(torch.randint(0, 256, (bs, t))).logsumexp(-1).mean(), model)
        args = (d * (4 * w * w + 3 * w * a["mlp_dim"]) + 256 * w, bs, t, w, d, a["heads"], 256)
    real = 16 * sum(p.numel() for p in model.parameters()) + kept
    need = runtime.check_memory("t", torch.device("cpu"), *args)
    assert real / 2 < need <= real, (need, real)


def test_report_reads_a_garbage_log_as_no_evaluation(tmp_path):
    """reproduce.py asks report.last_eval whether a run is finished: garbage there means "not finished", not a crash."""
    from lab import report
    for junk in (b"\xff\xfe", b"[1, 2]\n", NESTED.encode(), b'{"type": "eval", "flops": 1e400}\n'):
        (tmp_path / "log.jsonl").write_bytes(junk)
        assert report.last_eval(tmp_path) is None


def test_count_of_cases():
    """The issue asks for at least 120 distinct bad inputs: these, the launcher environments (12) and the end-to-end
    checks, plus tests/test_reliability.py's 33."""
    assert len(CASES) + 12 + len(E2E) + 33 >= 120


# ---- end to end: the real entry points, as a user runs them

E2E = [("fit_laws.py", ["--logs", "x", "--pointz", "3"], "--pointz"),
       ("schedule.py", ["--laws", "/no/laws.json", "--budget", "1e12"], "laws.json"),
       ("lab/compare.py", ["--runs", "/no/run"], "/no/run"),
       ("train_vit.py", ["--steps", "-1"], "--steps"),
       ("eval_fewshot.py", ["--ckpt", "/no/ckpt.pt"], "ckpt.pt"),
       ("train_lm.py", ["--steps", "2", "--context", "0"], "--context"),
       ("lab/reproduce.py", ["--preset", "smoke", "--flops", "-1"], "--flops"),
       ("lab/planner.py", ["train_vit.py", "--steps", "-1"], "--steps"),
       ("train_vit.py", ["--steps", "2", "--plan"], "lab/planner.py")]


@pytest.mark.parametrize("script, args, says", E2E)
def test_entry_points_say_one_line(script, args, says, tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and says in err[0] and "Traceback" not in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, where", [("proc", "/proc/nope/out"), ("sys", "/sys/nope"), ("dangling", "link/run"),
                                         ("dangling-itself", "link")])
def test_the_file_system_saying_no_is_one_line(b, tmp_path, capsys, name, where):
    """Issue 25: an output path the operating system refuses gives one line naming it and the reason, exit 2, in
    every script that writes a folder (trainers, few-shot, compare, the pipeline)."""
    (tmp_path / "link").symlink_to(tmp_path / "gone" / "nowhere")        # a dangling symlink
    out = where if where.startswith("/") else str(tmp_path / where)
    for script, args in [(train_vit.cli, vit(b, out, "--steps", 2)), (train_lm.cli, lm(b, out, "--steps", 2)),
                         (compare.cli, ["--runs", *b.logs.iterdir(), "--out-dir", out]),
                         (eval_fewshot.cli, ["--ckpt", b.vit_ckpt, "--data-dir", b.npz, "--shots", 1, "--out",
                                             f"{out}/fewshot.json"])]:
        assert script([str(a) for a in args]) == 2, (name, script)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("nope" in err[0] or "link" in err[0] or "gone" in err[0]), err


@pytest.mark.parametrize("text", ["[1, 2]", '"done"', "7"])
def test_a_progress_file_that_is_no_object_is_said_and_redone(tmp_path, capsys, text):
    """lab/bench/hostile.py: prepare_images.py's progress file holding JSON that is no object was taken silently for
    another preparation's; like any damage it is now a warning, and the split is prepared afresh."""
    (path := tmp_path / "train.progress.json").write_text(text)
    prog = prepare_images.Progress(path, "fp", 10, 5)
    assert prog.done == 0 and "is damaged" in capsys.readouterr().err
