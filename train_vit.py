"""Train a FlexiViT at a fixed, random or scheduled shape, logging compute and error (paper Sec. 3, 4, 6).

    python train_vit.py --steps 3000 --patch 7                      # Sec. 3: one run per shape, for its law
    python train_vit.py --flops 2e13 --random --patch-sizes 14 7 4  # FlexiViT's baseline (Fig. 7)
    python train_vit.py --flops 2e13 --schedule schedule.json       # Sec. 4, 6: schedule.py's switch points
    python train_vit.py --flops 2e13 --patch 7 --resume             # continue runs/<name>/ckpt.pt exactly
    python train_vit.py --flops 2e13 --schedule pilot.json --start-from runs/p8/ckpt_at_5e+12.pt  # a pilot switch
    torchrun --standalone --nproc_per_node 2 train_vit.py ...       # any of these, data parallel

Hyper-parameters follow App. B.1 (AdamW, weight decay 0.01, label smoothing 0.2, warm-up, clip 1.0, then a constant
LR, App. A). Compute counts the blocks only (Sec. 3): an example costs 6 x model.macs(patch) FLOPs. Log-spaced
evaluations log the paper's 10-shot error E and the test error to --out-dir/log.jsonl; ckpt.pt is written atomically
and every random draw is seeded by (seed, step), so --resume continues bit for bit.
"""
import dataclasses, json, math, sys, time
from collections import namedtuple
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
from data import Images, augment, batch_indices, eval_images, generator, key_seed, load_images, normalize
from runtime import UserError

RESUME_KEYS = ("data_dir", "dataset", "image_size", "model", "patch", "base_patch", "posemb_grid", "fewshot_data",
               "random", "patch_sizes", "batch_size", "seed", "flip", "switch_on", "objective", "temperature",
               "head_dim")
FORK_KEYS = ("data_dir", "dataset", "image_size", "fewshot_data", "batch_size", "seed", "flip")  # a pilot keeps them
SHAPE_KEYS = ("patch", "width", "depth", "batch_size", "objective")
OBJECTIVES = ("supervised", "distill")


@dataclasses.dataclass
class Config:
    """Train a FlexiViT at a fixed, random (FlexiViT) or scheduled shape; log compute and error (paper Sec. 3, 4, 6)."""
    data_dir: str = "/usr/share/datasets/fashion-mnist"  # IDX, CIFAR batches, .npz, or a prepared folder
    dataset: Literal["auto", "idx", "cifar", "npz", "prepared"] = "auto"  # format of --data-dir (auto: detected)
    image_size: int = 0  # resize every image once, at load, to this side (the paper: 120 px); 0: as is
    model: str = "V64-4"  # model size V{width}-{depth}; a schedule's first stage may set width/depth
    patch: int | None = None  # fixed patch size; None: image side // 4
    base_patch: int = 7  # FlexiViT's underlying patch-embedding size, PI-resized to every patch (Table 1: 12)
    posemb_grid: int = 7  # FlexiViT's underlying position-embedding grid, resized bilinearly (Table 1: 8)
    random: bool = False  # FlexiViT's baseline: a patch drawn from --patch-sizes per step (Fig. 7)
    patch_sizes: tuple[int, ...] = ()  # for --random; empty: the divisors of the side in [4, side/2]
    schedule: str | None = None  # schedule.json (schedule.py): the stages' shapes in turn
    switch_on: Literal["flops", "error"] = "flops"  # at flops_start, or once the error is below the last error_end
    rewarm: int = 0  # steps of linear learning-rate re-warm-up after the model grows; 0: none
    grow_gamma: float = 1.0  # new weights N(0, gamma sigma^2) without --grow-preserve (App. C)
    grow_preserve: bool = True  # grow the width function-preserving (best: results/growth-init)
    grow_depth: Literal["copy", "identity"] = "copy"  # new blocks: copies of the one before, or identities
    head_dim: int | None = None  # head size, kept fixed when the width grows; None: 32 below width 128, else 64
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"  # LR at a stage's batch B: x 1, B/--batch-size, sqrt
    objective: Literal["supervised", "distill"] = "supervised"  # of the stages that name none (distill: from --teacher)
    teacher: str | None = None  # a bigger model's train_vit.py ckpt.pt to distill from (Sec. 6.2)
    temperature: float = 2.0  # distillation temperature T (App. B.6)
    steps: int | None = None  # training budget in steps (exactly one of --steps, --flops)
    flops: float | None = None  # training budget in cumulative FLOPs (6 x block MACs x examples)
    batch_size: int = 128  # examples per step, over all processes (a schedule stage may change it)
    lr: float = 1e-3  # peak learning rate at --batch-size; constant after warm-up (App. A)
    warmup: int = 200  # linear warm-up steps
    weight_decay: float = 0.01  # AdamW weight decay of the matrices (biases, norms: none)
    label_smoothing: float = 0.2  # label smoothing of the cross-entropy (Table 1)
    clip: float = 1.0  # gradient-norm clip
    flip: bool = True  # random horizontal flips (random crops are always on)
    evals: int = 20  # evaluations log-spaced in compute from 1% of the budget to the end
    fewshot_data: str | None = None  # a prepared folder: k-shot pool (train) and queries (val)
    fewshot_support: int = 2000  # fixed training subset the k-shot examples are drawn from (>= 10 per class)
    fewshot_query: int = 10000  # k-shot query images, a fixed subset of the --test-size test images
    fewshot_seeds: int = 50  # draws of the k-shot examples averaged per evaluation (std ~0.002 at 50)
    test_size: int = 10000  # test images for test_error (all if fewer)
    train_size: int = 2000  # fixed un-augmented training subset for train_error (0: none)
    out_dir: str | None = None  # run folder for log.jsonl and ckpt.pt; None: runs/<data>-<model>-<shape>
    seed: int = 0  # seed of the initialisation, data order, augmentation and random patch sizes
    device: str = "auto"  # cpu, cuda, cuda:1, ... (auto: cuda if available)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where matrix units have it (CUDA, AMX)
    compile: bool = False  # torch.compile the model (recompiles per patch size and after growth)
    threads: int | None = None  # torch CPU threads; None: torch's choice
    ckpt_every: int = 0  # also checkpoint every N steps (0: at evaluations, every --ckpt-minutes and at the end)
    ckpt_minutes: float = 10.0  # also checkpoint when this many minutes passed since the last one
    resume: bool = False  # continue from --out-dir/ckpt.pt (afresh if none yet); the shape flags must match
    keep_at: tuple[float, ...] = ()  # also keep ckpt_at_<FLOPs>.pt at each of these FLOPs (for switch pilots)
    start_from: str | None = None  # a new run starts from this --keep-at checkpoint: a pilot switch (lab/transfer.py)
    progress: bool = True  # tqdm progress bar on a terminal
    stop_after_steps: int | None = None  # (debug) quit after this step as if killed: no final evaluation or checkpoint


def check_flags(cfg):
    """Numeric flags in range, where they are parsed (the shapes are checked by plan_shapes): (budget, unit)."""
    return runtime.check_flags(cfg, ("batch_size", "fewshot_seeds", "fewshot_support", "fewshot_query", "test_size",
                                     "temperature", "base_patch", "posemb_grid", "head_dim", "threads", "patch"), (
        ("label_smoothing", 0 <= cfg.label_smoothing < 1), ("image_size", 0 <= cfg.image_size <= 4096),
        ("train_size", cfg.train_size >= 0), ("grow_gamma", math.isfinite(cfg.grow_gamma) and cfg.grow_gamma >= 0)))


# ----------------------------------------------------------------------------- the stages' shapes (Sec. 4, 6)

def check_patch(patch, size, where):                 # FlexiViT's patch sizes divide the image
    if patch not in flexivit.valid_patches(size):
        raise UserError(f"{where}: patch size {patch} does not divide the {size}-pixel image; "
                        f"valid patch sizes: {' '.join(map(str, flexivit.valid_patches(size)))}")


def read_schedule(cfg):
    """(configs, random, schedule): the stages' configs from --schedule, or the one shape of the flags."""
    if cfg.patch_sizes and not cfg.random:
        raise UserError("--patch-sizes is the set that --random draws from: add --random, or use --patch")
    if cfg.random and cfg.patch:
        raise UserError("--random draws the patch size at every step: drop --patch (use --patch-sizes)")
    if not cfg.schedule:
        return [{}], cfg.random, None
    with runtime.user_error("--schedule ", schedule.ScheduleError):   # schedule.py is copy-alone: its own error type
        sched = schedule.Schedule.load(cfg.schedule)
    if cfg.patch or cfg.random or cfg.patch_sizes:
        raise UserError("--schedule sets the shape: drop --patch / --random / --patch-sizes")
    return sched.configs, sched.random, sched


def plan_shapes(cfg, size, width, depth, head_dim, world=None):
    """Every stage's full shape, checked before the first step: (stages, random patch sizes or None, schedule).
    A stage inherits the previous stage's patch, width, depth and batch size; a model only grows."""
    shape = dict(patch=cfg.patch or size // 4, width=width, depth=depth, batch_size=cfg.batch_size,
                 objective=cfg.objective)
    if cfg.random:
        patches = sorted(cfg.patch_sizes or [p for p in flexivit.valid_patches(size) if 4 <= p <= size // 2] or [size])
        for p in patches:
            check_patch(p, size, "--patch-sizes")
        shape["patch"] = patches[0]
    configs, random, sched = read_schedule(cfg)
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
        if new["objective"] not in OBJECTIVES or (new["objective"] == "distill" and not cfg.teacher):
            raise UserError(f"{where if cfg.schedule else '--objective'}: objective {new['objective']!r} " + (
                "needs a teacher: pass --teacher runs/<teacher>/ckpt.pt" if new["objective"] == "distill" else
                f"is not implemented (train_vit.py trains {' or '.join(map(repr, OBJECTIVES))})"))
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


def check_memory(cfg, run, i, s, head_dim):   # a stage's floor on memory, before allocating (runtime.check_memory)
    t, w, b = (run.size // s["patch"]) ** 2, s["width"], s["batch_size"]                    # tokens, width, batch
    params = 12 * w * w * s["depth"] + w * (run.chans * cfg.base_patch ** 2 + cfg.posemb_grid ** 2 + run.num_classes)
    return runtime.check_memory(f"stage {i} of {cfg.schedule}" if cfg.schedule else f"--model {cfg.model}, batch {b}",
                                run.device, params, b // run.world.size, t, w, s["depth"], w // head_dim)


def stage_in_force(sched, current, flops, error, switch_on):
    """Eq. 2's switch rule: the stage whose span holds the FLOPs (or the measured error); never an earlier one."""
    if sched is None or sched.random or (switch_on == "error" and error is None):
        return current
    return max(current, (sched.stage_at(flops=flops) if switch_on == "flops" else sched.stage_at(error=error)).index)


def log_config(shape, patches, distilling):
    """The shape in force as a record's "config" (the objective only in runs that distill; a random run: its set)."""
    c = {k: shape[k] for k in ("patch", "width", "depth", "batch_size")}
    c = {**c, "objective": shape["objective"]} if distilling else c
    return {**c, "random": patches} if patches else c


# ----------------------------------------------------------------------------- distillation (Sec. 6.2, App. B.6)

Teacher = namedtuple("Teacher", "model patch path macs fingerprint")   # macs: a forward pass of one example


def load_teacher(path, image_size, in_chans, num_classes, device):
    """The frozen teacher: a train_vit.py checkpoint (read as eval_fewshot.py reads one) trained on data of the
    student's shape, at its own patch; its fingerprint is what a resume checks."""
    try:
        model, ck = eval_fewshot.load_checkpoint(path)
    except UserError as e:
        raise UserError(f"--teacher: cannot read {path}: {e}; train one first (train_vit.py --model V128-6 --patch 7 "
                        "--out-dir runs/teacher) and pass its ckpt.pt") from None
    if "patch" not in ck:
        raise UserError(f"--teacher: {path} is not a train_vit.py checkpoint (it names no patch size)")
    have = tuple(ck["model_args"].get(k) for k in ("image_size", "in_chans", "num_classes"))
    if have != (image_size, in_chans, num_classes):
        raise UserError(f"--teacher: {path} was trained on {have[0]}-pixel images with {have[1]} channel(s) and "
                        f"{have[2]} classes, the data here have {image_size}, {in_chans} and {num_classes}; "
                        "train the teacher on the same data")
    model.to(device).eval().requires_grad_(False)
    step, patch = int(ck.get("state", {}).get("step", 0)), int(ck["patch"])
    return Teacher(model, patch, str(path), model.macs(patch), {"model_args": model.model_args(), "patch": patch,
                                                                "step": step})


def hinton_loss(student_logits, teacher_logits, T=2.0):
    """T^2 KL(softmax(t/T) || softmax(s/T)), mean over the batch (Hinton et al. 2015; T^2 keeps the gradient's scale)."""
    s, t = (F.log_softmax(z.float() / T, dim=-1) for z in (student_logits, teacher_logits))
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * (T * T)


def train_loss(objective, logits, x, y, teacher=None, temperature=2.0, label_smoothing=0.2):
    """A stage's objective: label-smoothed cross-entropy (Table 1), or only the Hinton loss to the teacher (App. B.6)."""
    if objective == "distill":
        with torch.no_grad():
            t = teacher.model(x, teacher.patch)
        return hinton_loss(logits, t, temperature)
    return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)


def step_flops(student_macs, batch_size, objective, teacher=None):
    """Sec. 3: 6 x MACs per example (forward + backward); distilling adds the teacher's forward, 2 x its MACs."""
    return (6.0 * student_macs + (2.0 * teacher.macs if objective == "distill" else 0.0)) * batch_size


# ----------------------------------------------------------------------------- optimiser, growth, evaluation

def make_optimizer(model, cfg, device, old=None):
    """AdamW over the parameters in model order; decay on matrices only. `old`: carry its moments over (App. C)."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), fused=True)
    opt.state.update({p: old.state[p] for p in params if p in old.state} if old is not None else {})
    return opt


def grow(model, opt, shape, cfg, device, step):
    """Grow the width, then the depth, to `shape` (expand.py, App. C); the optimizer keeps every moment."""
    torch.manual_seed(key_seed("grow", cfg.seed, step))      # new weights reproducible on resume
    if shape["width"] > model.width:
        expand.expand_optimizer(opt, expand.expand_width(model, shape["width"], gamma=cfg.grow_gamma,
                                                         preserve=cfg.grow_preserve))
    if shape["depth"] > model.depth:
        expand.expand_optimizer(opt, expand.expand_depth(model, shape["depth"], preserve=cfg.grow_depth == "identity"))
    return make_optimizer(model, cfg, device, old=opt)


def evaluate(model, patch, ev, cfg, amp):
    """The paper's E: 10-shot ridge error on frozen features (mean of --fewshot-seeds draws), and top-1 errors."""
    return eval_fewshot.evaluate_all(model, patch, ev, shots=(10,), draws=cfg.fewshot_seeds, amp=amp)


@dataclasses.dataclass
class State:
    """What a checkpoint carries besides weights and optimiser: the run's position and running sums."""
    step: int = 0                  # optimiser steps
    samples: int = 0               # examples drawn = the data position
    flops: float = 0.0             # cumulative training FLOPs (Sec. 3)
    wall: float = 0.0              # training seconds, evaluation excluded
    stage: int = 0                 # schedule stage in force
    rewarm_from: int | None = None  # step of the last growth (--rewarm)
    error: float | None = None     # last measured fewshot10_error (--switch-on error)
    loss_sum: float = 0.0
    loss_count: int = 0
    world_size: int = 1


# ----------------------------------------------------------------------------- one run, set up

class Run:
    """One training run, set up: device, precision, data, the planned shapes, the output folder."""

    def __init__(self, cfg):
        self.cfg, self.world = cfg, runtime.World.from_env()
        self.budget, self.unit = check_flags(cfg)
        self.device, self.precision, self.amp = runtime.machine(cfg, self.world)   # bf16 autocast, fp32 master weights
        self.train_x, self.train_y, test_x, test_y, fewshot = load_images(cfg.data_dir, cfg.dataset, cfg.image_size,
                                                                          cfg.fewshot_data)
        self.streamed = isinstance(self.train_x, Images)   # a prepared file: a streamed data order (data.py)
        self.chans, self.size = self.train_x.shape[1], self.train_x.shape[2]
        self.num_classes = int(max(self.train_y.max(), test_y.max())) + 1
        self.data_sizes = {"train": len(self.train_x), "test": len(test_x), "image_size": self.size}
        with runtime.user_error("--model: "):            # --model's sizes; nothing is allocated before the checks
            width, depth, heads = flexivit.spec(cfg.model)
        if cfg.head_dim and width % cfg.head_dim:        # --head-dim: the same model, other heads
            raise UserError(f"--head-dim {cfg.head_dim} does not divide the width {width} of --model {cfg.model}")
        head_dim = cfg.head_dim or width // heads
        self.stages, self.patches, self.sched = plan_shapes(cfg, self.size, width, depth, head_dim, self.world)
        self.need = max(check_memory(cfg, self, i, s, head_dim) for i, s in enumerate(self.stages))   # every stage fits
        torch.manual_seed(cfg.seed)
        t = flexivit.build(cfg.model, image_size=self.size, in_chans=self.chans, num_classes=self.num_classes,
                           base_patch=cfg.base_patch, posemb_grid=cfg.posemb_grid)
        self.template = t if head_dim == t.head_dim else flexivit.FlexiViT(**{**t.model_args(), "heads": width//head_dim})
        self.distilling = any(s["objective"] == "distill" for s in self.stages)
        self.teacher = load_teacher(cfg.teacher, self.size, self.chans, self.num_classes,
                                    self.device) if self.distilling else None
        self.out = runtime.check_out_dir(cfg.out_dir or f"runs/{self.default_name()}")
        self.ckpts = runtime.Checkpoints(self.out / "ckpt.pt", self.world.main)
        self.log, self.shash = runtime.RunLog(self.out / "log.jsonl"), self.sched and self.sched.digest
        self.ev = eval_images(self.train_x, self.train_y, test_x, test_y, cfg.fewshot_support, cfg.fewshot_query,
                              cfg.test_size, cfg.train_size, self.device, fewshot)
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
        """The model from ckpt.pt (--resume; the same run, checked), or new at the first stage's width and depth."""
        cfg, path, t, self.ck = self.cfg, self.ckpts.path, self.template, None     # ck: a checkpoint, for start()
        if not runtime.check_run_folder(self.out, path, self.log, cfg.resume, "train_vit.py", self.world.main) \
                and not cfg.start_from:                  # no checkpoint: a new model (--start-from: a pilot's start)
            w0, d0 = self.stages[0]["width"], self.stages[0]["depth"]
            self.model = t if (w0, d0) == (t.width, t.depth) else flexivit.FlexiViT(
                **{**t.model_args(), "width": w0, "depth": d0, "heads": w0 // t.head_dim})
            return
        src, forked = (path, False) if path.exists() else (Path(cfg.start_from), True)
        try:                                             # the model and its checkpoint, read as eval_fewshot.py does
            self.model, ck = eval_fewshot.load_checkpoint(src)
        except UserError as e:
            raise UserError(f"{e}; delete it to start afresh" if not forked else f"--start-from: {e}") from None
        if not {"optimizer", "state", "config", "schedule_hash"} <= set(ck):
            raise UserError(f"{src} is not a train_vit.py checkpoint; use another --out-dir")
        keys, flag = (FORK_KEYS, "--start-from") if forked else (RESUME_KEYS, "--resume")
        runtime.check_resume({k: ck["config"].get(k, getattr(Config, k)) for k in keys}, vars(cfg), src, flag)
        if ck["schedule_hash"] != self.shash and not forked:
            raise UserError(f"--resume: {path} was trained with another schedule; use the same one or another --out-dir")
        if ck.get("teacher") != (self.teacher and self.teacher.fingerprint):
            raise UserError(f"--resume: {src} was distilled from another --teacher; use the same one or another --out-dir")
        self.world.check_resume(ck["state"].get("world_size", 1), path)
        self.state, self.ck = State(**{**dataclasses.asdict(State()), **ck["state"]}), ck
        self.ckpts.step = self.state.step
        torch.set_rng_state(ck["rng"]["torch"])

    def start(self):
        """Model to the device, optimiser (state restored; the flags' weight decay wins), the log's header."""
        del self.template
        self.world.init(self.device)                    # every check that may fail is behind us
        self.model.to(self.device).train()
        self.opt = make_optimizer(self.model, self.cfg, self.device)
        if self.ck is not None:
            self.opt.load_state_dict(self.ck["optimizer"])
            for g, decay in zip(self.opt.param_groups, (self.cfg.weight_decay, 0.0)):
                g["weight_decay"] = decay
        if self.world.main:                             # a resume continues the log, noting a new precision
            self.log.start(self.header(), *(self.state.step, self.ck.get("precision", "fp32")) if self.ck else ())
        self.ck = None
        self.train_x, self.train_y = self.train_x.to(self.device), self.train_y.to(self.device)

    def header(self):
        t, m = self.teacher, self.model
        return {"version": 1, "type": "header", "run": self.out.name, "config": dataclasses.asdict(self.cfg),
                "metrics": ["fewshot10_error", "test_error"], "schedule_kind": self.sched.kind if self.sched else None,
                "model_args": m.model_args(), "world_size": self.world.size, "precision": self.precision,
                "teacher": t and {**t.fingerprint, "path": t.path, "macs": t.macs}, "data": self.data_sizes}

    def save(self, shape):
        """ckpt.pt, atomically, by rank 0 (every rank counts the step); never with non-finite weights."""
        runtime.check_finite_weights(self.model, self.state.step, self.ckpts)
        self.saved_at = time.time()
        ck = {"version": 1, "kind": "train_vit", "model_args": self.model.model_args(), "model": self.model.state_dict(),
              "optimizer": self.opt.state_dict(), "state": dataclasses.asdict(self.state), "patch": shape["patch"],
              "config": dataclasses.asdict(self.cfg), "schedule_hash": self.shash, "precision": self.precision,
              "teacher": self.teacher and self.teacher.fingerprint, "rng": {"torch": torch.get_rng_state()},
              "data": {"samples": self.state.samples, "seed": self.cfg.seed}} if self.world.main else None
        self.ckpts.save(ck, self.state.step, self.state.flops, self.cfg.keep_at)   # --keep-at: a pilot switch's start


# ----------------------------------------------------------------------------- the loop's parts

def wrap(run):
    """The model the step calls: DDP under torchrun, compiled with --compile; wrapped again after a growth."""
    fwd = run.world.wrap(run.model, run.device)
    return torch.compile(fwd, dynamic=False) if run.cfg.compile else fwd


def enter_stage(run, k):
    """Switch to stage k: a new patch is free (FlexiViT resizes its embeddings, Sec. 4); a wider or deeper model
    is grown (expand.py, App. C) with its AdamW moments carried over. Returns (shape, grown)."""
    shape, run.state.stage = run.stages[k], k
    if grown := (shape["width"], shape["depth"]) != (run.model.width, run.model.depth):
        run.opt = grow(run.model, run.opt, shape, run.cfg, run.device, run.state.step)
        run.state.rewarm_from = run.state.step
    return shape, grown


def train_step(run, fwd, shape, patch):
    """One optimiser step on the global batch (this process's rows); returns (loss, lr). Diverged: one line."""
    cfg, state, bs = run.cfg, run.state, shape["batch_size"]
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
    lr = runtime.learning_rate(cfg.lr, state.step, cfg.warmup, cfg.lr_scaling, bs / cfg.batch_size, cfg.rewarm,
                               state.rewarm_from)  # warm-up (App. A), scaled to the batch (Sec. 6.2), re-warm
    for g in run.opt.param_groups:
        g["lr"] = lr
    run.opt.step()
    return loss_v, lr


def evaluate_and_log(run, shape, lr):
    """Rank 0: the paper's E (10-shot error) and the test error at the stage's patch, as one log record."""
    state = run.state
    metrics = evaluate(run.model, shape["patch"], run.ev, run.cfg, run.amp)
    runtime.check_finite(state.step, run.ckpts, **metrics)   # a NaN evaluation is divergence too
    rec = {"type": "eval", "step": state.step, "samples": state.samples, "flops": state.flops,
           "config": log_config(shape, run.patches, run.distilling), "train_loss": state.loss_sum / state.loss_count,
           **metrics, "wall": state.wall, "lr": lr, "stage": state.stage}
    run.log.append(rec)
    tqdm.write(f"step {rec['step']} flops {rec['flops']:.3g} patch {shape['patch']} loss {rec['train_loss']:.4f} "
               f"fewshot10 {rec['fewshot10_error']:.4f} test {rec['test_error']:.4f} wall {rec['wall']:.1f}s")
    return metrics["fewshot10_error"]


def eval_points(run):
    """Log-spaced in compute (a law needs every decade), 5 inside each later stage of a FLOPs schedule, --keep-at."""
    return sorted({*runtime.eval_points(run.budget, run.cfg.evals, integer=run.unit == "steps", switch_on=run.cfg.
                                        switch_on, sched=run.sched if run.unit == "flops" else None), *run.cfg.keep_at})


# ----------------------------------------------------------------------------- main

def main(cfg):
    # Set up: flags, device, precision, data, every stage's shape, the output folder; then the model.
    run = Run(cfg)
    run.restore()                                        # from ckpt.pt, or a new model
    run.start()
    say = print if run.world.main else (lambda *a, **k: None)
    state, model = run.state, run.model
    say(f"{run.out}: {model.width}x{model.depth} FlexiViT, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
        f"parameters, {run.data_sizes['train']} training images {run.chans}x{run.size}x{run.size}, "
        f"{run.num_classes} classes, {run.device}, {run.precision}"
        + (f" x {run.world.size} processes" if run.world.size > 1 else ""))
    points = eval_points(run)
    due = next((p for p in points if p > run.progress()), math.inf)
    fwd, shape = wrap(run), run.stages[state.stage]
    bar = tqdm(total=run.budget, initial=run.progress(), disable=None if cfg.progress and run.world.main else True,
               dynamic_ncols=True, unit="step" if run.unit == "steps" else "FLOP", unit_scale=run.unit == "flops")
    if run.progress() >= run.budget:
        say(f"{run.out}: budget reached already ({run.progress():.4g}); nothing to do")
    while run.progress() < run.budget:
        tick = time.perf_counter()
        # Which shape now: the schedule's stage by FLOPs or by measured error (Eq. 2); grow if it is bigger.
        k = stage_in_force(run.sched, state.stage, state.flops, state.error, cfg.switch_on)
        if k != state.stage:
            shape, grown = enter_stage(run, k)
            fwd = wrap(run) if grown else fwd
        patch = shape["patch"] if not run.patches else run.patches[torch.randint(
            len(run.patches), (1,), generator=generator("patch", cfg.seed, state.step)).item()]   # FlexiViT's draw
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
        # Evaluate at the log-spaced points (rank 0; the others wait in the broadcast), then checkpoint.
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
            return say(f"stopped after step {state.step} (--stop-after-steps)")
    bar.close()
    say(f"{run.out}: {state.step} steps, {state.flops:.3g} FLOPs, {state.wall:.1f}s training; log {run.log.path}")


def cli(args=None):
    """Parse the flags and train; bad input is one line on stderr (rank 0's under torchrun) and exit code 2."""
    return runtime.run_cli(main, Config, "train_vit.py", args, moved=runtime.moved_to_lab("train_vit.py"))


if __name__ == "__main__":
    sys.exit(cli())
