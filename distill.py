"""Distillation from a teacher as a training objective (paper Sec. 6.2, App. B.6).

The paper switches a student from the supervised loss to distillation from a bigger pre-trained ViT when the
laws say so: "only distillation loss as in Hinton et al. (2015), with a temperature of T = 2", and the FLOPs of
a step include "the FLOPs of the teacher only for the forward pass". Here:

    loss  = T^2 * KL(softmax(teacher / T) || softmax(student / T))     (mean over the batch)
    FLOPs = 6 * student_macs + 2 * teacher_macs   per training example (one teacher forward per example)

The teacher is a train_vit.py checkpoint (e.g. a V128-6 trained at patch 7): FlexiViT(**ckpt["model_args"]) at
ckpt["patch"], frozen, in eval mode, on the student's augmented batch.

    python train_vit.py --model V128-6 --patch 7 --flops 5e13 --out-dir runs/teacher
    python train_vit.py --model V64-4 --patch 7 --flops 2e13 --objective distill --teacher runs/teacher/ckpt.pt
"""
import os
import pickle
import zipfile
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import flexivit
from data import UserError

OBJECTIVES = ("supervised", "distill")


class TeacherError(UserError):
    """An unusable objective or teacher checkpoint: one line, exit code 2."""


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
        raise TeacherError(f"{where}: objective {objective!r} is not implemented (train_vit.py trains "
                           f"{' or '.join(map(repr, OBJECTIVES))})")
    if objective == "distill" and not teacher_path:
        raise TeacherError(f"{where}: objective 'distill' needs a teacher: pass --teacher runs/<teacher>/ckpt.pt")


def load_teacher(path, image_size, in_chans, num_classes, device):
    """A frozen teacher from a train_vit.py checkpoint, checked against the student's data."""
    if not os.path.isfile(path):
        raise TeacherError(f"--teacher: no checkpoint at {path}; train one first "
                           "(train_vit.py --model V128-6 --patch 7 --out-dir runs/teacher) and pass its ckpt.pt")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise TeacherError(f"--teacher: cannot read {path} ({type(e).__name__}); pass a train_vit.py ckpt.pt") from None
    if not isinstance(ck, dict) or not {"model_args", "model", "patch"} <= set(ck):
        raise TeacherError(f"--teacher: {path} is not a train_vit.py checkpoint (needs model_args, model, patch)")
    a = ck["model_args"]
    have = (a.get("image_size"), a.get("in_chans"), a.get("num_classes"))
    if have != (image_size, in_chans, num_classes):
        raise TeacherError(f"--teacher: {path} was trained on {have[0]}-pixel images with {have[1]} channel(s) and "
                           f"{have[2]} classes, the data here have {image_size}, {in_chans} and {num_classes}; "
                           "train the teacher on the same data")
    model = flexivit.FlexiViT(**a)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise TeacherError(f"--teacher: {path}: weights do not fit model_args ({str(e).splitlines()[0]})") from None
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
