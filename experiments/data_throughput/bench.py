"""Clip reading throughput per data-loader worker: frame folders, and videos read sparsely or whole.

    python experiments/data_throughput/bench.py [--clips 40] [--out experiments/data_throughput/results.md]

Builds three inputs in a temporary folder, then reads 8-frame TSN training clips (random frame
per segment, fixed seed) from them in one process, as one loader worker does:
  (a) Jester-like: a folder of 37 JPEG frames, 176x100;
  (b) Kinetics-like: 10 s of 340x256 H.264 mp4 at 30 fps, a keyframe every 60 frames;
  (c) Something-V2-like: 3 s of 427x240 VP9 webm at 12 fps (libvpx-vp9's default keyframe spacing).
Each video is read three ways: ``sparse`` (tsm.data.decode.read_video: decode from the keyframe
before each wanted frame, RGB only for kept frames), ``all, RGB kept`` (decode every frame,
convert the 8 kept ones) and ``all, RGB all`` (decode and convert every frame, then pick 8: what a
whole-video reader such as torchvision.io.read_video does). ``+ transform`` adds the training
transform (multi-scale crop to 224, flip, normalise) to the sparse/folder read.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch
import torchvision
from torchvision.io import write_jpeg

from tsm.data.decode import DecodeStats, read_frames, read_video, video_num_frames
from tsm.data.sampling import segment_indices
from tsm.data.transforms import ClipTransform

SEGMENTS = 8


def scene(num_frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames of a smooth random texture panning behind a moving square, with
    mild noise: some texture and motion so the codecs do real work."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2, 3))
    texture = np.kron(base, np.ones((8, 8, 1)))
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        shift = t % 8
        frame = texture[shift : shift + height, shift : shift + width].copy()
        x, y = (5 * t) % (width - 40), (3 * t) % (height - 40)
        frame[y : y + 40, x : x + 40] = (255 - 3 * t % 255, 80, 40)
        frames[t] = np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255)
    return frames


def encode(path: Path, frames: np.ndarray, codec: str, fps: int, gop: int | None) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
            stream.options = {"sc_threshold": "0"}  # keyframes exactly every gop frames
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def read_all(path: Path, indices: list[int], convert_all: bool) -> torch.Tensor:
    """Baseline: decode every frame (PyAV threads on), convert all or only the kept ones, pick ``indices``."""
    keep = set(indices)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = {
            i: frame.to_ndarray(format="rgb24")
            for i, frame in enumerate(container.decode(stream))
            if convert_all or i in keep
        }
    return torch.from_numpy(np.stack([frames[i] for i in indices]))


def clips_per_second(read: Callable[[list[int]], torch.Tensor], num_frames: int, clips: int) -> float:
    rng = np.random.default_rng(0)
    draws = [segment_indices(num_frames, SEGMENTS, True, rng) for _ in range(clips)]
    read(draws[0])  # warm-up
    start = time.perf_counter()
    for indices in draws:
        read(indices)
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40, help="clips read per measurement")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    transform = ClipTransform(True, 224, 256)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jester"
        folder.mkdir()
        for i, frame in enumerate(scene(37, 176, 100), 1):
            write_jpeg(torch.from_numpy(frame).permute(2, 0, 1).contiguous(), str(folder / f"{i:05d}.jpg"))
        kinetics = encode(Path(tmp) / "kinetics.mp4", scene(300, 340, 256), "libx264", 30, gop=60)
        something = encode(Path(tmp) / "something.webm", scene(36, 427, 240), "libvpx-vp9", 12, gop=None)

        def jester(indices: list[int]) -> torch.Tensor:
            return read_frames(folder, indices, "{:05d}.jpg")

        rows.append(("(a) Jester-like, 37 JPEG frames 176x100", "folder", clips_per_second(jester, 37, args.clips)))
        rows.append(
            ("", "folder + transform", clips_per_second(lambda i: transform(jester(i), 0, rng), 37, args.clips))
        )
        for name, path in (
            ("(b) Kinetics-like, 10 s H.264 340x256 30 fps, GOP 60", kinetics),
            ("(c) Something-V2-like, 3 s VP9 427x240 12 fps", something),
        ):
            n = video_num_frames(path)
            sparse = clips_per_second(lambda i, p=path: read_video(p, i), n, args.clips)
            full = clips_per_second(lambda i, p=path: transform(read_video(p, i), 0, rng), n, args.clips)
            kept = clips_per_second(lambda i, p=path: read_all(p, i, convert_all=False), n, args.clips)
            every = clips_per_second(lambda i, p=path: read_all(p, i, convert_all=True), n, args.clips)
            stats = DecodeStats()
            read_video(path, segment_indices(n, SEGMENTS, False, rng), stats)
            rows.append((f"{name} ({n} frames)", "sparse", sparse))
            rows.append(("", "sparse + transform", full))
            rows.append(("", "all, RGB kept", kept))
            rows.append(("", "all, RGB all", every))
            rows.append(("", f"speed-up of sparse: {sparse / kept:.1f}x / {sparse / every:.1f}x", None))
            rows.append(("", f"centre clip: {stats.packets}/{n} packets decoded, {stats.seeks} seeks", None))

    machine = (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, nproc={os.cpu_count()}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, av {av.__version__}"
    )
    lines = [
        f"Machine: {machine}. {args.clips} 8-frame TSN training clips per row, one process.",
        "",
        "| input | read | clips/s per worker |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {how} | {'' if rate is None else f'{rate:.1f}'} |" for name, how, rate in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
