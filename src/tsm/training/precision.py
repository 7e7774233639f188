"""``trainer.precision=auto``: bf16 mixed precision where the CPU trains the network faster in it, float32 elsewhere.

On this project's CPU with AVX-512 BF16, a training step of the default model is faster in bf16 and reaches the
same accuracy on every seed, while MobileNetV2's is slower: bf16 depthwise convolutions have no fast CPU kernels
(``experiments/recipe/step_time.md``, ``experiments/recipe/results_small.md``). On a CPU without bf16 units bf16
is emulated and slower, and on a GPU the choice is the user's (``trainer=gpu`` sets ``bf16-mixed``).
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, open_dict
from torch import nn

log = logging.getLogger(__name__)

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32-true"


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (x86 AVX-512 BF16 or AMX); False where torch cannot tell."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def trains_on_cpu(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` setting ends on the CPU (``auto`` picks CUDA, then MPS, then the CPU)."""
    if accelerator == "auto":
        return not (torch.cuda.is_available() or torch.backends.mps.is_available())
    return accelerator == "cpu"


def has_depthwise(model: nn.Module) -> bool:
    """Whether ``model`` has a depthwise convolution (one group per input channel, more than one channel)."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels for m in model.modules())


def auto_precision(accelerator: str, depthwise: bool, bf16: bool | None = None) -> tuple[str, str]:
    """The precision ``auto`` stands for with ``accelerator`` for a network with or without ``depthwise``
    convolutions, and why (``bf16``: the CPU's, detected if None)."""
    if not trains_on_cpu(accelerator):
        return FP32, f"trainer.accelerator={accelerator} is not the CPU (set trainer.precision for a GPU)"
    if not (cpu_has_bf16() if bf16 is None else bf16):
        return FP32, "this CPU has no native bf16"
    if depthwise:
        return FP32, "the network has depthwise convolutions, slower in bf16 on CPUs"
    return BF16, "this CPU has native bf16 (AVX-512 BF16 or AMX)"


def resolve_precision(cfg: DictConfig, model: nn.Module) -> None:
    """Replace ``cfg.trainer.precision=auto`` by what it stands for with ``model``, logged; any other value is
    kept."""
    trainer = cfg.trainer
    if str(trainer.get("precision")) != AUTO:
        return
    precision, why = auto_precision(str(trainer.get("accelerator", "auto")), has_depthwise(model))
    with open_dict(trainer):
        trainer.precision = precision
    log.info("trainer.precision=auto: %s, as %s (trainer.precision=%s or %s to choose)", precision, why, FP32, BF16)
