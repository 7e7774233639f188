"""Synthetic gestures: a textured object moving over a textured background, no download.

Classes come in time-reversed pairs (a clip of one played backwards is a clip of the
other), like Jester's gestures: a model that only averages per-frame evidence (TSN)
cannot tell a pair apart, a model with temporal reasoning (TSM) can. Every clip is a
pure function of (seed, split, index), and only the requested frames are rendered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch.nn import functional as F

CLASSES = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "zoom_in",
    "zoom_out",
    "rotate_clockwise",
    "rotate_counterclockwise",
    "static",
)
# Each class and the class its time reversal belongs to.
REVERSED = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4, 6: 7, 7: 6, 8: 8}
# A horizontal flip swaps left/right and the sense of rotation.
FLIP_LABEL_MAP = {0: 1, 1: 0, 6: 7, 7: 6}
SPLITS = ("train", "val", "test")


class SyntheticGestures:
    """A video source of ``sizes[split]`` clips of ``num_frames`` frames, ``frame_size`` square.

    ``speed`` scales how far objects move, grow and turn over a clip; ``noise`` is the
    standard deviation of per-pixel Gaussian noise on [0, 1] intensities.
    """

    classes = CLASSES
    flip_label_map = FLIP_LABEL_MAP

    def __init__(
        self,
        split: str,
        sizes: Mapping[str, int],
        num_frames: int = 16,
        frame_size: int = 72,
        seed: int = 0,
        speed: float = 1.0,
        noise: float = 0.03,
    ) -> None:
        if split not in SPLITS or split not in sizes:
            raise ValueError(f"synthetic split {split!r} needs a size in data.source.sizes, got {dict(sizes)}")
        size = int(sizes[split])
        if size < 1 or num_frames < 2 or frame_size < 8:
            raise ValueError(
                f"synthetic data needs size >= 1, num_frames >= 2, frame_size >= 8; "
                f"got size={size}, num_frames={num_frames}, frame_size={frame_size}"
            )
        self.split = split
        self.size = size
        self.frames = num_frames
        self.frame_size = frame_size
        self.seed = seed
        self.speed = speed
        self.noise = noise

    def __len__(self) -> int:
        return self.size

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.size:
            raise IndexError(f"synthetic {self.split} index {index} outside 0..{self.size - 1}")
        return np.random.default_rng([self.seed, SPLITS.index(self.split), index])

    def video_id(self, index: int) -> str:
        return f"synthetic-{self.split}-{index:06d}"

    def num_frames(self, index: int) -> int:
        return self.frames

    def label(self, index: int) -> int:
        return int(self._rng(index).integers(len(CLASSES)))

    def read(self, index: int, indices: list[int]) -> torch.Tensor:
        """Frames ``indices`` of clip ``index`` as uint8 ``(len(indices), H, W, 3)``."""
        return self.render(index, indices, self.label(index))

    def render(self, index: int, indices: list[int], label: int) -> torch.Tensor:
        """Frames of clip ``index``'s scene moving as class ``label`` (its own label in :meth:`read`)."""
        rng = self._rng(index)
        rng.integers(len(CLASSES))  # the label draw; the scene comes after it
        scene = _Scene(rng, self.frame_size, self.speed)
        # A reversed-pair class is its partner's trajectory played backwards.
        forward_label = min(label, REVERSED[label])
        times = torch.tensor(indices, dtype=torch.float64) / (self.frames - 1)
        if label != forward_label:
            times = 1 - times
        frames = scene.render(forward_label, times)
        noise_rng = torch.Generator().manual_seed(int(rng.integers(2**62)))
        frames = frames + self.noise * torch.randn(frames.shape, generator=noise_rng)
        return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class _Scene:
    """Random background, object texture and shape, start pose and motion extent of one clip."""

    def __init__(self, rng: np.random.Generator, frame_size: int, speed: float) -> None:
        self.size = frame_size
        self.background = _texture(rng, frame_size, cells=4, contrast=0.3, mode="bicubic")
        texture = _texture(rng, 32, cells=4, contrast=1.0, mode="nearest")
        self.object = torch.cat([texture, _shape_mask(rng, 32)])  # RGB + alpha
        self.scale = rng.uniform(0.28, 0.4)
        self.angle = rng.uniform(0, 2 * math.pi)
        self.travel = speed * rng.uniform(0.8, 1.2)
        self.zoom = 1 + speed * rng.uniform(0.7, 1.0)
        self.turn = speed * rng.uniform(0.5, 0.8) * math.pi
        self.center = rng.uniform(-0.35, 0.35, size=2)

    def render(self, forward_label: int, times: torch.Tensor) -> torch.Tensor:
        """Frames ``(len(times), 3, H, W)`` in [0, 1] at clip times in [0, 1]."""
        n = len(times)
        cx = torch.full((n,), self.center[0], dtype=torch.float64)
        cy = torch.full((n,), self.center[1], dtype=torch.float64)
        scale = torch.full((n,), self.scale, dtype=torch.float64)
        angle = torch.full((n,), self.angle, dtype=torch.float64)
        if forward_label == 0:  # move left: from right of centre to left of it
            cx = cx + self.travel * (0.5 - times)
        elif forward_label == 2:  # move up (image y grows downwards)
            cy = cy + self.travel * (0.5 - times)
        elif forward_label == 4:  # zoom in: the object grows
            scale = scale * self.zoom ** (times - 0.5)
        elif forward_label == 6:  # rotate clockwise on screen
            angle = angle + self.turn * (times - 0.5)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # Inverse map from output pixel (normalised coords) to object texture coords.
        theta = torch.stack(
            [
                torch.stack([cos, sin, -(cos * cx + sin * cy)], dim=1),
                torch.stack([-sin, cos, -(-sin * cx + cos * cy)], dim=1),
            ],
            dim=1,
        ).float()
        grid = F.affine_grid(theta, [n, 4, self.size, self.size], align_corners=False)
        obj = F.grid_sample(self.object.expand(n, -1, -1, -1), grid, align_corners=False)
        alpha = obj[:, 3:]
        return self.background * (1 - alpha) + obj[:, :3] * alpha


def _texture(rng: np.random.Generator, size: int, cells: int, contrast: float, mode: str) -> torch.Tensor:
    """A random colour field ``(3, size, size)`` in [0, 1]: a ``cells``x``cells`` grid, upsampled
    smoothly (``bicubic``) or as a checkerboard of sharp cells (``nearest``)."""
    base = rng.uniform(0.5 - contrast / 2, 0.5 + contrast / 2, size=(1, 3, cells, cells))
    field = F.interpolate(torch.tensor(base, dtype=torch.float32), size=(size, size), mode=mode)
    return field[0].clamp(0, 1)


def _shape_mask(rng: np.random.Generator, size: int) -> torch.Tensor:
    """An alpha mask ``(1, size, size)``: a square or a disc filling the texture."""
    coords = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    if rng.random() < 0.5:
        mask = (x.abs() <= 0.9) & (y.abs() <= 0.9)
    else:
        mask = x**2 + y**2 <= 0.9**2
    return mask.float()[None]
