"""The entry points as a user runs them: export, stream and benchmark on a tiny causal model."""

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import tiny_checkpoint

from tsm.streaming.app import PredictionSmoother

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, args: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "src" / name), *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


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


@pytest.fixture(scope="module")
def causal_ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("causal"), ["model/shift=causal"])


@pytest.mark.slow
def test_export_stream_mode(causal_ckpt, tmp_path):
    out = tmp_path / "stream.onnx"
    stdout = run_script(
        "export.py",
        [
            f"ckpt_path={causal_ckpt}",
            "mode=stream",
            "input_size=32",
            f"out={out}",
            "num_segments=4",
            f"hydra.run.dir={tmp_path}",
        ],
    )
    assert out.is_file() and "max relative error" in stdout


@pytest.mark.slow
def test_stream_a_video_file(causal_ckpt, tmp_path):
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 48
        stream.pix_fmt = "yuv420p"
        for i in range(10):
            frame = np.full((48, 48, 3), 20 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    annotated = tmp_path / "annotated.mp4"
    stdout = run_script(
        "stream.py",
        [f"ckpt_path={causal_ckpt}", f"source={video}", f"out_video={annotated}", f"hydra.run.dir={tmp_path}"],
    )
    assert "frame     9:" in stdout and "median_ms" in stdout and "p95_ms" in stdout
    with av.open(str(annotated)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10


@pytest.mark.slow
def test_benchmark_prints_counts(tmp_path):
    stdout = run_script(
        "benchmark.py",
        ["repeats=1", "onnx=true", f"hydra.run.dir={tmp_path}", "data.num_segments=4", "data.crop_size=32"],
    )
    assert "'params': 699209" in stdout and "onnxruntime_ms" in stdout
