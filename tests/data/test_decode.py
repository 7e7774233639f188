"""Decoding: exactly the requested frames come back, by keyframe seeks or decoding forward."""

import time

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.videos import SIZE, frame_numbers, write_frames, write_video
from tsm.data.decode import MIN_SIDE, DataError, DecodeStats, read_video, video_num_frames
from tsm.data.frame_folders import count_frames, read_frames
from tsm.data.video_index import INDEXES, IndexCache

NUM_FRAMES, GOP = 30, 8  # keyframes at 0, 8, 16, 24


@pytest.fixture(scope="module", params=[".mp4", ".webm"])
def video(request, tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / f"clip{request.param}", NUM_FRAMES, gop=GOP)


def read(path, indices):
    stats = DecodeStats()
    frames = read_video(path, indices, stats)
    assert frames.dtype == torch.uint8 and frames.shape == (len(indices), SIZE[1], SIZE[0], 3)
    return frame_numbers(frames), stats


def test_frame_count_by_demuxing(video):
    assert video_num_frames(video) == NUM_FRAMES  # its packets counted (a header count may include hidden ones)


def test_decode_forward_within_a_gop(video):
    numbers, stats = read(video, [1, 3, 6])
    assert numbers == [1, 3, 6]
    assert stats.seeks == 0 and stats.packets <= GOP


def test_seek_to_keyframes_for_far_frames(video):
    numbers, stats = read(video, [2, 19, 27])
    assert numbers == [2, 19, 27]
    assert stats.seeks == 2  # jumps to the keyframes at 16 and 24 instead of decoding 3..15 and 20..23
    assert stats.packets <= 3 + 4 + 4 + 2  # B-frame reordering may need a packet or two more


def test_any_order_repeats_and_every_frame(video):
    assert read(video, [29, 0, 17, 17, 8])[0] == [29, 0, 17, 17, 8]
    numbers, stats = read(video, list(range(NUM_FRAMES)))
    assert numbers == list(range(NUM_FRAMES)) and stats.seeks == 0 and stats.packets == NUM_FRAMES


def test_sparse_reads_decode_a_fraction_of_the_video(video):
    numbers, stats = read(video, [0, 8, 16, 24])  # the keyframes: one packet each
    assert numbers == [0, 8, 16, 24] and stats.seeks == 3 and stats.packets == 4


def test_decoding_time_is_the_decoders_share_of_the_read(video):
    stats = DecodeStats()
    start = time.perf_counter()
    read_video(video, [2, 19, 27], stats)
    assert 0 < stats.decoding_s < time.perf_counter() - start


def test_random_reads_are_exact(video):
    rng = np.random.default_rng(0)
    for _ in range(30):  # sorted or not, across GOPs and B-frames (some skipped by the decoder, never wanted ones)
        indices = rng.integers(0, NUM_FRAMES, rng.integers(1, 9)).tolist()
        assert read(video, indices)[0] == indices


def test_indices_a_frame_or_two_past_the_end_read_the_last_frame(video):
    """Two tools' frame counts differ by a frame or two; an annotation for a longer video is refused (before, every
    frame past the end read the last one: a list file saying 300 frames for 30 gave clips of one frame)."""
    assert read(video, [NUM_FRAMES + 1])[0] == [NUM_FRAMES - 1]
    longer = f"{NUM_FRAMES + 3} frames are wanted and the video has {NUM_FRAMES}: its annotation"
    with pytest.raises(DataError, match=longer):
        read(video, [3, NUM_FRAMES + 2])
    # the annotation's count is refused whichever frames a read samples (a random step of training did, before)
    assert frame_numbers(read_video(video, [0], num_frames=NUM_FRAMES + 2)) == [0]
    with pytest.raises(DataError, match=longer):
        read_video(video, [0], num_frames=NUM_FRAMES + 3)


def test_mpeg4_avi(tmp_path):
    path = write_video(tmp_path / "clip.avi", 20)
    assert video_num_frames(path) == 20
    assert read(path, [0, 7, 19, 7])[0] == [0, 7, 19, 7]


def test_missing_and_unreadable_videos_name_the_file(tmp_path):
    with pytest.raises(DataError, match="clip.mp4: video file not found"):
        read_video(tmp_path / "clip.mp4", [0])
    (tmp_path / "junk.webm").write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="junk.webm: cannot open video"):
        video_num_frames(tmp_path / "junk.webm")


def test_truncated_webm_is_an_error(tmp_path):
    path = write_video(tmp_path / "clip.webm", NUM_FRAMES)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="clip.webm: truncated video"):
        video_num_frames(path)


@pytest.mark.parametrize(("template", "start"), [("{:05d}.jpg", 1), ("img_{:05d}.jpg", 1), ("{:06d}.jpg", 0)])
def test_frame_folders(tmp_path, template, start):
    folder = write_frames(tmp_path / "clip", 12, template, start)
    (folder / "notes.txt").write_text("not a frame")
    assert count_frames(folder, template, start) == 12
    frames = read_frames(folder, [11, 0, 4, 4], template, start)
    assert frames.dtype == torch.uint8 and frames.shape == (4, SIZE[1], SIZE[0], 3)
    assert frame_numbers(frames) == [11, 0, 4, 4]


def test_frame_folders_read_only_the_sampled_files(tmp_path):
    folder = write_frames(tmp_path / "clip", 12)
    for i in range(2, 11):  # frames 1 and 12 (indices 0 and 11) stay
        (folder / f"{i:05d}.jpg").unlink()
    assert frame_numbers(read_frames(folder, [0, 11], "{:05d}.jpg")) == [0, 11]
    with pytest.raises(DataError, match="00005.jpg: frame file not found"):
        read_frames(folder, [4], "{:05d}.jpg")


def test_frame_folder_errors(tmp_path):
    with pytest.raises(DataError, match="empty frame folder"):
        count_frames((tmp_path / "empty").mkdir() or tmp_path / "empty", "{:05d}.jpg")
    with pytest.raises(DataError, match="cannot list frame folder"):
        count_frames(tmp_path / "absent", "{:05d}.jpg")
    folder = write_frames(tmp_path / "clip", 2)
    (folder / "00002.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DataError, match="00002.jpg: cannot decode image"):
        read_frames(folder, [1], "{:05d}.jpg")
    with pytest.raises(ValueError, match="exactly one"):
        count_frames(folder, "frame.jpg")


def test_a_frame_folder_numbered_or_named_otherwise_is_refused_naming_the_key(tmp_path):
    """Numbered from 0 and read from 1, every frame was the next one (silently; only the last index failed); named
    with six digits for a five-digit template, its files were counted and then 'not found'."""
    zero = write_frames(tmp_path / "zero", 12, "{:05d}.jpg", start=0)
    for call in (lambda: count_frames(zero, "{:05d}.jpg", 1), lambda: read_frames(zero, [3], "{:05d}.jpg", 1)):
        with pytest.raises(DataError, match=r"00000.jpg is a frame before data.frame_start=1: .*data.frame_start=0"):
            call()
    assert count_frames(zero, "{:05d}.jpg", 0) == 12 and frame_numbers(read_frames(zero, [3], "{:05d}.jpg", 0)) == [3]
    wide = write_frames(tmp_path / "wide", 12, "img_{:06d}.jpg")
    with pytest.raises(DataError, match=r"no first frame img_00001.jpg .*named like img_000001.jpg"):
        count_frames(wide, "img_{:05d}.jpg", 1)


def test_16_bit_frames_are_scaled_not_clipped(tmp_path):
    """Pillow's convert('RGB') clipped a 16-bit gray PNG to white."""
    (tmp_path / "deep").mkdir()
    levels = np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(levels).save(tmp_path / "deep" / "00001.png")
    frame = read_frames(tmp_path / "deep", [0], "{:05d}.png").numpy()[0]
    assert np.array_equal(frame, np.repeat((levels // 256).astype(np.uint8)[:, :, None], 3, axis=2))


def test_an_oversized_jpeg_header_is_a_data_error(tmp_path):
    """Pillow refuses a header of over 2 x 89M pixels with DecompressionBombError, which is no OSError."""
    folder = write_frames(tmp_path / "clip", 2)
    frame = folder / "00002.jpg"
    data = bytearray(frame.read_bytes())
    sof = data.index(b"\xff\xc0")  # baseline frame header: marker, length, precision, height, width
    data[sof + 5 : sof + 9] = b"\xff\xff\xff\xff"
    frame.write_bytes(data)
    with pytest.raises(DataError, match="00002.jpg: cannot decode image: Image size .* exceeds limit"):
        read_frames(folder, [0, 1], "{:05d}.jpg")


def test_frames_under_the_minimum_side_are_a_data_error(tmp_path):
    """A 1-pixel side crops to nothing in training's multi-scale crop: refused where on_error sees it."""
    folder = tmp_path / "clip"
    folder.mkdir()
    Image.new("RGB", (40, MIN_SIDE - 1)).save(folder / "00001.jpg")
    with pytest.raises(DataError, match=rf"clip: frames of 40x{MIN_SIDE - 1} pixels: a side under {MIN_SIDE}"):
        read_frames(folder, [0], "{:05d}.jpg")
    video = tmp_path / "dot.webm"
    with av.open(str(video), "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=12)
        stream.width, stream.height, stream.pix_fmt = 1, 1, "yuv420p"
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((1, 1, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    with pytest.raises(DataError, match="dot.webm: frames of 1x1 pixels"):
        read_video(video, [0, 2])


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi"])
def test_a_kept_index_reads_the_frames_a_fresh_open_reads(suffix, tmp_path):
    """The second read of a file seeks by the index the first one kept: the same frames, fewer packets demuxed."""
    path = write_video(tmp_path / f"clip{suffix}", NUM_FRAMES, gop=GOP)
    rng = np.random.default_rng(1)
    for _ in range(12):
        indices = rng.integers(0, NUM_FRAMES, rng.integers(1, 9)).tolist()
        INDEXES.clear()
        fresh, fresh_stats = read(path, indices)
        kept, kept_stats = read(path, indices)
        assert fresh == kept == indices
        assert fresh_stats.demuxed == NUM_FRAMES and kept_stats.packets == fresh_stats.packets
    INDEXES.clear()
    read(path, [0])
    numbers, stats = read(path, [26, 27])  # after the keyframe at 24: demuxed from there
    assert numbers == [26, 27] and stats.demuxed <= NUM_FRAMES - 24 + 2


def test_a_changed_file_is_indexed_again(tmp_path):
    path = write_video(tmp_path / "clip.mp4", NUM_FRAMES, gop=GOP)
    assert read(path, [25, 3])[0] == [25, 3]
    write_video(path, 20, gop=5)  # the same name, other packets
    numbers, stats = read(path, [21, 3, 12])
    assert numbers == [19, 3, 12] and stats.demuxed == 20  # clamped to the new last frame; demuxed afresh


def test_a_wrong_kept_index_falls_back_to_demuxing(tmp_path):
    """An index that does not match the file's packets (kept under the file's own signature) is replaced."""
    path = write_video(tmp_path / "clip.mp4", NUM_FRAMES, gop=GOP)
    other = write_video(tmp_path / "other.mp4", NUM_FRAMES, fps=25, gop=GOP)  # other timestamps
    read(other, [0])
    INDEXES.put(path, INDEXES.signature(path), INDEXES.get(other, INDEXES.signature(other)))
    numbers, stats = read(path, [17, 2])
    assert numbers == [17, 2] and stats.demuxed >= NUM_FRAMES
    assert read(path, [17, 2])[1].demuxed < NUM_FRAMES  # its own index is kept now


def test_kept_indexes_are_bounded_least_recently_used_first(tmp_path):
    cache = IndexCache(max_packets=2 * NUM_FRAMES)
    paths = [write_video(tmp_path / f"clip{i}.mp4", NUM_FRAMES, gop=GOP) for i in range(3)]
    for path in paths[:2]:
        read(path, [0])
        cache.put(path, cache.signature(path), INDEXES.get(path, cache.signature(path)))
    assert cache.get(paths[0], cache.signature(paths[0])) is not None  # now the most recently used
    read(paths[2], [0])
    cache.put(paths[2], cache.signature(paths[2]), INDEXES.get(paths[2], cache.signature(paths[2])))
    kept = [cache.get(path, cache.signature(path)) is not None for path in paths]
    assert kept == [True, False, True] and cache.packets == 2 * NUM_FRAMES
