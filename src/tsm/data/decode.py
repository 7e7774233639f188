"""Read the sampled frames of a clip, and only those: from a video file (PyAV) or a JPEG frame folder.

Videos: the first read of a file in a process demuxes every packet of its video stream (no decoding),
which gives the exact frame count, the presentation order of frames (frame ``i`` is the packet with the
``i``-th smallest timestamp, so B-frame reordering and variable frame rates need no fps arithmetic) and
where the keyframes are; that index is kept (:mod:`tsm.data.video_index`), so later reads of the file seek
the container straight to the packets they decode. Decoding then starts at the keyframe before each
wanted frame when that keyframe lies past what has been decoded so far (a seek), and continues forward
otherwise; it stops at the packet of the last wanted frame of a run and drains the decoder, so no frame after
it is decoded. On the way, frames that no other frame refers to (most B-frames) are skipped by
the decoder (``skip_frame="NONREF"``) unless they are wanted. Only the frames kept are
converted to RGB. The decoder runs single-threaded: loader workers already take one core each,
and FFmpeg's frame threads hold back one frame per thread and must all drain at every seek; with
the cores busy, as in training, they made sparse reads 1.8x slower (experiments/data_throughput).

Frame folders: only the sampled JPEG files are opened and decoded (Pillow).

Every failure to read a sample raises :class:`DataError`, naming the file and the reason.
"""

from __future__ import annotations

import os
import re
import string
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from PIL import Image

from tsm.data.video_index import INDEXES, IndexMismatch, PacketIndex, SeekingPackets, stamp
from tsm.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".3gp", ".flv", ".wmv", ".ogv")
# A file may hold this many fewer packets than its header promises (rounding of durations)
# before it counts as truncated: 1 frame plus 1%.
TRUNCATION_SLACK = (1, 0.01)
# The shortest frame side read: training's multi-scale crop keeps int(side x scale) pixels, so a 1-pixel
# frame crops to nothing (a bare RuntimeError in the transforms, out of on_error's reach); 8 keeps every
# crop scale down to 1/8 non-empty (TSM's go down to 0.66), and no dataset's videos come near it.
MIN_SIDE = 8
# One RGB converter per thread: a frame's own to_ndarray() sets up a new scaler each time (~3 ms).
# It runs single-threaded: a scaler's thread pool would not survive a fork into a loader worker.
_local = threading.local()


ON_ERROR = ("raise", "skip")  # what data.on_error may say about a sample or annotation line that cannot be used


def check_on_error(on_error: str) -> str:
    """``on_error`` itself, after checking it is one of :data:`ON_ERROR`."""
    if on_error not in ON_ERROR:
        raise ValueError(f"data.on_error must be one of {ON_ERROR}, got {on_error!r}")
    return on_error


@dataclass
class DecodeStats:
    """What :func:`read_video` did: packets read from the file (``demuxed``), packets sent to the decoder
    (including the non-reference ones it skips), keyframe jumps (seeks) and the seconds spent inside the
    decoder's own calls (``decoding_s``: what a read cannot go below without decoding fewer frames)."""

    demuxed: int = 0
    packets: int = 0
    seeks: int = 0
    decoding_s: float = 0.0


def _why(err: Exception) -> str:
    """An FFmpeg/OS error's reason without the file name it repeats (else the error's text or type)."""
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise DataError(path, "video file not found")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise DataError(path, f"cannot open video: {_why(err)}") from err


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    if not container.streams.video:
        raise DataError(path, "no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "NONE"
    return stream


def _header_frames(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    """Frame count the header states, or its duration times the frame rate; 0 if it says neither."""
    if stream.frames > 0:
        return float(stream.frames)
    if container.duration and stream.average_rate:
        return container.duration / av.time_base * float(stream.average_rate)
    return 0.0


def _demux(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> list[av.Packet]:
    """Every packet of ``stream`` with data; a file holding clearly fewer than its header promises is truncated."""
    try:  # all but the empty packet that ends demuxing; empty ones with a timestamp are dropped frames (AVI)
        demuxed = [p for p in container.demux(stream) if p.size or p.dts is not None]
    except (av.FFmpegError, OSError) as err:
        raise DataError(path, f"cannot demux video: {_why(err)}") from err
    expected = _header_frames(container, stream)
    absolute, relative = TRUNCATION_SLACK
    packets = [p for p in demuxed if p.size]
    if not packets or len(demuxed) < expected * (1 - relative) - absolute:
        raise DataError(path, f"truncated video: {len(demuxed)} frames in the file, ~{expected:.0f} in its header")
    return packets


def _index_afresh(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path, signature: tuple[int, int, int]
) -> tuple[list[av.Packet], PacketIndex]:
    """Every packet of ``stream`` (:func:`_demux`) and their index, kept for later reads of the file."""
    packets = _demux(container, stream, path)
    index = PacketIndex.of(packets, path)
    INDEXES.put(path, signature, index)
    return packets, index


def _signature(path: Path) -> tuple[int, int, int]:
    try:
        return INDEXES.signature(path)
    except FileNotFoundError as err:
        raise DataError(path, "video file not found") from err
    except (OSError, ValueError) as err:  # ValueError: a NUL character in the path
        raise DataError(path, f"cannot open video: {_why(err)}") from err


def video_num_frames(path: str | os.PathLike) -> int:
    """Frames in a video: the stream's frame count from the header, else the packets counted by demuxing
    (whose index is kept for the reads that follow)."""
    path = Path(path)
    signature = _signature(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        if stream.frames > 0:
            return stream.frames
        index = INDEXES.get(path, signature)
        return len(index if index is not None else _index_afresh(container, stream, path, signature)[1])


def overshoot_allowed(num_frames: int) -> int:
    """How many frames past a video's last an annotated frame count may reach: tools count a few frames apart
    (2, or 2% of a long video)."""
    return max(2, num_frames // 50)


def read_video(path: str | os.PathLike, indices: Sequence[int], stats: DecodeStats | None = None) -> torch.Tensor:
    """Frames ``indices`` (0-based, any order, repeats allowed) of a video as uint8 ``(T, H, W, 3)``.

    Indices up to :func:`overshoot_allowed` past the last frame (a count from another tool, a frame or two above
    this decoder's) read the last frame; further ones are a :class:`DataError` (an annotation for a longer video).
    A video read before in this process is not demuxed again: its kept index (:mod:`tsm.data.video_index`) seeks
    straight to the packets wanted.
    """
    path = Path(path)
    stats = stats if stats is not None else DecodeStats()
    signature = _signature(path)
    index = INDEXES.get(path, signature)
    if index is not None:
        try:
            return _read(path, indices, stats, index, signature)
        except IndexMismatch:  # the file's packets are not the indexed ones: index it again
            pass
    return _read(path, indices, stats, None, signature)


def _read(
    path: Path, indices: Sequence[int], stats: DecodeStats, index: PacketIndex | None, signature: tuple[int, int, int]
) -> torch.Tensor:
    """:func:`read_video` seeking by ``index``, or (None) demuxing every packet and keeping their index."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        if index is None:
            packets, index = _index_afresh(container, stream, path, signature)
            stats.demuxed += len(packets)
        else:
            packets = SeekingPackets(container, stream, index)
        last = max((int(i) for i in indices), default=0)
        if last >= len(index) + overshoot_allowed(len(index)):
            raise DataError(
                path,
                f"frame {last} (0-based) is wanted and the video has {len(index)} frames: its annotation (a list "
                "file's frame count?) describes a longer video",
            )
        clamped = [min(max(int(i), 0), len(index) - 1) for i in indices]
        try:
            frames = _decode(stream.codec_context, index, packets, sorted(set(clamped)), stats)
        except (av.FFmpegError, OSError) as err:
            raise DataError(path, f"cannot decode video: {_why(err)}") from err
        finally:
            stats.demuxed += getattr(packets, "demuxed", 0)
    missing = sorted(set(clamped) - frames.keys())
    if missing:
        raise DataError(path, f"frames {missing} could not be decoded")
    return _stack(frames, clamped, path)


def _decode(
    codec: av.CodecContext,
    index: PacketIndex,
    packets: Sequence[av.Packet] | SeekingPackets,
    wanted: list[int],
    stats: DecodeStats,
) -> dict[int, np.ndarray]:
    """Decode runs of ``packets`` (by decode position) that cover ``wanted`` (ascending frame numbers); RGB
    arrays of those frames."""
    keep = set(wanted)
    wanted_packets = {index.order[frame] for frame in wanted}
    out: dict[int, np.ndarray] = {}

    def collect(frames: Iterable[av.VideoFrame]) -> None:
        for frame in frames:
            i = index.frame_of(stamp(frame))
            if i in keep and i not in out:
                out[i] = to_rgb(frame)

    def decoded(packet: av.Packet | None) -> list[av.VideoFrame]:
        start = time.perf_counter()
        frames = codec.decode(packet)
        stats.decoding_s += time.perf_counter() - start
        return frames

    def drain() -> None:
        collect(decoded(None))
        codec.flush_buffers()

    position = 0  # next packet to send
    for frame in wanted:
        start = index.start(frame)
        if start > position:  # a keyframe lies ahead: jump to it instead of decoding the gap
            if position:
                drain()
            position = start
            stats.seeks += 1
        while position <= index.order[frame]:
            # Frames no other frame refers to are skipped by the decoder unless they are wanted.
            codec.skip_frame = "DEFAULT" if position in wanted_packets else "NONREF"
            collect(decoded(packets[position]))
            position += 1
            stats.packets += 1
    drain()
    return out


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as an ``(H, W, 3)`` uint8 RGB array, reusing this thread's converter."""
    if not hasattr(_local, "reformatter"):
        _local.reformatter = VideoReformatter()
    return _local.reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


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


def count_frames(folder: str | os.PathLike, template: str) -> int:
    """Files in a frame folder whose names fit ``template``; an empty or absent folder is an error."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except (OSError, ValueError) as err:  # ValueError: a NUL character in the path
        raise DataError(folder, f"cannot list frame folder: {_why(err)}") from err
    pattern = _frame_name_pattern(template)
    count = sum(1 for name in names if pattern.match(name))
    if count == 0:
        raise DataError(folder, f"empty frame folder: no files named like {template!r}")
    return count


def read_frames(folder: str | os.PathLike, indices: Sequence[int], template: str, start: int = 1) -> torch.Tensor:
    """JPEG frames ``indices`` (0-based; file number = index + ``start``) of a frame folder as uint8
    ``(T, H, W, 3)``; each distinct file is read and decoded once."""
    folder = Path(folder)
    decoded = {i: _read_image(folder / template.format(i + start)) for i in sorted({int(i) for i in indices})}
    return _stack(decoded, [int(i) for i in indices], folder)


def _read_image(path: Path) -> np.ndarray:
    """An image file as an ``(H, W, 3)`` uint8 RGB array."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as err:
        raise DataError(path, "frame file not found") from err
    except Exception as err:  # any Pillow failure: OSError, DecompressionBombError, ValueError, SyntaxError...
        raise DataError(path, f"cannot decode image: {_why(err)}") from err


def _stack(frames: dict[int, np.ndarray], indices: Sequence[int], path: Path) -> torch.Tensor:
    """``frames[i]`` for each of ``indices`` as one uint8 ``(T, H, W, 3)`` tensor: frames of one size,
    at least :data:`MIN_SIDE` pixels a side."""
    shapes = sorted({frame.shape for frame in frames.values()})
    if len(shapes) > 1:
        raise DataError(path, f"frames differ in size: {shapes}")
    if any(min(shape[:2]) < MIN_SIDE for shape in shapes):
        raise DataError(path, f"frames of {shapes[0][1]}x{shapes[0][0]} pixels: a side under {MIN_SIDE}")
    return torch.from_numpy(np.stack([frames[i] for i in indices]))
