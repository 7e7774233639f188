"""TSM's optimizer recipe: parameter groups, linear lr scaling and a warm-up schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def scaled_lr(base_lr: float, global_batch: int, base_batch: int) -> float:
    """The linear scaling rule: ``base_lr`` was tuned for ``base_batch`` clips per step."""
    return base_lr * global_batch / base_batch


def starts_from_weights(hparams: Mapping) -> bool:
    """Whether a training module's weights start from given ones (``model.pretrained``, ``pretrained_file`` or
    ``init_from``): the classifier then takes the fine-tuning learning-rate multipliers."""
    return bool(hparams.get("pretrained")) or any(hparams.get(k) is not None for k in ("pretrained_file", "init_from"))


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    head_lr_mult: Mapping[str, float],
    bias_lr_mult: float,
) -> list[dict]:
    """SGD groups: weights (lr, decay); biases (``bias_lr_mult`` x lr, no decay); norms (lr, no
    decay); scales and embeddings (lr, no decay: the other one-dimensional weights, such as layer scales and
    ConvNeXt-V2's response norm, and what a timm backbone's ``no_weight_decay()`` names, such as a ViT's position
    embedding and class token, as timm trains them); the classifier's (``model.classifier``) weight and bias at
    ``head_lr_mult['weight']`` and ``['bias']`` x lr (no decay on the bias). Frozen parameters (partial BN's norms)
    are left out."""
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    undecayed = {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if callable(getattr(module, "no_weight_decay", None))
        for name in module.no_weight_decay()
    }
    weights, biases, norms, scales = [], [], [], []
    head = model.classifier
    for prefix, module in model.named_modules():
        if module is head:
            continue
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, norm_types):
                norms.append(param)
            elif name == "bias":
                biases.append(param)
            elif param.ndim <= 1 or (f"{prefix}.{name}" if prefix else name) in undecayed:
                scales.append(param)
            else:
                weights.append(param)
    groups = [
        {"name": "weights", "params": weights, "lr": lr, "weight_decay": weight_decay},
        {"name": "biases", "params": biases, "lr": lr * bias_lr_mult, "weight_decay": 0.0},
        {"name": "norms", "params": norms, "lr": lr, "weight_decay": 0.0},
        {"name": "scales", "params": scales, "lr": lr, "weight_decay": 0.0},
        {
            "name": "head_weight",
            "params": [head.weight],
            "lr": lr * head_lr_mult["weight"],
            "weight_decay": weight_decay,
        },
        {"name": "head_bias", "params": [head.bias], "lr": lr * head_lr_mult["bias"], "weight_decay": 0.0},
    ]
    trainable = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    return [g for g in trainable if g["params"]]


# devices whose parameters torch's single-kernel (fused) SGD and AdamW update
FUSED_DEVICES = frozenset({"cpu", "cuda", "xpu"})


def fused_update(groups: list[dict]) -> bool:
    """Whether every parameter lies on a device with fused SGD/AdamW kernels and is floating point: one kernel
    updates all of them instead of a Python loop over the tensors."""
    params = [p for group in groups for p in group["params"]]
    return bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)


def build_optimizer(groups: list[dict], lr: float, opt: Mapping, fused: bool = True) -> torch.optim.Optimizer:
    """``opt['name']``: ``sgd`` with ``momentum``/``nesterov``, or ``adamw`` with ``betas`` (decoupled
    weight decay per group, as the groups set it), one fused kernel if ``fused`` and ``fused_update`` allows. The
    recipe's values are in ``conf/model/tsm.yaml``."""
    name, fused = opt["name"], fused and fused_update(groups)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=opt["momentum"], nesterov=opt["nesterov"], fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(opt["betas"]), fused=fused)
    raise ValueError(f"model.optimizer.name must be 'sgd' or 'adamw', got {name!r}")


def check_recipe(optimizer: Mapping | None, scheduler: Mapping | None, label_smoothing: float, dropout: float) -> None:
    """The recipe's numbers in their ranges, each error naming its ``model.`` key (an unset block is left to
    :func:`tsm.training.module.recipe`)."""
    checks = [
        ("label_smoothing", label_smoothing, 0 <= label_smoothing <= 1, "in [0, 1]"),
        ("dropout", dropout, 0 <= dropout < 1, "in [0, 1)"),
    ]
    if optimizer is not None:
        head = [*optimizer["head_lr_mult_pretrained"].values(), *optimizer["head_lr_mult_scratch"].values()]
        checks += [
            ("optimizer.base_lr", optimizer["base_lr"], optimizer["base_lr"] > 0, "> 0"),
            ("optimizer.base_batch_size", optimizer["base_batch_size"], optimizer["base_batch_size"] >= 1, ">= 1"),
            ("optimizer.weight_decay", optimizer["weight_decay"], optimizer["weight_decay"] >= 0, ">= 0"),
            ("optimizer.momentum", optimizer["momentum"], 0 <= optimizer["momentum"] < 1, "in [0, 1)"),
            ("optimizer.bias_lr_mult", optimizer["bias_lr_mult"], optimizer["bias_lr_mult"] >= 0, ">= 0"),
            ("optimizer.head_lr_mult_*", head, all(m >= 0 for m in head), ">= 0"),
        ]
    if scheduler is not None:
        milestones = list(scheduler["milestones"])
        checks += [
            ("scheduler.warmup_epochs", scheduler["warmup_epochs"], scheduler["warmup_epochs"] >= 0, ">= 0"),
            ("scheduler.min_lr_ratio", scheduler["min_lr_ratio"], 0 <= scheduler["min_lr_ratio"] <= 1, "in [0, 1]"),
            ("scheduler.gamma", scheduler["gamma"], scheduler["gamma"] > 0, "> 0"),
            ("scheduler.milestones", milestones, all(m >= 0 for m in milestones), "epochs >= 0"),
        ]
    for key, value, ok, wanted in checks:
        if not ok:
            raise ValueError(f"model.{key} must be {wanted}, got {value!r}")


def schedule_factor(
    total_steps: int,
    warmup_steps: int,
    name: str = "cosine",
    milestones: tuple[int, ...] = (),
    gamma: float = 0.1,
    min_lr_ratio: float = 0.0,
) -> Callable[[int], float]:
    """The lr multiplier at a step: linear warm-up from 1/warmup_steps to 1, then cosine decay to
    ``min_lr_ratio`` or step decay by ``gamma`` at each milestone step."""
    if name not in ("cosine", "step"):
        raise ValueError(f"model.scheduler.name must be 'cosine' or 'step', got {name!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "step":
            return gamma ** sum(step >= m for m in milestones)
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def warmup_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, **kwargs) -> LambdaLR:
    """:func:`schedule_factor` per optimizer step (``kwargs``: its ``name``, ``milestones``, ``gamma``,
    ``min_lr_ratio``)."""
    return LambdaLR(optimizer, schedule_factor(total_steps, warmup_steps, **kwargs))


def scheduler_steps(scheduler: Mapping, steps_per_epoch: int) -> dict:
    """``model.scheduler`` (warm-up and milestones in epochs) as :func:`schedule_factor`'s arguments besides
    ``total_steps``, at ``steps_per_epoch`` steps an epoch."""
    return {
        "warmup_steps": int(scheduler["warmup_epochs"] * steps_per_epoch),
        "name": scheduler["name"],
        "milestones": tuple(int(e * steps_per_epoch) for e in scheduler["milestones"]),
        "gamma": scheduler["gamma"],
        "min_lr_ratio": scheduler["min_lr_ratio"],
    }
