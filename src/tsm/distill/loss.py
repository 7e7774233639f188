"""The knowledge-distillation loss.

Loss: ``(1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))``
with the KL summed over classes and averaged over the batch (batch-mean), so the soft term does
not shrink with the number of classes as an element-wise mean would make it.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


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
