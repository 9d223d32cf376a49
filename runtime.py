"""Run plumbing both trainers (train_vit.py, train_lm.py) share, in the order a trainer uses it:

    sys.exit(runtime.run_cli(main, Config, "train_vit.py"))  # a UserError: one line, exit 2; a bug: its traceback
    world = runtime.World.from_env()                         # 1 process, or torchrun's rank and size
    device, precision, amp = runtime.machine(cfg, world)     # --threads, --device, --precision
    log, ckpts = runtime.RunLog(out / "log.jsonl"), runtime.Checkpoints(out / "ckpt.pt")   # written atomically
    runtime.check_finite(step, ckpts, loss=..., grad_norm=...)   # divergence: roll back, one line, exit 2
"""
import contextlib, datetime, io, json, math, os, re, resource, shutil, sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist


class UserError(ValueError):
    """Bad input (flags, files, a diverged run): one line on stderr and exit code 2, no traceback."""


@contextlib.contextmanager
def user_error(prefix="", errors=ValueError):   # a copy-alone module's own error (a ValueError) as a UserError
    try:
        yield
    except errors as e:
        raise UserError(f"{prefix}{e}") from None


def atomic_write(path, write):
    """Write `path` through `write(tmp_path)` and a rename: never half a file, never a stray temporary one."""
    if (path := Path(path)).is_dir():
        raise UserError(f"{path} is a directory; give a file name")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def strict(obj):
    """`obj` as plain JSON values: non-finite floats as None, numpy numbers as Python's, keys as strings."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return int(obj) if isinstance(obj, np.integer) else obj


dumps = lambda obj, **kw: json.dumps(strict(obj), allow_nan=False, **kw)     # strict JSON of `obj`


def check_out_dir(path, flag="--out-dir"):                  # a folder that can be made: none above it is a file
    path = Path(path)
    if file := next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None):
        raise UserError(f"{flag} {path}: {file} is a file; give a folder")
    return path


class RunLog:
    """log.jsonl: a header, then one record per evaluation; a resume keeps those up to the checkpoint's step."""

    def __init__(self, path):
        self.path = Path(path)

    def start(self, header, resume_step=None, was_precision=None):
        """A new log; a resume keeps its own log's records up to its checkpoint's step and notes a new precision."""
        lines = [dumps(header)]
        if resume_step is not None and self.path.exists():
            kept = [r for r in self.records() if r.get("type") != "eval" or r.get("step", 0) <= resume_step]
            old, new = next((r.get("config") for r in kept if r.get("type") == "header"), {}), header["config"]
            check_resume(old if isinstance(old, dict) else {}, {k: new[k] for k in ("model", "seed")}, self.path)
            lines = [dumps(r) for r in kept] or lines
        if resume_step is not None and was_precision not in (None, now := header["precision"]):
            lines.append(dumps({"type": "note", "step": resume_step, "precision": now, "was": was_precision}))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))

    def records(self):
        """Every record; a last line cut short by a kill is dropped, any other damage is one line (UserError)."""
        lines, out = self.path.read_text(errors="replace").splitlines(), []
        for i, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None if i < len(lines) else {}        # the last line cut short by a kill: dropped
            if not isinstance(rec, dict):
                raise UserError(f"{self.path}: line {i} is not a JSON object: the log is damaged; restore it, or "
                                "start afresh with another --out-dir")
            out += [rec] if rec else []
        return out

    def append(self, record):
        with open(self.path, "a") as f:
            f.write(dumps(record) + "\n")


def machine(cfg, world=None):
    """--threads, --device and --precision resolved: (device, "fp32" | "bf16", the forward passes' autocast)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    precision = resolve_precision(cfg.precision, device := resolve_device(cfg.device, world))
    return device, precision, autocast(device, precision)


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
    return torch.device("cuda", world.local_rank) if dev.type == "cuda" and world and world.size > 1 else dev


def bf16_matrix_units(device):
    """Whether bf16 matmuls have their own units, where --precision auto picks bf16: CUDA or AMX-BF16 (a CPU
    with avx512_bf16 alone multiplies bf16 slower than fp32, lab/bench/bench_precision.py); and what is missing."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, "CUDA bf16" if ok else "bf16 support on this GPU"
    caps = getattr(torch.cpu, "get_capabilities", lambda: {})()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)() and caps.get("amx_bf16", True)
    return bool(amx), "AMX-BF16" if amx else "AMX-BF16 matrix units (this CPU has " + (
        "avx512_bf16 only, whose bf16 matmul is slower than float32)" if caps.get("avx512_bf16") else "neither)")


def resolve_precision(name, device):                  # name: auto, fp32 or bf16 (the Configs' Literal)
    ok, what = bf16_matrix_units(device)
    if name == "bf16" and not ok:
        raise UserError(f"--precision bf16: this {device.type.upper()} lacks {what}; use --precision fp32")
    return "bf16" if name == "bf16" or (name == "auto" and ok) else "fp32"


def autocast(device, precision):
    """The forward passes' context: bf16 autocast (master weights and AdamW state stay float32), or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def free_memory(device):
    """Bytes this process may still allocate (None: unknown): CUDA's free memory; on a CPU the least of MemAvailable,
    the cgroup's limit less its use and the address-space limit (ulimit -v) less what is mapped."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    def read(path, key=""):                              # a number in a /proc or /sys file ("key: N kB": in bytes)
        with contextlib.suppress(OSError, ValueError, StopIteration):
            text = open(path).read()
            return int(next(l for l in text.splitlines() if l.startswith(key)).split()[1]) * 1024 if key else int(text)
    cap, soft = read("/sys/fs/cgroup/memory.max"), resource.getrlimit(resource.RLIMIT_AS)[0]
    left = [read("/proc/meminfo", "MemAvailable:"), cap and cap - (read("/sys/fs/cgroup/memory.current") or 0),
            None if soft == resource.RLIM_INFINITY else soft - (read("/proc/self/status", "VmSize:") or 0)]
    return min((x for x in left if x is not None), default=None)


def check_memory(where, device, params, batch, tokens, width, depth, heads, vocab=0):
    """Refuse a stage that cannot fit, before anything is allocated. Its need, a floor: 16 bytes a parameter (fp32
    weights, gradients, AdamW's moments) and what backward keeps: 14 x width + heads x tokens floats per token and block,
    the logits (vocab)."""
    need = 16 * params + 4 * batch * tokens * (depth * (14 * width + heads * tokens) + 2 * vocab)
    if (free := free_memory(device)) is not None and need > free:
        raise UserError(f"{where}: training needs at least {need / 2**30:,.3g} GiB (weights, AdamW state, activations "
                        f"of {batch} x {tokens} tokens), {free / 2**30:,.3g} GiB is free here: use a smaller model, "
                        "batch or context")
    return need


STAGE_EVALS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4)   # fractions of each later stage of a schedule evaluated at


def eval_points(budget, evals, first=0.01, integer=False, sched=None, switch_on="flops"):
    """Log-spaced from `first` x budget to the budget: the paper fits its laws over every decade of compute. With a
    FLOPs schedule, also 1/16, 1/8, 1/4, 1/2 and 3/4 of each later stage: compare.py reads a stage from 3 evaluations
    on and credits a run that reaches its target right after a switch no sooner than the stage's first evaluation."""
    points = np.geomspace(first * budget, budget, max(evals, 1)) if evals > 1 else np.array([budget])
    points = np.unique(np.append(points.round(6), budget))
    points = np.unique(np.ceil(points)) if integer else points
    if sched is None or sched.random or switch_on != "flops":
        return points
    starts = [s.flops_start for s in sched.stages if 0 < s.flops_start < budget] + [budget]
    return np.array(sorted({*points, *(a + f * (b - a) for a, b in zip(starts, starts[1:]) for f in STAGE_EVALS)}))


def check_ranges(cfg, positive, rules=()):
    """Each flag in `positive` > 0 (None: left out), each (name, ok) of `rules` ok; else one line naming the first."""
    bad = [k for k in positive if getattr(cfg, k) is not None and not getattr(cfg, k) > 0]
    if bad := bad + [k for k, ok in rules if not ok]:
        raise UserError(f"--{bad[0].replace('_', '-')} {getattr(cfg, bad[0])} is out of range")


def check_flags(cfg, positive, rules=()):
    """A trainer's flags in range (check_ranges: its own, then those both trainers have) -> (budget, unit)."""
    check_ranges(cfg, (*positive, "lr", "clip", "ckpt_minutes", "stop_after_steps"), (*rules,
        ("warmup", cfg.warmup >= 0), ("weight_decay", cfg.weight_decay >= 0), ("rewarm", cfg.rewarm >= 0),
        ("evals", 0 <= cfg.evals <= 10_000), ("ckpt_every", cfg.ckpt_every >= 0),
        ("keep_at", all(0 < c <= (cfg.flops or 0) for c in cfg.keep_at))))
    if ((steps := cfg.steps) is None) == ((flops := cfg.flops) is None):
        raise UserError("give the budget as exactly one of --steps N or --flops F")
    if steps is not None and steps < 1:
        raise UserError(f"--steps {steps}: give a positive number of steps")
    if flops is not None and not (math.isfinite(flops) and flops > 0):
        raise UserError(f"--flops {flops}: give a positive, finite FLOPs budget")
    return (float(steps), "steps") if steps is not None else (float(flops), "flops")


def check_resume(saved, wanted, path, flag="--resume"):   # flag: --resume, or --start-from (a pilot)
    for key, value in wanted.items():
        if key in saved and saved[key] != value:
            raise UserError(f"{flag}: {path} was trained with {key}={saved[key]!r}, this run asks for "
                            f"{value!r}: use the same value or another {'--out-dir' if flag == '--resume' else flag}")


def check_run_folder(out, ckpt, log, resume, script, main=True):
    """Whether a run in `out` resumes from `ckpt`: a checkpoint needs --resume and its log (never dropped silently)."""
    if ckpt.is_symlink() and not ckpt.exists():
        raise UserError(f"{ckpt} is a link to {os.readlink(ckpt)}, which does not exist: restore it, or remove the "
                        "link to start afresh")
    if ckpt.exists() and not resume:
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or another --out-dir")
    if not ckpt.exists() and resume and main:           # killed before its first checkpoint: start afresh
        print(f"{script}: no checkpoint in {out} yet; starting the run afresh", file=sys.stderr)
    if ckpt.exists() and not any(r.get("type") == "header" for r in (log.records() if log.path.exists() else ())):
        raise UserError(f"--resume: {log.path} is missing or holds no header beside {ckpt}: its records would be lost; "
                        "restore the log, or start afresh with another --out-dir")
    return ckpt.exists()


kept_path = lambda out, flops: Path(out) / f"ckpt_at_{flops:.4g}.pt"   # --keep-at's copy of ckpt.pt (a pilot's start)


class Checkpoints:
    """ckpt.pt and the one before. A divergence rolls back past the newest this process wrote, to the one before if that
    came before the trouble (the loss after it did not double, the weights did not grow tenfold), else removes both."""

    def __init__(self, path, main=True):
        self.path, self.main, self.written, self.step = Path(path), main, 0, None
        self.prev = self.path.with_name(f"{self.path.stem}.prev{self.path.suffix}")
        self.loss = self.watch = self.norm = self.saved_norm = None
        self.suspect = [False, False]                     # [the newest, the one before]

    def observe(self, loss):                              # every step's loss: the first after a save judges it
        self.suspect[0] |= self.watch is not None and loss > 2 * self.watch
        self.loss, self.watch = loss, None

    def save(self, obj, step, flops=0.0, keep_at=()):   # --keep-at: also a copy at the first save past each FLOPs
        for c in (c for c in keep_at if self.main and flops >= c and not kept_path(self.path.parent, c).exists()):
            atomic_write(kept_path(self.path.parent, c), lambda tmp: torch.save(obj, tmp))
        if self.main:
            for name in () if self.written else (self.path.name, self.prev.name):   # a kill mid-write left these
                for stale in self.path.parent.glob(f".{name}.*.tmp"):
                    stale.unlink(missing_ok=True)
            if self.path.exists():
                atomic_write(self.prev, lambda tmp: shutil.copyfile(self.path, tmp))
            atomic_write(self.path, lambda tmp: torch.save(obj, tmp))
        grew = None not in (self.norm, self.saved_norm) and self.norm > 10 * self.saved_norm
        self.suspect, self.watch, self.saved_norm = [grew, self.suspect[0]], self.loss, self.norm
        self.written, self.step = self.written + 1, step

    def roll_back(self):
        """After a divergence: what is kept, as words for the error message."""
        if self.written and (not self.prev.exists() or self.suspect[1]):
            what = ("its checkpoints were removed (the loss rose after them: they may hold the diverging weights)"
                    if self.prev.exists() else "its only checkpoint was removed (it may hold the diverging weights)")
            for path in (self.path, self.prev) if self.main else ():
                path.unlink(missing_ok=True)
            return what + "; the same command starts afresh"
        if self.written:                                  # back to the one before (its step, for the message)
            self.step = torch.load(self.prev, map_location="cpu", weights_only=False)["state"]["step"]
            if self.main:
                os.replace(self.prev, self.path)
        return (f"the last good checkpoint {self.path} (step {self.step}) is kept" if self.step is not None
                else "no checkpoint was written")


class DivergedError(UserError):
    """The loss, gradient, weights or an evaluation became NaN or inf: check_finite rolls back and stops."""


def check_finite(step, ckpts, **values):
    """Every value finite (a step's loss is also shown to the checkpoints), else roll back and stop in one line."""
    if all(math.isfinite(v) for v in values.values()):
        return ckpts.observe(values["loss"]) if "loss" in values else None
    what = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in values.items())
    raise DivergedError(f"non-finite {what} at step {step}: training diverged; {ckpts.roll_back()}; "
                        "lower --lr or raise --warmup")


def check_finite_weights(model, step, ckpts):        # before a save: finite weights, their norm noted
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        check_finite(step, ckpts, weights=math.nan)
    ckpts.norm = float(torch.stack([p.detach().double().square().sum() for p in model.parameters()]).sum().sqrt())


def learning_rate(lr, step, warmup, scaling="none", ratio=1.0, rewarm=0, rewarm_from=None):
    """--lr warmed up linearly then constant (App. A), scaled by the batch (or tokens-per-step) `ratio` r: x 1, r or
    sqrt(r) (Sec. 6.2), re-warmed over `rewarm` steps from the growth at `rewarm_from`."""
    warm = lambda s, w: min(1.0, (s + 1) / max(w, 1))
    lr = lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling] * warm(step, warmup)
    return lr * warm(step - rewarm_from, rewarm) if rewarm and rewarm_from is not None else lr


@dataclass(frozen=True)
class World:
    """torchrun's data parallelism: each rank takes its shard of the GLOBAL batch, the same on any world size."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls):
        try:
            rank, size, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
        except ValueError:
            raise UserError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None
        if not 0 <= rank < size:
            raise UserError(f"RANK {rank} is not in [0, WORLD_SIZE={size}); launch with torchrun")
        return cls(rank, size, local)

    main = property(lambda self: self.rank == 0)                 # rank 0 logs, checkpoints and evaluates
    active = property(lambda self: self.size > 1 and tdist.is_initialized())

    def shard(self, batch_size, where="--batch-size"):
        """(lo, hi): this rank's rows of a global batch."""
        if batch_size % self.size:
            raise UserError(f"{where}: batch size {batch_size} does not divide across {self.size} processes "
                            f"(torchrun --nproc_per_node); use a multiple of {self.size}")
        return self.rank * batch_size // self.size, (self.rank + 1) * batch_size // self.size

    def check_resume(self, saved_size, path):
        if saved_size != self.size:
            raise UserError(f"--resume: {path} was trained on {saved_size} process(es), this launch has "
                            f"{self.size}; resume with torchrun --nproc_per_node {saved_size}"
                            + (" (or without torchrun)" if saved_size == 1 else ""))

    def init(self, device, timeout_min=60):
        """Join the process group (after every check that may fail): NCCL for CUDA, gloo for CPU."""
        cuda = device.type == "cuda"
        if self.size > 1 and not tdist.is_initialized():
            if "MASTER_ADDR" not in os.environ or not (p := os.environ.get("MASTER_PORT", "")).isdigit() or int(p) > 65535:
                raise UserError(f"WORLD_SIZE={self.size} without torchrun (no MASTER_ADDR / MASTER_PORT, or no port "
                                f"number): launch with torchrun --nproc_per_node {self.size}, or unset WORLD_SIZE")
            if cuda:
                torch.cuda.set_device(device)
            tdist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_min),
                                     rank=self.rank, world_size=self.size, device_id=device if cuda else None)

    def wrap(self, model, device):
        """DDP around `model` (which stays the object to save, grow and evaluate): wrap again after a growth."""
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids) if self.active else model

    def mean(self, t):
        """Tensor `t` averaged over the processes (on the backend's device: CUDA for NCCL, CPU for gloo)."""
        if self.active:
            tdist.all_reduce(t := t.clone())
        return t / self.size if self.active else t

    def broadcast(self, obj):
        box = [obj]
        if self.active:
            tdist.broadcast_object_list(box, src=0)
        return box[0]


def moved_to_lab(script):
    where = f"moved to the lab: python lab/planner.py {script} <the other flags> [--plan-steps N]"
    return {"--plan": where, "--plan-steps": where}


def parse(config_cls, script, args=None, moved=None):
    """tyro's parse; its boxed error as a one-line UserError. `moved`: {old flag: what became of it}."""
    import tyro
    if old := next((f for f in moved or {} if f in (sys.argv[1:] if args is None else list(args))), None):
        raise UserError(f"{old} {moved[old]}; see {script} --help")
    try:
        with contextlib.redirect_stderr(box := io.StringIO()):
            return tyro.cli(config_cls, args=args, prog=script)
    except SystemExit as e:
        if not e.code:                                   # --help and the like: as tyro printed it
            sys.stderr.write(box.getvalue())
            raise
    lines = [re.sub(r"^[─-]+$", "", ln.strip("│╭╰╮╯| ").strip()) for ln in box.getvalue().splitlines()]
    title, *rest = lines or ["bad flags"]                             # a rule (─) ends a paragraph, as a blank
    hint = re.search(r"^Perhaps.*\n+(\S+)", "\n".join(lines), re.M)       # tyro's "Perhaps you meant: --flag"
    body = re.sub(r"^(Perhaps|For full|Argument|Got).*", "", "\n".join(rest), flags=re.M)
    body, title = body.strip("\n").split("\n\n")[0].replace("\n", " "), title.strip("─- ")   # its first paragraph
    msg = f"{title}: {body}" if body and title.lower() not in body.lower() else (body or title)
    raise UserError(f"{msg}{f' (did you mean {hint[1]}?)' if hint else ''}; see {script} --help")


def run_cli(main, config_cls, script, args=None, errors=(), moved=None, interrupted="continue with --resume"):
    """Parse the flags, run main(cfg) -> exit code: a UserError (or `errors`) one line and 2, Ctrl-C 130."""
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")   # no torchrun, a bad RANK: all speak
    main_rank = "MASTER_ADDR" not in os.environ or not (rank.isdigit() and world.isdigit() and 0 < int(rank) < int(world))
    try:
        try:
            main(parse(config_cls, script, args, moved))
            if tdist.is_available() and tdist.is_initialized():
                tdist.barrier()       # every rank done (no message in flight) before the group goes: gloo aborts else
        except OSError as e:                                # the file system says no (naming no file: ours, a bug)
            raise e if e.filename is None else UserError(f"{e.filename}: {e.strerror}") from None
        return 0
    except (UserError, *errors, KeyboardInterrupt) as e:
        stop = isinstance(e, KeyboardInterrupt)
        if main_rank:
            print(f"{script}: {f'interrupted; {interrupted}' if stop else f'error: {e}'}", file=sys.stderr)
        return 130 if stop else 2
    finally:                                                # any other exception: a bug, with its traceback
        if tdist.is_available() and tdist.is_initialized():
            tdist.destroy_process_group()
