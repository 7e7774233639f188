"""Random values for what timm initialises to constants, so that every residual branch (and the shift
in it) counts in a random-weight test."""

import torch
from torch import nn

from tsm.models import build_recognizer
from tsm.models.recognizer import Recognizer


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm affine and running stats: timm zero-inits the last BN of residual branches,
    which would make every residual branch (and so every shift in it) contribute nothing."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            module.weight.data = torch.rand(c, generator=generator) + 0.5
            module.bias.data = 0.2 * torch.randn(c, generator=generator)
            module.running_mean = 0.2 * torch.randn(c, generator=generator)
            module.running_var = torch.rand(c, generator=generator) + 0.5
    return model


def randomize_constants(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values for every parameter and buffer that timm initialises to one constant: norm scales
    and shifts, running statistics, layer scales (1e-6), ConvNeXt-V2's GRN (zeros), zero-initialised
    last norms of residual branches. Scales, variances and ones become U(0.5, 1.5), the rest N(0, 0.2^2)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, tensor in tensors:
        tensor = tensor.detach()
        if not tensor.is_floating_point() or tensor.numel() < 2 or not bool((tensor == tensor.flatten()[0]).all()):
            continue
        positive = name.endswith("running_var") or float(tensor.flatten()[0]) >= 0.5
        values = (
            torch.rand(tensor.shape, generator=generator) + 0.5
            if positive
            else 0.2 * torch.randn(tensor.shape, generator=generator)
        )
        with torch.no_grad():
            tensor.copy_(values)
    return model


def random_recognizer(backbone: str, num_classes: int, num_segments: int, **kwargs) -> Recognizer:
    """``build_recognizer(...)`` from seed 0 with random BatchNorm affine and statistics (:func:`randomize_norms`),
    in eval mode."""
    torch.manual_seed(0)
    return randomize_norms(build_recognizer(backbone, num_classes, num_segments, **kwargs)).eval()
