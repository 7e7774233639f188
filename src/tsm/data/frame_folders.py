"""Read the sampled frames of a clip from a folder of image files (``data.frames=true``): only the sampled files are
opened and decoded (Pillow)."""

from __future__ import annotations

import os
import re
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tsm.data.decode import error_reason, stack_frames
from tsm.errors import DataError


def frame_template_parts(template: str) -> list[tuple]:
    """``data.frame_template`` parsed (``string.Formatter``): one field that formats a frame number, as ``{:05d}``
    does; anything else (``{idx}``, ``{:05s}``, two fields, ``%05d``) is refused naming the key."""
    try:
        parts = list(string.Formatter().parse(template))
        if sum(part[1] is not None for part in parts) == 1 and template.format(1) != template.format(2):
            return parts
    except (ValueError, IndexError, KeyError, AttributeError):
        pass
    raise ValueError(
        f"data.frame_template={template!r} needs exactly one field for the frame number, as in '{{:05d}}.jpg'"
    )


def _frame_name_pattern(template: str) -> re.Pattern[str]:
    """``img_{:05d}.jpg`` -> a regex matching ``img_00001.jpg``: the template's one field as digits."""
    parts = frame_template_parts(template)
    regex = "".join(re.escape(literal) + (r"\d+" if field is not None else "") for literal, field, _, _ in parts)
    return re.compile(regex + r"\Z")


def count_frames(folder: str | os.PathLike, template: str, start: int = 1) -> int:
    """Files in a frame folder whose names fit ``template``, the first numbered ``start``; an empty or absent folder,
    or one whose files are named or numbered otherwise (``img_000001.jpg`` for ``img_{:05d}.jpg``, a first frame
    numbered 0 for ``start`` 1), is an error naming the key to set."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except (OSError, ValueError) as err:  # ValueError: a NUL character in the path
        raise DataError(folder, f"cannot list frame folder: {error_reason(err)}") from err
    pattern = _frame_name_pattern(template)
    matching = sorted(name for name in names if pattern.match(name))
    if not matching:
        raise DataError(folder, f"empty frame folder: no files named like {template!r}")
    if template.format(start) not in names:
        raise DataError(
            folder,
            f"no first frame {template.format(start)} (data.frame_template={template!r}, data.frame_start={start}); "
            f"its frames are named like {matching[0]}",
        )
    _check_first_frame(folder, template, start)
    return len(matching)


def _check_first_frame(folder: Path, template: str, start: int) -> None:
    """Refuse a folder holding the frame before the first one read: numbered from 0, read from 1, every frame would
    be the next one."""
    if start > 0 and (folder / template.format(start - 1)).is_file():
        raise DataError(
            folder,
            f"{template.format(start - 1)} is a frame before data.frame_start={start}: frames are numbered from "
            f"{start - 1} here (set data.frame_start={start - 1})",
        )


def read_frames(folder: str | os.PathLike, indices: Sequence[int], template: str, start: int = 1) -> torch.Tensor:
    """Image frames ``indices`` (0-based; file number = index + ``start``) of a frame folder as uint8
    ``(T, H, W, 3)``; each distinct file is read and decoded once."""
    folder = Path(folder)
    _check_first_frame(folder, template, start)
    decoded = {i: _read_image(folder / template.format(i + start)) for i in sorted({int(i) for i in indices})}
    return stack_frames(decoded, [int(i) for i in indices], folder)


def _read_image(path: Path) -> np.ndarray:
    """An image file as an ``(H, W, 3)`` uint8 RGB array (16-bit gray scaled to 8 bits, not clipped)."""
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16"):
                gray = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
                return np.repeat(gray[:, :, None], 3, axis=2)
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as err:
        raise DataError(path, "frame file not found") from err
    except Exception as err:  # any Pillow failure: OSError, DecompressionBombError, ValueError, SyntaxError...
        raise DataError(path, f"cannot decode image: {error_reason(err)}") from err
