"""Train a Llama-style language model at a fixed or scheduled context length (paper Sec. 5, App. B.5).

The paper trains Llama models at several context lengths, fits one scaling law per context (fit_laws.py)
and switches from short to long contexts where the laws cross (schedule.py), saving up to 40% FLOPs.

    python train_lm.py --context 64 --out-dir runs/ctx64                    # one static run
    python train_lm.py --schedule schedule.json --out-dir runs/sched        # the adaptive run
    torchrun --standalone --nproc_per_node 2 train_lm.py ...                # either, data parallel (dist.py)

Model: pre-norm decoder blocks, RMSNorm -> causal attention (scaled_dot_product_attention) with RoPE ->
RMSNorm -> SwiGLU MLP (hidden 4*width); no biases; final RMSNorm. `--model L{width}-{depth}` names the
size; head size 32 below width 256, 64 from 256 on. RoPE rotates channel pairs (2j, 2j+1) as complex
numbers (Meta's layout; Hugging Face's rotate-half is a permutation of q, k rows away); its tables are
sized for the run's largest context, so a context switch touches no parameter. Embeddings are TIED to
the output layer: with d=768, depth 12, a 32000 vocabulary, SwiGLU hidden 4d and tied embeddings the
model has exactly the 137,841,408 parameters that App. B.5 reports, so that is what the paper used.

Optimiser (Table 3): AdamW (0.9, 0.95), weight decay 0.1 on the blocks' matrices only (not on RMSNorm
gains, which decay would only shrink, nor on the tied embedding, whose rare tokens' rows it would pull
to zero), linear warm-up, then a constant learning rate; grad-norm clip 1.0; no dropout.

Compute: a token's forward pass through the blocks costs, in multiply-accumulates,
    macs_per_token = depth * (4*d^2 + 3*d*h + 2*T*d)
(q, k, v, out projections; the three SwiGLU matrices of hidden size h; the scores QK^T and AV, causal
counted as full, as for the ViT). Logged `flops` = 6 * macs_per_token * tokens. The embedding and the
output layer (d*V MACs a token) are excluded, as the ViT's patch embedding and head are (DESIGN.md);
tests/test_lm.py checks both against torch.utils.flop_counter.

Tokens per step: batch x context = `--tokens-per-step` at every context (a longer context, a smaller
batch): gradient noise and learning rate stay comparable, and a step's compute grows only through the
attention term. A schedule stage's "batch_size" B (Sec. 6.2) overrides it: a step then holds (and FLOPs
count) B*T tokens, and the LR follows by --lr-scaling: x1, x r or x sqrt(r), r = B*T / --tokens-per-step
(B over the batch of the static run at context T, whose law the schedule used).

Data and validation loss (lm_data.py): by default the Python standard library's .py files as bytes
(vocabulary 256); `--data` takes a text file or folder, or a uint16 token file *.bin with --vocab-size. A
step's windows start at random positions seeded by (seed, step): a resumed run sees the same batches.

Data parallel (dist.py): under `torchrun --nproc_per_node N` each process takes its 1/N of the rows of the
global batch (a batch that does not split evenly is refused before training); data order, FLOPs, the LR
and the curve do not depend on N. Rank 0 alone evaluates, logs, checkpoints and prints; a resume keeps N.

Evaluation: the first --val-tokens tokens of the validation split in windows of the context: every
context predicts the same tokens (the paper truncates the same samples to each model's context).
`val_loss` is at the current context (the paper's metric), `val_loss_max_context` at the run's largest,
at log-spaced points of the budget (--evals from --eval-from): dense early. The bar shows tokens/s and
MFU: logged FLOPs per second over the GPU's bf16 peak (PEAK_BF16_FLOPS), or over the FLOP/s of a large
matmul measured at start (on the CPU: float32, this process's threads).

Schedules: stage configs are {"context": T}, optionally with "batch_size": B. `--switch-on flops` takes the
stage in force at the cumulative FLOPs (every step); `--switch-on error` moves on once a measured val_loss
at the current context is below the stage's error_end (at evaluations). Stages never go backwards. A
schedule of kind "random" (FlexiViT's baseline) draws a stage per step and evaluates at the largest context.

Checkpoints: ckpt.pt at every evaluation (atomic): model, optimizer, RNG, step (= data position),
cumulative tokens / FLOPs / training seconds, stage. `--resume` continues exactly (a new run if there is
no checkpoint) and refuses another model, data, context, tokens per step, schedule or process count. A
NaN/inf loss stops the run and keeps the last good checkpoint; it and bad input exit with code 2 and one
line.
"""
import json
import math
import os
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import dist
from lm_data import evaluate, get_batch, load_corpus

PRESETS = ("L64-4", "L128-4", "L128-6", "L192-6", "L256-6", "L384-6", "L512-8", "L768-12")
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40": 181e12, "4090": 165e12,
                   "L4": 121e12, "A10": 125e12, "V100": 125e12}  # dense tensor-core peaks


class UserError(ValueError):
    """Bad input: the script prints one line and exits with code 2."""


class DivergedError(UserError):
    """The loss became NaN or inf: one line, exit code 2; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- model

def model_args(name, vocab_size, max_context):
    """'L{width}-{depth}' -> the keyword arguments of LM."""
    m = re.fullmatch(r"L(\d+)-(\d+)", name)
    head_dim = 32 if m and int(m[1]) < 256 else 64
    if not m or int(m[1]) % head_dim or int(m[2]) < 1:
        raise UserError(f"--model {name!r}: expected L<width>-<depth> with width a multiple of 32 "
                        f"(64 from 256 on), e.g. one of {', '.join(PRESETS)}")
    width, depth = int(m[1]), int(m[2])
    return dict(vocab_size=vocab_size, width=width, depth=depth, heads=width // head_dim,
                mlp_dim=4 * width, max_context=max_context)


def macs_per_token(width, depth, mlp_dim, context):
    """Forward multiply-accumulates per token of the transformer blocks (embedding and head excluded)."""
    return depth * (4 * width**2 + 3 * width * mlp_dim + 2 * context * width)


def rope_freqs(head_dim, max_context, theta=10000.0):
    """(cos, sin) of position * theta^(-2j/head_dim): [max_context, 1, head_dim/2, 2]."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(max_context).float(), inv_freq)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)[:, None]


def apply_rope(x, freqs):
    """Rotate x [B, T, heads, head_dim] by position: channel pairs (2j, 2j+1) as complex numbers."""
    xr = x.float().unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling():   # inductor has no complex kernels: the same product in real numbers
        (a, b), (cos, sin) = xr.unbind(-1), freqs.unbind(-1)
        return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2).type_as(x)
    rotated = torch.view_as_complex(xr) * torch.view_as_complex(freqs)    # eager: one kernel each way
    return torch.view_as_real(rotated).flatten(-2).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Block(nn.Module):
    def __init__(self, width, heads, mlp_dim):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.norm1, self.norm2 = RMSNorm(width), RMSNorm(width)
        self.qk = nn.Linear(width, 2 * width, bias=False)   # [q | k], each [heads, head_dim]: one RoPE call
        self.v = nn.Linear(width, width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.gate = nn.Linear(width, mlp_dim, bias=False)   # separate matrices run faster on CPU than a
        self.up = nn.Linear(width, mlp_dim, bias=False)     # fused one (no strided halves, no cat in backward)
        self.down = nn.Linear(mlp_dim, width, bias=False)

    def forward(self, x, freqs):
        B, T, C = x.shape
        h = self.norm1(x)
        qk = apply_rope(self.qk(h).view(B, T, 2 * self.heads, self.head_dim), freqs)
        q, k = qk.transpose(1, 2).split(self.heads, dim=1)       # [B, heads, T, head_dim]
        v = self.v(h).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class LM(nn.Module):
    def __init__(self, vocab_size=256, width=128, depth=4, heads=4, mlp_dim=512, max_context=256):
        super().__init__()
        self.width, self.depth, self.mlp_dim, self.max_context = width, depth, mlp_dim, max_context
        self.embed = nn.Embedding(vocab_size, width)              # tied: also the output layer
        self.blocks = nn.ModuleList(Block(width, heads, mlp_dim) for _ in range(depth))
        self.norm = RMSNorm(width)
        self.register_buffer("freqs", rope_freqs(width // heads, max_context), persistent=False)
        for name, p in self.named_parameters():                  # GPT-2 init
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * depth) if name.endswith(("proj.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx):
        T = idx.shape[1]
        if T > self.max_context:
            raise ValueError(f"context {T} exceeds the model's RoPE tables ({self.max_context})")
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, self.freqs[:T])
        return F.linear(self.norm(x), self.embed.weight)

    def macs_per_token(self, context):
        return macs_per_token(self.width, self.depth, self.mlp_dim, context)


# ----------------------------------------------------------------------------- training

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
    """Context length of a static run (ignored with --schedule)."""
    schedule: str = ""
    """schedule.json (schedule.py's output) whose stages' configs are {"context": T[, "batch_size": B]}."""
    switch_on: Literal["flops", "error"] = "flops"
    """Follow the schedule by cumulative FLOPs, or by the measured val_loss at the current context."""
    tokens_per_step: int = 4096
    """Tokens per optimiser step (batch = tokens_per_step // context), the same at every context; over all
    processes under torchrun."""
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    """How the LR follows a schedule stage's batch_size B at context T: --lr times 1, r or sqrt(r), with
    r = B*T / --tokens-per-step."""
    steps: int = 1000
    """Training steps (the budget, unless --flops is set)."""
    flops: float = 0.0
    """Training-FLOPs budget; overrides --steps when > 0."""
    lr: float = 2e-3
    """Peak learning rate (constant after warm-up)."""
    warmup: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay on the blocks' matrices (not on norms or the tied embedding)."""
    grad_clip: float = 1.0
    """Clip the gradients' global norm."""
    val_tokens: int = 32768
    """Validation tokens per evaluation (use a multiple of every context)."""
    evals: int = 20
    """Number of evaluations, log-spaced over the budget."""
    eval_from: float = 0.01
    """First evaluation at this fraction of the budget."""
    seed: int = 0
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu' or 'cuda[:i]'. CUDA runs use bf16 autocast and fused AdamW."""
    compile: bool = False
    """torch.compile the model (one graph per context length)."""
    threads: int = 0
    """CPU threads (0 = torch's default)."""
    resume: bool = False
    """Continue the run in --out-dir from its checkpoint (a new run if there is none)."""
    progress: bool = True
    """tqdm progress bar on a terminal (--no-progress: none)."""
    ckpt_minutes: float = 10.0
    """Also checkpoint when this many minutes passed since the last checkpoint (evaluations always do)."""
    stop_after_steps: int = 0
    """Debug: checkpoint and stop after this many steps (0 = off), e.g. to test --resume."""


def load_stages(cfg):
    """-> the stages' config dicts, and the Schedule (None for a static run)."""
    if not cfg.schedule:
        return [{"context": cfg.context}], None
    from schedule import Schedule, ScheduleError
    try:
        schedule = Schedule.load(cfg.schedule)
    except (ScheduleError, OSError) as e:
        raise UserError(str(e)) from None
    for s in schedule.stages:
        if "context" not in s.config or set(s.config) - {"context", "batch_size"} \
                or not all(type(v) is int and v > 0 for v in s.config.values()):
            raise UserError(f"{cfg.schedule}: stage {s.index} config {s.config} is not a context length "
                            f'(train_lm.py expects {{"context": T}}, optionally with "batch_size")')
    return [dict(s.config) for s in schedule.stages], schedule


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


def write_log(path, records):
    Path(f"{path}.tmp").write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(f"{path}.tmp", path)


def check_sizes(cfg, stages, train, val, world):
    """Every size that could fail, before any work: batches (and their shards over the processes), splits."""
    for i, s in enumerate(stages):
        if "batch_size" not in s and cfg.tokens_per_step % s["context"]:
            raise UserError(f"--tokens-per-step {cfg.tokens_per_step} is not a multiple of context {s['context']}")
        world.shard(s.get("batch_size", cfg.tokens_per_step // s["context"]), f"{cfg.schedule}: stage {i} batch_size"
                    if "batch_size" in s else f"--tokens-per-step {cfg.tokens_per_step} at context {s['context']}")
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


def learning_rate(cfg, step, tokens):
    """Linear warm-up to --lr, scaled (--lr-scaling) by r = the step's tokens / --tokens-per-step."""
    r = tokens / cfg.tokens_per_step
    scale = {"none": 1.0, "linear": r, "sqrt": math.sqrt(r)}[cfg.lr_scaling]
    return cfg.lr * scale * min(1.0, (step + 1) / max(cfg.warmup, 1))


def main(cfg: Config):
    world = dist.World.from_env()                                  # 1 process, or torchrun's rank / size
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        device = world.device(cfg.device)
    except RuntimeError:
        raise UserError(f"--device {cfg.device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {cfg.device}: CUDA is not available here; use --device cpu")
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else nullcontext()
    model_args(cfg.model, 256, 1)                                    # a bad --model fails before any work
    if cfg.steps <= 0 and cfg.flops <= 0 or cfg.tokens_per_step <= 0:
        raise UserError("give a positive --steps or --flops budget, and a positive --tokens-per-step")
    stages, schedule = load_stages(cfg)
    train, val, vocab, data_name = load_corpus(cfg.data, cfg.glob, cfg.vocab_size, cfg.val_fraction, cfg.cache_dir)
    check_sizes(cfg, stages, train, val, world)
    max_context = max(s["context"] for s in stages)
    margs = model_args(cfg.model, vocab, max_context)
    torch.manual_seed(cfg.seed)
    model = LM(**margs).to(device)
    decay = {n: p.dim() == 2 and not n.startswith("embed") for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([{"params": [p for n, p in model.named_parameters() if decay[n]]},
                             {"params": [p for n, p in model.named_parameters() if not decay[n]], "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay, fused=device.type == "cuda")

    out = Path(cfg.out_dir)
    ckpt_path, log_path = out / "ckpt.pt", out / "log.jsonl"
    identity = json.loads(json.dumps({  # what --resume must find unchanged (as JSON: tuples become lists)
        "model": margs, "data": data_name, "stages": stages, "tokens_per_step": cfg.tokens_per_step,
        "seed": cfg.seed, "switch_on": cfg.switch_on if schedule else None, "kind": schedule and schedule.kind,
        "boundaries": [(s.flops_start, s.error_end) for s in schedule.stages] if schedule else None,
        "lr_scaling": cfg.lr_scaling}))
    state = dict(step=0, tokens=0, flops=0.0, wall=0.0, stage=0, loss_sum=0.0, loss_n=0, world_size=world.size)
    records, resuming = None, cfg.resume and ckpt_path.exists()
    if resuming:                                                     # every rank checks, before any collective
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        saved = {"lr_scaling": "none", **ckpt["identity"]}            # older checkpoints lack the newer keys
        for key, value in identity.items():
            if saved[key] != value:
                raise UserError(f"--resume: {ckpt_path} was trained with {key}={saved[key]}, "
                                f"this run asks for {value}: use a new --out-dir")
        world.check_resume(ckpt["state"].get("world_size", 1), ckpt_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["cpu"].cpu())
        if ckpt["rng"]["cuda"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), device)
        state = {"world_size": 1, **ckpt["state"]}
    elif ckpt_path.exists() or log_path.exists():
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or pick another --out-dir")
    world.init(device)                                               # every check that may fail is behind us
    plain = torch.compile(model) if cfg.compile else model           # rank 0 evaluates with it, alone
    fwd = plain if not world.active else (torch.compile(world.wrap(model, device)) if cfg.compile
                                          else world.wrap(model, device))      # DDP: gradients averaged
    if world.main and resuming:
        records = [r for r in map(json.loads, filter(str.strip, log_path.read_text().splitlines()))
                   if r.get("type") == "header" or r["step"] <= state["step"]]   # drop what came after the ckpt
    elif world.main:
        if cfg.resume:
            print(f"train_lm.py: no checkpoint in {out}; starting a new run", file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        records = [{"version": 1, "type": "header", "run": out.name, "config": asdict(cfg),
                    "metrics": ["val_loss", "val_loss_max_context"], "model_args": margs,
                    "params": sum(p.numel() for p in model.parameters()), "world_size": world.size}]
        write_log(log_path, records)

    def save():                                                      # rank 0 writes; the others have the same
        session["saved"] = time.time()
        if not world.main:
            return
        rng = {"cpu": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng, "state": state,
                    "identity": identity, "model_args": margs, "config": asdict(cfg)}, f"{ckpt_path}.tmp")
        os.replace(f"{ckpt_path}.tmp", ckpt_path)
        session["saved_step"] = state["step"]

    budget = cfg.flops if cfg.flops > 0 else cfg.steps
    progress = lambda: state["flops"] if cfg.flops > 0 else state["step"]  # noqa: E731
    eval_points = np.geomspace(budget * cfg.eval_from, budget, cfg.evals) if cfg.evals > 1 else np.r_[budget]
    next_eval = int(np.searchsorted(eval_points, progress(), side="right"))  # points passed are done
    peak = peak_flops(device) if world.main else 1.0
    bar = tqdm(total=budget, initial=progress(), unit="FLOP" if cfg.flops > 0 else "step",
               unit_scale=cfg.flops > 0, mininterval=1.0, dynamic_ncols=True,
               disable=None if cfg.progress and world.main else True)
    session = dict(tokens=0, flops=0.0, wall=0.0, saved=time.time(), saved_step=state["step"] if resuming else None)
    while progress() < budget:
        if schedule and schedule.random:                      # FlexiViT-style baseline: a random stage per step
            state["stage"] = int(np.random.default_rng([cfg.seed, state["step"], 1]).integers(len(stages)))
        elif schedule and cfg.switch_on == "flops":
            state["stage"] = max(state["stage"], schedule.stage_at(flops=state["flops"]).index)
        context = stages[state["stage"]]["context"]
        batch = stages[state["stage"]].get("batch_size", cfg.tokens_per_step // context)   # global
        t0 = time.perf_counter()
        x, y = (t.to(device) for t in get_batch(train, state["step"], batch, context, cfg.seed,
                                                rows=world.shard(batch)))       # this process's rows
        lr = learning_rate(cfg, state["step"], batch * context)
        for group in opt.param_groups:
            group["lr"] = lr
        with autocast:
            logits = fwd(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        loss_value, norm_value = world.mean(torch.stack([loss.detach(), norm.float()])).tolist()
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            bar.close()
            kept = (f"the last good checkpoint {ckpt_path} (step {session['saved_step']}) is kept"
                    if session["saved_step"] is not None else "no checkpoint was written")
            raise DivergedError(f"non-finite loss {loss_value} or gradient norm {norm_value} at step "
                                f"{state['step']}: training diverged; {kept}; lower --lr or raise --warmup")
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt, tokens = time.perf_counter() - t0, batch * context
        step_flops = 6 * model.macs_per_token(context) * tokens
        state.update(step=state["step"] + 1, tokens=state["tokens"] + tokens, flops=state["flops"] + step_flops,
                     wall=state["wall"] + dt, loss_sum=state["loss_sum"] + loss_value, loss_n=state["loss_n"] + 1)
        session.update(tokens=session["tokens"] + tokens, flops=session["flops"] + step_flops,
                       wall=session["wall"] + dt)
        bar.update(progress() - bar.n)
        bar.set_postfix(ctx=context, loss=f"{loss_value:.3f}", tok_s=f"{session['tokens'] / session['wall']:.0f}",
                        mfu=f"{session['flops'] / session['wall'] / peak:.1%}", refresh=False)

        if next_eval < len(eval_points) and progress() >= eval_points[next_eval]:
            next_eval = int(np.searchsorted(eval_points, progress(), side="right"))
            ctx = max_context if schedule and schedule.random else context   # random: no current context
            if world.main:                                    # the others wait in the broadcast below
                model.eval()
                loss_at = {c: evaluate(plain, val, c, cfg.val_tokens, cfg.tokens_per_step, device, autocast)
                           for c in {ctx, max_context}}
                model.train()
                shape = {"context": ctx} if schedule and schedule.random else dict(stages[state["stage"]])
                record = {"type": "eval", "step": state["step"], "tokens": state["tokens"], "flops": state["flops"],
                          "config": shape, "train_loss": state["loss_sum"] / state["loss_n"], "lr": lr,
                          "val_loss": loss_at[ctx], "val_loss_max_context": loss_at[max_context], "wall": state["wall"]}
                records.append(record if not schedule else {**record, "stage": state["stage"]})
                write_log(log_path, records)
                bar.write(f"step {state['step']}  flops {state['flops']:.3g}  ctx {ctx}  train "
                          f"{record['train_loss']:.4f}  val {loss_at[ctx]:.4f}  val@{max_context} "
                          f"{loss_at[max_context]:.4f}")
                if schedule and cfg.switch_on == "error" and not schedule.random:
                    state["stage"] = max(state["stage"], schedule.stage_at(error=loss_at[ctx]).index)
            state.update(loss_sum=0.0, loss_n=0, stage=world.broadcast(state["stage"]))   # rank 0's switch
            save()
        stop = cfg.stop_after_steps and state["step"] >= cfg.stop_after_steps
        if stop or time.time() - session["saved"] > 60 * cfg.ckpt_minutes:
            save()
        if stop:
            break
    bar.close()


def cli(args=None):
    """Parse the flags and train; bad input and divergence: one line on stderr (rank 0's) and exit code 2."""
    return dist.run_cli(main, Config, "train_lm.py", args)


if __name__ == "__main__":
    sys.exit(cli())
