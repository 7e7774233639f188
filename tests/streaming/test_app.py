"""The stream app's preprocessing, prediction smoother and sources (its commands run in tests/test_docs.py)."""

import shutil
import subprocess
import wave

import numpy as np
import pytest
import torch

from tsm.data.transforms import channel_stats, crop_views, normalize
from tsm.errors import DataError
from tsm.streaming.app import PredictionSmoother, check_out_video, open_frames, preprocess, run_stream
from tsm.streaming.frames import stream_frame

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
ONE_GRAY_LEVEL = 1 / 255 / min(STD)


@pytest.mark.parametrize("shape", [(120, 171, 3), (171, 120, 3), (64, 64, 3), (37, 50, 3)])
def test_app_preprocessing_is_the_eval_crop(shape):
    """The torch-free app crops frames as evaluation does (Pillow vs torchvision: rounding apart)."""
    frame = (np.random.default_rng(0).random(shape) * 255).astype(np.uint8)  # noise: the hardest case
    got = preprocess(frame, 64, 56, MEAN, STD)
    (view,) = crop_views(torch.from_numpy(frame).permute(2, 0, 1)[None], 1, 56, 64)
    expected = normalize(view, *channel_stats(MEAN, STD)).numpy()
    assert got.shape == expected.shape == (1, 3, 56, 56) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1.01 * ONE_GRAY_LEVEL


def test_a_non_square_input_size_is_the_centre_of_the_square_crop():
    """An export at ``input_size=[48, 56]`` takes the middle 48 rows of the 56 x 56 evaluation crop."""
    frame = (np.random.default_rng(1).random((120, 171, 3)) * 255).astype(np.uint8)  # resized: 64 x 91
    square = preprocess(frame, 64, 56, MEAN, STD)
    got = preprocess(frame, 64, [48, 56], MEAN, STD)
    assert got.shape == (1, 3, 48, 56)
    np.testing.assert_array_equal(got, square[:, :, 4:52, :])
    portrait = preprocess(frame.transpose(1, 0, 2).copy(), 64, [48, 100], MEAN, STD)  # resized to 100 x 140 then
    assert portrait.shape == (1, 3, 48, 100)


def test_smoother_waits_for_agreeing_frames():
    smoother = PredictionSmoother(window=1, agree=3)
    a, b = np.array([0.9, 0.1]), np.array([0.2, 0.8])
    shown = [smoother.update(p)[0] for p in (a, a, b, b, a, b, b, b, b)]
    assert shown == [0, 0, 0, 0, 0, 0, 0, 1, 1]  # the first streak of b is broken before it reaches 3


def test_smoother_averages_the_window():
    smoother = PredictionSmoother(window=2, agree=1)
    smoother.update(np.array([1.0, 0.0]))
    label, mean = smoother.update(np.array([0.2, 0.8]))
    np.testing.assert_allclose(mean, [0.6, 0.4])
    assert label == 0


def test_a_source_that_cannot_be_opened_is_a_data_error_naming_it(tmp_path):
    """A missing file, a file that is no video, a folder, an absent camera, a sound file: each named, with what was
    tried."""
    (tmp_path / "notes.txt").write_text("not a video")
    cases = {
        str(tmp_path / "missing.mp4"): "cannot open it as a video file: No such file or directory",
        str(tmp_path / "notes.txt"): "cannot open it as a video file: Invalid data",
        str(tmp_path): "cannot open it as a video file",
        "99": "cannot open it as camera /dev/video99",
    }
    with wave.open(str(tmp_path / "sound.wav"), "wb") as sound:  # a readable file with no video in it
        sound.setnchannels(1), sound.setsampwidth(2), sound.setframerate(8000)
        sound.writeframes(bytes(1600))
    cases[str(tmp_path / "sound.wav")] = "has no video stream"
    for source, message in cases.items():
        with pytest.raises(DataError, match=message) as caught:
            next(open_frames(source))
        assert caught.value.path == source


def test_a_video_with_no_decodable_frame_is_a_data_error_naming_it(tmp_path):
    """A video cut before its first frame's packet gives no frame, and one whose first packet is garbage cannot be
    decoded: each a DataError naming the file (before: a bare IndexError of the latency summary, or PyAV's
    InvalidDataError)."""
    import av

    from tests.helpers.videos import write_video

    def first_packet(path):
        with av.open(str(path)) as container:
            packet = next(p for p in container.demux(video=0) if p.size)
            return packet.pos, packet.size

    webm = write_video(tmp_path / "clip.webm")
    start, _ = first_packet(webm)
    cut = tmp_path / "cut.webm"
    cut.write_bytes(webm.read_bytes()[:start])
    mp4 = write_video(tmp_path / "clip.mp4")
    start, size = first_packet(mp4)
    data = bytearray(mp4.read_bytes())
    data[start : start + size] = b"\xff" * size
    garbled = tmp_path / "garbled.mp4"
    garbled.write_bytes(bytes(data))
    for path, message in ((cut, "no frame could be decoded from it"), (garbled, "cannot decode frame 0: ")):
        with pytest.raises(DataError, match=message) as caught:
            list(open_frames(str(path)))
        assert caught.value.path == str(path)
    assert len(list(open_frames(str(webm)))) == 12


def test_a_top_k_or_fps_below_one_is_refused(tmp_path):
    """The fps of an output video only when one is written."""
    step, info = (lambda x: np.zeros((1, 2), np.float32)), {"class_names": ["a", "b"]}
    for kwargs, message in (
        ({"top_k": 0}, r"top_k \(--top-k\) must be a positive integer, got 0"),
        ({"fps": 0, "out_video": tmp_path / "out.mp4"}, "out_fps must be a positive integer, got 0"),
    ):
        with pytest.raises(ValueError, match=message):
            run_stream(step, iter([]), info, PredictionSmoother(1, 1), **kwargs)
    run_stream(step, iter([]), info, PredictionSmoother(1, 1), fps=0)


def test_a_stream_frame_is_float_of_the_files_shape():
    """What every runtime's step() feeds its file: any float frame cast to float32, pixels (integers, or floats in
    [0, 255]) and other shapes refused (they would run on values a hundred times too large, silently)."""
    info = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 0.5]}  # normalised pixels lie within +-2
    frame = stream_frame(np.ones((1, 3, 4, 5), np.float64), (1, 3, 4, 5), info)
    assert frame.dtype == np.float32 and frame.flags.c_contiguous
    for bad in (np.ones((1, 3, 4, 5), np.uint8), np.ones((1, 3, 4, 5), np.int64)):
        with pytest.raises(ValueError, match=f"frame of dtype {bad.dtype}: .* not pixels"):
            stream_frame(bad, (1, 3, 4, 5), info)
    with pytest.raises(ValueError, match=r"frame of shape \(3, 4, 5\), expected \(1, 3, 4, 5\)"):
        stream_frame(np.ones((3, 4, 5), np.float32), (1, 3, 4, 5), info)
    stream_frame(np.full((1, 3, 4, 5), -20, np.float32), (1, 3, 4, 5), info)  # 10x the range: noise frames pass
    with pytest.raises(ValueError, match=r"frame values up to 21, where normalised pixels stay within 2.00: step"):
        stream_frame(np.full((1, 3, 4, 5), 21, np.float32), (1, 3, 4, 5), info)


def test_a_frame_wider_than_sixteen_to_one_is_refused_naming_the_source(tmp_path):
    """A 131072x2 video of 786 KB took gigabytes, resized to the scale size on its short side."""
    import av

    path = tmp_path / "wide.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 544, 32, "yuv420p"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 544, 3), np.uint8), format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(DataError, match="wide.avi: frame 0 is 544x32: a side over 16 times the other"):
        list(open_frames(str(path)))


def test_an_output_video_that_would_replace_its_source_or_has_no_video_suffix_is_refused(tmp_path):
    """--out-video equal to --source replaced the source and exited 0; a .txt name failed after the first frame."""
    with pytest.raises(ValueError, match="is the source video: it would be replaced"):
        check_out_video(str(tmp_path / "clip.mp4"), str(tmp_path / ".." / tmp_path.name / "clip.mp4"))
    with pytest.raises(ValueError, match=r"out video .*x.txt: give a name ending in one of .mp4"):
        check_out_video(tmp_path / "x.txt", "0")
    check_out_video(tmp_path / "out.mp4", str(tmp_path / "clip.mp4"))
    check_out_video(None, "0")


def test_a_stream_stopped_by_ctrl_c_keeps_its_annotated_video(tmp_path):
    """SIGTERM (stop_on_sigterm) and Ctrl-C ended in a traceback with the video unfinished (48 bytes)."""
    import av

    def frames():
        for _ in range(3):
            yield np.zeros((32, 48, 3), np.uint8)
        raise KeyboardInterrupt

    step, info = (lambda x: np.zeros((1, 2), np.float32)), {"class_names": ["a", "b"]}
    info.update(scale_size=32, input_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    result = run_stream(step, frames(), info, PredictionSmoother(1, 1), out_video=tmp_path / "out.mp4")
    assert result.frames == 3 and result.label == 0
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3

    def stopped_at_once():
        raise KeyboardInterrupt
        yield

    stopped = run_stream(step, stopped_at_once(), info, PredictionSmoother(1, 1))
    assert stopped.latency_summary() == {"frames": 0}  # an IndexError before, printing the summary


def test_a_long_stream_keeps_a_bounded_window_of_latencies(monkeypatch):
    """Every frame's label and latency were kept: a camera stream grew by about 40 bytes a frame for as long as it
    ran. The summary counts every frame; its percentiles are the last window's, and say so."""
    from tsm.streaming import app

    monkeypatch.setattr(app, "LATENCY_WINDOW", 5)
    ticks = iter([t for frame in range(1, 13) for t in (0.0, frame / 1e3)])  # frame i's step takes i ms
    monkeypatch.setattr(app.time, "perf_counter", lambda: next(ticks))
    step, info = (lambda x: np.zeros((1, 2), np.float32)), {"class_names": ["a", "b"]}
    info.update(scale_size=8, input_size=8, mean=[0.5] * 3, std=[0.5] * 3)
    result = run_stream(step, iter([np.zeros((8, 8, 3), np.uint8)] * 12), info, PredictionSmoother(1, 1))
    assert result.frames == 12 and len(result.latencies_ms) == 5
    assert result.latency_summary() == pytest.approx(
        {"frames": 12, "median_ms": 10, "p95_ms": 12, "latency_of_last": 5}
    )


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command to write a rotated video")
def test_a_rotated_phone_video_streams_upright(tmp_path):
    """Its frames were fed lying down: an 'up' gesture arrived as a sideways one."""
    import av

    plain, rotated = tmp_path / "plain.mp4", tmp_path / "rotated.mp4"
    for args in (["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1", "-pix_fmt", "yuv420p", plain],
                 ["-i", plain, "-c", "copy", "-metadata:s:v:0", "rotate=90", rotated]):  # fmt: skip
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)
    with av.open(str(plain)) as container:
        lying = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    frames = list(open_frames(str(rotated)))
    assert frames[0].shape == (64, 48, 3) and len(frames) == len(lying)
    assert all(np.array_equal(got, np.rot90(frame)) for got, frame in zip(frames, lying, strict=True))


def test_bad_input_ends_the_app_in_one_line_not_a_traceback(tmp_path, capsys):
    from tsm.streaming.app import main

    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "none.onnx"), "--source", str(tmp_path / "none.mp4")])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and "none.onnx" in error and "Traceback" not in error
    with pytest.raises(ValueError, match="out video .* is a folder: name the video file to write in it"):
        check_out_video(tmp_path, "0")  # it failed after the whole stream, naming no path
