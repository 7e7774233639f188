"""Parameters, multiply-accumulates and latency of a model for one input.

MACs follow the TSM paper's convention ("33G FLOPs" for TSM-ResNet50 8x224): the
multiply-accumulates of convolutions and linear/matmul layers only, counted by PyTorch's
own ``torch.utils.flop_counter`` (which reports 2 FLOPs per MAC). Normalisation, activations,
pooling and the shift (a copy) are not counted; mmaction2's counter counts some of them,
hence its 32.88G for the same model. Attention is counted through PyTorch's math form of
``scaled_dot_product_attention`` (two batched matmuls), which the counter sees; the fused kernels
it does not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

MAC_OPS = ("convolution", "mm", "addmm", "bmm", "baddbmm", "matmul")


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode for the block, its previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def count(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """``{"params": ..., "macs": ...}`` for one forward pass on a zero input of ``input_shape``."""
    device = next(model.parameters()).device
    with evaluating(model), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(*input_shape, device=device))
    flops = sum(n for op, n in counter.get_flop_counts()["Global"].items() if str(op).split(".")[1] in MAC_OPS)
    return {"params": sum(p.numel() for p in model.parameters()), "macs": flops // 2}


def median_ms(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds (CUDA work is synchronised)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def eager_latency_ms(model: nn.Module, input_shape: Sequence[int], repeats: int = 10) -> float:
    """Median eager forward time for one input of ``input_shape`` under ``inference_mode``."""
    device = next(model.parameters()).device
    x = torch.randn(*input_shape, device=device)
    with evaluating(model), torch.inference_mode():
        return median_ms(lambda: model(x), repeats)
