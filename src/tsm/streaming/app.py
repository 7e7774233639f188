"""Run a streaming TSM over a video file or a camera: smoothed per-frame predictions, latency,
and an optional annotated output video.

Needs numpy, Pillow and PyAV only, no PyTorch: the model is any ``step(frame) -> logits`` on numpy
arrays, a PyTorch ``StreamingTSM`` (:func:`tsm.streaming.model.numpy_step`) or an ONNX file run by
:class:`tsm.streaming.runtime.OnnxStreamSession`. An ONNX file alone is enough to run a camera::

    python -m tsm.streaming.app model_stream.onnx --source 0 [--out-video annotated.mp4]

(class names, input size and normalisation come from the file's metadata).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw

from tsm.checks import check_counts
from tsm.errors import DataError
from tsm.rotation import upright


class PredictionSmoother:
    """Average the last ``window`` frames' probabilities; the shown label changes only after
    ``agree`` consecutive frames whose averaged top class is the same new class."""

    def __init__(self, window: int, agree: int) -> None:
        if window < 1 or agree < 1:
            raise ValueError(f"smoothing window and agree must be >= 1, got {window} and {agree}")
        self.recent: deque[np.ndarray] = deque(maxlen=window)
        self.agree = agree
        self.label: int | None = None
        self.candidate: int | None = None
        self.streak = 0

    def update(self, probs: np.ndarray) -> tuple[int, np.ndarray]:
        """Add one frame's probabilities ``(K,)``; returns (shown label, averaged probabilities)."""
        self.recent.append(np.asarray(probs, dtype=np.float64))
        mean = np.mean(self.recent, axis=0)
        top = int(mean.argmax())
        self.streak = self.streak + 1 if top == self.candidate else 1
        self.candidate = top
        if self.label is None or (top != self.label and self.streak >= self.agree):
            self.label = top
        return self.label, mean


# frames wider (or taller) than this are refused: resized to the scale size on their short side, a 131072x2 frame
# would take gigabytes
MAX_ASPECT = 16


def open_frames(source: str) -> Iterator[np.ndarray]:
    """RGB frames ``(H, W, 3)`` uint8 of a video file (the stream FFmpeg picks, turned upright as its rotation says),
    or of camera ``/dev/video<N>`` for a number N; a source that cannot be opened, has no video, gives no frame or a
    frame that cannot be decoded is a :class:`~tsm.errors.DataError` naming it."""
    camera = source.isdigit()
    try:
        container = av.open(f"/dev/video{source}", format="v4l2") if camera else av.open(source)
    except (av.FFmpegError, UnicodeDecodeError) as err:  # PyAV decodes the container's tags as UTF-8
        what = f"camera /dev/video{source}" if camera else "a video file"
        raise DataError(source, f"cannot open it as {what}: {getattr(err, 'strerror', None) or err}") from err
    try:
        if not container.streams.video:
            raise DataError(source, "has no video stream")
        stream = container.streams.best("video")
        stream.thread_type = "AUTO"
        count = 0
        try:
            for frame in container.decode(stream):
                if max(frame.width, frame.height) > MAX_ASPECT * min(frame.width, frame.height):
                    raise DataError(
                        source,
                        f"frame {count} is {frame.width}x{frame.height}: a side over {MAX_ASPECT} times the other",
                    )
                yield upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                count += 1
        except (av.FFmpegError, UnicodeDecodeError) as err:
            raise DataError(source, f"cannot decode frame {count}: {getattr(err, 'strerror', None) or err}") from err
        if not count:
            raise DataError(source, "no frame could be decoded from it")
    finally:
        container.close()


def preprocess(
    frame: np.ndarray, scale_size: int, crop_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """One RGB frame to a normalised float32 ``(1, 3, crop_h, crop_w)`` array, cropped as evaluation crops
    clips (short side to ``scale_size``, bilinear with antialiasing, centre crop; Pillow instead of
    torchvision, so that no PyTorch is needed: pixel values differ from the data pipeline's by a rounding).
    ``crop_size``: a side, or ``[height, width]`` (an export's ``input_size``); a frame whose shape cannot hold
    that crop at ``scale_size`` is resized just enough to hold it."""
    crop_h, crop_w = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    height, width = frame.shape[:2]
    short, long = sorted((height, width))
    resized = int(scale_size * long / short)  # as torchvision's resize rounds the long side
    size = (resized, scale_size) if width >= height else (scale_size, resized)
    if size[0] < crop_w or size[1] < crop_h:  # a crop wider (or taller) than the frame's shape allows
        factor = max(crop_w / width, crop_h / height)
        size = (max(crop_w, round(width * factor)), max(crop_h, round(height * factor)))
    image = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR), dtype=np.float32) / 255
    top, left = round((size[1] - crop_h) / 2), round((size[0] - crop_w) / 2)
    crop = image[top : top + crop_h, left : left + crop_w]
    normalised = (crop - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


LATENCY_WINDOW = 100_000  # frames whose latencies a stream keeps: over an hour at 24 fps, under 1 MB


@dataclass
class StreamResult:
    """What a stream ran: its frame count, the label shown last, and the latencies of its last ``LATENCY_WINDOW``
    frames (a camera stream runs for days: its memory stays bounded)."""

    frames: int = 0
    label: int | None = None
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def latency_summary(self) -> dict[str, float]:
        """Frames run, and the median and 95th percentile of the kept latencies (``latency_of_last`` says how many
        when the stream ran longer than the window)."""
        ordered = sorted(self.latencies_ms)
        if not ordered:  # stopped (Ctrl-C) before its first frame
            return {"frames": 0}
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        summary = {"frames": self.frames, "median_ms": statistics.median(ordered), "p95_ms": p95}
        return summary if len(ordered) == self.frames else {**summary, "latency_of_last": len(ordered)}


def run_stream(
    step: Callable[[np.ndarray], np.ndarray],
    frames: Iterator[np.ndarray],
    info: Mapping[str, Any],
    smoother: PredictionSmoother,
    top_k: int = 3,
    out_video: str | Path | None = None,
    fps: int = 12,
) -> StreamResult:
    """Feed frames one at a time to ``step`` (a new stream: ``(1, 3, crop, crop)`` float32 in, logits
    ``(1, K)`` out), preprocessed as the model's ``info`` says (``class_names``, ``scale_size``,
    ``input_size``, ``mean``, ``std``); print each frame's smoothed top-k; optionally write an annotated video."""
    check_counts({"top_k (--top-k)": top_k, **({"out_fps": fps} if out_video is not None else {})}, group="")
    classes = info["class_names"]
    result = StreamResult()
    writer = None
    try:
        for index, frame in enumerate(frames):  # until the frames end or Ctrl-C (or SIGTERM: stop_on_sigterm)
            x = preprocess(frame, info["scale_size"], info["input_size"], info["mean"], info["std"])
            start = time.perf_counter()
            logits = step(x)[0]
            result.latencies_ms.append((time.perf_counter() - start) * 1e3)
            label, mean_probs = smoother.update(softmax(logits))
            result.frames, result.label = result.frames + 1, label
            ranked = ", ".join(f"{classes[i]} {mean_probs[i]:.2f}" for i in np.argsort(-mean_probs)[:top_k])
            print(f"frame {index:5d}: {classes[label]:<30s} [{ranked}]")
            if out_video is not None:
                writer = writer or _VideoWriter(Path(out_video), frame.shape[1], frame.shape[0], fps)
                writer.write(_annotate(frame, f"{classes[label]} ({mean_probs[label]:.2f})"))
    except KeyboardInterrupt:
        print(f"stopped after {result.frames} frames")
    finally:
        if writer is not None:
            writer.close()  # a stopped stream's video is complete up to its last frame
    return result


OUT_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")


def check_out_video(out_video: str | Path | None, source: str) -> None:
    """Refuse, before the first frame, an annotated copy that would replace the source or has no video suffix."""
    if out_video is None:
        return
    if Path(out_video).is_dir():
        raise ValueError(f"out video {out_video} is a folder: name the video file to write in it")
    parent = Path(out_video).resolve().parent
    if parent.is_dir() and not os.access(parent, os.W_OK):
        raise ValueError(f"out video {out_video}: its folder {parent} is not writable")
    if Path(out_video).suffix.lower() not in OUT_SUFFIXES:
        raise ValueError(f"out video {out_video}: give a name ending in one of {', '.join(OUT_SUFFIXES)}")
    if not source.isdigit() and Path(source).resolve() == Path(out_video).resolve():
        raise ValueError(f"out video {out_video} is the source video: it would be replaced; give another name")


def stop_on_sigterm() -> None:
    """Let SIGTERM stop a stream as Ctrl-C does (its annotated video closed, its summary printed)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


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


def main(argv: Sequence[str] | None = None) -> StreamResult:
    """Stream a video or camera through a stream-mode ONNX, LiteRT or TVM file, with no PyTorch."""
    from tsm.streaming.sessions import open_stream

    parser = argparse.ArgumentParser(
        description="Run a stream-mode TSM file (.onnx, .tflite, .so) over a video or camera."
    )
    parser.add_argument("file", help="a file written by src/export.py mode=stream (format=onnx, tflite or tvm)")
    parser.add_argument("--source", required=True, help="a video file, or a number N for the camera /dev/videoN")
    parser.add_argument("--out-video", default=None, help="write an annotated copy of the video here")
    parser.add_argument("--window", type=int, default=4, help="average the probabilities of this many frames")
    parser.add_argument("--agree", type=int, default=3, help="frames that must agree before the label changes")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        check_out_video(args.out_video, args.source)
        session = open_stream(args.file)
        smoother = PredictionSmoother(args.window, args.agree)
        stop_on_sigterm()
        frames = open_frames(args.source)
        result = run_stream(session.step, frames, session.info, smoother, args.top_k, args.out_video)
    except (DataError, ValueError, FileNotFoundError) as error:  # bad input: its message, not a traceback
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print({"per-frame latency": result.latency_summary()})
    return result


if __name__ == "__main__":
    main()
