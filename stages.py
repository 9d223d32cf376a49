"""The shape of every stage of a ViT run (train_vit.py), planned and checked before the first step.

A run trains at a fixed patch size (Sec. 3), at a patch drawn per step (FlexiViT's baseline, Fig. 7), or
through the stages of a schedule.json (Sec. 4, 6): each stage's config may set the patch, the width and
depth (a model only grows), the batch size and the objective. `plan_shapes` resolves every stage to a full
shape and refuses, in one line naming the stage, anything that could fail mid-run; `stage_in_force` is
the switch rule (Eq. 2's switch points by cumulative FLOPs, or by measured error).
"""
import dataclasses
import hashlib
import json

import dist
import distill
import flexivit
from runtime import UserError

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
        import schedule                                             # numpy/scipy only; needed for --schedule
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
