"""How far one result is from another: the tolerance measure the model, export and quantization tests share."""

import numpy as np
import torch


def as_float64(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def rel_error(got: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray) -> float:
    """The largest absolute difference relative to the largest magnitude of ``expected``, in float64
    (tensors of any dtype, bf16 included, or arrays)."""
    got, expected = as_float64(got), as_float64(expected)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    return float(np.abs(got - expected).max() / np.abs(expected).max())
