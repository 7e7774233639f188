"""ONNX export in both modes, run in onnxruntime at batch sizes and values other than the export example's."""

import copy
import json
import re
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import tsm.shift
from tests.helpers.compare import rel_error
from tests.helpers.weights import random_recognizer
from tsm.errors import DataError
from tsm.export import ExportVerificationError, to_onnx, verify_onnx
from tsm.metadata import INFO_KEY
from tsm.models import build_recognizer
from tsm.models.recognizer import Recognizer
from tsm.streaming.model import StreamingTSM
from tsm.streaming.runtime import OnnxStreamSession, buffer_zeros, read_metadata

T, SIZE, CLASSES, TOL = 4, 32, 5, 1e-4


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_model(num_segments: int = T) -> Recognizer:
    return random_recognizer("mobilenetv2_050", CLASSES, num_segments, shift={"direction": "causal"})


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def graph_shapes(values) -> dict[str, list]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


@pytest.fixture(scope="module")
def model() -> Recognizer:
    return tiny_model()


@pytest.fixture(scope="module")
def clip_file(model, tmp_path_factory):
    return to_onnx(model, tmp_path_factory.mktemp("onnx") / "clip.onnx", mode="clip", input_size=SIZE)


@pytest.fixture(scope="module")
def stream_file(model, tmp_path_factory):
    return to_onnx(model, tmp_path_factory.mktemp("onnx") / "stream.onnx", mode="stream", input_size=SIZE)


@pytest.mark.parametrize("batch", [1, 3])
def test_clip_round_trip_with_dynamic_batch(model, clip_file, batch):
    graph = onnx.load(str(clip_file)).graph
    assert graph_shapes(graph.input) == {"clip": ["batch", T, 3, SIZE, SIZE]}
    assert graph_shapes(graph.output) == {"logits": ["batch", CLASSES]}
    clip = torch.randn(batch, T, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(10 + batch))
    (logits,) = session(clip_file).run(None, {"clip": clip.numpy()})
    with torch.no_grad():
        assert rel_error(logits, model(clip)) <= TOL


def test_stream_metadata_matches_graph(stream_file):
    graph = onnx.load(str(stream_file)).graph
    buffers = json.loads(read_metadata(stream_file)["tsm_buffers"])
    names = [b["name"] for b in buffers]
    assert names == [f"buffer_{i:02d}" for i in range(len(buffers))] and len(buffers) > 0
    inputs, outputs = graph_shapes(graph.input), graph_shapes(graph.output)
    assert inputs == {"frame": ["batch", 3, SIZE, SIZE], **{b["name"]: b["shape"] for b in buffers}}
    assert outputs == {"logits": ["batch", CLASSES], **{f"{b['name']}_out": b["shape"] for b in buffers}}


def test_stream_round_trip_matches_offline_model(model, stream_file):
    """Frames of a batch of 3 clips through onnxruntime, buffers carried, against the offline clip model."""
    clip = torch.randn(3, T, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(20))
    with torch.no_grad():
        offline = model.frame_logits(clip)
    runner = session(stream_file)
    buffers = buffer_zeros(read_metadata(stream_file), batch=3)
    for t in range(T):
        logits, *new_buffers = runner.run(None, {"frame": clip[:, t].numpy(), **buffers})
        assert rel_error(logits, offline[:, t]) <= TOL
        buffers = dict(zip(buffers, new_buffers, strict=True))


def test_bound_stream_session_matches_offline_model_and_resets(model, stream_file):
    """The IO-bound runner (buffers swapped inside onnxruntime) over two streams with a reset between."""
    clip = torch.randn(2, T, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(21))
    with torch.no_grad():
        offline = model.frame_logits(clip)
    runner = OnnxStreamSession(stream_file, batch=2)
    for _ in range(2):
        kept = [runner.step(clip[:, t].numpy()) for t in range(T)]  # each step's logits stay as returned
        for t in range(T):
            assert rel_error(kept[t], offline[:, t]) <= TOL
        runner.reset()
    with pytest.raises(ValueError, match=r"frame of shape \(1, 3, 32, 32\), expected \(2, 3, 32, 32\)"):
        runner.step(clip[:1, 0].numpy())
    with pytest.raises(ValueError, match="frame of dtype uint8: step\\(\\) takes a normalised float frame"):
        runner.step(np.zeros((2, 3, SIZE, SIZE), np.uint8))  # pixels, not normalised
    with pytest.raises(ValueError, match="frame values up to 255, where normalised pixels stay within"):
        runner.step(np.full((2, 3, SIZE, SIZE), 255, np.float32))  # float pixels: not refused before
    with pytest.raises(ValueError, match="not a stream-mode export"):
        OnnxStreamSession(to_onnx(model, stream_file.parent / "clip2.onnx", mode="clip", input_size=SIZE))


@pytest.mark.parametrize("spin_within_run", [True, False])
def test_stream_session_threads_rest_between_frames(model, stream_file, spin_within_run):
    """Whether its threads spin within a run or not, a session gives the same logits and leaves no thread spinning
    once a run returns: a stream waits for the camera between frames, and others need the cores then."""
    frame = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(22)).numpy()
    runner = OnnxStreamSession(stream_file, spin_within_run=spin_within_run)
    with torch.no_grad():
        expected = model.frame_logits(torch.from_numpy(frame)[:, None].expand(1, T, 3, SIZE, SIZE))[:, 0]
    assert rel_error(runner.step(frame), expected) <= TOL
    time.sleep(0.2)  # PyTorch's OpenMP threads, spinning after its last call, settle first
    runner.step(frame)
    cpu = time.process_time()
    time.sleep(0.1)  # threads left spinning use about 40 ms of CPU here after each run
    assert time.process_time() - cpu < 0.01


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_size": 100000}, f"input_size is 100000, and the graph's frame is {SIZE}x{SIZE}"),
        ({"class_names": ["a", "b"]}, f"class_names names 2 classes, and the network has {CLASSES}"),
        ({"class_names": None}, "class_names is not a list of names"),
        ({"std": [0, 0, 0]}, "std must be positive"),
        ({"mean": "abc"}, "mean is not three finite numbers"),
        ({"scale_size": 0}, "scale_size is not a positive integer: 0"),
        ({"scale_size": 20000}, f"scale_size is 20000, over 4 times the input size {SIZE}"),
        ({"num_segments": "eight"}, "num_segments is not a positive integer: 'eight'"),
    ],
)
def test_a_stream_file_whose_info_would_feed_it_wrongly_is_refused(stream_file, tmp_path, change, message):
    """Before: input_size 100000 ran out of memory resizing the first frame, std 0 gave NaN probabilities, a
    scale size of 0 was replaced, two names for more classes failed at the first label."""
    proto = onnx.load(str(stream_file))
    entry = next(p for p in proto.metadata_props if p.key == INFO_KEY)
    entry.value = json.dumps({**json.loads(entry.value), **change})
    onnx.save(proto, str(tmp_path / "tampered.onnx"))
    with pytest.raises(DataError, match=f"tampered.onnx: tsm_info {re.escape(message)}"):
        OnnxStreamSession(tmp_path / "tampered.onnx")


def test_verify_reports_sizes_and_latency(model, stream_file):
    report = verify_onnx(StreamingTSM.from_model(model), stream_file, num_frames=3)
    assert report["max_rel_error"] <= TOL and report["size_mb"] > 0 and report["ort_ms"] > 0


@pytest.mark.parametrize("mode", ["clip", "stream"])
def test_mismatch_with_pytorch_raises(model, clip_file, stream_file, mode):
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.fc.bias += 1.0
    reference = other if mode == "clip" else StreamingTSM.from_model(other)
    with pytest.raises(ExportVerificationError, match="relative error"):
        verify_onnx(reference, clip_file if mode == "clip" else stream_file)


def test_shape_frozen_at_export_is_caught(model, tmp_path, monkeypatch):
    """A shift that reads the batch into Python traces to a fixed reshape, wrong for other batch sizes."""
    shift = tsm.shift.temporal_shift

    def frozen_shift(x, num_segments, fold_div=8, direction="bidirectional"):
        frames = len(x)  # a Python int while tracing: the batch of the export example becomes a constant
        return shift(x.reshape(frames, *x.shape[1:]), num_segments, fold_div, direction)

    monkeypatch.setattr(tsm.shift, "temporal_shift", frozen_shift)
    with pytest.raises(ExportVerificationError, match="batch"):
        to_onnx(model, tmp_path / "frozen.onnx", input_size=SIZE)
    assert not (tmp_path / "frozen.onnx").exists()  # not left to be deployed


def test_clip_with_other_num_frames(model, tmp_path):
    path = to_onnx(model, tmp_path / "clip6.onnx", input_size=SIZE, num_frames=6)
    assert graph_shapes(onnx.load(str(path)).graph.input)["clip"] == ["batch", 6, 3, SIZE, SIZE]
    six = tiny_model(num_segments=6)
    six.load_state_dict(model.state_dict())
    clip = torch.randn(2, 6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(30))
    (logits,) = session(path).run(None, {"clip": clip.numpy()})
    with torch.no_grad():
        assert rel_error(logits, six(clip)) <= TOL
    assert model.num_segments == T  # the caller's model is left as it was


def test_bad_mode_and_bidirectional_stream_raise(tmp_path):
    bidirectional = build_recognizer("mobilenetv2_050", CLASSES, T, shift={"direction": "bidirectional"})
    with pytest.raises(ValueError, match="mode"):
        to_onnx(bidirectional, tmp_path / "x.onnx", mode="frames", input_size=SIZE)
    with pytest.raises(ValueError, match="bidirectional"):
        to_onnx(bidirectional, tmp_path / "x.onnx", mode="stream", input_size=SIZE)
