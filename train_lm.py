"""Train a Llama-style language model at a fixed or scheduled context length (paper Sec. 5, App. B.5).

The paper trains Llama models at several context lengths, fits one scaling law per context (fit_laws.py)
and switches from short to long contexts where the laws cross (schedule.py), saving up to 40% FLOPs.

    python train_lm.py --context 64 --steps 1000 --out-dir runs/ctx64               # one static run
    python train_lm.py --schedule schedule.json --flops 2e13 --out-dir runs/sched   # the adaptive run
    torchrun --standalone --nproc_per_node 2 train_lm.py ...                        # either, data parallel

Model (lm.py): pre-norm decoder blocks with RoPE, SwiGLU, RMSNorm and tied embeddings; `--model
L{width}-{depth}`. Compute: a token costs 6 * lm.macs_per_token(...) FLOPs (blocks only, as for the ViT).

Optimiser (Table 3): AdamW (0.9, 0.95), weight decay 0.1 on the blocks' matrices only (not on RMSNorm
gains, which decay would only shrink, nor on the tied embedding, whose rare tokens' rows it would pull
to zero), linear warm-up, then a constant learning rate; gradient-norm clip 1.0; no dropout.

Tokens per step: batch x context = `--tokens-per-step` at every context (a longer context, a smaller
batch): gradient noise and learning rate stay comparable, and a step's compute grows only through the
attention term. A schedule stage's "batch_size" B (Sec. 6.2) overrides it: a step then holds (and FLOPs
count) B*T tokens, and the LR follows by --lr-scaling: x1, x r or x sqrt(r), r = B*T / --tokens-per-step. A
stage's "tokens_per_step" N sets B = N // T instead (a batch tuned per context, App. B.5).

Data and validation loss (lm_data.py): by default the Python standard library's .py files as bytes
(vocabulary 256); `--data` takes a text file or folder, or a uint16 token file *.bin with --vocab-size. A
step's windows start at random positions seeded by (seed, step): a resumed run sees the same batches.
`val_loss` is at the current context (the paper's metric), `val_loss_max_context` at the run's largest,
both on the same first --val-tokens validation tokens, at log-spaced points of the budget (--evals from
--eval-from). The bar shows tokens/s and MFU against the GPU's bf16 peak, or a measured CPU matmul.

Precision (runtime.py): `--precision auto` trains in bf16 autocast on CUDA and on CPUs with AMX-BF16,
float32 elsewhere; master weights and AdamW state stay float32. A checkpoint resumes under either.

Data parallel (dist.py): under torchrun each process takes its rows of the global batch; rank 0 alone
evaluates, logs, checkpoints and prints; a resume keeps the number of processes.

Depth (the review discussion's depth growth, on code): `--depth D` trains D blocks and puts "depth" into the
logged shape, so fit_laws.py fits one law per depth; a schedule stage's "depth" grows the model (expand.py:
new blocks, each after the block it copies, start with zero output layers, so the function is unchanged
exactly; AdamW moments carried over; `--rewarm` re-warms the LR). A checkpoint holds the grown model.

Schedules: stage configs are {"context": T}, optionally with "batch_size": B and "depth": D (a stage that
names no context keeps the previous one, the first --context; depth likewise, the first --depth/--model's). `--switch-on flops` takes the
stage in force at the cumulative FLOPs (every step); `--switch-on error` moves on once a measured val_loss
at the current context is below the stage's error_end. Stages never go backwards. A schedule of kind
"random" (FlexiViT's baseline) draws a stage per step and evaluates at the largest context.

Checkpoints: ckpt.pt at every evaluation and every --ckpt-minutes (atomic). `--resume` continues exactly,
or starts the run afresh when no checkpoint was written yet, and refuses another model, data, context,
tokens per step, schedule or process count. A NaN/inf loss stops the run and keeps the last good
checkpoint; it and bad input exit with code 2 and one line.
"""
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm


import lm
import runtime
from lm import LM  # noqa: F401  (re-exported: the model's home is lm.py)
from data import evaluate, get_batch, load_corpus
from runtime import UserError

PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40": 181e12, "4090": 165e12,
                   "L4": 121e12, "A10": 125e12, "V100": 125e12}  # dense tensor-core peaks


DivergedError = runtime.DivergedError   # NaN/inf loss, gradient, weights or evaluation: one line, exit code 2


def model_args(name, vocab_size, max_context):
    """lm.model_args, with a bad --model as the one-line user error."""
    try:
        return lm.model_args(name, vocab_size, max_context)
    except ValueError as e:
        raise UserError(str(e)) from None


@dataclass
class Config:
    out_dir: str = "runs/lm"
    """Run folder: log.jsonl and ckpt.pt go here."""
    data: str = ""
    """'' = the Python standard library's .py files as bytes; or a text file or folder; or a uint16 *.bin."""
    glob: str = ""
    """Files read from a --data folder ('' = '*.py' for the default corpus, every file otherwise)."""
    vocab_size: int = 0
    """Vocabulary size of a *.bin token file (byte corpora always use 256)."""
    val_fraction: float = 0.05
    """Share of the files (or, for a single file, of its tail) held out for validation."""
    cache_dir: str = "runs/.cache"
    """Where the concatenated corpus of a folder is cached."""
    model: str = "L64-4"
    """Model size L<width>-<depth>, e.g. L64-4, L128-4, L128-6, L192-6, L256-6, L384-6, L512-8, L768-12."""
    context: int = 64
    """Context length of a static run (with --schedule: of the stages that name none)."""
    depth: int = 0
    """Blocks (0: --model's depth); given, it is part of the logged shape (one law per depth)."""
    rewarm: int = 0
    """After a depth growth, re-warm the LR linearly over this many steps (0: none)."""
    schedule: str = ""
    """schedule.json (schedule.py's output) whose stages' configs name a context T and/or a depth D (blocks, never
    fewer), optionally a batch_size B or tokens_per_step N."""
    switch_on: Literal["flops", "error"] = "flops"
    """Follow the schedule by cumulative FLOPs, or by the measured val_loss at the current context."""
    tokens_per_step: int = 4096
    """Tokens per optimiser step (batch = tokens_per_step // context), the same at every context; over all
    processes under torchrun."""
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    """How the LR follows a schedule stage's batch_size B at context T: --lr times 1, r or sqrt(r), with
    r = B*T / --tokens-per-step."""
    steps: int | None = None
    """Training budget in steps (give exactly one of --steps, --flops)."""
    flops: float | None = None
    """Training budget in cumulative FLOPs (6 x block MACs x tokens)."""
    lr: float = 2e-3
    """Peak learning rate (constant after warm-up)."""
    warmup: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay on the blocks' matrices (not on norms or the tied embedding)."""
    clip: float = 1.0
    """Clip the gradients' global norm."""
    val_tokens: int = 32768
    """Validation tokens per evaluation (use a multiple of every context)."""
    evals: int = 20
    """Number of evaluations, log-spaced over the budget."""
    eval_from: float = 0.01
    """First evaluation at this fraction of the budget."""
    seed: int = 0
    """Seed of the initialisation and of the data order."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu' or 'cuda[:i]'."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast where bf16 matrix units exist (CUDA, AMX CPUs), else fp32 (runtime.py)."""
    compile: bool = False
    """torch.compile the model (one graph per context length)."""
    threads: int = 0
    """CPU threads (0 = torch's default)."""
    resume: bool = False
    """Continue the run in --out-dir from its checkpoint (a new run if none was written yet)."""
    progress: bool = True
    """tqdm progress bar on a terminal (--no-progress: none)."""
    ckpt_every: int = 0
    """Also checkpoint every N steps (0: only at evaluations and every --ckpt-minutes)."""
    ckpt_minutes: float = 10.0
    """Also checkpoint when this many minutes passed since the last checkpoint (evaluations always do)."""
    stop_after_steps: int | None = None
    """(debug) checkpoint and quit after this step (no final evaluation), e.g. to test --resume."""


@dataclass
class State:
    """What a checkpoint carries besides the weights: the run's position and running sums."""
    step: int = 0           # optimiser steps = data position
    tokens: int = 0
    flops: float = 0.0      # cumulative training FLOPs (Sec. 3)
    wall: float = 0.0       # training seconds, evaluation excluded
    stage: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    world_size: int = 1
    rewarm_from: int | None = None   # step of the last growth (--rewarm)


@dataclass
class Session:
    """This process's own counters (not checkpointed): throughput and the last checkpoint."""
    tokens: int = 0
    flops: float = 0.0
    wall: float = 0.0
    saved: float = field(default_factory=time.time)


# ----------------------------------------------------------------------------- set-up

STAGE_KEYS = ("context", "batch_size", "depth", "tokens_per_step")


def load_stages(cfg):
    """-> the stages' logged configs, their full shapes {context, depth[, batch_size]}, and the Schedule (None
    for a static run). A stage inherits the context and depth it does not name; depth never shrinks."""
    depth = cfg.depth or model_args(cfg.model, 256, 1)["depth"]
    if not cfg.schedule:
        return [{"context": cfg.context, **({"depth": cfg.depth} if cfg.depth else {})}], \
            [{"context": cfg.context, "depth": depth}], None
    from schedule import Schedule, ScheduleError
    try:
        schedule = Schedule.load(cfg.schedule)
    except (ScheduleError, OSError) as e:
        raise UserError(str(e)) from None
    shapes, shape = [], {"context": cfg.context, "depth": depth}
    for s in schedule.stages:
        if not {"context", "depth"} & set(s.config) or set(s.config) - set(STAGE_KEYS) \
                or not all(type(v) is int and v > 0 for v in s.config.values()):
            raise UserError(f"{cfg.schedule}: stage {s.index} config {s.config} is not a context length or depth "
                            f'(train_lm.py expects {{"context": T}} and/or {{"depth": D}}, optionally "batch_size" or '
                            '"tokens_per_step")')
        if s.index and s.config.get("depth", shape["depth"]) < shape["depth"]:
            raise UserError(f"{cfg.schedule}: stage {s.index} depth {s.config['depth']} would remove blocks "
                            f"(depth {shape['depth']} before it); a model only grows, by whole blocks")
        shapes.append(shape := {**{k: shape[k] for k in ("context", "depth")}, **s.config})
    if schedule.random and len({s["depth"] for s in shapes}) > 1:
        raise UserError(f"random schedule {cfg.schedule}: its stages may not differ in depth (a model cannot shrink)")
    return [dict(s.config) for s in schedule.stages], shapes, schedule


def check_flags(cfg):
    """Numeric flags in range, before any work."""
    runtime.check_budget(cfg.steps, cfg.flops)
    model_args(cfg.model, 256, 1)
    for name, ok in (("tokens_per_step", cfg.tokens_per_step > 0), ("context", cfg.context > 0),
                     ("lr", cfg.lr > 0), ("warmup", cfg.warmup >= 0), ("clip", cfg.clip > 0),
                     ("weight_decay", cfg.weight_decay >= 0), ("val_tokens", cfg.val_tokens > 0),
                     ("val_fraction", 0 < cfg.val_fraction < 1), ("eval_from", 0 < cfg.eval_from <= 1),
                     ("threads", cfg.threads >= 0), ("ckpt_minutes", cfg.ckpt_minutes > 0),
                     ("ckpt_every", cfg.ckpt_every >= 0), ("evals", 0 <= cfg.evals <= 10_000),
                     ("vocab_size", cfg.vocab_size >= 0), ("depth", cfg.depth >= 0),
                     ("rewarm", cfg.rewarm >= 0),
                     ("stop_after_steps", cfg.stop_after_steps is None or cfg.stop_after_steps > 0)):
        if not ok:
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)} is out of range")


def check_sizes(cfg, stages, train, val, world):   # stages: the full shapes
    """Every size that could fail, before any work: batches (and their shards over the processes), splits."""
    for i, s in enumerate(stages):
        tps, where = s.get("tokens_per_step", cfg.tokens_per_step), (f"{cfg.schedule}: stage {i} tokens_per_step"
                                                                     if "tokens_per_step" in s else "--tokens-per-step")
        if "batch_size" not in s and tps % s["context"]:
            raise UserError(f"{where} {tps} is not a multiple of context {s['context']}")
        world.shard(batch_of(cfg, s), f"{cfg.schedule}: stage {i} batch_size"
                    if "batch_size" in s else f"{where} {tps} at context {s['context']}")
    T = max(s["context"] for s in stages)
    if len(val) < T + 1:
        raise UserError(f"context {T} is longer than the validation split allows ({len(val)} tokens): "
                        "use a shorter context, a larger --val-fraction or a larger corpus")
    if cfg.val_tokens < T:
        raise UserError(f"--val-tokens {cfg.val_tokens} is shorter than context {T}: raise --val-tokens")
    if len(val) < cfg.val_tokens + 1:
        raise UserError(f"the validation split holds {len(val)} tokens, too few for --val-tokens {cfg.val_tokens}: "
                        "lower --val-tokens or raise --val-fraction")
    if len(train) < T + 1:
        raise UserError(f"the training split holds {len(train)} tokens, too few for context {T}")


def batch_of(cfg, shape):
    """Sequences a step (global): the stage's batch_size, or its tokens_per_step (else --tokens-per-step) // context
    (App. B.5: the paper tunes the batch per context)."""
    return shape.get("batch_size", shape.get("tokens_per_step", cfg.tokens_per_step) // shape["context"])


def make_optimizer(model, cfg, device):
    """AdamW (Table 3): decay on the blocks' matrices only; fused kernels on CUDA and CPU."""
    decay = {n: p.dim() == 2 and not n.startswith("embed") for n, p in model.named_parameters()}
    groups = [{"params": [p for n, p in model.named_parameters() if decay[n]]},
              {"params": [p for n, p in model.named_parameters() if not decay[n]], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay, fused=True)


def peak_flops(device):
    """FLOP/s that MFU is measured against: the GPU's bf16 peak if known, else a measured large matmul."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    if any(key in name for key in PEAK_BF16_FLOPS):
        return next(peak for key, peak in PEAK_BF16_FLOPS.items() if key in name)
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, seconds = torch.randn(n, n, device=device, dtype=dtype), []
    for _ in range(4):
        t = time.perf_counter()
        (a @ a)[0, 0].item()                                  # .item() waits for the GPU
        seconds.append(time.perf_counter() - t)
    return 2 * n**3 / min(seconds)


def learning_rate(cfg, step, tokens, rewarm_from=None):
    """Linear warm-up to --lr, scaled (--lr-scaling) by r = the step's tokens / --tokens-per-step; re-warmed
    over --rewarm steps after a growth."""
    lr = cfg.lr * runtime.lr_scale(cfg.lr_scaling, tokens / cfg.tokens_per_step) * runtime.warmup_factor(
        step, cfg.warmup)
    if cfg.rewarm and rewarm_from is not None:
        lr *= min(1.0, (step - rewarm_from + 1) / cfg.rewarm)
    return lr


def grow(run, depth):
    """Grow the model to `depth` blocks (expand.py): each new block follows the block it copies, its output
    layers zero (exactly the same function); the AdamW moments are carried over, and the optimiser rebuilt
    in the model's parameter order, so a checkpoint written after it resumes into a fresh model of that depth."""
    import expand                                    # torch only; needed once a run grows
    old = run.opt
    expand.expand_optimizer(old, expand.expand_depth(run.model, depth, preserve=True, where="interleave"))
    run.opt = make_optimizer(run.model, run.cfg, run.device)
    for p in run.model.parameters():
        if p in old.state:
            run.opt.state[p] = old.state[p]
    run.state.rewarm_from = run.state.step


class Run:
    """One training run: everything set up, restored or initialised, ready for the loop."""

    def __init__(self, cfg):
        self.cfg, self.world = cfg, runtime.World.from_env()    # 1 process, or torchrun's rank / size
        check_flags(cfg)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = runtime.resolve_device(cfg.device, self.world)
        self.precision = runtime.resolve_precision(cfg.precision, self.device)
        self.amp = runtime.autocast(self.device, self.precision)
        self.stages, self.shapes, self.schedule = load_stages(cfg)
        self.train, self.val, vocab, data_name = load_corpus(cfg.data, cfg.glob, cfg.vocab_size, cfg.val_fraction,
                                                             cfg.cache_dir)
        check_sizes(cfg, self.shapes, self.train, self.val, self.world)
        self.max_context = max(s["context"] for s in self.shapes)
        self.margs = {**model_args(cfg.model, vocab, self.max_context), "depth": self.shapes[0]["depth"]}
        torch.manual_seed(cfg.seed)
        self.model = LM(**self.margs).to(self.device)
        self.opt = make_optimizer(self.model, cfg, self.device)
        self.out = runtime.check_out_dir(cfg.out_dir)
        self.ckpts, self.log = runtime.Checkpoints(self.out / "ckpt.pt", self.world.main), runtime.RunLog(
            self.out / "log.jsonl")
        sched = self.schedule
        self.identity = json.loads(json.dumps({  # what --resume must find unchanged (JSON: tuples become lists)
            "model": self.margs, "data": data_name, "stages": self.stages, "shapes": self.shapes,
            "tokens_per_step": cfg.tokens_per_step,
            "seed": cfg.seed, "switch_on": cfg.switch_on if sched else None, "kind": sched and sched.kind,
            "boundaries": [(s.flops_start, s.error_end) for s in sched.stages] if sched else None,
            "lr_scaling": cfg.lr_scaling}))
        self.state, self.session = State(world_size=self.world.size), Session()
        self.budget, self.unit = runtime.check_budget(cfg.steps, cfg.flops)

    def progress(self):
        return self.state.flops if self.unit == "flops" else self.state.step

    def restore(self):
        """Continue from ckpt.pt (--resume), or start afresh; a folder with a checkpoint needs --resume."""
        cfg, path = self.cfg, self.ckpts.path
        if not path.exists():
            if cfg.resume and self.world.main:
                print(f"train_lm.py: no checkpoint in {self.out} yet; starting the run afresh", file=sys.stderr)
            return False
        if not cfg.resume:
            raise UserError(f"{self.out} already holds a run: pass --resume to continue it, or pick another --out-dir")
        ckpt = load_checkpoint(path, self.device)
        runtime.check_resume({"lr_scaling": "none", **ckpt["identity"]}, self.identity, path)
        self.world.check_resume(ckpt["state"].get("world_size", 1), path)
        if ckpt.get("grown_args", self.margs) != self.margs:      # grown before the checkpoint: rebuild at its depth
            self.model = LM(**ckpt["grown_args"]).to(self.device)
            self.opt = make_optimizer(self.model, cfg, self.device)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["cpu"].cpu())
        if ckpt["rng"]["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), self.device)
        self.state = State(**{"world_size": 1, **ckpt["state"]})
        self.ckpts.step = self.state.step
        self.was_precision = ckpt.get("precision", "fp32")
        return True

    def save(self):
        """ckpt.pt, atomically, by rank 0 (the others hold the same state)."""
        runtime.check_finite_weights(self.model, self.state.step, self.ckpts)   # never a poisoned checkpoint
        self.session.saved = time.time()
        rng = {"cpu": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        ckpt = {"version": 1, "kind": "train_lm", "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "rng": rng, "state": asdict(self.state),
                "identity": self.identity, "model_args": self.margs, "config": asdict(self.cfg),
                "grown_args": self.model.model_args(),
                "precision": self.precision} if self.world.main else None
        self.ckpts.save(ckpt, self.state.step)


def load_checkpoint(path, device):
    """A train_lm.py checkpoint, or a one-line error naming the file."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:   # truncated, foreign or corrupt: torch raises many kinds
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__}); delete it to start afresh") from None
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "identity", "state", "rng"} <= set(ckpt):
        raise UserError(f"{path} is not a train_lm.py checkpoint; use another --out-dir")
    return ckpt


# ----------------------------------------------------------------------------- the loop's parts

def eval_points(run):
    """Log-spaced from --eval-from to the budget; a FLOPs schedule adds 1/4, 1/2 and 3/4 of each later stage,
    since compare.py reads a stage from 3 evaluations on (the ViT trainer does the same)."""
    cfg, points = run.cfg, runtime.eval_points(run.budget, run.cfg.evals, run.cfg.eval_from)
    if run.unit != "flops":
        return points
    return np.array(sorted({*points, *runtime.stage_eval_points(run.schedule, run.budget, cfg.switch_on)}))


def stage_now(run):
    """The stage to train in at this step: random (FlexiViT-style baseline), or by cumulative FLOPs (Eq. 2's
    switch points, computed by schedule.py); never an earlier stage."""
    sched, state = run.schedule, run.state
    if sched and sched.random:
        return int(np.random.default_rng([run.cfg.seed, state.step, 1]).integers(len(run.stages)))
    if sched and run.cfg.switch_on == "flops":
        return max(state.stage, sched.stage_at(flops=state.flops).index)
    return state.stage


def train_step(run, fwd, context, batch):
    """One optimiser step on the global batch; returns (loss, tokens). Diverged: one line, checkpoint kept."""
    cfg, state = run.cfg, run.state
    x, y = (t.to(run.device) for t in get_batch(run.train, state.step, batch, context, cfg.seed,
                                                 rows=run.world.shard(batch)))   # this process's rows
    lr = learning_rate(cfg, state.step, batch * context, state.rewarm_from)
    for group in run.opt.param_groups:
        group["lr"] = lr
    with run.amp:
        logits = fwd(x)
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    loss.backward()                                          # DDP: gradients averaged over the processes
    norm = nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip)
    loss_v, norm_v = run.world.mean(torch.stack([loss.detach(), norm.float()])).tolist()
    runtime.check_finite(state.step, run.ckpts, loss=loss_v, gradient_norm=norm_v)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return loss_v, lr


def evaluate_and_log(run, plain, context, lr):
    """val_loss at the current context and at the run's largest (rank 0), one log record; returns the record."""
    cfg, state, sched = run.cfg, run.state, run.schedule
    ctx = run.max_context if sched and sched.random else context     # random: no current context
    run.model.eval()
    loss_at = {c: evaluate(plain, run.val, c, cfg.val_tokens, cfg.tokens_per_step, run.device, run.amp)
               for c in {ctx, run.max_context}}
    run.model.train()
    shape = {"context": ctx} if sched and sched.random else dict(run.stages[state.stage])
    record = {"type": "eval", "step": state.step, "tokens": state.tokens, "flops": state.flops, "config": shape,
              "train_loss": state.loss_sum / state.loss_n, "lr": lr, "val_loss": loss_at[ctx],
              "val_loss_max_context": loss_at[run.max_context], "wall": state.wall}
    record = record if not sched else {**record, "stage": state.stage}
    runtime.check_finite(state.step, run.ckpts, val_loss=loss_at[ctx], val_loss_max_context=loss_at[run.max_context])
    run.log.append(record)
    return record


def header(run):
    return {"version": 1, "type": "header", "run": run.out.name, "config": asdict(run.cfg),
            "metrics": ["val_loss", "val_loss_max_context"], "model_args": run.margs, "precision": run.precision,
            "params": sum(p.numel() for p in run.model.parameters()), "world_size": run.world.size}


# ----------------------------------------------------------------------------- main

def forwards(run):
    """(plain, fwd): the model rank 0 evaluates with, and the one that trains (DDP-wrapped under torchrun; both
    compiled with --compile); built again after a growth, whose parameters are new objects."""
    plain = torch.compile(run.model) if run.cfg.compile else run.model
    if not run.world.active:
        return plain, plain
    ddp = run.world.wrap(run.model, run.device)                              # DDP: gradients averaged
    return plain, torch.compile(ddp) if run.cfg.compile else ddp


def start_log(run, resuming):
    """The output folder and the log's header; a resume continues the log at its checkpoint's step and records a
    change of precision."""
    run.out.mkdir(parents=True, exist_ok=True)
    run.log.start(header(run), run.state.step if resuming else None)
    if resuming and run.was_precision != run.precision:
        run.log.append({"type": "note", "step": run.state.step, "precision": run.precision,
                        "was": run.was_precision})


def main(cfg: Config):
    # Set up: flags, device, precision, data, model and optimiser; every check that may fail comes first.
    run = Run(cfg)
    resuming = run.restore()
    world, state, session = run.world, run.state, run.session
    world.init(run.device)
    plain, fwd = forwards(run)
    if world.main:
        start_log(run, resuming)
    points = eval_points(run)
    next_eval = int(np.searchsorted(points, run.progress(), side="right"))   # points passed are done
    peak = peak_flops(run.device) if world.main else 1.0
    bar = tqdm(total=run.budget, initial=run.progress(), unit="FLOP" if run.unit == "flops" else "step",
               unit_scale=run.unit == "flops", mininterval=1.0, dynamic_ncols=True,
               disable=None if cfg.progress and world.main else True)
    while run.progress() < run.budget:
        # Which context now (the schedule's stage), then one optimiser step on batch x context tokens.
        state.stage = stage_now(run)
        shape = run.shapes[state.stage]
        if shape["depth"] > len(run.model.blocks):                           # a deeper stage: grow, exactly
            grow(run, shape["depth"])
            plain, fwd = forwards(run)
        context = shape["context"]
        batch = batch_of(cfg, shape)                                         # global
        t0 = time.perf_counter()
        loss, lr = train_step(run, fwd, context, batch)
        dt, tokens = time.perf_counter() - t0, batch * context
        step_flops = 6 * run.model.macs_per_token(context) * tokens          # Sec. 3: 6 x block MACs a token
        state.step, state.tokens, state.flops = state.step + 1, state.tokens + tokens, state.flops + step_flops
        state.wall, state.loss_sum, state.loss_n = state.wall + dt, state.loss_sum + loss, state.loss_n + 1
        session.tokens, session.flops, session.wall = (session.tokens + tokens, session.flops + step_flops,
                                                       session.wall + dt)
        bar.update(run.progress() - bar.n)
        bar.set_postfix(ctx=context, loss=f"{loss:.3f}", tok_s=f"{session.tokens / session.wall:.0f}",
                        mfu=f"{session.flops / session.wall / peak:.1%}", refresh=False)

        # Evaluate at the log-spaced points (rank 0; the others wait in the broadcast), then checkpoint.
        if next_eval < len(points) and run.progress() >= points[next_eval]:
            next_eval = int(np.searchsorted(points, run.progress(), side="right"))
            if world.main:
                rec = evaluate_and_log(run, plain, context, lr)
                bar.write(f"step {state.step}  flops {state.flops:.3g}  ctx {context}  depth {len(run.model.blocks)}  train "
                          f"{rec['train_loss']:.4f}  val {rec['val_loss']:.4f}  val@{run.max_context} "
                          f"{rec['val_loss_max_context']:.4f}")
                if run.schedule and cfg.switch_on == "error" and not run.schedule.random:   # Eq. 2 by error
                    state.stage = max(state.stage, run.schedule.stage_at(error=rec["val_loss"]).index)
            state.loss_sum, state.loss_n, state.stage = 0.0, 0, world.broadcast(state.stage)   # rank 0's switch
            run.save()
        stop = cfg.stop_after_steps is not None and state.step >= cfg.stop_after_steps
        if stop or (cfg.ckpt_every and state.step % cfg.ckpt_every == 0) or \
                time.time() - session.saved > 60 * cfg.ckpt_minutes:
            run.save()
        if stop:
            break
    bar.close()


def cli(args=None):
    """Parse the flags and train; bad input and divergence: one line on stderr (rank 0's) and exit code 2."""
    return runtime.run_cli(main, Config, "train_lm.py", args, moved={"--grad-clip": "is now called --clip",
                                                                          **runtime.moved_to_lab("train_lm.py")})


if __name__ == "__main__":
    sys.exit(cli())
