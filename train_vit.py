"""Train a FlexiViT at a fixed, random or scheduled shape, logging compute and error (paper Sec. 3, 4, 6).

"Navigating Scaling Laws" (Anagnostidis et al., arXiv 2311.03233) fits one scaling law E = a(C+d)^-b + c
per shape from runs at a FIXED shape (Sec. 3), then trains a model whose shape follows the laws
(Sec. 4: patch size; Sec. 6: width, depth, batch size). This script does all three kinds of run:

    python train_vit.py --steps 3000 --patch 7                      # Sec. 3: one run per patch size
    python train_vit.py --flops 2e13 --random --patch-sizes 14 7 4  # FlexiViT baseline (Fig. 7)
    python train_vit.py --flops 2e13 --schedule schedule.json       # Sec. 4/6: schedule.py's switch points
    python train_vit.py --flops 2e13 --patch 7 --resume             # continue runs/<name>/ckpt.pt
    python train_vit.py --flops 2e13 --objective distill --teacher runs/teacher/ckpt.pt   # Sec. 6.2
    torchrun --standalone --nproc_per_node 2 train_vit.py ...       # any of these, data parallel (dist.py)

Hyper-parameters follow App. B.1 (Table 1): AdamW (0.9, 0.999), weight decay 0.01, label smoothing 0.2,
linear warm-up, gradient-norm clip 1.0, and a constant learning rate after warm-up (App. A). Compute C
counts the transformer blocks only (Sec. 3): a training example costs 6 * model.macs(patch) FLOPs.
Evaluations sit log-spaced in compute (a law needs points on every decade); each records the 10-shot
linear error E (`fewshot10_error`, the paper's metric) and the top-1 test error (`test_error`).

Data (data.py): Fashion-MNIST IDX files (default), CIFAR-10/100 batches or an .npz; random crops and flips.

A schedule stage's config may change the patch (free: FlexiViT resizes its embeddings), grow the width or
depth (expand.py; AdamW moments carried over; --rewarm), change the batch size (Sec. 6.2; the LR follows by
--lr-scaling: x1, x B/--batch-size or x sqrt(B/--batch-size), so give a static run at batch B, whose law the
schedule uses, that LR) or set the objective (Sec. 6.2, distill.py): "supervised" or "distill" (Hinton loss at
--temperature to the frozen --teacher, a train_vit.py checkpoint; + 2 * teacher MACs FLOPs per example); a
stage naming none trains with --objective. The whole schedule is checked before the first step.

Data parallel (dist.py): under `torchrun --nproc_per_node N` each process takes 1/N of the global batch
(--batch-size, a stage's batch_size: global, divisible by N); data order, FLOPs and the curve do not depend on
N. Rank 0 alone logs, checkpoints and evaluates (the others wait in the next collective); a resume keeps N.

Output in --out-dir (default runs/<data>-<model>-<shape>):
  log.jsonl  header {"version", "type": "header", "run", "config", "metrics", "schedule_kind", "model_args",
             "world_size", "teacher"}, then per evaluation {"type": "eval", "step", "samples", "flops",
             "config": {"patch", "width", "depth", "batch_size"[, "objective": in runs that distill]
             [, "random": sampled patch sizes]}, "train_loss" (mean since the last evaluation),
             "fewshot{k}_error"[_std], "test_error", "wall" (training seconds), "lr", "stage"}.
  ckpt.pt    {"model_args" (FlexiViT(**model_args) rebuilds the current shape), "model", "optimizer",
             "state" (step, samples = data position, flops, wall, stage, world_size, ...), "patch",
             "config", "schedule_hash", "teacher", "rng"}; written atomically at every evaluation, every
             --ckpt-every steps and at the end. --resume continues from it exactly: every random draw (data
             order, crops, flips, patch sizes, new weights) is seeded by (seed, epoch or step).
"""
import dataclasses
import hashlib
import json
import math
import os
import pickle
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm


import eval_fewshot
import expand
import flexivit
import runtime
import schedule
from data import (Images, augment, batch_indices, eval_images, generator, is_prepared, key_seed, load_dataset,
                  load_prepared, normalize, resize_images)
from runtime import UserError

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
RESUME_KEYS = ("dataset", "image_size", "model", "patch", "base_patch", "posemb_grid", "fewshot_data", "random",
               "patch_sizes", "batch_size", "seed", "flip", "switch_on", "objective", "temperature", "head_dim")


@dataclass
class Config:
    """Train a FlexiViT at a fixed, random (FlexiViT) or scheduled shape; log compute and error (paper Sec. 3, 4, 6)."""
    data_dir: str = DEFAULT_DATA
    """Fashion-MNIST IDX files (gz or not), CIFAR-10/100 python batches, an .npz file, or a folder prepared by
    prepare_images.py (read memory-mapped: any size)"""
    dataset: Literal["auto", "idx", "cifar", "npz", "prepared"] = "auto"
    """format of --data-dir (auto: detected from the files)"""
    image_size: int = 0
    """resize every image (train and evaluation) once, at load, to this side in pixels (bilinear, antialiased),
    as the paper resizes ImageNet to 120 px; 0: the data's own side. 24 px gives Fashion-MNIST the patch sizes
    12, 8, 6, 4, 3 (4, 9, 16, 36, 64 tokens) instead of 28 px's 14, 7, 4, 2"""
    model: str = "V64-4"
    """model size V{width}-{depth} (flexivit.SIZES or any other); a schedule's first stage may set width/depth"""
    patch: int | None = None
    """fixed patch size; None: image side // 4 (7 for 28-pixel images)"""
    base_patch: int = 7
    """FlexiViT's underlying patch-embedding size, PI-resized to every patch (the paper, Table 1: 12)"""
    posemb_grid: int = 7
    """FlexiViT's underlying position-embedding grid, resized bilinearly (the paper, Table 1: 8)"""
    random: bool = False
    """FlexiViT baseline: draw the patch uniformly from --patch-sizes every step; evaluate at the smallest (Fig. 7)"""
    patch_sizes: tuple[int, ...] = ()
    """patch sizes for --random; empty: the divisors of the image side from 4 to half the side"""
    schedule: str | None = None
    """schedule.json (schedule.py): the stages' configs (patch, width, depth, batch_size, objective) in turn"""
    switch_on: Literal["flops", "error"] = "flops"
    """enter a stage at its flops_start (cumulative FLOPs), or once the measured fewshot10_error falls below the
    previous stage's error_end"""
    rewarm: int = 0
    """steps of linear learning-rate re-warm-up after the model grows (width or depth); 0: none"""
    grow_gamma: float = 1.0
    """variance factor of the new weights when the model grows (expand.py, App. C): N(0, gamma sigma^2);
    0: zero-init (Fig. 17); with --no-grow-preserve (depth: --grow-depth)"""
    grow_preserve: bool = True
    """grow the width exactly function preserving (expand.py preserve=True, by mean channels): the default, since
    it had the lowest error 1e12 FLOPs after a width growth over 3 seeds (results/growth-init);
    --no-grow-preserve: new entries N(0, gamma sigma^2) (--grow-gamma)"""
    grow_depth: Literal["copy", "identity"] = "copy"
    """how a deeper stage's new blocks start (expand.py expand_depth): copies of the block before them, or such
    copies with their output layers zeroed (identity: exactly function preserving). Copies did far better: 30.8%
    fewer FLOPs against never reaching the target, 3 seeds (results/depth-demo-3s, results/depth-demo-3s-preserve)"""
    head_dim: int | None = None
    """head size (kept fixed when the width grows); None: flexivit.build's (32 below width 128, else 64)"""
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    """how the LR follows a schedule stage's batch size B: --lr times 1, B / --batch-size, or its square root"""
    objective: Literal["supervised", "distill"] = "supervised"
    """training objective (of the schedule stages that name none): supervised, or distill from --teacher"""
    teacher: str | None = None
    """teacher checkpoint (a bigger model's ckpt.pt from train_vit.py) for the distill objective (Sec. 6.2)"""
    temperature: float = 2.0
    """distillation temperature T: loss T^2 KL(softmax(teacher/T) || softmax(student/T)) (App. B.6: T = 2)"""
    steps: int | None = None
    """training budget in steps (give exactly one of --steps, --flops)"""
    flops: float | None = None
    """training budget in cumulative FLOPs (6 x block MACs x examples)"""
    batch_size: int = 128
    """examples per step, over all processes under torchrun (a schedule stage may change it)"""
    lr: float = 1e-3
    """peak learning rate at --batch-size; constant after warm-up (App. A)"""
    warmup: int = 200
    """linear warm-up steps (the paper: 1000 on ImageNet-21k; a few-minute CPU run needs fewer)"""
    weight_decay: float = 0.01
    """AdamW weight decay of the matrices (biases, norms: none)"""
    label_smoothing: float = 0.2
    """label smoothing of the cross-entropy (Table 1)"""
    clip: float = 1.0
    """gradient-norm clip"""
    flip: bool = True
    """random horizontal flips (random crops are always on)"""
    evals: int = 20
    """evaluations log-spaced in compute from 1% of the budget to the end (plus one at the end)"""
    fewshot_data: str | None = None
    """a folder prepared by prepare_images.py whose train split is the k-shot support pool and whose val split the
    query set (the paper: train on ImageNet-21k, 10-shot on ImageNet-1k); None: --data-dir's own"""
    fewshot_support: int = 2000
    """fixed subset of the training set the k-shot examples are drawn from (>= 10 per class: ~5000 for CIFAR-100)"""
    fewshot_query: int = 10000
    """k-shot query images, a fixed subset of the --test-size test images (all of them if not fewer)"""
    fewshot_seeds: int = 50
    """draws of the k-shot examples averaged per evaluation (50: one evaluation's std ~0.002, bench_eval_noise)"""
    test_size: int = 10000
    """test images for test_error (all if fewer)"""
    train_size: int = 2000
    """fixed training subset (un-augmented) for train_error, the train/test gap (0: none)"""
    out_dir: str | None = None
    """run folder for log.jsonl and ckpt.pt; None: runs/<data>-<model>-<shape>"""
    seed: int = 0
    """seed of the initialisation, data order, augmentation and random patch sizes"""
    device: str = "auto"
    """cpu, cuda, cuda:1, ... (auto: cuda if available)"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast where bf16 matrix units exist (CUDA, AMX CPUs), else fp32 (runtime.py)"""
    compile: bool = False
    """torch.compile the model (recompiles once per patch size and after growth)"""
    threads: int | None = None
    """torch CPU threads; None: torch's choice"""
    ckpt_every: int = 0
    """also checkpoint every N steps (0: only at evaluations, every --ckpt-minutes and at the end)"""
    ckpt_minutes: float = 10.0
    """also checkpoint when this many minutes passed since the last checkpoint"""
    resume: bool = False
    """continue from --out-dir/ckpt.pt (a new run if none was written yet); the shape flags must match, the
    budget and optimiser flags may change"""
    progress: bool = True
    """tqdm progress bar on a terminal (--no-progress: none)"""
    stop_after_steps: int | None = None
    """(debug) quit after this global step as if killed: no final evaluation or checkpoint"""


# ----------------------------------------------------------------------------- the stages' shapes

SHAPE_KEYS = ("patch", "width", "depth", "batch_size", "objective")


def check_patch(patch, size, where):
    if patch not in flexivit.valid_patches(size):
        raise UserError(f"{where}: patch size {patch} does not divide the {size}-pixel image; "
                        f"valid patch sizes: {' '.join(map(str, flexivit.valid_patches(size)))}")


def plan_shapes(cfg, size, width, depth, head_dim, world=None):
    """Every stage's full shape, checked before training: (stages, random patch sizes or None, schedule or None).
    A stage inherits the previous stage's patch, width, depth and batch size; its objective is --objective's."""
    shape = dict(patch=cfg.patch or size // 4, width=width, depth=depth, batch_size=cfg.batch_size,
                 objective=cfg.objective)
    sched, configs, random = None, [{}], cfg.random
    if cfg.patch_sizes and not cfg.random:
        raise UserError("--patch-sizes is the set that --random draws from: add --random, or use --patch")
    if cfg.random and cfg.patch:
        raise UserError("--random draws the patch size at every step: drop --patch (use --patch-sizes)")
    if cfg.random:
        patches = sorted(cfg.patch_sizes or [p for p in flexivit.valid_patches(size) if 4 <= p <= size // 2] or [size])
        for p in patches:
            check_patch(p, size, "--patch-sizes")
        shape["patch"] = patches[0]
    if cfg.schedule:
        try:
            sched = schedule.Schedule.load(cfg.schedule)
        except schedule.ScheduleError as e:                       # schedule.py is copy-alone: its own error type
            raise UserError(f"--schedule {e}") from None
        configs, random = sched.configs, sched.random
        if cfg.patch or cfg.random or cfg.patch_sizes:
            raise UserError("--schedule sets the shape: drop --patch / --random / --patch-sizes")
    stages = []
    for i, c in enumerate(configs):
        where = f"stage {i} of {cfg.schedule}" if cfg.schedule else "--patch"
        if unknown := set(c) - set(SHAPE_KEYS):
            raise UserError(f"{where}: unknown config key(s) {sorted(unknown)}; "
                            f"train_vit.py changes {', '.join(SHAPE_KEYS)}")
        new = {**shape, "objective": cfg.objective, **c}
        if bad := [k for k in ("patch", "width", "depth", "batch_size") if type(new[k]) is not int or new[k] < 1]:
            raise UserError(f"{where}: {bad[0]} {new[bad[0]]!r} must be a positive integer")
        if i and (new["width"] < shape["width"] or new["depth"] < shape["depth"]):
            raise UserError(f"{where}: width/depth {new['width']}/{new['depth']} would shrink the model "
                            f"({shape['width']}/{shape['depth']}); a model can only grow")
        if new["width"] % head_dim:
            raise UserError(f"{where}: width {new['width']} is not a multiple of the head size {head_dim} "
                            "(kept fixed when growing)")
        if not isinstance(new["depth"], int) or new["depth"] < 1:
            raise UserError(f"{where}: depth must be a positive integer, got {new['depth']!r}")
        if not isinstance(new["batch_size"], int) or new["batch_size"] < 1:
            raise UserError(f"{where}: batch_size must be a positive integer, got {new['batch_size']!r}")
        check_objective(new["objective"], cfg.teacher, where if cfg.schedule else "--objective")
        (world or runtime.World()).shard(new["batch_size"], where if cfg.schedule else "--batch-size")
        check_patch(new["patch"], size, where)
        stages.append(shape := new)
    if not random:
        return stages, None, sched
    if sched:
        if len({json.dumps({**s, "patch": 0}, sort_keys=True) for s in stages}) > 1:
            raise UserError(f"random schedule {cfg.schedule}: its stages may differ in patch only")
        patches = sorted({s["patch"] for s in stages})
    return [{**stages[0], "patch": patches[0]}], patches, sched    # evaluated at the smallest patch (Fig. 7)


def schedule_hash(sched):
    if sched is None:
        return None
    stages = [dataclasses.asdict(s) if dataclasses.is_dataclass(s) else dict(vars(s)) for s in sched.stages]
    return hashlib.sha256(json.dumps([sched.kind, stages], sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_in_force(sched, current, flops, error, switch_on):
    """Index of the stage to train in now (never an earlier one: a grown model cannot shrink)."""
    if sched is None or sched.random or (switch_on == "error" and error is None):
        return current
    s = sched.stage_at(flops=flops) if switch_on == "flops" else sched.stage_at(error=error)
    return max(current, s.index)


def log_config(shape, patches, distilling):
    """The shape in force, as a record's "config" (the objective only in runs that distill); a random run logs
    its evaluation patch and the sampled set."""
    c = {k: shape[k] for k in ("patch", "width", "depth", "batch_size")}
    c = {**c, "objective": shape["objective"]} if distilling else c
    return {**c, "random": patches} if patches else c


# ----------------------------------------------------------------------------- distillation (Sec. 6.2)

OBJECTIVES = ("supervised", "distill")


@dataclass
class Teacher:
    model: torch.nn.Module
    patch: int
    path: str
    step: int = 0
    """the teacher's training step (its checkpoint's state)"""

    @property
    def macs(self):
        """Multiply-accumulates of one forward pass of one example (blocks only, as the student's)."""
        return self.model.macs(self.patch)

    @property
    def fingerprint(self):
        """What a resume checks: the same teacher (shape, patch, training step)."""
        return {"model_args": self.model.model_args(), "patch": self.patch, "step": self.step}

    @torch.no_grad()
    def logits(self, x):
        return self.model(x, self.patch)


def check_objective(objective, teacher_path, where):
    """Before training: a known objective, and a teacher for 'distill'."""
    if objective not in OBJECTIVES:
        raise UserError(f"{where}: objective {objective!r} is not implemented (train_vit.py trains "
                           f"{' or '.join(map(repr, OBJECTIVES))})")
    if objective == "distill" and not teacher_path:
        raise UserError(f"{where}: objective 'distill' needs a teacher: pass --teacher runs/<teacher>/ckpt.pt")


def load_teacher(path, image_size, in_chans, num_classes, device):
    """A frozen teacher from a train_vit.py checkpoint, checked against the student's data."""
    if not os.path.isfile(path):
        raise UserError(f"--teacher: no checkpoint at {path}; train one first "
                           "(train_vit.py --model V128-6 --patch 7 --out-dir runs/teacher) and pass its ckpt.pt")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise UserError(f"--teacher: cannot read {path} ({type(e).__name__}); pass a train_vit.py ckpt.pt") from None
    if not isinstance(ck, dict) or not {"model_args", "model", "patch"} <= set(ck):
        raise UserError(f"--teacher: {path} is not a train_vit.py checkpoint (needs model_args, model, patch)")
    a = ck["model_args"]
    have = (a.get("image_size"), a.get("in_chans"), a.get("num_classes"))
    if have != (image_size, in_chans, num_classes):
        raise UserError(f"--teacher: {path} was trained on {have[0]}-pixel images with {have[1]} channel(s) and "
                           f"{have[2]} classes, the data here have {image_size}, {in_chans} and {num_classes}; "
                           "train the teacher on the same data")
    model = flexivit.FlexiViT(**a)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise UserError(f"--teacher: {path}: weights do not fit model_args ({str(e).splitlines()[0]})") from None
    model.to(device).eval().requires_grad_(False)
    return Teacher(model, int(ck["patch"]), str(path), int(ck.get("state", {}).get("step", 0)))


def hinton_loss(student_logits, teacher_logits, temperature=2.0):
    """T^2 * KL(softmax(t/T) || softmax(s/T)), mean over the batch (Hinton et al. 2015; the T^2 keeps the
    gradient's scale independent of T)."""
    T = temperature
    s = F.log_softmax(student_logits.float() / T, dim=-1)
    t = F.log_softmax(teacher_logits.float() / T, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * (T * T)


def train_loss(objective, logits, x, y, teacher=None, temperature=2.0, label_smoothing=0.2):
    """A stage's training objective on the student's `logits` for images `x`, labels `y`: 'supervised',
    label-smoothed cross-entropy (Table 1); 'distill', only the Hinton loss to the teacher's logits on the same
    images (App. B.6): one teacher forward per example."""
    if objective == "distill":
        return hinton_loss(logits, teacher.logits(x), temperature)
    return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)


def step_flops(student_macs, batch_size, objective, teacher=None):
    """Training FLOPs of one step: 6 x student MACs per example (forward + backward), plus 2 x teacher MACs
    (a forward only, Sec. 6.2) when distilling."""
    if objective == "distill":
        return (6.0 * student_macs + 2.0 * teacher.macs) * batch_size
    return 6.0 * student_macs * batch_size


# ----------------------------------------------------------------------------- training

def make_optimizer(model, cfg, device, old=None):
    """AdamW over the model's parameters in model order; decay on matrices only. `old`: carry its state over."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), fused=True)   # fused: CUDA and CPU kernels
    if old is not None:
        for p in params:
            if p in old.state:
                opt.state[p] = old.state[p]
    return opt


def grow(model, opt, shape, cfg, device, step):
    """Grow width, then depth, to `shape` (expand.py, App. C); returns an optimizer with the state carried over."""
    torch.manual_seed(key_seed("grow", cfg.seed, step))   # new weights reproducible on resume
    g, keep = cfg.grow_gamma, cfg.grow_preserve               # --grow-gamma / --grow-preserve (Fig. 17), width
    if shape["width"] > model.width:
        expand.expand_optimizer(opt, expand.expand_width(model, shape["width"], gamma=g, preserve=keep))
    if shape["depth"] > model.depth:
        identity = cfg.grow_depth == "identity"                 # --grow-depth: copies, or copies made no-ops
        expand.expand_optimizer(opt, expand.expand_depth(model, shape["depth"], preserve=identity))
    return make_optimizer(model, cfg, device, old=opt)


def learning_rate(cfg, step, batch_size, rewarm_from):
    """Linear warm-up to --lr, scaled by the stage's batch size (--lr-scaling), re-warmed after growth."""
    lr = cfg.lr * runtime.lr_scale(cfg.lr_scaling, batch_size / cfg.batch_size) * runtime.warmup_factor(step, cfg.warmup)
    if cfg.rewarm and rewarm_from is not None:
        lr *= min(1.0, (step - rewarm_from + 1) / cfg.rewarm)
    return lr


def evaluate(model, patch, ev, cfg, amp):
    """At `patch`, from one feature pass per image set (eval_fewshot.evaluate_all): fewshot10_error, the paper's
    E (10-shot ridge on frozen features, mean over --fewshot-seeds draws), its spread and standard error,
    test_error (top-1) and train_error (top-1 on a fixed training subset: the train/test gap)."""
    return eval_fewshot.evaluate_all(model, patch, ev, shots=(10,), draws=cfg.fewshot_seeds, amp=amp)


@dataclass
class State:
    """What a checkpoint carries besides weights and optimiser: the run's position and running sums."""
    step: int = 0                  # optimiser steps
    samples: int = 0               # examples drawn = the data position
    flops: float = 0.0             # cumulative training FLOPs (Sec. 3: 6 x block MACs per example)
    wall: float = 0.0              # training seconds, evaluation excluded
    stage: int = 0                 # schedule stage in force
    rewarm_from: int | None = None  # step of the last growth (--rewarm)
    error: float | None = None     # last measured fewshot10_error (--switch-on error)
    loss_sum: float = 0.0
    loss_count: int = 0
    world_size: int = 1


def check_flags(cfg):
    """Numeric flags in range, before any work (the shape flags are checked by plan_shapes)."""
    runtime.check_budget(cfg.steps, cfg.flops)
    for name, ok in (("batch_size", cfg.batch_size > 0), ("lr", cfg.lr > 0), ("warmup", cfg.warmup >= 0),
                     ("weight_decay", cfg.weight_decay >= 0), ("label_smoothing", 0 <= cfg.label_smoothing < 1),
                     ("clip", cfg.clip > 0), ("evals", 0 <= cfg.evals <= 10_000), ("fewshot_seeds", cfg.fewshot_seeds > 0),
                     ("fewshot_support", cfg.fewshot_support > 0), ("fewshot_query", cfg.fewshot_query > 0),
                     ("test_size", cfg.test_size > 0), ("train_size", cfg.train_size >= 0), ("rewarm", cfg.rewarm >= 0), ("temperature", cfg.temperature > 0),
                     ("grow_gamma", math.isfinite(cfg.grow_gamma) and cfg.grow_gamma >= 0),
                     ("head_dim", cfg.head_dim is None or cfg.head_dim > 0), ("image_size", 0 <= cfg.image_size <= 4096),
                     ("threads", cfg.threads is None or cfg.threads > 0), ("ckpt_every", cfg.ckpt_every >= 0),
                     ("ckpt_minutes", cfg.ckpt_minutes > 0), ("patch", cfg.patch is None or cfg.patch > 0),
                     ("stop_after_steps", cfg.stop_after_steps is None or cfg.stop_after_steps > 0),
                     ("base_patch", cfg.base_patch > 0), ("posemb_grid", cfg.posemb_grid > 0)):
        if not ok:
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)} is out of range")


def fewshot_sets(cfg, train_x):
    """--fewshot-data's (support images, labels, query images, labels), checked against the training images; None
    without it (the k-shot sets then come from --data-dir)."""
    if cfg.fewshot_data is None:
        return None
    if not is_prepared(cfg.fewshot_data):
        raise UserError(f"--fewshot-data {cfg.fewshot_data}: not a folder prepared by prepare_images.py (no train.json)")
    sets = load_prepared(cfg.fewshot_data)
    if sets[0].shape[1:] != train_x.shape[1:]:
        raise UserError(f"--fewshot-data {cfg.fewshot_data}: images {tuple(sets[0].shape[1:])} (C, H, W), the "
                        f"training images {tuple(train_x.shape[1:])}; prepare both at the same --resolution")
    return sets


def load_checkpoint(path):
    """A train_vit.py checkpoint, or a one-line error naming the file."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:   # truncated, foreign or corrupt: torch raises many kinds
        raise UserError(f"{path} is not a readable checkpoint ({type(e).__name__}); delete it to start afresh") from None
    if not isinstance(ck, dict) or not {"model_args", "model", "optimizer", "state", "config"} <= set(ck):
        raise UserError(f"{path} is not a train_vit.py checkpoint; use another --out-dir")
    return ck


class Run:
    """One training run, set up: device, precision, data, the planned shapes, the output folder."""

    def __init__(self, cfg):
        self.cfg, self.world = cfg, runtime.World.from_env()
        check_flags(cfg)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.budget, self.unit = runtime.check_budget(cfg.steps, cfg.flops)
        self.device = runtime.resolve_device(cfg.device, self.world)
        self.precision = runtime.resolve_precision(cfg.precision, self.device)
        self.amp = runtime.autocast(self.device, self.precision)
        self.train_x, self.train_y, test_x, test_y = load_dataset(cfg.data_dir, cfg.dataset)
        if cfg.image_size and not isinstance(self.train_x, torch.Tensor):   # memory-mapped: never loaded whole
            raise UserError(f"--image-size {cfg.image_size}: {cfg.data_dir} is prepared at a fixed resolution; "
                            f"prepare it at the side you want (prepare_images.py --resolution {cfg.image_size})")
        if cfg.image_size:
            self.train_x, test_x = resize_images(self.train_x, cfg.image_size), resize_images(test_x, cfg.image_size)
        self.chans, self.size = self.train_x.shape[1], self.train_x.shape[2]
        self.num_classes = int(max(self.train_y.max(), test_y.max())) + 1
        torch.manual_seed(cfg.seed)
        try:
            self.template = flexivit.build(cfg.model, image_size=self.size, in_chans=self.chans,
                                           num_classes=self.num_classes, base_patch=cfg.base_patch,
                                           posemb_grid=cfg.posemb_grid)
        except ValueError as e:                          # a bad --model: flexivit.py is torch-only, no UserError
            raise UserError(f"--model: {e}") from None
        if cfg.head_dim and cfg.head_dim != self.template.head_dim:     # --head-dim: the same model, other heads
            if self.template.width % cfg.head_dim:
                raise UserError(f"--head-dim {cfg.head_dim}: the width {self.template.width} of --model "
                                f"{cfg.model} is not a multiple of it")
            self.template = flexivit.FlexiViT(**{**self.template.model_args(),
                                                 "heads": self.template.width // cfg.head_dim})
        self.stages, self.patches, self.sched = plan_shapes(cfg, self.size, self.template.width, self.template.depth,
                                                            self.template.head_dim, self.world)
        self.distilling = any(s["objective"] == "distill" for s in self.stages)
        self.teacher = load_teacher(cfg.teacher, self.size, self.chans, self.num_classes,
                                            self.device) if self.distilling else None
        self.out = runtime.check_out_dir(cfg.out_dir or f"runs/{self.default_name()}")
        self.ckpts, self.log = runtime.Checkpoints(self.out / "ckpt.pt", self.world.main), runtime.RunLog(
            self.out / "log.jsonl")
        self.shash = schedule_hash(self.sched)
        self.streamed = isinstance(self.train_x, Images)    # a prepared file: streamed data order
        self.ev = eval_images(self.train_x, self.train_y, test_x, test_y, cfg.fewshot_support, cfg.fewshot_query,
                              cfg.test_size, cfg.train_size, self.device, fewshot_sets(cfg, self.train_x))
        self.data_sizes = {"train": len(self.train_x), "test": len(test_x), "image_size": self.size}
        self.state, self.saved_at = State(world_size=self.world.size), time.time()

    def default_name(self):
        cfg, s0 = self.cfg, self.stages[0]
        shape = (f"sched-{Path(cfg.schedule).stem}" if cfg.schedule else "random" if self.patches
                 else f"p{s0['patch']}") + ("-distill" if cfg.objective == "distill" else "") + (
                     f"-bs{cfg.batch_size}" if cfg.batch_size != 128 else "")
        return f"{Path(cfg.data_dir).stem}-{cfg.model}-{shape}" + (f"-s{cfg.seed}" if cfg.seed else "")

    def progress(self):
        return self.state.step if self.unit == "steps" else self.state.flops

    def restore(self):
        """The model: from ckpt.pt (--resume), or new at the first stage's width and depth. A folder holding a
        checkpoint needs --resume; --resume without one starts afresh (a run killed before its first checkpoint
        is started again by the same command)."""
        cfg, path, t = self.cfg, self.ckpts.path, self.template
        if path.exists() and not cfg.resume:
            raise UserError(f"{self.out} holds a run already: pass --resume to continue it, or another --out-dir")
        if not path.exists():
            if cfg.resume and self.world.main:
                print(f"train_vit.py: no checkpoint in {self.out} yet; starting the run afresh", file=sys.stderr)
            w0, d0 = self.stages[0]["width"], self.stages[0]["depth"]
            self.model = t if (w0, d0) == (t.width, t.depth) else flexivit.FlexiViT(
                **{**t.model_args(), "width": w0, "depth": d0, "heads": w0 // t.head_dim})
            self.ck = None
            return False
        ck = self.ck = load_checkpoint(path)
        saved = {k: ck["config"].get(k, getattr(Config, k)) for k in RESUME_KEYS}  # older ckpts: the default
        runtime.check_resume(saved, {k: getattr(cfg, k) for k in RESUME_KEYS}, path)
        if ck["schedule_hash"] != self.shash:
            raise UserError(f"--resume: {path} was trained with another schedule; use the same one or another --out-dir")
        if ck.get("teacher") != (self.teacher and self.teacher.fingerprint):
            raise UserError(f"--resume: {path} was distilled from another --teacher; use the same one or another --out-dir")
        self.world.check_resume(ck["state"].get("world_size", 1), path)
        self.model = flexivit.FlexiViT(**ck["model_args"])
        self.model.load_state_dict(ck["model"])
        self.state = State(**{**dataclasses.asdict(State()), **ck["state"]})
        self.ckpts.step = self.state.step
        torch.set_rng_state(ck["rng"]["torch"])
        return True

    def start(self):
        """Model to the device, optimiser (state restored: the flags' weight decay wins), log header."""
        del self.template
        self.world.init(self.device)                    # every check that may fail is behind us
        self.model.to(self.device).train()
        self.opt = make_optimizer(self.model, self.cfg, self.device)
        if self.ck is not None:
            self.opt.load_state_dict(self.ck["optimizer"])
            for g, decay in zip(self.opt.param_groups, (self.cfg.weight_decay, 0.0)):
                g["weight_decay"] = decay
        if self.world.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log.start(self.header(), self.state.step if self.ck is not None else None)
            was = self.ck and self.ck.get("precision", "fp32")
            if was and was != self.precision:            # the log records a precision change
                self.log.append({"type": "note", "step": self.state.step, "precision": self.precision, "was": was})
        self.ck = None
        self.train_x, self.train_y = self.train_x.to(self.device), self.train_y.to(self.device)

    def header(self):
        t, m = self.teacher, self.model
        return {"version": 1, "type": "header", "run": self.out.name, "config": dataclasses.asdict(self.cfg),
                "metrics": ["fewshot10_error", "test_error"], "schedule_kind": self.sched.kind if self.sched else None,
                "model_args": m.model_args(), "world_size": self.world.size, "precision": self.precision,
                "teacher": t and {**t.fingerprint, "path": t.path, "macs": t.macs}, "data": self.data_sizes}

    def save(self, shape):
        """ckpt.pt, atomically, by rank 0 (every rank knows the step)."""
        runtime.check_finite_weights(self.model, self.state.step, self.ckpts)   # never a poisoned checkpoint
        self.saved_at = time.time()
        ck = {"version": 1, "kind": "train_vit", "model_args": self.model.model_args(), "model": self.model.state_dict(),
              "optimizer": self.opt.state_dict(), "state": dataclasses.asdict(self.state), "patch": shape["patch"],
              "config": dataclasses.asdict(self.cfg), "schedule_hash": self.shash, "precision": self.precision,
              "teacher": self.teacher and self.teacher.fingerprint, "rng": {"torch": torch.get_rng_state()},
              "data": {"samples": self.state.samples, "seed": self.cfg.seed}} if self.world.main else None
        self.ckpts.save(ck, self.state.step)


# ----------------------------------------------------------------------------- the loop's parts

def wrap(run):
    """The model the training step calls: DDP under torchrun, compiled with --compile; again after growth."""
    fwd = run.world.wrap(run.model, run.device)
    return torch.compile(fwd, dynamic=False) if run.cfg.compile else fwd


def enter_stage(run, k):
    """Switch to stage k (Eq. 2's switch point, from schedule.py): a new patch is free (FlexiViT resizes its
    embeddings); a wider or deeper model is grown (expand.py, App. C) with its AdamW moments carried over."""
    shape, run.state.stage = run.stages[k], k
    if (shape["width"], shape["depth"]) != (run.model.width, run.model.depth):
        run.opt = grow(run.model, run.opt, shape, run.cfg, run.device, run.state.step)
        run.state.rewarm_from = run.state.step
        return shape, True
    return shape, False


def train_step(run, fwd, shape, patch):
    """One optimiser step on the global batch (this process's rows); returns the loss. Diverged: one line."""
    cfg, state = run.cfg, run.state
    bs = shape["batch_size"]
    lo, hi = run.world.shard(bs)                            # this process's rows of the global batch
    idx = batch_indices(len(run.train_x), state.samples, bs, cfg.seed, run.streamed)[lo:hi].to(run.device)
    x = run.train_x[idx].to(run.device, non_blocking=True)   # a prepared file: only these rows are read
    x = normalize(augment(x, generator("augment", cfg.seed, state.step), cfg.flip, rows=(lo, bs)))
    with run.amp:
        loss = train_loss(shape["objective"], fwd(x, patch), x, run.train_y[idx].to(run.device), run.teacher,
                                  cfg.temperature, cfg.label_smoothing)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()                                         # DDP: gradients averaged over the processes
    gnorm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip)
    loss_v, gnorm_v = run.world.mean(torch.stack([loss.detach().float(), gnorm.float()])).tolist()
    runtime.check_finite(state.step + 1, run.ckpts, loss=loss_v, gradient_norm=gnorm_v)
    lr = learning_rate(cfg, state.step, bs, state.rewarm_from)
    for g in run.opt.param_groups:
        g["lr"] = lr
    run.opt.step()
    return loss_v, lr


def evaluate_and_log(run, shape, lr):
    """Rank 0: the paper's E (10-shot error) and the test error at the stage's patch; one log record."""
    state = run.state
    metrics = evaluate(run.model, shape["patch"], run.ev, run.cfg, run.amp)
    runtime.check_finite(state.step, run.ckpts, **metrics)   # a NaN evaluation is divergence too: no checkpoint
    rec = {"type": "eval", "step": state.step, "samples": state.samples, "flops": state.flops,
           "config": log_config(shape, run.patches, run.distilling), "train_loss": state.loss_sum / state.loss_count,
           **metrics, "wall": state.wall, "lr": lr, "stage": state.stage}
    run.log.append(rec)
    tqdm.write(f"step {rec['step']} flops {rec['flops']:.3g} patch {shape['patch']} loss {rec['train_loss']:.4f} "
               f"fewshot10 {rec['fewshot10_error']:.4f} test {rec['test_error']:.4f} wall {rec['wall']:.1f}s")
    return metrics["fewshot10_error"]


# ----------------------------------------------------------------------------- main

def main(cfg):
    # Set up: flags, device, precision, data, the shape of every stage, the output folder.
    run = Run(cfg)
    run.restore()                                        # from ckpt.pt, or a new model
    run.start()
    say = print if run.world.main else (lambda *a, **k: None)
    state, model = run.state, run.model
    say(f"{run.out}: {model.width}x{model.depth} FlexiViT, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
        f"parameters, {run.data_sizes['train']} training images {run.chans}x{run.size}x{run.size}, "
        f"{run.num_classes} classes, {run.device}, {run.precision}"
        + (f" x {run.world.size} processes" if run.world.size > 1 else ""))
    points = runtime.eval_points(run.budget, cfg.evals, integer=run.unit == "steps")
    if run.unit == "flops":                       # and 3 inside each later stage of a schedule
        points = sorted({*points, *runtime.stage_eval_points(run.sched, run.budget, cfg.switch_on)})
    due = next((p for p in points if p > run.progress()), math.inf)
    fwd, shape = wrap(run), run.stages[state.stage]
    bar = tqdm(total=run.budget, initial=run.progress(), disable=None if cfg.progress and run.world.main else True,
               dynamic_ncols=True, unit="step" if run.unit == "steps" else "FLOP", unit_scale=run.unit == "flops")
    if run.progress() >= run.budget:
        say(f"{run.out}: budget reached already ({run.progress():.4g}); nothing to do")
    while run.progress() < run.budget:
        tick = time.perf_counter()
        # Which shape now: the schedule's stage by FLOPs or by measured error (Eq. 2); growth if it is bigger.
        k = stage_in_force(run.sched, state.stage, state.flops, state.error, cfg.switch_on)
        if k != state.stage:
            shape, grown = enter_stage(run, k)
            fwd = wrap(run) if grown else fwd
        patch = shape["patch"] if not run.patches else run.patches[torch.randint(
            len(run.patches), (1,), generator=generator("patch", cfg.seed, state.step)).item()]   # FlexiViT draw
        # One step, then the compute it cost: 6 x block MACs x examples (Sec. 3), + the teacher's forward.
        loss, lr = train_step(run, fwd, shape, patch)
        before, bs = run.progress(), shape["batch_size"]
        state.flops += step_flops(model.macs(patch), bs, shape["objective"], run.teacher)
        state.step, state.samples = state.step + 1, state.samples + bs
        state.loss_sum, state.loss_count = state.loss_sum + loss, state.loss_count + 1
        state.wall += time.perf_counter() - tick
        bar.update(run.progress() - before)
        if state.step % 25 == 0:
            bar.set_postfix(loss=f"{loss:.3f}", err=f"{state.error or 1:.3f}", flops=f"{state.flops:.2e}")
        # Evaluate at the log-spaced points (rank 0; the others wait in the broadcast) and checkpoint.
        if run.progress() >= due:
            if run.world.main:
                state.error = evaluate_and_log(run, shape, lr)
            state.loss_sum, state.loss_count = 0.0, 0
            run.save(shape)
            state.error = run.world.broadcast(state.error)
            due = next((p for p in points if p > run.progress()), math.inf)
        elif (cfg.ckpt_every and state.step % cfg.ckpt_every == 0) or time.time() - run.saved_at > 60 * cfg.ckpt_minutes:
            run.save(shape)
        if cfg.stop_after_steps is not None and state.step >= cfg.stop_after_steps:
            bar.close()
            say(f"stopped after step {state.step} (--stop-after-steps)")
            return
    bar.close()
    say(f"{run.out}: {state.step} steps, {state.flops:.3g} FLOPs, {state.wall:.1f}s training; log {run.log.path}")


def cli(args=None):
    """Parse the flags and train; bad input is one line on stderr (rank 0's, under torchrun) and exit code 2."""
    return runtime.run_cli(main, Config, "train_vit.py", args, moved=runtime.moved_to_lab("train_vit.py"))


if __name__ == "__main__":
    sys.exit(cli())
