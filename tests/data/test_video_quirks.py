"""Videos as real files come: the sparse reader returns exactly the frames a plain decode of every frame shows, on
files cut without re-encoding (an MP4 edit list), with repeated timestamps, a start offset, a variable frame rate,
dropped frames, AV1, a cover image as the first stream and rotation metadata; corrupt data and a file rewritten in
place are caught. The reference is written here: PyAV decoding every frame in order, numbered as they come out."""

import os
import random
import shutil
import subprocess
import time

import av
import numpy as np
import pytest
from PIL import Image

from tsm.data.decode import DataError, read_video, video_num_frames
from tsm.data.video_index import INDEXES

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command to write the files")
SOURCE = "testsrc2=size=128x72:rate=25:duration=4"  # 100 frames, each unlike the others


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def x264(path, *options: str) -> str:
    """An H.264 video of SOURCE: B-frames (a pyramid), a keyframe every 30 frames."""
    ffmpeg("-f", "lavfi", "-i", SOURCE, *options, "-c:v", "libx264", "-bf", "3", "-g", "30", "-sc_threshold", "0",
           "-pix_fmt", "yuv420p", str(path))  # fmt: skip
    return str(path)


def every_frame(path: str, stream_index: int | None = None) -> list[np.ndarray]:
    """Every frame a plain decode shows, in order, as RGB (the stream FFmpeg picks, unless given)."""
    with av.open(path) as container:
        stream = container.streams.video[stream_index] if stream_index is not None else container.streams.best("video")
        stream.thread_type = "NONE"
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


def check_sparse_reads(path: str, reference: list[np.ndarray]) -> None:
    """Random index sets (repeats, any order, the ends, every frame), read afresh and through the kept index."""
    count = len(reference)
    assert video_num_frames(path) == count
    rng = random.Random(0)
    sets = [[0], [count - 1], list(range(count)), [count - 1, 0, count // 2, count // 2]]
    sets += [[rng.randrange(count) for _ in range(rng.randint(1, 9))] for _ in range(16)]
    for n, indices in enumerate(sets):
        if n % 3 == 0:
            INDEXES.clear()  # a first read, which demuxes every packet
        got = read_video(path, indices).numpy()
        for frame, i in zip(got, indices, strict=True):
            assert np.array_equal(frame, reference[i]), (path, indices, i)


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    return x264(tmp_path_factory.mktemp("quirks") / "h264.mp4")


def test_a_clip_cut_without_re_encoding_reads_its_shown_frames(h264, tmp_path):
    """Its edit list hides the pre-roll packets before the cut: the header counts them and the decoder shows none.
    Frame i was shown frame i - 9 (silently), and the first frames could not be decoded."""
    cut = str(tmp_path / "cut.mp4")
    ffmpeg("-ss", "1.37", "-i", h264, "-c", "copy", cut)
    reference = every_frame(cut)
    with av.open(cut) as container:
        assert container.streams.video[0].frames > len(reference)  # the hidden pre-roll
    check_sparse_reads(cut, reference)


@pytest.mark.parametrize("bframes", ["0", "3"])
def test_frames_sharing_a_timestamp_are_told_apart_by_their_order(tmp_path, bframes):
    """Half the frames 'could not be decoded'; with B-frames a neighbour came back."""
    path = str(tmp_path / "repeated.mkv")
    ffmpeg("-f", "lavfi", "-i", SOURCE, "-vf", "setpts='floor(N/2)*0.04/TB'", "-fps_mode", "passthrough",
           "-c:v", "libx264", "-bf", bframes, "-g", "30", str(path))  # fmt: skip
    check_sparse_reads(path, every_frame(path))


def test_offsets_variable_rates_and_dropped_frames_are_no_truncation(h264, tmp_path):
    """Their packets' count or the header's duration x frame rate said 'truncated video': a Matroska file starting at
    0.2 s (its duration counts the start), a variable frame rate, an AVI's dropped frames (empty packets)."""
    offset, variable, dropped = (str(tmp_path / name) for name in ("offset.mkv", "variable.mkv", "dropped.avi"))
    x264(offset, "-output_ts_offset", "0.2")
    ffmpeg("-f", "lavfi", "-i", SOURCE, "-vf", "setpts='N/25/TB+if(gt(N,50),0.37/TB,0)+if(gt(N,80),N*0.011/TB,0)'",
           "-fps_mode", "passthrough", "-c:v", "libx264", "-bf", "3", variable)  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", SOURCE, "-vf", "select='lt(mod(n,7),4)'", "-fps_mode", "passthrough",
           "-c:v", "mpeg4", "-g", "30", dropped)  # fmt: skip
    longer_audio = str(tmp_path / "longer_audio.mkv")  # the container's duration is the audio's
    ffmpeg("-f", "lavfi", "-i", SOURCE, "-f", "lavfi", "-i", "sine=duration=5", "-c:v", "libx264", "-c:a", "aac",
           longer_audio)  # fmt: skip
    for path in (offset, variable, dropped, longer_audio):
        check_sparse_reads(path, every_frame(path))
    half = tmp_path / "half.mkv"  # a cut download still is one
    half.write_bytes(open(offset, "rb").read()[: os.path.getsize(offset) // 2])
    with pytest.raises(DataError, match="half.mkv: truncated video: .* s of frames in the file, 4.00 s in its header"):
        video_num_frames(half)


def test_av1_frames_are_all_decodable(tmp_path):
    """libdav1d reads skip_frame once, when it opens: a read starting on an unwanted frame dropped wanted ones
    ('frames [35] could not be decoded'). AV1 is decoded frame by frame, unskipped."""
    path = str(tmp_path / "av1.mp4")
    ffmpeg("-f", "lavfi", "-i", SOURCE, "-c:v", "libsvtav1", "-preset", "12", "-g", "30", path)
    with av.open(path) as container:
        assert container.streams.video[0].codec_context.name == "libdav1d"
    check_sparse_reads(path, every_frame(path))


def test_the_video_stream_is_the_one_ffmpeg_picks_not_a_cover_image(h264, tmp_path):
    cover, path = tmp_path / "cover.png", str(tmp_path / "cover_first.mkv")
    Image.new("RGB", (40, 30), "red").save(cover)
    ffmpeg("-i", str(cover), "-i", h264, "-map", "0", "-map", "1", "-c:v:0", "png", "-c:v:1", "copy", path)
    check_sparse_reads(path, every_frame(path, stream_index=1))


def test_a_rotated_video_is_read_upright_as_ffmpeg_extracts_its_frames(h264, tmp_path):
    """A phone's portrait video: its frames were read lying down, unlike the frame folders FFmpeg extracts."""
    path = str(tmp_path / "rotated.mp4")
    ffmpeg("-i", h264, "-c", "copy", "-metadata:s:v:0", "rotate=90", path)
    ffmpeg("-i", path, "-frames:v", "1", str(tmp_path / "first.png"))
    extracted = np.asarray(Image.open(tmp_path / "first.png").convert("RGB"))
    first = read_video(path, [0]).numpy()[0]
    assert first.shape == extracted.shape == (128, 72, 3)
    assert np.abs(first.astype(int) - extracted).mean() < 1
    check_sparse_reads(path, [np.rot90(frame) for frame in every_frame(path)])


def test_corrupt_data_the_decoder_notices_is_an_error_not_concealed_frames(h264, tmp_path):
    """300 bytes overwritten in the file: the decoder concealed the damage (flagging the frame) and every read went
    on, silently. (Damage that decodes as a valid bitstream cannot be noticed: MP4 keeps no checksums.)"""
    data = bytearray(open(h264, "rb").read())
    at = len(data) * 3 // 10
    data[at : at + 300] = random.Random(1).randbytes(300)
    (tmp_path / "corrupt.mp4").write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt.mp4: cannot decode video: corrupt video data: frame at timestamp"):
        read_video(tmp_path / "corrupt.mp4", list(range(video_num_frames(tmp_path / "corrupt.mp4"))))


def test_pre_roll_packets_without_timestamps_are_refused_saying_how_to_mend_the_file(h264, tmp_path):
    path = str(tmp_path / "negative.mkv")
    ffmpeg("-ss", "1.37", "-i", h264, "-c", "copy", "-avoid_negative_ts", "disabled", path)
    with pytest.raises(DataError, match="video packets carry no timestamp .*: re-mux it"):
        read_video(path, [0])


def test_a_file_rewritten_in_place_with_its_old_times_is_indexed_again(tmp_path):
    """A kept index was matched by size, modification time and inode: a rewrite in place restoring the modification
    time (rsync --inplace -t) read the new file by the old index."""
    path = tmp_path / "clip.mp4"
    x264(path)
    read_video(path, [5])
    before = INDEXES.signature(path)
    time.sleep(0.05)  # file times are a clock tick coarse
    with open(path, "r+b") as file:
        file.write(file.read(16))
    os.utime(path, ns=(before[1], before[1]))
    assert os.stat(path).st_mtime_ns == before[1] and INDEXES.signature(path) != before
    assert INDEXES.get(path, INDEXES.signature(path)) is None
