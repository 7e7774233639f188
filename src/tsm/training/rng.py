"""The random number generators' states, saved in checkpoints so that a resumed run draws what an
uninterrupted one would have drawn (shuffling, augmentation, dropout): resuming changes no weight.

Plain tensors and lists only, so checkpoints stay loadable with ``weights_only=True``. Under DDP the
checkpoint holds rank 0's states, which every rank restores: a resumed multi-process run is valid but
not identical to an uninterrupted one.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

RNG_KEY = "tsm_rng"


def rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and PyTorch's (CPU and CUDA) global generators."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": position,
            "has_gauss": has_gauss,
            "cached": cached,
            "kind": kind,
        },
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` saved (CUDA states only where as many devices are present)."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    saved = states["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state((saved["kind"], keys, saved["position"], saved["has_gauss"], saved["cached"]))
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
