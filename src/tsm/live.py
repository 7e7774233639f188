"""Run a streaming TSM over a video file or a camera: smoothed per-frame predictions, latency,
and an optional annotated output video."""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.transforms.v2 import functional as TF

from tsm.online import StreamingTSM


class PredictionSmoother:
    """Average the last ``window`` frames' probabilities; the shown label changes only after
    ``agree`` consecutive frames whose averaged top class is the same new class."""

    def __init__(self, window: int, agree: int) -> None:
        if window < 1 or agree < 1:
            raise ValueError(f"smoothing window and agree must be >= 1, got {window} and {agree}")
        self.recent: deque[torch.Tensor] = deque(maxlen=window)
        self.agree = agree
        self.label: int | None = None
        self.candidate: int | None = None
        self.streak = 0

    def update(self, probs: torch.Tensor) -> tuple[int, torch.Tensor]:
        """Add one frame's probabilities ``(K,)``; returns (shown label, averaged probabilities)."""
        self.recent.append(probs)
        mean = torch.stack(tuple(self.recent)).mean(0)
        top = int(mean.argmax())
        self.streak = self.streak + 1 if top == self.candidate else 1
        self.candidate = top
        if self.label is None or (top != self.label and self.streak >= self.agree):
            self.label = top
        return self.label, mean


def open_frames(source: str) -> Iterator[np.ndarray]:
    """RGB frames ``(H, W, 3)`` uint8 of a video file, or of camera ``/dev/video<N>`` for a number N."""
    container = av.open(f"/dev/video{source}", format="v4l2") if source.isdigit() else av.open(source)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
    finally:
        container.close()


def preprocess(frame: np.ndarray, scale_size: int, crop_size: int, mean: Sequence[float], std: Sequence[float]):
    """One RGB frame to a normalised ``(1, 3, crop, crop)`` tensor, as evaluation crops it."""
    image = torch.from_numpy(frame).permute(2, 0, 1)
    image = TF.center_crop(TF.resize(image, [scale_size], antialias=True), [crop_size, crop_size])
    image = image.float().div_(255)
    return ((image - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))[None]


@dataclass
class StreamResult:
    labels: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def latency_summary(self) -> dict[str, float]:
        ordered = sorted(self.latencies_ms)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        return {"frames": len(ordered), "median_ms": statistics.median(ordered), "p95_ms": p95}


def run_stream(
    model: StreamingTSM,
    frames: Iterator[np.ndarray],
    classes: Sequence[str],
    smoother: PredictionSmoother,
    scale_size: int,
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    top_k: int = 3,
    out_video: str | Path | None = None,
    fps: int = 12,
) -> StreamResult:
    """Feed frames one at a time; print each frame's smoothed top-k; optionally write an annotated video."""
    model.eval().reset()
    result = StreamResult()
    writer = None
    try:
        for index, frame in enumerate(frames):
            x = preprocess(frame, scale_size, crop_size, mean, std)
            start = time.perf_counter()
            with torch.inference_mode():
                probs = model.step(x)[0].softmax(-1)
            result.latencies_ms.append((time.perf_counter() - start) * 1e3)
            label, mean_probs = smoother.update(probs)
            result.labels.append(label)
            top = mean_probs.topk(min(top_k, len(classes)))
            ranked = ", ".join(
                f"{classes[i]} {p:.2f}" for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            )
            print(f"frame {index:5d}: {classes[label]:<30s} [{ranked}]")
            if out_video is not None:
                writer = writer or _VideoWriter(Path(out_video), frame.shape[1], frame.shape[0], fps)
                writer.write(_annotate(frame, f"{classes[label]} ({mean_probs[label]:.2f})"))
    finally:
        if writer is not None:
            writer.close()
    return result


def _annotate(frame: np.ndarray, text: str) -> np.ndarray:
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, image.width, 14], fill=(0, 0, 0))
    draw.text((2, 1), text, fill=(255, 255, 255))
    return np.asarray(image)


class _VideoWriter:
    """H.264 (or MPEG-4 where libx264 is missing) mp4 writer for RGB frames."""

    def __init__(self, path: Path, width: int, height: int, fps: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"

    def write(self, frame: np.ndarray) -> None:
        even = frame[: self.stream.height, : self.stream.width]
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(even), format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
