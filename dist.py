"""Data-parallel training (DistributedDataParallel) for train_vit.py and train_lm.py, unchanged under torchrun.

    torchrun --standalone --nproc_per_node 2 train_vit.py --steps 3000 --patch 7    # 2 CPU processes (gloo)
    torchrun --standalone --nproc_per_node 8 train_vit.py --flops 1e17 ...           # 8 GPUs (NCCL)

A run means the same thing on 1 or N processes: the GLOBAL batch (--batch-size, a schedule stage's
batch_size) is split into N equal shards, rank r taking rows [r*B/N, (r+1)*B/N) of the batch that one process
would draw from the same global permutation, so data order, augmentation draws (seeded per global batch),
compute accounting (FLOPs of the global batch) and learning rate do not depend on N; DDP averages the
gradients, which equals the single-process gradient of the global batch's mean loss (up to float rounding).
Rank 0 alone writes logs and checkpoints, prints and evaluates, with the unwrapped model (a DDP forward may
sync buffers: a collective), while the others wait at the next collective (world.broadcast of what the
evaluation decides, e.g. the error for a switch). Errors found before training (bad flags, a batch that does
not divide, a checkpoint from another world size) are found by every rank alike, before any collective.

Use from a trainer (imports runtime.py for its error type; torch otherwise):
    world = dist.World.from_env()              # RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them
    device = runtime.resolve_device(cfg.device, world)   # cuda:LOCAL_RANK under torchrun on GPUs
    lo, hi = world.shard(batch_size, "--batch-size")   # this rank's rows of the global batch
    ... every check that may fail ...
    world.init(device)                         # the process group: NCCL on GPU, gloo on CPU
    fwd = world.wrap(model, device)            # DDP(model); wrap again after the model grows
    loss = world.mean(loss) ; x = world.broadcast(x) ; dist.close()   # mean over ranks, rank 0's x
"""
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from runtime import UserError


class DistError(UserError):
    """A launch that cannot work (batch does not divide, world size changed on resume): one line, exit code 2."""


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
            raise DistError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None
        if not 0 <= rank < size:
            raise DistError(f"RANK {rank} is not in [0, WORLD_SIZE={size}); launch with torchrun")
        return cls(rank, size, local)

    @property
    def main(self):
        """Rank 0: the one process that logs, checkpoints, prints and evaluates."""
        return self.rank == 0

    @property
    def active(self):
        return self.size > 1 and tdist.is_initialized()

    def shard(self, batch_size, where="--batch-size"):
        """(lo, hi): this rank's rows of a global batch; DistError if it does not split evenly."""
        if batch_size % self.size:
            raise DistError(f"{where}: batch size {batch_size} does not divide across {self.size} processes "
                            f"(torchrun --nproc_per_node); use a multiple of {self.size}")
        n = batch_size // self.size
        return self.rank * n, (self.rank + 1) * n

    def check_resume(self, saved_size, path):
        """A run resumes on as many processes as it was trained on (its curve stays bit-identical then)."""
        if saved_size != self.size:
            raise DistError(f"--resume: {path} was trained on {saved_size} process(es), this launch has "
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



def close():
    """Leave the process group if this process joined one (call once, at exit, e.g. in a `finally`)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
