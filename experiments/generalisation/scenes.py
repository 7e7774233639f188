"""Two swipe-gesture renderers written apart from ``tsm.data.sources.synthetic``, so a recipe is tried
on scenes it was not tuned on: other code, other things moving, other textures, sizes, speeds,
backgrounds and noise.

Each renders a clip of one axis moving one way (left, or up) as uint8 ``(frames, H, W, 3)``; the
partner gesture (right, or down) is the same clip played backwards, so a single frame says nothing about
the direction and only temporal reasoning tells a pair apart.

- :func:`hand_swipe`: a skin-toned hand (palm, four fingers, thumb; any tilt) crossing a cluttered room of
  rectangles and lines, under a lighting gain, the camera drifting slowly, with sensor noise; the stroke
  eases in and out and fills a random part of the clip.
- :func:`particle_drift`: no object at all: a cloud of soft blobs of many sizes drifting the same way at
  their own speeds, wrapping around the frame, over a dark, blotchy, vignetted background.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# swipe name -> (axis, reversed): the forward render moves towards smaller x (left) or smaller y (up)
SWIPES = {
    "Swiping Left": ("x", False),
    "Swiping Right": ("x", True),
    "Swiping Up": ("y", False),
    "Swiping Down": ("y", True),
}


def swipe(render, rng: np.random.Generator, name: str, frames: int, height: int, width: int) -> np.ndarray:
    """Clip ``name`` (a :data:`SWIPES` key) from ``render(rng, axis, frames, height, width)``."""
    axis, backwards = SWIPES[name]
    clip = render(rng, axis, frames, height, width)
    return np.ascontiguousarray(clip[::-1]) if backwards else clip


def _to_uint8(frames: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    noisy = frames + rng.normal(0.0, noise, size=frames.shape)
    return (np.clip(noisy, 0.0, 1.0) * 255).round().astype(np.uint8)


def _room(rng: np.random.Generator, height: int, width: int, clutter: bool = True) -> Image.Image:
    """A static scene: a wall gradient and (``clutter``) furniture-like rectangles and a few lines, slightly blurred."""
    top, bottom = rng.uniform(0.2, 0.8, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    wall = np.broadcast_to(top + (bottom - top) * ramp, (height, width, 3))
    image = Image.fromarray((wall * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(5, 12) if clutter else 0):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.1, 0.5) * width, rng.uniform(0.1, 0.5) * height
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(int(c) for c in rng.integers(20, 236, size=3)))
    for _ in range(rng.integers(2, 6) if clutter else 0):
        points = rng.uniform(0, 1, size=4) * [width, height, width, height]
        draw.line(list(points), fill=tuple(int(c) for c in rng.integers(0, 256, size=3)), width=int(rng.integers(1, 4)))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


def _hand(rng: np.random.Generator, size: int, textured: bool = False) -> Image.Image:
    """An RGBA hand ``size`` pixels tall: a palm, four fingers of uneven length and a thumb, tilted at random; flat
    skin tones, or (``textured``) a 4x4 checker of random colours over its shape."""
    skin = rng.uniform([150, 90, 60], [245, 200, 170])
    shade = tuple(int(c) for c in skin * rng.uniform(0.75, 0.95))
    canvas = 4 * size
    hand = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(hand)
    unit = size / 10
    cx, cy = canvas / 2, canvas / 2 + 1.5 * unit
    draw.ellipse([cx - 2.6 * unit, cy - 2.5 * unit, cx + 2.6 * unit, cy + 3 * unit], fill=(*map(int, skin), 255))
    for i, length in enumerate(rng.uniform([3.5, 4.2, 4.0, 3.0], [4.5, 5.2, 5.0, 3.8])):
        x = cx - 2.1 * unit + i * 1.4 * unit
        draw.rounded_rectangle(
            [x - 0.6 * unit, cy - 2 * unit - length * unit, x + 0.6 * unit, cy], 0.6 * unit, fill=shade
        )
    draw.rounded_rectangle([cx + 2 * unit, cy - 0.5 * unit, cx + 4.2 * unit, cy + 0.8 * unit], 0.6 * unit, fill=shade)
    hand = hand.rotate(rng.uniform(-35, 35), resample=Image.BILINEAR, center=(cx, cy))
    hand = np.asarray(hand.crop(hand.getbbox())).copy()
    if textured:
        cells = rng.integers(30, 226, size=(4, 4, 3))
        rows, cols = (np.minimum(np.arange(n) * 4 // n, 3) for n in hand.shape[:2])
        hand[..., :3] = cells[rows][:, cols]
    return Image.fromarray(hand, "RGBA")


def _ease(t: np.ndarray, start: float, end: float, power: float) -> np.ndarray:
    """Progress 0 -> 1 between clip times ``start`` and ``end``, easing in and out (symmetric in time)."""
    u = np.clip((t - start) / (end - start), 0.0, 1.0)
    return u**power / (u**power + (1 - u) ** power)


def hand_swipe(
    rng: np.random.Generator,
    axis: str,
    frames: int,
    height: int,
    width: int,
    clutter: bool = True,
    textured: bool = False,
    slow: bool = False,
    small: bool = False,
    steady: bool = False,
) -> np.ndarray:
    """A hand crossing a room towards smaller ``axis`` (``"x"``: left, ``"y"``: up); see the module. For diagnosis,
    one thing changed: ``clutter`` False, a bare wall; ``textured``, a checkered hand; ``slow``, a quarter of the
    frame crossed at constant speed over the whole clip; ``small``, a hand 0.2-0.3 of the frame's short side;
    ``steady``, no camera drift."""
    margin = 4  # the camera drifts over a slightly larger room
    room = _room(rng, height + 2 * margin, width + 2 * margin, clutter)
    drift = rng.uniform(-margin, margin, size=2) * (not steady)
    hand = _hand(rng, int(rng.uniform(*((0.2, 0.3) if small else (0.45, 0.7))) * min(height, width)), textured)
    along, across = (width, height) if axis == "x" else (height, width)
    start = rng.uniform(*((0.55, 0.65) if slow else (0.6, 0.95))) * along
    end = rng.uniform(*((0.3, 0.4) if slow else (0.05, 0.4))) * along
    lane = rng.uniform(0.3, 0.7) * across
    lead, tail = (0.0, 0.0) if slow else rng.uniform(0.0, 0.3, size=2)
    progress = _ease(np.linspace(0, 1, frames), lead, 1 - tail, 1.0 if slow else rng.uniform(1.0, 2.5))
    arc = rng.uniform(-0.1, 0.1) * across * np.sin(np.pi * progress)
    gain = rng.uniform(0.7, 1.2)
    clip = np.empty((frames, height, width, 3), dtype=np.float64)
    for t in range(frames):
        position = start + (end - start) * progress[t]
        offset = lane + arc[t]
        x, y = (position, offset) if axis == "x" else (offset, position)
        dx, dy = (margin + drift * (t / (frames - 1) - 0.5)).round().astype(int)
        frame = room.crop((dx, dy, dx + width, dy + height))
        frame.paste(hand, (int(x - hand.width / 2), int(y - hand.height / 2)), hand)
        clip[t] = np.asarray(frame, dtype=np.float64) / 255 * gain
    return _to_uint8(clip, rng, rng.uniform(0.02, 0.06))


def _blotches(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A dark background ``(H, W, 1)``: coarse random blotches, smoothly upsampled, under a vignette."""
    coarse = Image.fromarray((rng.uniform(0.05, 0.35, size=(4, 5)) * 255).astype(np.uint8))
    field = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float64) / 255
    y, x = np.mgrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    return (field * (1 - 0.4 * (x**2 + y**2) / 2))[..., None]


def particle_drift(rng: np.random.Generator, axis: str, frames: int, height: int, width: int) -> np.ndarray:
    """Blobs drifting towards smaller ``axis`` (``"x"``: left, ``"y"``: up), wrapping; see the module."""
    count = int(rng.integers(10, 26))
    background = _blotches(rng, height, width) * rng.uniform(0.6, 1.0, size=3)
    centres = rng.uniform(0, 1, size=(count, 2)) * [width, height]
    radii = rng.uniform(3.0, 8.0, size=count)
    colours = rng.uniform(0.45, 1.0, size=(count, 3))
    along = width if axis == "x" else height
    travel = rng.uniform(0.3, 0.5) * along * rng.uniform(0.75, 1.25, size=count)
    wobble = rng.uniform(0, 2 * np.pi, size=count)
    y, x = np.mgrid[0:height, 0:width]
    clip = np.empty((frames, height, width, 3), dtype=np.float64)
    for t, time in enumerate(np.linspace(0, 1, frames)):
        frame = np.broadcast_to(background, (height, width, 3)).copy()
        for (cx, cy), r, colour, go, phase in zip(centres, radii, colours, travel, wobble, strict=True):
            sway = 2.0 * np.sin(2 * np.pi * time + phase)
            if axis == "x":
                cx, cy = (cx - go * time) % width, cy + sway
            else:
                cx, cy = cx + sway, (cy - go * time) % height
            dx = np.minimum(abs(x - cx), width - abs(x - cx))  # wrapped distances: a blob leaving one edge
            dy = np.minimum(abs(y - cy), height - abs(y - cy))  # enters at the other
            alpha = np.clip(r + 0.5 - np.sqrt(dx**2 + dy**2), 0.0, 1.0)[..., None]
            frame = frame * (1 - alpha) + colour * alpha
        clip[t] = frame
    return _to_uint8(clip, rng, rng.uniform(0.03, 0.08))
