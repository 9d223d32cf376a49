"""Train a Llama-style language model at a fixed or scheduled context length (paper Sec. 5, App. B.5).

One scaling law per context length (fit_laws.py); schedule.py switches from short to long contexts where the laws
cross (Eq. 2), saving up to 40% of the FLOPs (a "random" schedule, FlexiViT's baseline, draws a stage per step).
Model: lm.py (RoPE, SwiGLU, RMSNorm, tied embeddings). A step holds --tokens-per-step tokens at every context; a
stage may set its "batch_size" (Sec. 6.2), "tokens_per_step" (App. B.5) or "depth" (expand.py: exact, AdamW kept).

    python train_lm.py --context 64 --steps 1000 --out-dir runs/ctx64               # one static run
    python train_lm.py --schedule schedule.json --flops 2e13 --out-dir runs/sched   # the adaptive run
    python train_lm.py <the same flags> --resume                                    # continue it, bit-identically
    torchrun --standalone --nproc_per_node 2 train_lm.py ...                        # any of them, data parallel

--out-dir/log.jsonl: a header, then per log-spaced evaluation val_loss (at the current context) and
val_loss_max_context (the run's largest); ckpt.pt, atomic. Bad input and a diverged run: one line, exit code 2.
"""
import json, sys, time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import lm
import runtime
from data import evaluate, get_batch, load_corpus
from lm import LM
from runtime import UserError  # bad input: one line, exit code 2

STAGE_KEYS = ("context", "batch_size", "depth", "tokens_per_step")   # what a schedule stage's config may name
FORK_KEYS = ("model", "data", "tokens_per_step", "seed")   # what a pilot (--start-from) shares with its checkpoint


@dataclass
class Config:
    out_dir: str = "runs/lm"  # Run folder: log.jsonl and ckpt.pt go here.
    data: str = ""  # '' = the Python standard library's .py files as bytes; or a text file, folder or uint16 *.bin.
    glob: str = ""  # Files read from a --data folder ('' = '*.py' for the default corpus, every file otherwise).
    vocab_size: int = 0  # Vocabulary size of a *.bin token file (byte corpora always use 256).
    val_fraction: float = 0.05  # Share of the files (or, for a single file, of its tail) held out for validation.
    cache_dir: str = "runs/.cache"  # Where the concatenated corpus of a folder is cached.
    model: str = "L64-4"  # Model size L<width>-<depth>, e.g. L64-4, L128-6, L256-6, L512-8, L768-12.
    context: int = 64  # Context length of a static run (with --schedule: of the stages that name none).
    depth: int = 0  # Blocks (0: --model's depth); given, it is part of the logged shape (one law per depth).
    rewarm: int = 0  # After a depth growth, re-warm the LR linearly over this many steps (0: none).
    schedule: str = ""  # schedule.json: stages name a context T and/or depth D, maybe batch_size or tokens_per_step.
    switch_on: Literal["flops", "error"] = "flops"  # Follow the schedule by cumulative FLOPs, or by measured val_loss.
    tokens_per_step: int = 4096  # Tokens per step, at every context (batch = this // context); over all processes.
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"  # LR x 1, r or sqrt(r): r = stage's B*T / --tokens-per-step.
    steps: int | None = None  # Training budget in steps (give exactly one of --steps, --flops).
    flops: float | None = None  # Training budget in cumulative FLOPs (6 x block MACs x tokens).
    lr: float = 2e-3  # Peak learning rate (constant after warm-up).
    warmup: int = 100  # Linear warm-up steps.
    weight_decay: float = 0.1  # AdamW weight decay on the blocks' matrices (not on norms or the tied embedding).
    clip: float = 1.0  # Clip the gradients' global norm.
    val_tokens: int = 32768  # Validation tokens per evaluation (use a multiple of every context).
    evals: int = 20  # Number of evaluations, log-spaced over the budget.
    eval_from: float = 0.01  # First evaluation at this fraction of the budget.
    seed: int = 0  # Seed of the initialisation and of the data order.
    device: str = "auto"  # 'auto' (CUDA if available), 'cpu' or 'cuda[:i]'.
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast where bf16 matrix units exist, else fp32.
    compile: bool = False  # torch.compile the model (one graph per context length).
    threads: int = 0  # CPU threads (0 = torch's default).
    resume: bool = False  # Continue the run in --out-dir from its checkpoint (a new run if none was written yet).
    progress: bool = True  # tqdm progress bar on a terminal (--no-progress: none).
    ckpt_every: int = 0  # Also checkpoint every N steps (0: only at evaluations and every --ckpt-minutes).
    ckpt_minutes: float = 10.0  # Also checkpoint when this many minutes passed since the last checkpoint.
    stop_after_steps: int | None = None  # (debug) checkpoint and quit after this step (no final evaluation).
    keep_at: tuple[float, ...] = ()  # also keep ckpt_at_<FLOPs>.pt at each of these FLOPs (for switch pilots)
    start_from: str | None = None  # a new run starts from this --keep-at checkpoint: a pilot switch (lab/transfer.py)


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


# ----------------------------------------------------------------------------- set-up: flags, stages, sizes

def model_args(name, vocab_size, max_context):                  # lm.model_args; a bad --model: a UserError
    with runtime.user_error():
        return lm.model_args(name, vocab_size, max_context)


def check_flags(cfg):                                    # numeric flags in range, before any work: (budget, unit)
    model_args(cfg.model, 256, 1)
    return runtime.check_flags(cfg, ("tokens_per_step", "context", "val_tokens"), (
        ("val_fraction", 0 < cfg.val_fraction < 1), ("eval_from", 0 < cfg.eval_from <= 1),
        ("threads", cfg.threads >= 0), ("vocab_size", cfg.vocab_size >= 0), ("depth", cfg.depth >= 0)))


def load_stages(cfg):
    """-> the stages' logged configs, their full shapes {context, depth[, batch_size]}, and the Schedule (None
    for a static run). A stage inherits the context and depth it does not name; depth never shrinks."""
    depth = cfg.depth or model_args(cfg.model, 256, 1)["depth"]
    if not cfg.schedule:
        return [{"context": cfg.context, **({"depth": cfg.depth} if cfg.depth else {})}], \
            [{"context": cfg.context, "depth": depth}], None
    from schedule import Schedule, ScheduleError
    with runtime.user_error(errors=(ScheduleError, OSError)):
        schedule = Schedule.load(cfg.schedule)
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


def batch_of(cfg, shape):
    """Sequences a step (global): batch_size (Sec. 6.2), else (tokens_per_step (App. B.5) or --tokens-per-step) // T."""
    return shape.get("batch_size", shape.get("tokens_per_step", cfg.tokens_per_step) // shape["context"])


def check_sizes(cfg, stages, train, val, world, m, device):   # stages: the full shapes; m: the model's arguments
    """Every size that could fail, before any work: batches (and their shards over the processes), splits, memory
    (each stage's floor, runtime.check_memory; the largest is returned)."""
    for i, s in enumerate(stages):
        tps = s.get("tokens_per_step", cfg.tokens_per_step)
        where = f"{cfg.schedule}: stage {i} tokens_per_step" if "tokens_per_step" in s else "--tokens-per-step"
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
    return max(runtime.check_memory(f"{cfg.schedule}: stage {i}" if cfg.schedule else f"--model {cfg.model}", device,
                                    *memory_args(cfg, s, m, world.size)) for i, s in enumerate(stages))


def memory_args(cfg, s, m, ranks):   # runtime.check_memory's sizes of a stage: parameters (blocks, tied embedding), ...
    return (s["depth"] * (4 * m["width"] ** 2 + 3 * m["width"] * m["mlp_dim"]) + m["vocab_size"] * m["width"],
            batch_of(cfg, s) // ranks, s["context"], m["width"], s["depth"], m["heads"], m["vocab_size"])


# ----------------------------------------------------------------------------- optimiser, LR, growth

def make_optimizer(model, cfg, device):
    """AdamW (0.9, 0.95) (Table 3), fused; weight decay on the blocks' matrices only: not on RMSNorm gains,
    which it would only shrink, nor on the tied embedding, whose rare tokens' rows it would pull to zero."""
    decay = {n: p.dim() == 2 and not n.startswith("embed") for n, p in model.named_parameters()}
    groups = [{"params": [p for n, p in model.named_parameters() if decay[n]]},
              {"params": [p for n, p in model.named_parameters() if not decay[n]], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay, fused=True)


def grow(run, depth):
    """Grow the model to `depth` blocks (expand.py: each new one copies the block before it, output layers zero: the
    same function); AdamW moments kept, the optimiser rebuilt in parameter order as a resumed model's would be."""
    import expand                                    # torch only; needed once a run grows
    expand.expand_optimizer(old := run.opt, expand.expand_depth(run.model, depth, preserve=True, where="interleave"))
    run.opt = make_optimizer(run.model, run.cfg, run.device)
    run.opt.state.update({p: old.state[p] for p in run.model.parameters() if p in old.state})
    run.state.rewarm_from = run.state.step


# ----------------------------------------------------------------------------- the run: set up, resume, save

class Run:
    """One training run: everything set up, restored or initialised, ready for the loop."""

    def __init__(self, cfg):
        self.cfg, self.world = cfg, runtime.World.from_env()    # 1 process, or torchrun's rank / size
        self.budget, self.unit = check_flags(cfg)
        self.device, self.precision, self.amp = runtime.machine(cfg, self.world)   # bf16 autocast, fp32 master weights
        self.stages, self.shapes, self.schedule = load_stages(cfg)
        self.train, self.val, vocab, data_name = load_corpus(cfg.data, cfg.glob, cfg.vocab_size, cfg.val_fraction,
                                                             cfg.cache_dir)
        self.max_context = max(s["context"] for s in self.shapes)
        self.margs = {**model_args(cfg.model, vocab, self.max_context), "depth": self.shapes[0]["depth"]}
        self.need = check_sizes(cfg, self.shapes, self.train, self.val, self.world, self.margs, self.device)
        torch.manual_seed(cfg.seed)
        self.model = LM(**self.margs).to(self.device)
        self.opt = make_optimizer(self.model, cfg, self.device)
        self.out = out = runtime.check_out_dir(cfg.out_dir)
        self.ckpts, self.log = runtime.Checkpoints(out / "ckpt.pt", self.world.main), runtime.RunLog(out / "log.jsonl")
        bounds = [(s.flops_start, s.error_end) for s in sched.stages] if (sched := self.schedule) else None
        self.identity = json.loads(json.dumps({  # what --resume must find unchanged (JSON: tuples become lists)
            "model": self.margs, "data": data_name, "stages": self.stages, "shapes": self.shapes,
            "tokens_per_step": cfg.tokens_per_step, "seed": cfg.seed, "switch_on": cfg.switch_on if sched else None,
            "kind": sched and sched.kind, "boundaries": bounds, "lr_scaling": cfg.lr_scaling}))
        self.state, self.session = State(world_size=self.world.size), State()   # session: this process's throughput
        self.saved = time.time()                                                # when it last checkpointed

    def progress(self):
        return self.state.flops if self.unit == "flops" else self.state.step

    def restore(self):
        """From ckpt.pt (--resume: a folder holding one needs it), a --keep-at one (--start-from: a pilot), afresh."""
        cfg, path = self.cfg, self.ckpts.path
        if not runtime.check_run_folder(self.out, path, self.log, cfg.resume, "train_lm.py", self.world.main) \
                and not cfg.start_from:
            return False
        src, forked = (path, False) if path.exists() else (cfg.start_from, True)
        try:
            ckpt = torch.load(src, map_location=self.device, weights_only=False)
        except Exception as e:   # truncated, foreign or corrupt: torch raises many kinds
            raise UserError(f"{src} is not a readable checkpoint ({type(e).__name__}); "
                            f"{'check --start-from' if forked else 'delete it to start afresh'}") from None
        if not isinstance(ckpt, dict) or not {"model", "optimizer", "identity", "state", "rng"} <= set(ckpt):
            raise UserError(f"{src} is not a train_lm.py checkpoint" + ("" if forked else "; use another --out-dir"))
        saved = {"lr_scaling": "none", **ckpt["identity"]}
        if forked:        # a pilot shares what a schedule from scratch shares up to its switch; its stages size RoPE
            saved = {k: {**saved[k], "max_context": self.max_context} if k == "model" else saved[k] for k in FORK_KEYS}
        runtime.check_resume(saved, self.identity, src, "--start-from" if forked else "--resume")
        self.world.check_resume(ckpt["state"].get("world_size", 1), src)
        grown = {**ckpt.get("grown_args", self.margs), "max_context": self.max_context}
        if grown != self.margs:                                   # grown before the checkpoint: rebuild at its depth
            self.model = LM(**grown).to(self.device)
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
        self.saved = time.time()
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        ckpt = {"version": 1, "kind": "train_lm", "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "rng": {"cpu": torch.get_rng_state(), "cuda": cuda}, "state": asdict(self.state),
                "identity": self.identity, "model_args": self.margs, "config": asdict(self.cfg),
                "grown_args": self.model.model_args(), "precision": self.precision} if self.world.main else None
        self.ckpts.save(ckpt, self.state.step, self.state.flops, self.cfg.keep_at)   # --keep-at: a pilot switch's start



# ----------------------------------------------------------------------------- the loop's parts

def stage_now(run):
    """This step's stage: random (FlexiViT's baseline), or by cumulative FLOPs (Eq. 2, schedule.py); never earlier."""
    sched, state = run.schedule, run.state
    if sched and sched.random:
        return int(np.random.default_rng([run.cfg.seed, state.step, 1]).integers(len(run.stages)))
    if sched and run.cfg.switch_on == "flops":
        return max(state.stage, sched.stage_at(flops=state.flops).index)       # Eq. 2, by FLOPs
    return state.stage


def eval_points(run):   # log-spaced (a law needs every decade), 5 inside each later stage of a schedule, --keep-at
    return sorted({*runtime.eval_points(run.budget, run.cfg.evals, run.cfg.eval_from, switch_on=run.cfg.switch_on,
                                        sched=run.schedule if run.unit == "flops" else None), *run.cfg.keep_at})


def forwards(run):
    """(plain, fwd): rank 0's evaluation model and the training one (DDP under torchrun); rebuilt after a growth."""
    compiled = torch.compile if run.cfg.compile else (lambda model: model)
    plain = compiled(run.model)
    return plain, compiled(run.world.wrap(run.model, run.device)) if run.world.active else plain   # DDP: mean grads


def train_step(run, fwd, context, batch):
    """One optimiser step on the global batch; returns (loss, lr). Diverged: one line, checkpoint kept."""
    cfg, state = run.cfg, run.state
    x, y = (t.to(run.device) for t in get_batch(run.train, state.step, batch, context, cfg.seed,
                                                 rows=run.world.shard(batch)))   # this process's rows, seeded by step
    lr = runtime.learning_rate(cfg.lr, state.step, cfg.warmup, cfg.lr_scaling, batch * context / cfg.tokens_per_step,
                               cfg.rewarm, state.rewarm_from)   # --warmup (Table 3), --lr-scaling by tokens (Sec. 6.2)
    for group in run.opt.param_groups:
        group["lr"] = lr
    with run.amp:
        logits = fwd(x)
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    loss.backward()                                          # DDP: gradients averaged over the processes
    norm = nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip)
    loss_v, norm_v = run.world.mean(torch.stack([loss.detach(), norm.float()])).tolist()
    runtime.check_finite(state.step, run.ckpts, loss=loss_v, gradient_norm=norm_v)   # NaN/inf: stop, keep ckpt
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return loss_v, lr


def evaluate_and_log(run, plain, context, lr):
    """val_loss at the current context and at the run's largest (rank 0), one log record; returns the record."""
    cfg, state, sched = run.cfg, run.state, run.schedule
    ctx = run.max_context if sched and sched.random else context     # Sec. 5: the loss at the current context
    run.model.eval()
    loss_at = {c: evaluate(plain, run.val, c, cfg.val_tokens, cfg.tokens_per_step, run.device, run.amp)
               for c in {ctx, run.max_context}}
    run.model.train()
    shape = {"context": ctx} if sched and sched.random else dict(run.stages[state.stage])
    record = {"type": "eval", "step": state.step, "tokens": state.tokens, "flops": state.flops, "config": shape,
              "train_loss": state.loss_sum / state.loss_n, "lr": lr, "val_loss": loss_at[ctx],
              "val_loss_max_context": loss_at[run.max_context], "wall": state.wall,
              **({"stage": state.stage} if sched else {})}
    runtime.check_finite(state.step, run.ckpts, val_loss=loss_at[ctx], val_loss_max_context=loss_at[run.max_context])
    run.log.append(record)
    return record


def main(cfg: Config):
    # Set up: flags, device, precision, data, model and optimiser; every check that may fail comes first.
    run = Run(cfg)
    resuming = run.restore()
    world, state, session = run.world, run.state, run.session
    world.init(run.device)
    plain, fwd = forwards(run)
    if world.main:                         # log.jsonl's header; a resume continues the log, noting a new precision
        header = {"version": 1, "type": "header", "run": run.out.name, "config": asdict(cfg),
                  "metrics": ["val_loss", "val_loss_max_context"], "model_args": run.margs, "precision": run.precision,
                  "params": sum(p.numel() for p in run.model.parameters()), "world_size": world.size}
        run.log.start(header, *(state.step, run.was_precision) if resuming else ())
    points = eval_points(run)
    next_eval = int(np.searchsorted(points, run.progress(), side="right"))   # points passed are done
    bar = tqdm(total=run.budget, initial=run.progress(), unit="FLOP" if run.unit == "flops" else "step",
               unit_scale=run.unit == "flops", mininterval=1.0, dynamic_ncols=True,
               disable=None if cfg.progress and world.main else True)
    while run.progress() < run.budget:
        # Which stage now (context, batch, depth); a deeper one grows the model, exactly; then one optimiser step.
        state.stage = stage_now(run)
        shape = run.shapes[state.stage]
        if shape["depth"] > len(run.model.blocks):
            grow(run, shape["depth"])
            plain, fwd = forwards(run)
        context, batch = shape["context"], batch_of(cfg, shape)             # batch: global
        t0 = time.perf_counter()
        loss, lr = train_step(run, fwd, context, batch)
        dt, tokens = time.perf_counter() - t0, batch * context
        step_flops = 6 * run.model.macs_per_token(context) * tokens          # Sec. 3: 6 x block MACs a token
        state.step, state.loss_sum, state.loss_n = state.step + 1, state.loss_sum + loss, state.loss_n + 1
        for sums in (state, session):                                        # the run's, and this process's
            sums.tokens, sums.flops, sums.wall = sums.tokens + tokens, sums.flops + step_flops, sums.wall + dt
        bar.update(run.progress() - bar.n)
        bar.set_postfix(ctx=context, loss=f"{loss:.3f}", tok_s=f"{session.tokens / session.wall:.0f}",
                        flop_s=f"{session.flops / session.wall:.3g}", refresh=False)   # achieved: vs the peak

        # Evaluate at the log-spaced points (rank 0; the others wait in the broadcast), then checkpoint.
        if next_eval < len(points) and run.progress() >= points[next_eval]:
            next_eval = int(np.searchsorted(points, run.progress(), side="right"))
            if world.main:
                rec = evaluate_and_log(run, plain, context, lr)
                bar.write(f"step {state.step}  flops {state.flops:.3g}  ctx {context}  depth {len(run.model.blocks)}"
                          f"  train {rec['train_loss']:.4f}  val {rec['val_loss']:.4f}  val@{run.max_context} "
                          f"{rec['val_loss_max_context']:.4f}")
                if run.schedule and cfg.switch_on == "error" and not run.schedule.random:   # Eq. 2, by error
                    state.stage = max(state.stage, run.schedule.stage_at(error=rec["val_loss"]).index)
            state.loss_sum, state.loss_n, state.stage = 0.0, 0, world.broadcast(state.stage)   # rank 0's switch
            run.save()
        stop = cfg.stop_after_steps is not None and state.step >= cfg.stop_after_steps
        if stop or (cfg.ckpt_every and state.step % cfg.ckpt_every == 0) or \
                time.time() - run.saved > 60 * cfg.ckpt_minutes:
            run.save()
        if stop:
            break
    bar.close()


def cli(args=None):
    return runtime.run_cli(main, Config, "train_lm.py", args, moved={"--grad-clip": "is now called --clip",
                                                                          **runtime.moved_to_lab("train_lm.py")})


if __name__ == "__main__":
    sys.exit(cli())
