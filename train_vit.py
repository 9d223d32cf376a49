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
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

import dist
import distill
import eval_fewshot
import expand
import flexivit
from data import UserError, augment, batch_indices, eval_sets, generator, key_seed, load_dataset, normalize

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
SHAPE_KEYS = ("patch", "width", "depth", "batch_size", "objective")
RESUME_KEYS = ("dataset", "model", "patch", "random", "patch_sizes", "batch_size", "seed", "flip", "switch_on",
               "objective", "temperature")


@dataclass
class Config:
    """Train a FlexiViT at a fixed, random (FlexiViT) or scheduled shape; log compute and error (paper Sec. 3, 4, 6)."""
    data_dir: str = DEFAULT_DATA
    """Fashion-MNIST IDX files (gz or not), CIFAR-10/100 python batches, or an .npz file"""
    dataset: Literal["auto", "idx", "cifar", "npz"] = "auto"
    """format of --data-dir (auto: detected from the files)"""
    model: str = "V64-4"
    """model size V{width}-{depth} (flexivit.SIZES or any other); a schedule's first stage may set width/depth"""
    patch: int | None = None
    """fixed patch size; None: image side // 4 (7 for 28-pixel images)"""
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
    fewshot_support: int = 2000
    """fixed subset of the training set the k-shot examples are drawn from (>= 10 per class: ~5000 for CIFAR-100)"""
    fewshot_query: int = 2000
    """fixed subset of the test set on which the k-shot error is measured"""
    fewshot_seeds: int = 3
    """draws of the k-shot examples averaged per evaluation"""
    test_size: int = 10000
    """test images for test_error (all if fewer)"""
    out_dir: str | None = None
    """run folder for log.jsonl and ckpt.pt; None: runs/<data>-<model>-<shape>"""
    seed: int = 0
    """seed of the initialisation, data order, augmentation and random patch sizes"""
    device: str = "auto"
    """cpu, cuda, cuda:1, ... (auto: cuda if available; cuda trains in bfloat16 autocast)"""
    compile: bool = False
    """torch.compile the model (recompiles once per patch size and after growth)"""
    threads: int | None = None
    """torch CPU threads; None: torch's choice"""
    ckpt_every: int = 0
    """also checkpoint every N steps (0: only at evaluations and the end)"""
    resume: bool = False
    """continue from --out-dir/ckpt.pt; the shape flags must match, the budget and optimiser flags may change"""
    progress: bool = True
    """tqdm progress bar on a terminal (--no-progress: none)"""
    stop_after_steps: int | None = None
    """(debug) quit after this global step as if killed: no final evaluation or checkpoint"""


# ----------------------------------------------------------------------------- shapes

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
        import schedule                                             # numpy/scipy only; needed for --schedule
        sched = schedule.Schedule.load(cfg.schedule)
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
        distill.check_objective(new["objective"], cfg.teacher, where if cfg.schedule else "--objective")
        (world or dist.World()).shard(new["batch_size"], where if cfg.schedule else "--batch-size")
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


# ----------------------------------------------------------------------------- training

def make_optimizer(model, cfg, device, old=None):
    """AdamW over the model's parameters in model order; decay on matrices only. `old`: carry its state over."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), fused=device.type == "cuda")
    if old is not None:
        for p in params:
            if p in old.state:
                opt.state[p] = old.state[p]
    return opt


def grow(model, opt, shape, cfg, device, step):
    """Grow width, then depth, to `shape` (expand.py, App. C); returns an optimizer with the state carried over."""
    torch.manual_seed(key_seed("grow", cfg.seed, step))   # new weights reproducible on resume
    if shape["width"] > model.width:
        expand.expand_optimizer(opt, expand.expand_width(model, shape["width"]))
    if shape["depth"] > model.depth:
        expand.expand_optimizer(opt, expand.expand_depth(model, shape["depth"]))
    return make_optimizer(model, cfg, device, old=opt)


def learning_rate(cfg, step, batch_size, rewarm_from):
    scale = {"none": 1.0, "linear": batch_size / cfg.batch_size, "sqrt": math.sqrt(batch_size / cfg.batch_size)}
    lr = cfg.lr * scale[cfg.lr_scaling] * min(1.0, (step + 1) / max(cfg.warmup, 1))
    if cfg.rewarm and rewarm_from is not None:
        lr *= min(1.0, (step - rewarm_from + 1) / cfg.rewarm)
    return lr


@torch.no_grad()
def evaluate(model, patch, ev, cfg, amp):
    """fewshot10_error (k-shot ridge on frozen features, eval_fewshot) and test_error (top-1) at `patch`."""
    model.eval()
    with amp:
        out = eval_fewshot.evaluate(model, patch, *ev["fewshot"], shots=ev["shots"],
                                    seeds=tuple(range(cfg.fewshot_seeds)))
        x, y = ev["test"]
        wrong = sum((model(normalize(x[i:i + 500]), patch).argmax(1) != y[i:i + 500]).sum().item()
                    for i in range(0, len(x), 500))
    model.train()
    return {**{k: float(v) for k, v in out.items()}, "test_error": wrong / len(x)}


def start_log(path, header, resume_step):
    """log.jsonl: a header line, then one record per evaluation; a resume keeps the records up to its checkpoint
    (those after it, written before a kill, are made again) and drops a line cut short."""
    lines = [json.dumps(header)]
    if resume_step is not None and path.exists():
        old = []
        for line in path.read_text().splitlines():
            try:
                old.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        lines = [json.dumps(r) for r in old if r.get("type") != "eval" or r["step"] <= resume_step] or lines
    atomic_write(path, lambda p: Path(p).write_text("\n".join(lines) + "\n"))


def atomic_write(path, write):
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)


def main(cfg):
    world = dist.World.from_env()
    say = print if world.main else (lambda *a, **k: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if (cfg.steps is None) == (cfg.flops is None):
        raise UserError("give the budget as exactly one of --steps N or --flops F")
    try:
        device = world.device(cfg.device)
    except RuntimeError:
        raise UserError(f"--device {cfg.device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: this torch has no CUDA device; use --device cpu")
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    train_x, train_y, test_x, test_y = load_dataset(cfg.data_dir, cfg.dataset)
    chans, size = train_x.shape[1], train_x.shape[2]
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    torch.manual_seed(cfg.seed)
    template = flexivit.build(cfg.model, image_size=size, in_chans=chans, num_classes=num_classes)
    stages, patches, sched = plan_shapes(cfg, size, template.width, template.depth, template.head_dim, world)
    distilling = any(s["objective"] == "distill" for s in stages)
    teacher = distill.load_teacher(cfg.teacher, size, chans, num_classes, device) if distilling else None
    if cfg.teacher and not distilling:
        say(f"note: --teacher {cfg.teacher} is not used (no stage has the objective 'distill')")
    shape_name = (f"sched-{Path(cfg.schedule).stem}" if cfg.schedule else "random" if patches
                  else f"p{stages[0]['patch']}") + ("-distill" if cfg.objective == "distill" else "") + (
                      f"-bs{cfg.batch_size}" if cfg.batch_size != 128 else "")
    name = f"{Path(cfg.data_dir).stem}-{cfg.model}-{shape_name}" + (f"-s{cfg.seed}" if cfg.seed else "")
    out = Path(cfg.out_dir or f"runs/{name}")
    ckpt_path, log_path = out / "ckpt.pt", out / "log.jsonl"
    shash = schedule_hash(sched)
    ev = eval_sets(train_x, train_y, test_x, test_y, cfg.fewshot_support, cfg.fewshot_query, cfg.test_size, device)
    if cfg.resume:
        if not ckpt_path.exists():
            raise UserError(f"--resume: no checkpoint {ckpt_path}; start the run without --resume")
        ck = torch.load(ckpt_path, map_location="cpu")
        for k in RESUME_KEYS:                           # a key older checkpoints lack had its default
            if (was := ck["config"].get(k, getattr(Config, k))) != dataclasses.asdict(cfg)[k]:
                raise UserError(f"--resume: --{k.replace('_', '-')} is {dataclasses.asdict(cfg)[k]!r} but {ckpt_path} "
                                f"was trained with {was!r}; use the same value or another --out-dir")
        if ck["schedule_hash"] != shash:
            raise UserError(f"--resume: {ckpt_path} was trained with another schedule; "
                            "use the same one or another --out-dir")
        if ck.get("teacher") != (teacher and teacher.fingerprint):
            raise UserError(f"--resume: {ckpt_path} was distilled from another --teacher; "
                            "use the same one or another --out-dir")
        world.check_resume(ck["state"].get("world_size", 1), ckpt_path)
        model = flexivit.FlexiViT(**ck["model_args"])
        model.load_state_dict(ck["model"])
        state = ck["state"]
        torch.set_rng_state(ck["rng"]["torch"])
    else:
        if ckpt_path.exists():
            raise UserError(f"{out} holds a run already: pass --resume to continue it, or another --out-dir")
        w0, d0 = stages[0]["width"], stages[0]["depth"]
        model = template if (w0, d0) == (template.width, template.depth) else flexivit.FlexiViT(
            **{**template.model_args(), "width": w0, "depth": d0, "heads": w0 // template.head_dim})
        state = dict(step=0, samples=0, flops=0.0, wall=0.0, stage=0, rewarm_from=None, error=None,
                     loss_sum=0.0, loss_count=0, world_size=world.size)
    del template
    world.init(device)                                  # every check that may fail is behind us
    model.to(device).train()
    opt = make_optimizer(model, cfg, device)
    if cfg.resume:
        opt.load_state_dict(ck["optimizer"])
        for g, decay in zip(opt.param_groups, (cfg.weight_decay, 0.0)):   # the flags win over the checkpoint's
            g["weight_decay"] = decay
    saved_step = state["step"] if cfg.resume else None
    wrap = lambda: (torch.compile(world.wrap(model, device), dynamic=False) if cfg.compile  # noqa: E731
                    else world.wrap(model, device))     # DDP under torchrun; again after the model grows
    fwd = wrap()

    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        header = {"version": 1, "type": "header", "run": out.name, "config": dataclasses.asdict(cfg),
                  "metrics": ["fewshot10_error", "test_error"], "schedule_kind": sched.kind if sched else None,
                  "model_args": model.model_args(), "world_size": world.size,
                  "teacher": teacher and {**teacher.fingerprint, "path": teacher.path, "macs": teacher.macs},
                  "data": {"train": len(train_x), "test": len(test_x), "image_size": size}}
        start_log(log_path, header, state["step"] if cfg.resume else None)
    say(f"{out}: {model.width}x{model.depth} FlexiViT, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
        f"parameters, {len(train_x)} training images {chans}x{size}x{size}, {num_classes} classes, {device}"
        + (f" x {world.size} processes" if world.size > 1 else ""))
    train_x, train_y = train_x.to(device), train_y.to(device)

    budget = float(cfg.steps if cfg.steps is not None else cfg.flops)
    points = np.unique(np.geomspace(0.01 * budget, budget, max(cfg.evals, 0)).round(6).tolist() + [budget])
    points = np.ceil(points) if cfg.steps is not None else points
    progress = lambda: state["step"] if cfg.steps is not None else state["flops"]   # noqa: E731
    next_point = lambda: next((p for p in points if p > progress()), math.inf)      # noqa: E731
    due = next_point()

    def checkpoint():                                   # rank 0 writes; every rank knows the step
        if world.main:
            ck = {"version": 1, "model_args": model.model_args(), "model": model.state_dict(),
                  "optimizer": opt.state_dict(), "state": dict(state), "patch": shape["patch"],
                  "config": dataclasses.asdict(cfg), "schedule_hash": shash, "teacher": teacher and teacher.fingerprint,
                  "rng": {"torch": torch.get_rng_state()}, "data": {"samples": state["samples"], "seed": cfg.seed}}
            atomic_write(ckpt_path, lambda p: torch.save(ck, p))
        return state["step"]

    shape = stages[state["stage"]]
    bar = tqdm(total=cfg.steps or cfg.flops, initial=progress(), disable=None if cfg.progress and world.main else True,
               dynamic_ncols=True, unit="step" if cfg.steps is not None else "FLOP", unit_scale=cfg.steps is None)
    if progress() >= budget:
        say(f"{out}: budget reached already ({progress():.4g}); nothing to do")
    while progress() < budget:
        tick = time.perf_counter()
        step = state["step"]
        k = stage_in_force(sched, state["stage"], state["flops"], state["error"], cfg.switch_on)
        if k != state["stage"]:
            shape, state["stage"] = stages[k], k
            if (shape["width"], shape["depth"]) != (model.width, model.depth):
                opt = grow(model, opt, shape, cfg, device, step)
                fwd = wrap()
                state["rewarm_from"] = step
        patch = shape["patch"] if not patches else patches[torch.randint(
            len(patches), (1,), generator=generator("patch", cfg.seed, step)).item()]
        bs = shape["batch_size"]
        lo, hi = world.shard(bs)                        # this process's rows of the global batch
        idx = batch_indices(len(train_x), state["samples"], bs, cfg.seed)[lo:hi].to(device)
        x = normalize(augment(train_x[idx], generator("augment", cfg.seed, step), cfg.flip, rows=(lo, bs)))
        with amp:
            loss = distill.train_loss(shape["objective"], fwd(x, patch), x, train_y[idx], teacher, cfg.temperature,
                                      cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()                                 # DDP: gradients averaged over the processes
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        loss_v, gnorm_v = world.mean(torch.stack([loss.detach().float(), gnorm.float()])).tolist()
        if not (math.isfinite(loss_v) and math.isfinite(gnorm_v)):
            bar.close()
            kept = (f"last good checkpoint {ckpt_path} (step {saved_step})" if saved_step is not None
                    else "no checkpoint yet")
            raise UserError(f"loss {loss_v} / gradient norm {gnorm_v} at step {step + 1}: training diverged; "
                            f"{kept}; lower --lr or raise --warmup")
        lr = learning_rate(cfg, step, bs, state["rewarm_from"])
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        before = progress()
        state.update(step=step + 1, samples=state["samples"] + bs,
                     flops=state["flops"] + distill.step_flops(model.macs(patch), bs, shape["objective"], teacher),
                     loss_sum=state["loss_sum"] + loss_v, loss_count=state["loss_count"] + 1)
        state["wall"] += time.perf_counter() - tick
        bar.update(progress() - before)
        if state["step"] % 25 == 0:
            bar.set_postfix(loss=f"{loss_v:.3f}", err=f"{state['error'] or 1:.3f}", flops=f"{state['flops']:.2e}")

        if progress() >= due:                           # rank 0 evaluates; the others wait in broadcast
            if world.main:
                metrics = evaluate(model, shape["patch"], ev, cfg, amp)
                state["error"] = metrics["fewshot10_error"]
                rec = {"type": "eval", "step": state["step"], "samples": state["samples"], "flops": state["flops"],
                       "config": log_config(shape, patches, distilling),
                       "train_loss": state["loss_sum"] / state["loss_count"],
                       **metrics, "wall": state["wall"], "lr": lr, "stage": state["stage"]}
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                tqdm.write(f"step {rec['step']} flops {rec['flops']:.3g} patch {shape['patch']} "
                           f"loss {rec['train_loss']:.4f} fewshot10 {rec['fewshot10_error']:.4f} "
                           f"test {rec['test_error']:.4f} wall {rec['wall']:.1f}s")
            state.update(loss_sum=0.0, loss_count=0)
            saved_step = checkpoint()
            state["error"] = world.broadcast(state["error"])
            due = next_point()
        elif cfg.ckpt_every and state["step"] % cfg.ckpt_every == 0:
            saved_step = checkpoint()
        if cfg.stop_after_steps is not None and state["step"] >= cfg.stop_after_steps:
            bar.close()
            say(f"stopped after step {state['step']} (--stop-after-steps)")
            return
    bar.close()
    say(f"{out}: {state['step']} steps, {state['flops']:.3g} FLOPs, {state['wall']:.1f}s training; log {log_path}")


def cli(args=None):
    """Parse the flags and train; bad input is one line on stderr (rank 0's, under torchrun) and exit code 2."""
    return dist.run_cli(main, Config, "train_vit.py", args)


if __name__ == "__main__":
    sys.exit(cli())
