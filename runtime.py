"""Run plumbing that both trainers (train_vit.py, train_lm.py) share, written once.

What a training run needs besides the model and the data, in the order a trainer uses it:

    device = runtime.resolve_device(cfg.device, world)          # cpu / cuda / cuda:LOCAL_RANK
    precision = runtime.resolve_precision(cfg.precision, device) # "fp32" | "bf16"
    amp = runtime.autocast(device, precision)                    # context for forward passes
    points = runtime.eval_points(budget, cfg.evals)              # log-spaced evaluation points
    runtime.check_resume(saved_identity, identity, ckpt_path)    # same run, or one-line refusal
    log = runtime.RunLog(out / "log.jsonl")                      # header + one record per evaluation
    ckpts = runtime.Checkpoints(out / "ckpt.pt")                  # atomic; the one before kept too
    runtime.check_finite(step, ckpts, loss=..., grad_norm=...)   # divergence: roll back, one line, exit 2
    sys.exit(runtime.run_cli(main, Config, "train_vit.py"))      # flags, one-line errors, exit codes

Errors: `UserError` is the project's one bad-input type (a wrong flag, a missing or unreadable file, a
run that diverged): `run_cli` prints it as one line and exits with code 2. Every other exception is a bug
and keeps its traceback. The copy-alone modules (schedule.py, fit_laws.py) have their own error classes,
since they import nothing of the project; a script that calls them names those classes in `run_cli`.

Precision (`--precision auto|fp32|bf16`): "auto" trains in bfloat16 autocast where bf16 matrix units
exist, i.e. on CUDA and on CPUs with AMX-BF16 (Intel Sapphire Rapids and later), and in float32
elsewhere. A CPU with avx512_bf16 but no AMX multiplies bf16 matrices SLOWER than float32 (measured on
such a Xeon with torch 2.13: 2048^2 matmul at 71-76 GFLOP/s in bf16 against 133 in float32,
bench/bench_precision.py), so there "auto" is float32 and "bf16" is refused. Master weights and AdamW
state stay float32 in every precision: autocast only casts the inputs of matrix products.
"""
import datetime
import json
import math
import os
import shutil
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist


class UserError(ValueError):
    """Bad input (flags, files, a diverged run): one line on stderr and exit code 2, no traceback."""


# ----------------------------------------------------------------------------- files

def atomic_write(path, write):
    """Write `path` through `write(tmp_path)` and rename: a reader or a kill never sees half a file,
    and a failed write leaves no temporary file behind."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a file name")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def strict(obj):
    """`obj` as plain JSON values: every non-finite float replaced by None (JSON without NaN or Infinity),
    numpy numbers as Python numbers, keys as strings."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def dumps(obj):
    """Strict JSON text of `obj` (NaN and infinities become null)."""
    return json.dumps(strict(obj), allow_nan=False)


def check_out_dir(path, flag="--out-dir"):
    """An output folder that can be made: neither it nor a folder above it is a file."""
    path = Path(path)
    if file := next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None):
        raise UserError(f"{flag} {path}: {file} is a file; give a folder")
    return path


def write_json(path, obj):
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(strict(obj), indent=1, allow_nan=False) + "\n"))


class RunLog:
    """log.jsonl: a header line, then one record per evaluation. `start` writes a new log, or, on resume,
    keeps the records up to the checkpoint's step (those written after it, before a kill, are made again)
    and drops a line cut short. Each record is appended and flushed as it comes."""

    def __init__(self, path):
        self.path = Path(path)

    def start(self, header, resume_step=None):
        lines = [dumps(header)]
        if resume_step is not None and self.path.exists():
            kept = [r for r in self.records() if r.get("type") != "eval" or r.get("step", 0) <= resume_step]
            lines = [dumps(r) for r in kept] or lines
        atomic_write(self.path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))

    def records(self):
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:                # a line cut short by a kill
                pass
        return out

    def append(self, record):
        with open(self.path, "a") as f:
            f.write(dumps(record) + "\n")


# ----------------------------------------------------------------------------- device and precision

def resolve_device(name, world=None):
    """The torch device for --device (auto: cuda if available); under torchrun the local GPU."""
    try:
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: this torch has no CUDA device; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda are supported")
    if dev.type == "cuda" and world is not None and world.size > 1:
        dev = torch.device("cuda", world.local_rank)
    return dev


def bf16_matrix_units(device):
    """(True, what) where bfloat16 matrix products run on dedicated units: a CUDA GPU with bf16 support, or
    a CPU with AMX-BF16; else (False, the missing capability)."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, "CUDA bf16" if ok else "bf16 support on this GPU"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    caps = getattr(torch.cpu, "get_capabilities", lambda: {})()
    amx = amx and caps.get("amx_bf16", True)
    return bool(amx), "AMX-BF16" if amx else "AMX-BF16 matrix units (this CPU has " + (
        "avx512_bf16 only, whose bf16 matmul is slower than float32)" if caps.get("avx512_bf16") else "neither)")


def resolve_precision(name, device):
    """--precision auto|fp32|bf16 -> "fp32" or "bf16". auto: bf16 where bf16 matrix units exist."""
    if name not in ("auto", "fp32", "bf16"):
        raise UserError(f"--precision {name!r}: use auto, fp32 or bf16")
    ok, what = bf16_matrix_units(device)
    if name == "bf16" and not ok:
        raise UserError(f"--precision bf16: this {device.type.upper()} lacks {what}; use --precision fp32")
    return "bf16" if name == "bf16" or (name == "auto" and ok) else "fp32"


def autocast(device, precision):
    """The forward passes' context: bf16 autocast (weights stay float32), or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


# ----------------------------------------------------------------------------- the run's course

def eval_points(budget, evals, first=0.01, integer=False):
    """Evaluation points, log-spaced from `first` x budget to the budget (a law needs points on every
    decade), always including the budget itself; rounded up to whole steps when `integer`."""
    points = np.geomspace(first * budget, budget, max(evals, 1)) if evals > 1 else np.array([budget])
    points = np.unique(np.append(points.round(6), budget))
    return np.unique(np.ceil(points)) if integer else points


def stage_eval_points(sched, budget, switch_on, per_stage=(0.25, 0.5, 0.75)):
    """Extra evaluation points inside each later stage of a FLOPs schedule: its start + 1/4, 1/2, 3/4 of its span.
    The log-spaced points thin out late, and compare.py reads a stage only from 3 evaluations on; a switch at
    half the budget would leave its last stage two (measured: every law run of the 3-seed demo). Both trainers
    use it."""
    if sched is None or sched.random or switch_on != "flops":
        return []
    starts = [s.flops_start for s in sched.stages if 0 < s.flops_start < budget] + [budget]
    return [a + f * (b - a) for a, b in zip(starts, starts[1:]) for f in per_stage]


def check_budget(steps, flops):
    """Exactly one of --steps / --flops, positive and finite: -> (budget, "steps" | "flops")."""
    if (steps is None) == (flops is None):
        raise UserError("give the budget as exactly one of --steps N or --flops F")
    if steps is not None and steps < 1:
        raise UserError(f"--steps {steps}: give a positive number of steps")
    if flops is not None and not (math.isfinite(flops) and flops > 0):
        raise UserError(f"--flops {flops}: give a positive, finite FLOPs budget")
    return (float(steps), "steps") if steps is not None else (float(flops), "flops")


def check_resume(saved, wanted, path):
    """Refuse to resume a run whose identity (shape, data, seed, schedule, ...) differs from this launch's."""
    for key, value in wanted.items():
        if key in saved and saved[key] != value:
            raise UserError(f"--resume: {path} was trained with {key}={saved[key]!r}, this run asks for "
                            f"{value!r}: use the same value or another --out-dir")


class Checkpoints:
    """ckpt.pt, written atomically, with the one before it kept beside it (ckpt.prev.pt). A divergence rolls
    back past the newest checkpoint this process wrote, whose weights may already be poisoned (finite but far
    off, as after a huge learning rate): the one before it is kept, or none when there is none, and the same
    command then starts afresh. The checkpoint a run resumed from is never rolled back past."""

    def __init__(self, path, main=True):
        self.path, self.main, self.written, self.step = Path(path), main, 0, None
        self.prev = self.path.with_name(f"{self.path.stem}.prev{self.path.suffix}")

    def save(self, obj, step):
        if self.main:
            if not self.written:                         # a process killed mid-write left its temporary file
                for name in (self.path.name, self.prev.name):
                    for stale in self.path.parent.glob(f".{name}.*.tmp"):
                        stale.unlink(missing_ok=True)
            if self.path.exists():
                atomic_write(self.prev, lambda tmp: shutil.copyfile(self.path, tmp))
            atomic_write(self.path, lambda tmp: torch.save(obj, tmp))
        self.written, self.step = self.written + 1, step

    def roll_back(self):
        """After a divergence: what is kept, as words for the error message."""
        if not self.written:
            return (f"the last good checkpoint {self.path} (step {self.step}) is kept" if self.step is not None
                    else "no checkpoint was written")
        if not self.prev.exists():
            if self.main:
                self.path.unlink(missing_ok=True)
            return "its only checkpoint was removed (it may hold the diverging weights); the same command starts afresh"
        step = torch.load(self.prev, map_location="cpu", weights_only=False)["state"]["step"]
        if self.main:
            os.replace(self.prev, self.path)
        return f"the last good checkpoint {self.path} (step {step}) is kept"


class DivergedError(UserError):
    """The loss, gradient, weights or an evaluation became NaN or inf: one line, exit code 2."""


def check_finite(step, ckpts, **values):
    """The divergence check: every value finite, else roll the checkpoints back and stop in one line."""
    if not all(math.isfinite(v) for v in values.values()):
        what = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in values.items())
        raise DivergedError(f"non-finite {what} at step {step}: training diverged; {ckpts.roll_back()}; "
                            "lower --lr or raise --warmup")


def check_finite_weights(model, step, ckpts):
    """Before a checkpoint: weights finite, or the same stop as check_finite."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        check_finite(step, ckpts, weights=math.nan)


def lr_scale(kind, ratio):
    """How the learning rate follows a batch (or tokens-per-step) ratio r: 1, r or sqrt(r) (Sec. 6.2)."""
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[kind]


def warmup_factor(step, warmup):
    """Linear warm-up: (step + 1) / warmup, then 1 (a constant learning rate after it, App. A)."""
    return min(1.0, (step + 1) / max(warmup, 1))

# ----------------------------------------------------------------------------- torchrun: data parallel (DDP)
# A run means the same on 1 or N processes: the GLOBAL batch is split into N equal shards (rank r takes rows
# [r*B/N, (r+1)*B/N) of the batch one process would draw), so data order, augmentation, FLOPs and the learning rate
# do not depend on N; DDP averages the gradients. Rank 0 alone logs, checkpoints and evaluates; the others wait at
# the next collective. Every check that may fail runs on every rank alike, before the process group starts.

@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls):
        """The process's place in the job as torchrun (or any env:// launcher) sets it; 1 process otherwise."""
        try:
            rank, size, local = (int(os.environ.get(k, d)) for k, d in
                                 (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
        except ValueError:
            raise UserError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None
        if not 0 <= rank < size:
            raise UserError(f"RANK {rank} is not in [0, WORLD_SIZE={size}); launch with torchrun")
        return cls(rank, size, local)

    @property
    def main(self):
        """Rank 0: the one process that logs, checkpoints, prints and evaluates."""
        return self.rank == 0

    @property
    def active(self):
        return self.size > 1 and tdist.is_initialized()

    def shard(self, batch_size, where="--batch-size"):
        """(lo, hi): this rank's rows of a global batch; UserError if it does not split evenly."""
        if batch_size % self.size:
            raise UserError(f"{where}: batch size {batch_size} does not divide across {self.size} processes "
                            f"(torchrun --nproc_per_node); use a multiple of {self.size}")
        n = batch_size // self.size
        return self.rank * n, (self.rank + 1) * n

    def check_resume(self, saved_size, path):
        """A run resumes on as many processes as it was trained on (its curve stays bit-identical then)."""
        if saved_size != self.size:
            raise UserError(f"--resume: {path} was trained on {saved_size} process(es), this launch has "
                            f"{self.size}; resume with torchrun --nproc_per_node {saved_size}"
                            + (" (or without torchrun)" if saved_size == 1 else ""))

    def init(self, device, timeout_min=60):
        """Join the process group (after every check that may fail): NCCL for CUDA, gloo for CPU."""
        if self.size == 1 or tdist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=self.rank, world_size=self.size,
                                 timeout=datetime.timedelta(minutes=timeout_min),
                                 device_id=device if device.type == "cuda" else None)

    def wrap(self, model, device):
        """DistributedDataParallel around `model` (which stays the object to save, grow and evaluate);
        after a width/depth growth the parameters are new objects: call wrap again."""
        if not self.active:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def mean(self, t):
        """The mean of tensor `t` over the processes (one all-reduce; `t` on the backend's device: CUDA for
        NCCL, CPU for gloo); `t` itself on one process. E.g. the step's loss for the log."""
        if not self.active:
            return t
        t = t.clone()
        tdist.all_reduce(t)
        return t / self.size

    def broadcast(self, obj):
        """Rank 0's `obj` (any picklable) on every rank."""
        if not self.active:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self):
        if self.active:
            tdist.barrier()


# ----------------------------------------------------------------------------- command line

def moved_to_lab(script):
    """The trainers' flags that moved to the lab (lab/planner.py): their old spelling gets one line naming it."""
    where = f"moved to the lab: python lab/planner.py {script} <the other flags> [--plan-steps N]"
    return {"--plan": where, "--plan-steps": where}


def parse(config_cls, script, args=None, moved=None):
    """tyro's parse of the flags, with its boxed error message (6-15 lines) cut to one line and exit code 2.
    `moved` {old flag: what became of it} names a flag that was renamed or moved."""
    import contextlib
    import io

    import tyro
    argv = sys.argv[1:] if args is None else list(args)
    for old, new in (moved or {}).items():
        if old in argv:
            raise UserError(f"{old} {new}; see {script} --help")
    box = io.StringIO()
    try:
        with contextlib.redirect_stderr(box):
            return tyro.cli(config_cls, args=args, prog=script)
    except SystemExit as e:
        if not e.code:                                   # --help and the like: as tyro printed it
            sys.stderr.write(box.getvalue())
            raise
        raw = [ln.strip("│╭╰╮╯| ").strip() for ln in box.getvalue().splitlines()]
        title = raw[0].strip("─- ") if raw else "bad flags"    # a box, or its ASCII form off a terminal
        body = []                                        # the box's first paragraph, its wrapped lines joined
        for ln in raw[1:]:
            if not ln or set(ln) <= set("─-") or ln.startswith(("Perhaps", "For full", "Argument", "Got")):
                if body:
                    break
                continue
            body.append(ln)
        body = " ".join(body)
        lines = [ln for ln in raw if ln and not set(ln) <= set("─-")]
        hint = next((lines[i + 1].split()[0] for i, ln in enumerate(lines[:-1]) if ln.startswith("Perhaps")), None)
        msg = f"{title}: {body}" if body and title.lower() not in body.lower() else (body or title)
        raise UserError(f"{msg}{f' (did you mean {hint}?)' if hint else ''}; see {script} --help") from None


def run_cli(main, config_cls, script, args=None, errors=(), moved=None, interrupted="continue with --resume"):
    """Parse the flags (tyro) and run main(cfg). UserError (and the `errors` classes of copy-alone modules)
    is one line on stderr, printed by rank 0 only under torchrun, and exit code 2; any other exception is a
    bug and keeps its traceback. Ctrl-C says how to resume. Always leaves the process group. Returns the code."""
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    # rank 0 speaks for the job; a RANK that is no number, or outside WORLD_SIZE: every process says so
    main_rank = rank == "0" or not (rank.isdigit() and world.isdigit() and int(rank) < int(world))
    try:
        main(parse(config_cls, script, args, moved))
    except (UserError, *errors) as e:
        if main_rank:
            print(f"{script}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if main_rank:
            print(f"{script}: interrupted; {interrupted}", file=sys.stderr)
        return 130
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0
