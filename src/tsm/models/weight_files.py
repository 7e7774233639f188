"""The one reader of weights files: checkpoints of this project, backbone and I3D state dicts,
released TSM ``.pth`` files, teacher files and teacher-logit caches all go through :func:`safe_load`.

Files are untrusted input (released weights come from the internet), and unpickling can run any
code a file carries. So every file is read with ``torch.load(weights_only=True)``: tensors, numbers,
strings and plain containers only. A file that needs more is refused, naming it, and never unpickled.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tsm.errors import DataError, UnsafeFileError

# How a torch.save file begins: a zip archive (PyTorch >= 1.6), or a pickle's protocol opcode (older files).
TORCH_SAVE_STARTS = (b"PK\x03\x04", b"\x80")


def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """The content of a ``torch.save`` file, read with ``weights_only=True``; ``what`` names the file's
    role (a config key) in errors. Raises :class:`UnsafeFileError` rather than unpickle arbitrary objects,
    and :class:`DataError` for a file that is not a ``torch.save`` archive (empty, truncated, other bytes)."""
    file = Path(path)
    if file.is_dir():
        raise FileNotFoundError(f"{what}: {file} is a folder; name a file in it (a run's checkpoints/last.ckpt)")
    if not file.is_file():
        raise FileNotFoundError(f"{what}: no such file {file}")
    with open(file, "rb") as stream:
        if not stream.read(4).startswith(TORCH_SAVE_STARTS):
            raise DataError(file, f"{what} is not a readable torch.save file (neither a zip archive nor a pickle)")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else type(error).__name__)
        raise UnsafeFileError(
            f"{what} {file} holds Python objects other than tensors and plain containers ({reason}). "
            "It is not unpickled here: unpickling can run code the file carries. Weights files of this project, "
            "timm, the TSM release and the I3D port need no such objects; if you trust this one, load it yourself "
            "with torch.load(..., weights_only=False) and save its tensors as a plain state dict."
        ) from error
    except Exception as error:  # EOFError, RuntimeError (zip), KeyError, ...: what torch.load makes of other bytes
        why = str(error).split("\n", 1)[0]
        raise DataError(file, f"{what} is not a readable torch.save file ({type(error).__name__}: {why})") from error


def tensor_mapping(value: Any, source: str | Path, what: str = "state_dict") -> dict[str, torch.Tensor]:
    """``value`` checked to be weights: a mapping of names to tensors (a :class:`DataError` naming ``source``)."""
    if not isinstance(value, Mapping):
        raise DataError(source, f"its {what} is a {type(value).__name__}, not a mapping of names to tensors")
    odd = next(((k, v) for k, v in value.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))), None)
    if odd is not None:
        raise DataError(source, f"its {what} holds {odd[0]!r}: {type(odd[1]).__name__}, not a named tensor")
    return dict(value)


def load_backbone_file(net: nn.Module, path: str | Path) -> None:
    """Load ImageNet weights for a timm backbone from a local file; its classifier is dropped."""
    state = safe_load(path, "model.pretrained_file")
    state = state.get("state_dict", state)
    kept = {k: v for k, v in state.items() if k.split(".")[0] not in ("fc", "classifier", "head")}
    own = net.state_dict()
    missing = [k for k in own if k not in kept]
    unexpected = [k for k in kept if k not in own]
    wrong = [
        f"{k} {tuple(v.shape)} (backbone: {tuple(own[k].shape)})"
        for k, v in kept.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"model.pretrained_file {path} does not match the backbone: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}, "
            f"other shapes {wrong[:5]}"
        )
    net.load_state_dict(kept)
