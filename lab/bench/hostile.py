"""Issue 25's hostile harness, kept outside the suite (pytest collects tests/ only): every case runs the real script
as a user would (`python <script> ...`, a subprocess) on tiny inputs built in --out, and its outcome is classified:

    ok         refused as promised: exit code 2, exactly one line on stderr ("<script>: error: ..."; lines
               "<script>: warning: ..." before it, which name what was skipped, are allowed), no traceback, every file
               that existed before byte-identical and none left behind (or, for a case whose right answer is
               acceptance with a warning: exit 0, a warning, nothing that existed before changed but what a repair
               rewrites)
    traceback  a traceback on stderr
    silent     exit code 0 where the script must refuse (or accept only with a warning, and gave none)
    other      anything else, with the reason (another exit code, several lines, a changed file, a timeout)

The seven families (--only picks some):
    fs         the file system saying no: outputs under /proc or /sys, a dangling symlink, a file where a folder
               should be, a path through a file, a read-only bind mount (root ignores chmod; needs mount rights)
    runfolder  a run folder changed between runs: --resume over a damaged, emptied, deleted or foreign log, a
               dangling or damaged ckpt.pt, other data; --start-from junk; reproduce.py without its pipeline.json
    sizes      sizes that cannot fit: huge widths, depths, batches, contexts, schedule stages, grids
    labels     labels that lie: strings, -1, a test class no training class has, one class, floats, 2-d, pickles
    records    numbers that are not numbers in logs read by fit_laws.py and lab/compare.py: NaN, Infinity,
               strings, booleans, subnormals, zero and negative errors
    prepare    lab/prepare_images.py: bad flags, bad folders, a damaged partial preparation on resume
    env        torchrun's variables set by hand (WORLD_SIZE without torchrun, bad RANK, LOCAL_RANK, MASTER_PORT)

    python lab/bench/hostile.py                                  # every family; results in /tmp/hostile/results.json
    python lab/bench/hostile.py --only sizes labels --out /tmp/h
Each child runs under ulimit -v --mem-gb (the scripts' memory check reads that limit too), with OMP_NUM_THREADS=1
and none of torchrun's variables unless the case sets them. ulimit -v does not bound the number of processes: before
prepare_images.py refused --workers above 8 a core, the case prep-workers-1e5 forked until its timeout (load 200 on
2 cores); on such a version leave it out (--skip prep-workers-1e5).

The outcome (242 cases; 13 min on 2 idle CPU cores, 35-50 min beside training runs): before the fixes that came
with this harness 206 ok, 6 traceback, 8 silent, 22 other; after them, and the check that refuses a --resume over
another run's log.jsonl (runtime.RunLog.start: the kept header's model and seed against this run's), 242 ok.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
VIT, LM, FIT, SCH, EV = "train_vit.py", "train_lm.py", "fit_laws.py", "schedule.py", "eval_fewshot.py"
CMP, REP, PREP = "lab/compare.py", "lab/reproduce.py", "lab/prepare_images.py"
FAMILIES = ("fs", "runfolder", "sizes", "labels", "records", "prepare", "env")
TORCHRUN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
sys.path.insert(0, str(ROOT / "tests"))    # the suite's tiny inputs, flags and tamperings, shared with its tests
from conftest import make_images  # noqa: E402
from test_badinput import lm, vit, write_log as write_logs  # noqa: E402
from test_runfolder import dangling, deleted, emptied, garbage, not_an_object as not_object  # noqa: E402


@dataclasses.dataclass
class Config:
    """Run the hostile cases of issue 25 against the real scripts and classify each outcome."""
    only: tuple[str, ...] = ()  # families to run (fs runfolder sizes labels records prepare env); empty: all
    out: str = "/tmp/hostile"  # work folder (base inputs, one folder per case) and results.json
    case: tuple[str, ...] = ()  # run only the cases whose name contains one of these
    skip: tuple[str, ...] = ()  # leave out the cases whose name contains one of these
    timeout: float = 180.0  # seconds a case may take
    mem_gb: float = 8.0  # address-space limit of every child (ulimit -v), so that no case can exhaust the machine
    keep: bool = False  # keep each case's folder (default: removed when the case is ok)


@dataclasses.dataclass
class Case:
    family: str
    name: str
    script: str                      # relative to the repository root
    make: Callable                   # (workspace, base) -> the flags; may write the inputs it needs into workspace
    says: str = ""                   # what the one line must name
    expect: str = "refuse"           # refuse | warn (accepted, with a warning) | either
    env: dict = dataclasses.field(default_factory=dict)
    ro: tuple = ()                   # folders of the workspace bind-mounted read-only while the case runs
    may_change: tuple = ()           # folders of the workspace whose files the case may rewrite (a repair's)


# ----------------------------------------------------------------------------- tiny inputs

def image_folder(root, splits=("train", "val"), classes=3, per_class=4, gray=()):
    """root/<split>/c<k>/<i>.png, small colour images (the classes in `gray` grayscale)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in splits:
        for c in range(classes):
            (d := Path(root) / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                a = rng.integers(0, 40, (30 + 3 * i, 28, 3), dtype=np.uint8)
                a[..., c % 3] += np.uint8(150)
                Image.fromarray(a).convert("L" if c in gray else "RGB").save(d / f"{i}.png")
    return Path(root)


def prep(b, out, *extra, src=None):
    return ["--src", src or b.imgs, "--out", out, "--resolution", 24, "--workers", 1, "--chunk", 2, "--no-progress",
            *extra]


def child_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", **(extra or {})}


def run(script, args, cwd, env=None, timeout=600, mem_gb=8.0):
    """`python script args` as a user runs it: (exit code or None on a timeout, stdout, stderr)."""
    limit = int(mem_gb * 2 ** 30)
    try:
        p = subprocess.run([PY, str(ROOT / script), *map(str, args)], cwd=cwd, env=child_env(env), timeout=timeout,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        return None, str(e.stdout or ""), str(e.stderr or "")


def build_base(root, mem_gb):
    """Valid inputs, made once by the real scripts: tiny images, a corpus, a finished run of each trainer, synthetic
    logs with their laws and schedule, an image folder and its preparation."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x, y = make_images(300, rng)
    np.savez(root / "tiny.npz", x_train=x[:240], y_train=y[:240], x_test=x[240:], y_test=y[240:])
    (root / "corpus.txt").write_bytes(bytes(rng.integers(32, 127, 40000).astype(np.uint8)))
    b = SimpleNamespace(root=root, npz=root / "tiny.npz", corpus=root / "corpus.txt", cache=root / "cache",
                        logs=root / "logs", laws=root / "laws.json", sched=root / "schedule.json", imgs=root / "imgs")
    image_folder(b.imgs)
    write_logs(b.logs)
    for script, args in [(VIT, vit(b, root / "vit", "--steps", 2)), (LM, lm(b, root / "lm", "--steps", 2)),
                         (FIT, ["--logs", b.logs, "--out", b.laws, "--bootstrap", 0, "--no-plot"]),
                         (SCH, ["--laws", b.laws, "--budget", 3e13, "--out", b.sched, "--no-plot"]),
                         (PREP, prep(b, root / "prep"))]:
        rc, _, err = run(script, args, root, mem_gb=mem_gb)
        if rc != 0:
            sys.exit(f"hostile.py: error: building the base inputs, {script} failed:\n{err[-3000:]}")
    b.vit, b.lm, b.prep = root / "vit", root / "lm", root / "prep"
    return b


# ----------------------------------------------------------------------------- workspace helpers

def put(w, name, content):
    p = w / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
    return p


def npz(w, b, **change):
    """A copy of the tiny .npz with arrays replaced (None: removed)."""
    with np.load(b.npz) as z:
        arrays = {**dict(z), **change}
    p = w / "in" / "bad.npz"
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez(p, **{k: v for k, v in arrays.items() if v is not None})
    return p


def copy_run(b, which, w, tamper=None):
    run = shutil.copytree(getattr(b, which), w / "run")
    if tamper:
        tamper(run)
    return run


def sched_file(w, b, **config):
    doc = json.loads(b.sched.read_text())
    doc["stages"][0]["config"] = config
    return put(w, "s.json", json.dumps(doc))


def edited_logs(w, b, old, new):
    """The synthetic logs copied, `old` replaced by `new` in the first eval record of static_p7 (and only there)."""
    logs = shutil.copytree(b.logs, w / "in" / "logs")
    path = logs / "static_p7" / "log.jsonl"
    lines = path.read_text().splitlines()
    assert old in lines[3], (old, lines[3])
    lines[3] = lines[3].replace(old, new, 1)
    path.write_text("\n".join(lines) + "\n")
    return logs


def snapshot(*roots, skip=()):
    """{path: sha1 of its bytes | '-> target' for a link | 'dir'} under `roots`, links never followed."""
    out = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.join(dirpath, d) not in skip]
            for name in dirs + files:
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    out[p] = "-> " + os.readlink(p)
                elif os.path.isdir(p):
                    out[p] = "dir"
                elif p not in skip:
                    with open(p, "rb") as f:
                        out[p] = hashlib.sha1(f.read()).hexdigest()
    return out


@contextlib.contextmanager
def read_only(folders):
    """Each folder bind-mounted read-only onto itself (what a read-only file system says: EROFS), unmounted after."""
    done = []
    try:
        for d in folders:
            for cmd in (["mount", "--bind", d, d], ["mount", "-o", "remount,ro,bind", d]):
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    raise RuntimeError(f"cannot make {d} read-only ({' '.join(cmd)}: {r.stderr.strip()})")
                if cmd[1] == "--bind":
                    done.append(d)
        yield
    finally:
        for d in reversed(done):
            subprocess.run(["umount", d], capture_output=True)


# ----------------------------------------------------------------------------- classification

def classify(case, rc, err, before, after):
    """(outcome, detail) of one run: see the module's docstring."""
    name, w = Path(case.script).name, case_dir(case)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith(f"{name}: warning:")]     # a warning names what was skipped
    tail = (said or lines or ["(no stderr)"])[-1][:300]
    if rc is None:
        return "other", f"timed out; {tail}"
    if "Traceback" in err:
        return "traceback", tail
    mine = lambda p: any(Path(p).is_relative_to(w / d) for d in case.may_change)
    changed = sorted(p for p in before if after.get(p) != before[p] and not mine(p))
    new = sorted(os.path.relpath(p, w) for p in after if p not in before and not mine(p))
    refused = rc == 2 and len(said) == 1 and said[0].startswith(f"{name}: error:")
    warned = rc == 0 and len(said) < len(lines)
    if case.expect in ("warn", "either") and warned:
        warning = next(ln for ln in lines if ln not in said)[:300]
        return ("other", f"accepted but changed {changed[:3]}") if changed else ("ok", warning)
    if rc == 0:
        return "silent", (f"exit 0 without a warning ({tail})" + (f"; changed {changed[:3]}" if changed else ""))
    why = ["refused where a warning was asked for"] if case.expect == "warn" else []
    why += [f"exit {rc}"] if rc != 2 else []
    why += [] if refused else [f"{len(said)} stderr line(s) besides warnings"]
    why += [f"the line does not name {case.says!r}"] if refused and case.says and case.says not in said[0] else []
    why += [f"changed {[os.path.relpath(p, w) for p in changed[:3]]}"] if changed else []
    why += [f"left {new[:3]}"] if new else []
    return ("ok", tail) if not why else ("other", "; ".join(why) + f": {tail}")


CASE_ROOT = Path("/tmp")


def case_dir(case):
    return CASE_ROOT / case.family / case.name


def run_case(case, b, cfg):
    w = case_dir(case)
    shutil.rmtree(w, ignore_errors=True)
    (w / "in").mkdir(parents=True)
    (w / "link").symlink_to(w / "gone" / "nowhere")                  # a dangling symlink every case may use
    put(w, "file.txt", "a file where a folder should be\n")
    t0 = time.time()
    try:
        args = [str(a) for a in case.make(w, b)]
    except Exception as e:                                           # the harness's own bug: say it, go on
        return dict(outcome="other", detail=f"setting up the case failed: {type(e).__name__}: {e}", rc=None,
                    args=[], stderr="", seconds=0.0)
    skip = {str(b.cache)}
    before = snapshot(w, b.root, skip=skip)
    try:
        with read_only([str(w / d) for d in case.ro]):
            rc, out, err = run(case.script, args, w, case.env, cfg.timeout, cfg.mem_gb)
    except RuntimeError as e:
        return dict(outcome="other", detail=f"not run: {e}", rc=None, args=args, stderr="", seconds=0.0)
    outcome, detail = classify(case, rc, err, before, snapshot(w, b.root, skip=skip))
    if outcome == "ok" and not cfg.keep:
        shutil.rmtree(w, ignore_errors=True)
    return dict(outcome=outcome, detail=detail, rc=rc, args=args, stderr=err[-4000:], seconds=time.time() - t0)


# ----------------------------------------------------------------------------- the cases, family by family

def fs_cases():
    """Outputs the operating system refuses."""
    dirs = {"proc": "/proc/hostile/out", "sys": "/sys/hostile/out", "proc-self": "/proc/self/hostile",
            "devnull": "/dev/null", "dangling": "{w}/link", "under-dangling": "{w}/link/run",
            "file": "{w}/in/file.txt", "under-file": "{w}/in/file.txt/run"}
    at = lambda where, w: Path(where.format(w=w))
    cases = []
    for key, where in dirs.items():
        cases += [Case("fs", f"vit-out-{key}", VIT, lambda w, b, x=where: vit(b, at(x, w), "--steps", 2)),
                  Case("fs", f"lm-out-{key}", LM, lambda w, b, x=where: lm(b, at(x, w), "--steps", 2))]
    for key in ("proc", "sys", "under-dangling", "under-file"):
        x = dirs[key]
        cases += [
            Case("fs", f"fit-out-{key}", FIT, lambda w, b, x=x: ["--logs", b.logs, "--out", at(x, w) / "laws.json"]),
            Case("fs", f"sch-out-{key}", SCH, lambda w, b, x=x: ["--laws", b.laws, "--budget", 3e13, "--out",
                                                                at(x, w) / "schedule.json"]),
            Case("fs", f"cmp-out-{key}", CMP, lambda w, b, x=x: ["--runs", *sorted(b.logs.iterdir()), "--out-dir",
                                                                at(x, w)]),
            Case("fs", f"ev-out-{key}", EV, lambda w, b, x=x: ["--ckpt", b.vit / "ckpt.pt", "--data-dir", b.npz,
                                                              "--shots", 1, "--seeds", 1, "--out",
                                                              at(x, w) / "f.json"]),
            Case("fs", f"rep-out-{key}", REP, lambda w, b, x=x: ["--preset", "smoke", "--out-dir", at(x, w)]),
            Case("fs", f"prep-out-{key}", PREP, lambda w, b, x=x: prep(b, at(x, w)))]
    ro = lambda w: (w / "ro").mkdir() or w / "ro"
    cases += [
        Case("fs", "vit-resume-read-only", VIT, lambda w, b: vit(b, copy_run(b, "vit", w), "--steps", 4, "--resume"),
             ro=("run",)),
        Case("fs", "lm-resume-read-only", LM, lambda w, b: lm(b, copy_run(b, "lm", w), "--steps", 4, "--resume"),
             ro=("run",)),
        Case("fs", "vit-fresh-read-only", VIT, lambda w, b: vit(b, ro(w) / "run", "--steps", 2), ro=("ro",)),
        Case("fs", "lm-fresh-read-only", LM, lambda w, b: lm(b, ro(w) / "run", "--steps", 2), ro=("ro",)),
        Case("fs", "fit-read-only", FIT, lambda w, b: ["--logs", b.logs, "--out", ro(w) / "laws.json"], ro=("ro",)),
        Case("fs", "sch-read-only", SCH, lambda w, b: ["--laws", b.laws, "--budget", 3e13, "--out",
                                                       ro(w) / "schedule.json"], ro=("ro",)),
        Case("fs", "cmp-read-only", CMP, lambda w, b: ["--runs", *sorted(b.logs.iterdir()), "--out-dir", ro(w)],
             ro=("ro",)),
        Case("fs", "ev-read-only", EV, lambda w, b: ["--ckpt", b.vit / "ckpt.pt", "--data-dir", b.npz, "--shots", 1,
                                                     "--seeds", 1, "--out", ro(w) / "f.json"], ro=("ro",)),
        Case("fs", "prep-read-only", PREP, lambda w, b: prep(b, ro(w) / "p"), ro=("ro",)),
        Case("fs", "rep-read-only", REP, lambda w, b: ["--preset", "smoke", "--out-dir", ro(w) / "p"], ro=("ro",)),
        Case("fs", "lm-cache-proc", LM, lambda w, b: lm(b, w / "new", "--steps", 2, "--data", b.logs, "--cache-dir",
                                                         "/proc/hostile/cache")),
        Case("fs", "lm-cache-under-file", LM, lambda w, b: lm(b, w / "new", "--steps", 2, "--data", b.logs,
                                                               "--cache-dir", w / "in/file.txt/cache")),
    ]
    return cases


def ckpt_dir(run):
    (run / "ckpt.pt").unlink()
    (run / "ckpt.pt").mkdir()


def ckpt_cut(run):
    (run / "ckpt.pt").write_bytes((run / "ckpt.pt").read_bytes()[:4000])


def ckpt_empty(run):
    (run / "ckpt.pt").write_bytes(b"")


def log_dir(run):
    (run / "log.jsonl").unlink()
    (run / "log.jsonl").mkdir()


def log_nul(run):                                   # NUL bytes in the middle (at the end: a kill's cut line, dropped)
    lines = (run / "log.jsonl").read_bytes().splitlines()
    (run / "log.jsonl").write_bytes(b"\n".join([lines[0], b"\x00" * 64, *lines[1:]]) + b"\n")


def foreign_log(b, other):
    return lambda run: shutil.copy(getattr(b, other) / "log.jsonl", run / "log.jsonl")


def orphan(w, b, how="header"):
    """A reproduce.py pipeline folder whose pipeline.json was deleted, holding its first static run's log as the
    default smoke command would have written it ('header'), or a damaged one ('garbage', 'list')."""
    sys.path.insert(0, str(ROOT))
    import runtime
    import train_vit
    from lab import reproduce
    root = w / "p"
    cfg = runtime.parse(reproduce.Config, "reproduce.py", ["--preset", "smoke", "--out-dir", str(root)])
    job = reproduce.plan(cfg, reproduce.resolve(cfg), root, (0,), 1)[0][0]
    flags = runtime.parse(train_vit.Config, "train_vit.py", job.cmd[2:])
    job.out.mkdir(parents=True)
    header = {"version": 1, "type": "header", "run": job.name, "config": json.loads(runtime.dumps(vars(flags)))}
    text = {"header": json.dumps(header) + "\n", "garbage": "\x00\xff{", "list": "[1, 2]\n",
            "config-list": json.dumps({**header, "config": [1]}) + "\n"}[how]
    (job.out / "log.jsonl").write_text(text)
    return root


def manifest(w, b, text):
    root = w / "p"
    root.mkdir()
    if text is None:
        (root / "pipeline.json").mkdir()
    else:
        (root / "pipeline.json").write_text(text)
    return root


def runfolder_cases():
    """A run folder changed between runs."""
    tampers = {"log-garbage": (garbage, "log.jsonl"), "log-not-object": (not_object, "log.jsonl"),
               "log-deleted": (deleted, "log.jsonl"), "log-emptied": (emptied, "log.jsonl"),
               "log-is-dir": (log_dir, "log.jsonl"), "log-nul-line": (log_nul, "log.jsonl"),
               "ckpt-dangling": (dangling, "ckpt.pt"), "ckpt-is-dir": (ckpt_dir, "ckpt.pt"),
               "ckpt-cut": (ckpt_cut, "ckpt.pt"), "ckpt-empty": (ckpt_empty, "ckpt.pt")}
    cases = []
    for key, (tamper, says) in tampers.items():
        cases += [Case("runfolder", f"vit-{key}", VIT, lambda w, b, t=tamper: vit(b, copy_run(b, "vit", w, t),
                                                                                  "--steps", 4, "--resume"), says),
                  Case("runfolder", f"lm-{key}", LM, lambda w, b, t=tamper: lm(b, copy_run(b, "lm", w, t),
                                                                               "--steps", 4, "--resume"), says)]
    other_npz = lambda w, b: shutil.copy(b.npz, w / "in" / "other.npz")
    other_txt = lambda w, b: shutil.copy(b.corpus, w / "in" / "other.txt")
    cases += [
        Case("runfolder", "vit-log-foreign", VIT, lambda w, b: vit(b, copy_run(b, "vit", w, foreign_log(b, "lm")),
                                                                   "--steps", 4, "--resume"), "log.jsonl"),
        Case("runfolder", "lm-log-foreign", LM, lambda w, b: lm(b, copy_run(b, "lm", w, foreign_log(b, "vit")),
                                                                "--steps", 4, "--resume"), "log.jsonl"),
        Case("runfolder", "vit-other-data", VIT, lambda w, b: [*vit(b, copy_run(b, "vit", w), "--steps", 4,
                                                                    "--resume"), "--data-dir", other_npz(w, b)],
             "data_dir"),
        Case("runfolder", "lm-other-data", LM, lambda w, b: [*lm(b, copy_run(b, "lm", w), "--steps", 4, "--resume"),
                                                             "--data", other_txt(w, b)], "data"),
        Case("runfolder", "vit-ckpt-from-lm", VIT, lambda w, b: vit(b, copy_run(b, "vit", w, lambda r: shutil.copy(
            b.lm / "ckpt.pt", r / "ckpt.pt")), "--steps", 4, "--resume"), "ckpt.pt"),
        Case("runfolder", "vit-start-from-garbage", VIT, lambda w, b: vit(b, w / "new", "--steps", 4, "--start-from",
                                                                          put(w, "c.pt", b"junk")), "c.pt"),
        Case("runfolder", "vit-start-from-dir", VIT, lambda w, b: vit(b, w / "new", "--steps", 4, "--start-from",
                                                                      w / "in"), "--start-from"),
        Case("runfolder", "vit-start-from-dangling", VIT, lambda w, b: vit(b, w / "new", "--steps", 4,
                                                                           "--start-from", w / "link"), "link"),
        Case("runfolder", "vit-start-from-lm", VIT, lambda w, b: vit(b, w / "new", "--steps", 4, "--start-from",
                                                                     b.lm / "ckpt.pt"), "ckpt.pt"),
        Case("runfolder", "lm-start-from-vit", LM, lambda w, b: lm(b, w / "new", "--steps", 4, "--start-from",
                                                                   b.vit / "ckpt.pt"), "ckpt.pt"),
        Case("runfolder", "lm-start-from-garbage", LM, lambda w, b: lm(b, w / "new", "--steps", 4, "--start-from",
                                                                       put(w, "c.pt", b"\x80\x02junk")), "c.pt"),
        Case("runfolder", "rep-no-manifest-other-lr", REP, lambda w, b: [
            "--preset", "smoke", "--set", "lr=0.5", "--out-dir", orphan(w, b)], "lr"),
        Case("runfolder", "rep-no-manifest-other-evals", REP, lambda w, b: [
            "--preset", "smoke", "--set", "evals=3", "--out-dir", orphan(w, b)], "evals"),
        Case("runfolder", "rep-no-manifest-log-garbage", REP, lambda w, b: [
            "--preset", "smoke", "--out-dir", orphan(w, b, "garbage")], "log.jsonl"),
        Case("runfolder", "rep-no-manifest-log-list", REP, lambda w, b: [
            "--preset", "smoke", "--out-dir", orphan(w, b, "list")], "log.jsonl"),
        Case("runfolder", "rep-no-manifest-config-list", REP, lambda w, b: [
            "--preset", "smoke", "--out-dir", orphan(w, b, "config-list")], "log.jsonl"),
        Case("runfolder", "rep-manifest-other-preset", REP, lambda w, b: [
            "--preset", "smoke", "--out-dir", manifest(w, b, json.dumps({
                "version": 1, "experiment": "patch", "preset": "demo", "seeds": [0], "budget": 1e12,
                "precision": "auto", "cost": "flops", "params": {"lr": 0.1}}))], "pipeline.json"),
        Case("runfolder", "rep-manifest-garbage", REP, lambda w, b: [
            "--preset", "smoke", "--out-dir", manifest(w, b, "\xff{")], "pipeline.json"),
        Case("runfolder", "rep-manifest-is-dir", REP, lambda w, b: [
            "--preset", "smoke", "--out-dir", manifest(w, b, None)], "pipeline.json"),
        Case("runfolder", "rep-manifest-params-list", REP, lambda w, b: [
            "--preset", "smoke", "--out-dir", manifest(w, b, '{"version": 1, "params": [1]}')], "pipeline.json"),
    ]
    return cases


def sizes_cases():
    """Sizes that cannot fit, refused in one line before anything is allocated."""
    v = lambda *f: lambda w, b: vit(b, w / "new", "--steps", 2, *f)
    m = lambda *f: lambda w, b: lm(b, w / "new", "--steps", 2, *f)
    vs = lambda **c: lambda w, b: vit(b, w / "new", "--steps", 2, "--schedule", sched_file(w, b, **c))
    ms = lambda **c: lambda w, b: lm(b, w / "new", "--steps", 2, "--schedule", sched_file(w, b, **c))
    bin_tokens = lambda w: put(w, "t.bin", (np.arange(40000) % 300).astype(np.uint16).tobytes())
    return [
        Case("sizes", "vit-width-1e8", VIT, v("--model", "V100000000-4"), "GiB"),
        Case("sizes", "vit-depth-1e5", VIT, v("--model", "V64-100000"), "GiB"),
        Case("sizes", "vit-batch-1e9", VIT, v("--batch-size", 1000000000), "GiB"),
        Case("sizes", "vit-width-2e19", VIT, v("--model", "V20000000000000000000-4"), "--model"),
        Case("sizes", "vit-image-size-1e5", VIT, v("--image-size", 100000), "--image-size"),
        Case("sizes", "vit-posemb-grid-1e5", VIT, v("--posemb-grid", 100000), "GiB"),
        Case("sizes", "vit-base-patch-1e5", VIT, v("--base-patch", 100000), "GiB"),
        Case("sizes", "vit-head-dim-1e9", VIT, v("--head-dim", 1000000000), "--head-dim"),
        Case("sizes", "vit-random-patch-1e5", VIT, v("--random", "--patch-sizes", 4, 100000), "--patch-sizes"),
        Case("sizes", "vit-stage-width-1e12", VIT, vs(patch=4, width=10 ** 12), "stage 0"),
        Case("sizes", "vit-stage-batch-1e12", VIT, vs(patch=4, batch_size=10 ** 12), "stage 0"),
        Case("sizes", "vit-stage-depth-1e9", VIT, vs(patch=4, depth=10 ** 9), "stage 0"),
        Case("sizes", "vit-stage-width-float", VIT, vs(patch=4, width=1e12), "width"),
        Case("sizes", "lm-width-1e8", LM, m("--model", "L99999936-4"), "GiB"),
        Case("sizes", "lm-depth-1e9", LM, m("--model", "L32-1000000000"), "GiB"),
        Case("sizes", "lm-depth-flag-1e9", LM, m("--depth", 1000000000), "GiB"),
        Case("sizes", "lm-tokens-2e40", LM, m("--tokens-per-step", 2 ** 40), "GiB"),
        Case("sizes", "lm-context-1e9", LM, m("--context", 10 ** 9, "--tokens-per-step", 10 ** 9), "context"),
        Case("sizes", "lm-val-tokens-1e15", LM, m("--val-tokens", 10 ** 15), "--val-tokens"),
        Case("sizes", "lm-vocab-1e12", LM, lambda w, b: lm(b, w / "new", "--steps", 2, "--data", bin_tokens(w),
                                                           "--vocab-size", 10 ** 12), "GiB"),
        Case("sizes", "lm-stage-context-1e12", LM, ms(context=10 ** 12), "context"),
        Case("sizes", "lm-stage-tokens-1e15", LM, ms(context=16, tokens_per_step=10 ** 15), "stage 0"),
        Case("sizes", "lm-stage-depth-1e9", LM, ms(context=16, depth=10 ** 9), "stage 0"),
        Case("sizes", "fit-points-1e9", FIT, lambda w, b: ["--logs", b.logs, "--points", 10 ** 9, "--out",
                                                           w / "laws.json"], "--points"),
        Case("sizes", "fit-bootstrap-1e9", FIT, lambda w, b: ["--logs", b.logs, "--bootstrap", 10 ** 9, "--out",
                                                              w / "laws.json"], "--bootstrap"),
        Case("sizes", "sch-grid-1e10", SCH, lambda w, b: ["--laws", b.laws, "--budget", 3e13, "--grid", 10 ** 10,
                                                          "--out", w / "s.json"], "--grid"),
        Case("sizes", "rep-model-width-1e8", REP, lambda w, b: ["--preset", "smoke", "--set",
                                                                "model=V100000000-4", "--out-dir", w / "p"], "GiB"),
        Case("sizes", "rep-model-garbage", REP, lambda w, b: ["--preset", "smoke", "--set", "model=Vabc", "--out-dir",
                                                              w / "p"], "model"),
        Case("sizes", "rep-lm-width-1e8", REP, lambda w, b: ["--experiment", "context", "--preset", "smoke", "--set",
                                                             "model=L99999936-4", f"data={b.corpus}", "val_tokens=512",
                                                             "--out-dir", w / "p"], "GiB"),
        Case("sizes", "rep-batch-1e9", REP, lambda w, b: ["--preset", "smoke", "--set",
                                                          "batch_size=1000000000", "--out-dir", w / "p"], "GiB"),
        Case("sizes", "prep-resolution-1e5", PREP, lambda w, b: prep(b, w / "p", "--resolution", 100000),
             "--resolution"),
        Case("sizes", "prep-workers-1e5", PREP, lambda w, b: prep(b, w / "p", "--workers", 100000), "--workers"),
    ]


def labels_cases():
    """Labels that lie, in an .npz, a prepared folder and IDX files."""
    def v(**change):
        return lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", npz(w, b, **change))

    def e(**change):
        return lambda w, b: ["--ckpt", b.vit / "ckpt.pt", "--data-dir", npz(w, b, **change), "--shots", 1, "--seeds", 1]

    def prepared(edit):
        def make(w, b):
            p = shutil.copytree(b.prep, w / "in" / "prep")
            arr = np.load(p / edit[0])
            arr[:] = edit[1](arr)
            with open(p / edit[0], "wb") as f:
                np.save(f, arr)
            return vit(b, w / "new", "--steps", 2, "--data-dir", p, "--patch", 4, "--fewshot-support", 12,
                       "--fewshot-query", 6)
        return make

    y, ty = np.arange(240) % 10, np.arange(60) % 10
    idx = lambda w, b: vit(b, w / "new", "--steps", 2, "--data-dir", idx_files(w, b, test_label=255))
    return [
        Case("labels", "vit-train-strings", VIT, v(y_train=np.array(["cat", "dog"] * 120)), "labels"),
        Case("labels", "vit-test-strings", VIT, v(y_test=np.array(["cat", "dog"] * 30)), "labels"),
        Case("labels", "vit-train-minus-1", VIT, v(y_train=np.r_[-1, y[1:]]), "labels"),
        Case("labels", "vit-test-minus-1", VIT, v(y_test=np.r_[-1, ty[1:]]), "labels"),
        Case("labels", "vit-test-class-untrained", VIT, v(y_test=np.r_[11, ty[1:]]), "11"),
        Case("labels", "vit-all-one-class", VIT, v(y_train=np.ones(240, np.int64), y_test=np.ones(60, np.int64)),
             "two classes"),
        Case("labels", "vit-train-one-class", VIT, v(y_train=np.ones(240, np.int64)), "training label"),
        Case("labels", "vit-float-labels", VIT, v(y_train=y + 0.5), "labels"),
        Case("labels", "vit-bool-labels", VIT, v(y_train=y % 2 == 0, y_test=ty % 2 == 0), "labels"),
        Case("labels", "vit-2d-labels", VIT, v(y_train=y[:, None]), "labels"),
        Case("labels", "vit-huge-label", VIT, v(y_train=np.r_[2 ** 40, y[1:]]), "labels"),
        Case("labels", "vit-uint64-max", VIT, v(y_test=np.r_[np.uint64(2 ** 64 - 1), ty[1:].astype(np.uint64)]),
             "labels"),
        Case("labels", "vit-object-labels", VIT, v(y_train=np.array([1, "a"] * 120, dtype=object)), "bad.npz"),
        Case("labels", "vit-nan-labels", VIT, v(y_test=np.full(60, np.nan)), "labels"),
        Case("labels", "vit-fewshot-support-too-few", VIT, lambda w, b: vit(b, w / "new", "--steps", 2,
                                                                             "--fewshot-support", 15),
             "--fewshot-support", expect="either"),
        Case("labels", "ev-train-strings", EV, e(y_train=np.array(["cat", "dog"] * 120)), "labels"),
        Case("labels", "ev-test-minus-1", EV, e(y_test=np.r_[-1, ty[1:]]), "labels"),
        Case("labels", "ev-test-class-untrained", EV, e(y_test=np.r_[11, ty[1:]]), "11", expect="either"),
        Case("labels", "ev-all-one-class", EV, e(y_train=np.ones(240, np.int64), y_test=np.ones(60, np.int64)),
             "two classes"),
        Case("labels", "ev-shots-over-class", EV, lambda w, b: ["--ckpt", b.vit / "ckpt.pt", "--data-dir", b.npz,
                                                                "--shots", 40, "--seeds", 1], "40", expect="either"),
        Case("labels", "prep-labels-minus-1", VIT, prepared(("train.labels.npy", lambda a: np.r_[-1, a[1:]])),
             "labels"),
        Case("labels", "prep-labels-past-classes", VIT, prepared(("val.labels.npy", lambda a: np.r_[7, a[1:]])),
             "labels"),
        Case("labels", "prep-train-one-class", VIT, prepared(("train.labels.npy", lambda a: np.zeros_like(a))),
             "labels"),
        Case("labels", "prep-val-class-untrained", VIT, prepared(("train.labels.npy", lambda a: np.where(
            a == 2, 1, a))), "2"),
        Case("labels", "idx-test-label-255", VIT, idx, "255"),
    ]


def idx_files(w, b, test_label):
    """Fashion-MNIST-style IDX files of the tiny images, the first test label replaced."""
    with np.load(b.npz) as z:
        arrays = dict(z)
    arrays["y_test"] = np.r_[test_label, arrays["y_test"][1:]]
    (d := w / "in" / "idx").mkdir(parents=True)
    for stem, key in (("train-images-idx3-ubyte", "x_train"), ("train-labels-idx1-ubyte", "y_train"),
                      ("t10k-images-idx3-ubyte", "x_test"), ("t10k-labels-idx1-ubyte", "y_test")):
        a = arrays[key].astype(np.uint8)
        (d / stem).write_bytes(bytes([0, 0, 8, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
                               + a.tobytes())
    return d


def records_cases():
    """Numbers that are not numbers in the logs fit_laws.py and lab/compare.py read."""
    edits = {"flops-nan": ('"flops": ', '"flops": NaN, "f": '),
             "flops-string": ('"flops": ', '"flops": "1e11", "f": '),
             "flops-null": ('"flops": ', '"flops": null, "f": '),
             "flops-bool": ('"flops": ', '"flops": true, "f": '),
             "flops-subnormal": ('"flops": ', '"flops": 5e-324, "f": '),
             "metric-infinity": ('"fewshot10_error": ', '"fewshot10_error": Infinity, "o": '),
             "metric-minus-infinity": ('"fewshot10_error": ', '"fewshot10_error": -Infinity, "o": '),
             "metric-string": ('"fewshot10_error": ', '"fewshot10_error": "0.5", "o": '),
             "metric-bool": ('"fewshot10_error": ', '"fewshot10_error": true, "o": '),
             "metric-list": ('"fewshot10_error": ', '"fewshot10_error": [0.5], "o": '),
             "metric-subnormal": ('"fewshot10_error": ', '"fewshot10_error": 5e-324, "o": '),
             "metric-zero": ('"fewshot10_error": ', '"fewshot10_error": 0, "o": '),
             "metric-negative": ('"fewshot10_error": ', '"fewshot10_error": -0.5, "o": '),
             "wall-nan": ('"wall": ', '"wall": NaN, "x": ')}
    cases = []
    for key, (old, new) in edits.items():
        logs = lambda w, b, o=old, n=new: edited_logs(w, b, o, n)
        fit = Case("records", f"fit-{key}", FIT, lambda w, b, L=logs: ["--logs", L(w, b), "--bootstrap", 0, "--out",
                                                                     w / "laws.json"], "log.jsonl")
        cases += [] if key == "wall-nan" else [fit]          # fit_laws.py --cost flops reads no wall: nothing to say
        cases += [Case("records", f"cmp-{key}", CMP, lambda w, b, L=logs: [
            "--runs", *sorted(L(w, b).iterdir()), "--no-plot", "--out-dir", w / "cmp"], "log.jsonl")]
    wall = lambda w, b: edited_logs(w, b, '"wall": ', '"wall": NaN, "x": ')
    cases += [
        Case("records", "fit-wall-nan-cost-wall", FIT, lambda w, b: ["--logs", wall(w, b), "--cost", "wall",
                                                                     "--bootstrap", 0, "--out", w / "laws.json"],
             "log.jsonl"),
        Case("records", "sch-law-a-subnormal", SCH, lambda w, b: ["--laws", laws_with(w, b, a=5e-324), "--budget",
                                                                  3e13, "--out", w / "s.json"]),
        Case("records", "sch-law-b-subnormal", SCH, lambda w, b: ["--laws", laws_with(w, b, b=5e-324), "--budget",
                                                                  3e13, "--out", w / "s.json"]),
    ]
    return cases


def laws_with(w, base, **change):
    doc = json.loads(base.laws.read_text())
    doc["laws"][0].update(change)
    return put(w, "l.json", json.dumps(doc))


def partial(b, w, damage):
    """A preparation stopped after 2 chunks (as if killed), then damaged."""
    out = w / "p"
    rc, _, err = run(PREP, prep(b, out, "--stop-after-chunks", 2), w)
    assert rc == 137, err
    prog, part = out / "train.progress.json", out / "train.u8.partial"
    if damage == "truncated":
        os.truncate(part, 100)
    elif damage == "grown":
        with open(part, "ab") as f:
            f.write(b"\0" * 999)
    elif damage == "progress-garbage":
        prog.write_bytes(b"\xff{not json")
    elif damage == "progress-list":
        prog.write_text("[1, 2]")
    elif damage == "progress-is-dir":
        prog.unlink()
        prog.mkdir()
    elif damage == "partial-is-dir":
        part.unlink()
        part.mkdir()
    else:
        doc = json.loads(prog.read_text())
        prog.write_text(json.dumps({**doc, **{"done-huge": {"done": 10 ** 9}, "done-negative": {"done": -3},
                                              "done-float": {"done": 1.5}, "bad-row": {"bad": [[10 ** 6, "x", "?"]]},
                                              "compacted-str": {"compacted": "yes"}}[damage]}))
    return prep(b, out)


def prepare_cases():
    """lab/prepare_images.py: bad flags, bad folders, a damaged partial preparation on resume."""
    p = lambda *f: lambda w, b: prep(b, w / "p", *f)

    def src(build):
        def make(w, b):
            s = shutil.copytree(b.imgs, w / "in" / "src")
            build(s)
            return prep(b, w / "p", src=s)
        return make
    flags = {"patch-sizes-0": ("--patch-sizes", 0), "patch-sizes-neg": ("--patch-sizes", -8),
             "stop-after-0": ("--stop-after-chunks", 0), "stop-after-neg": ("--stop-after-chunks", -1),
             "chunk-0": ("--chunk", 0), "chunk-neg": ("--chunk", -2), "resolution-0": ("--resolution", 0),
             "resolution-neg": ("--resolution", -24), "resolution-5000": ("--resolution", 5000),
             "resolution-undivided": ("--resolution", 25, "--patch-sizes", 7), "workers-neg": ("--workers", -1),
             "max-bad-neg": ("--max-bad", -1), "channels-2": ("--channels", 2), "splits-val-first": ("--splits", "val",
                                                                                                      "train"),
             "splits-twice": ("--splits", "train", "train"), "splits-missing": ("--splits", "train", "test"),
             "splits-outside": ("--splits", "train", "../imgs/val"), "splits-empty-name": ("--splits", "train", ""),
             "splits-absolute": ("--splits", "train", "/tmp")}
    says = {"splits-missing": "test"}                       # the folder it lacks, not the flag
    cases = [Case("prepare", f"prep-{k}", PREP, p(*f), says.get(k, f[0])) for k, f in flags.items()]
    cases += [
        Case("prepare", "prep-src-missing", PREP, lambda w, b: prep(b, w / "p", src=w / "nope"), "--src"),
        Case("prepare", "prep-src-is-file", PREP, lambda w, b: prep(b, w / "p", src=w / "in/file.txt"), "--src"),
        Case("prepare", "prep-empty-class", PREP, src(lambda s: (s / "train" / "c9").mkdir()), "c9"),
        Case("prepare", "prep-val-class-not-in-train", PREP, src(lambda s: shutil.copytree(
            s / "val" / "c0", s / "val" / "zz")), "zz"),
        Case("prepare", "prep-mixed-channels", PREP, src(lambda s: image_folder(s, ("train",), 1, 1, gray=(0,)) and
                                                         os.replace(s / "train/c0/0.png", s / "train/c1/gray.png")),
             "channel", may_change=("p",)),
        Case("prepare", "prep-all-corrupt", PREP, src(lambda s: [f.write_bytes(b"not an image")
                                                                  for f in (s / "train").rglob("*.png")]),
             "no image decoded", may_change=("p",)),
        Case("prepare", "prep-one-corrupt", PREP, src(lambda s: (s / "train/c1/0.png").write_bytes(b"\xff\xd8 junk")),
             "0.png", expect="warn", may_change=("p",)),
        Case("prepare", "prep-no-train", PREP, src(lambda s: shutil.rmtree(s / "train")), "train"),
    ]
    for damage in ("truncated", "grown", "progress-garbage", "progress-list", "done-huge", "done-negative",
                   "done-float", "bad-row", "compacted-str"):
        cases.append(Case("prepare", f"prep-partial-{damage}", PREP, lambda w, b, d=damage: partial(b, w, d),
                          expect="warn", may_change=("p",)))
    for damage in ("progress-is-dir", "partial-is-dir"):
        cases.append(Case("prepare", f"prep-partial-{damage}", PREP, lambda w, b, d=damage: partial(b, w, d),
                          damage.split("-is")[0], expect="either", may_change=("p",)))
    return cases


def env_cases():
    """torchrun's variables set by hand, no torchrun."""
    envs = {"world-2": {"WORLD_SIZE": "2"}, "world-abc": {"WORLD_SIZE": "abc"}, "world-0": {"WORLD_SIZE": "0"},
            "world-neg": {"WORLD_SIZE": "-2"}, "rank-5-of-2": {"RANK": "5", "WORLD_SIZE": "2"},
            "rank-neg": {"RANK": "-1", "WORLD_SIZE": "2"}, "rank-1-of-2": {"RANK": "1", "WORLD_SIZE": "2"},
            "local-rank-x": {"LOCAL_RANK": "x"}, "rank-empty": {"RANK": "", "WORLD_SIZE": "2"},
            "master-port-abc": {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "abc"},
            "master-port-99999": {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"},
            "world-huge": {"WORLD_SIZE": "1" + "0" * 30}}
    cases = []
    for key, env in envs.items():
        cases += [Case("env", f"vit-{key}", VIT, lambda w, b: vit(b, w / "new", "--steps", 2), env=env),
                  Case("env", f"lm-{key}", LM, lambda w, b: lm(b, w / "new", "--steps", 2), env=env)]
    cases += [Case("env", "vit-resume-world-2", VIT, lambda w, b: vit(b, copy_run(b, "vit", w), "--steps", 4,
                                                                      "--resume"), env={"WORLD_SIZE": "2"})]
    return cases


CASES = {"fs": fs_cases, "runfolder": runfolder_cases, "sizes": sizes_cases, "labels": labels_cases,
         "records": records_cases, "prepare": prepare_cases, "env": env_cases}


# ----------------------------------------------------------------------------- main

def main(cfg: Config) -> int:
    global CASE_ROOT
    if bad := [f for f in cfg.only if f not in FAMILIES]:
        raise SystemExit(f"hostile.py: error: --only {bad[0]}: the families are {' '.join(FAMILIES)}")
    out = Path(cfg.out).resolve()
    CASE_ROOT = out / "cases"
    t0 = time.time()
    shutil.rmtree(out / "base", ignore_errors=True)
    b = build_base(out / "base", cfg.mem_gb)
    print(f"base inputs built in {time.time() - t0:.0f}s under {out}", flush=True)
    results, counts = [], {}
    for family in cfg.only or FAMILIES:
        cases = [c for c in CASES[family]() if (not cfg.case or any(s in c.name for s in cfg.case))
                 and not any(s in c.name for s in cfg.skip)]
        print(f"\n== {family}: {len(cases)} cases", flush=True)
        for case in cases:
            r = run_case(case, b, cfg)
            results.append(dict(family=family, name=case.name, script=case.script, expect=case.expect, env=case.env,
                                **r))
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
            print(f"  {case.name:<40} {r['outcome']:<9} {r['seconds']:5.1f}s  {r['detail'][:150]}", flush=True)
    wall = time.time() - t0
    by_family = {f: {o: sum(r["family"] == f and r["outcome"] == o for r in results)
                     for o in ("ok", "traceback", "silent", "other")} for f in cfg.only or FAMILIES}
    print("\nfamily      cases   ok  traceback  silent  other")
    for f, c in by_family.items():
        print(f"{f:<11} {sum(c.values()):5d} {c['ok']:4d} {c['traceback']:10d} {c['silent']:7d} {c['other']:6d}")
    summary = (f"{len(results)} cases: {counts.get('ok', 0)} ok, {counts.get('traceback', 0)} traceback, "
               f"{counts.get('silent', 0)} silent, {counts.get('other', 0)} other, in {wall:.0f}s")
    print(summary)
    (out / "results.json").write_text(json.dumps(dict(summary=summary, wall=wall, families=by_family,
                                                      cases=results), indent=1) + "\n")
    print(f"results: {out / 'results.json'}")
    return 0 if counts.get("ok", 0) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Config)))
