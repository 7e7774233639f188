"""LiteRT (TFLite) export and its runner: the file alone streams, torch-free, what PyTorch computes frame by frame."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.compare import rel_error
from tests.helpers.scripts import run_forked, run_python
from tests.helpers.streams import logits_on_cpu, needs_qemu_x86, stream_without_torch
from tests.helpers.videos import write_video
from tests.helpers.weights import randomize_norms
from tsm.data.recorded import datamodule_from_record
from tsm.errors import DataError
from tsm.export import ExportVerificationError
from tsm.litert_export import NamedStream, check_dims, to_tflite, with_metadata
from tsm.metadata import BUFFERS_KEY, CALIBRATION_KEY, DATA_KEY, INFO_KEY, MODE_KEY
from tsm.models.checkpoints import data_config, load_recognizer
from tsm.models.factory import for_deployment
from tsm.quantize import clip_logits, report_file
from tsm.streaming.litert import LiteRTStreamSession, read_tflite_metadata
from tsm.streaming.model import StreamingTSM
from tsm.streaming.sessions import open_stream

SIZE = (33, 45)  # odd, not square
CLIP_LENGTHS = (7, 11)


# one worker runs the module: its fixtures (exports of a trained checkpoint) are built once, not on both
pytestmark = pytest.mark.xdist_group("litert_export")


@pytest.fixture(scope="module")
def ckpt(causal_ckpt) -> Path:
    return causal_ckpt


@pytest.fixture(scope="module")
def model(ckpt):
    """The checkpoint's causal network (the default backbone, in-place shift) with random norms everywhere, so
    every residual branch and the shift in it count."""
    return randomize_norms(load_recognizer(ckpt), seed=3).eval()


@pytest.fixture(scope="module")
def stream_file(model, tmp_path_factory) -> Path:
    return to_tflite(model, tmp_path_factory.mktemp("tflite") / "stream.tflite", mode="stream", input_size=SIZE)


def pytorch_logits(model, clip: torch.Tensor) -> np.ndarray:
    stream = StreamingTSM.from_model(for_deployment(model))
    return torch.cat([stream.step(frame[None]) for frame in clip]).numpy()


def test_stream_file_gives_pytorchs_logits_on_every_frame_without_torch(model, stream_file, tmp_path):
    generator = torch.Generator().manual_seed(5)
    clips = {f"clip{n}": torch.randn(n, 3, *SIZE, generator=generator) for n in CLIP_LENGTHS}
    got = stream_without_torch(stream_file, {name: clip.numpy() for name, clip in clips.items()}, tmp_path)
    assert str(got["precision"]) == "fp32" and int(got["classes"]) == model.num_classes
    for name, clip in clips.items():
        expected = pytorch_logits(model, clip)
        assert got[name].shape == expected.shape == (len(clip), model.num_classes)
        # relative to each frame's largest logit, frame by frame
        error = np.abs(got[name] - expected).max(axis=1) / np.abs(expected).max(axis=1)
        assert error.max() <= 1e-4, (name, error)
    assert not np.allclose(got["clip7"][1:], got["clip7"][:-1], atol=1e-3)  # the logits move from frame to frame
    with pytest.raises(ValueError, match="frame of dtype uint8: step\\(\\) takes a normalised float frame"):
        open_stream(stream_file).step(np.zeros((1, 3, *SIZE), np.uint8))  # pixels, not normalised
    with pytest.raises(ValueError, match="frame values up to 255, where normalised pixels stay within 2.64: step"):
        open_stream(stream_file).step(np.full((1, 3, *SIZE), 255, np.float32))  # float pixels: not refused before


def ops_of(path: Path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return [op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details()]


def test_stream_file_shifts_channels_last_without_transposes(stream_file):
    """The buffers are NHWC, each read straight by a concatenation on the channel axis (the converter's NCHW
    shift cost two transposes of the activation: :func:`tsm.litert_graph.nhwc_buffers`)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(stream_file))
    inputs, ops = interpreter.get_signature_runner().get_input_details(), interpreter._get_ops_details()
    spec = json.loads(read_tflite_metadata(stream_file)[BUFFERS_KEY])
    frame = inputs["frame"]["shape"]
    for entry in spec:
        n, height, width, fold = inputs[entry["name"]]["shape"]
        assert n == 1 and [height, width, fold] == entry["shape"][1:] and height <= frame[2] and width <= frame[3]
        readers = [op["op_name"] for op in ops if inputs[entry["name"]]["index"] in op["inputs"]]
        assert readers == ["CONCATENATION"]
    assert [op["op_name"] for op in ops].count("TRANSPOSE") < 1 + 2 * len(spec)


def test_stream_signature_has_the_onnx_names_and_at_most_four_dimensions(stream_file):
    session = LiteRTStreamSession(stream_file)
    inputs, outputs = session.runner.get_input_details(), session.runner.get_output_details()
    buffers = [f"buffer_{i:02d}" for i in range(len(session.buffer_names))]
    assert len(buffers) == 4 and sorted(inputs) == [*buffers, "frame"]  # ResNet10-T: one shift per block
    assert sorted(outputs) == [*(f"{b}_out" for b in buffers), "logits"]
    assert all(len(d["shape"]) <= 4 for d in [*inputs.values(), *outputs.values()])
    metadata = read_tflite_metadata(stream_file)
    assert metadata[MODE_KEY] == "stream" and '"input_size": [33, 45]' in metadata[INFO_KEY]
    assert session.info["scale_size"] == 33  # the checkpoint's scale 32 for its crop 32, in proportion to side 33


def test_export_command_writes_clip_files_the_stream_runner_refuses(ckpt, tmp_path):
    """The int8 clip file kept an int8 clip input and logits, which no runner here feeds: the export crashed in its
    own comparison, leaving the file."""
    out = tmp_path / "clip.tflite"
    args = [f"ckpt_path={ckpt}", "format=tflite", "mode=clip", "precision=int8", "calibration.clips=4"]
    run_forked("src/export.py", [*args, "compare.clips=4", f"out={out}", f"hydra.run.dir={tmp_path}"])
    fp32 = out.with_suffix(".fp32.tflite")
    assert read_tflite_metadata(out)[MODE_KEY] == read_tflite_metadata(fp32)[MODE_KEY] == "clip"
    val = datamodule_from_record({**data_config(ckpt), "log_dir": None}, str(ckpt), DATA_KEY).unaugmented("val")
    clips = [val[i][0].numpy() for i in range(4)]
    assert rel_error(clip_logits(out, clips), clip_logits(fp32, clips)) < 0.1  # the stream file's int8 bound
    assert json.loads(report_file(out).read_text())["clips"] == 4
    for path in (out, fp32):
        with pytest.raises(ValueError, match=r"not a stream-mode export \(tsm_mode='clip'\): export .* mode=stream"):
            open_stream(path)


def test_a_file_without_the_metadata_is_refused_naming_what_is_missing(stream_file, tmp_path):
    bare = tmp_path / "bare.tflite"
    content = stream_file.read_bytes()
    keep = {MODE_KEY: "stream", BUFFERS_KEY: read_tflite_metadata(stream_file)[BUFFERS_KEY]}
    bare.write_bytes(with_metadata(_without_tsm_metadata(content), keep))
    with pytest.raises(ValueError, match="has no tsm_info metadata"):
        open_stream(bare)
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="not a LiteRT"):
        open_stream(tmp_path / "junk.tflite")
    with pytest.raises(ValueError, match=r"no stream runtime for \.pt; known: \.onnx"):
        (tmp_path / "model.pt").write_bytes(b"x")
        open_stream(tmp_path / "model.pt")


@pytest.mark.parametrize("kept", [0.5, 0.99])
def test_a_truncated_file_is_refused(stream_file, tmp_path, kept):
    """A copy cut short (an interrupted transfer): the flatbuffer reader ran past its end, a bare struct.error, on
    both cuts of this file."""
    content = stream_file.read_bytes()
    (tmp_path / "cut.tflite").write_bytes(content[: int(len(content) * kept)])
    with pytest.raises(DataError, match="cannot be read \\(truncated or damaged\\?\\)"):
        open_stream(tmp_path / "cut.tflite")


def _without_tsm_metadata(content: bytes) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    flat = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    flat.metadata = [entry for entry in flat.metadata or [] if not entry.name.decode().startswith("tsm_")]
    builder = flatbuffers.Builder(len(content))
    builder.Finish(flat.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["format=coreml"], "format='coreml' is not supported; choose one of onnx, tflite"),
        (["format=tflite", "precision=fp16"], "format=tflite takes precision=fp32|int8, got 'fp16'"),
        (
            ["format=tflite", "out=model.onnx"],
            "out=model.onnx: format=tflite writes a .tflite file; name it model.tflite",
        ),
        (["out=model.tflite"], "out=model.tflite: format=onnx writes a .onnx file; name it model.onnx"),
        (["precision=int8", "compare.clips=0"], "compare.clips=0: precision=int8 is compared with fp32"),
        (["input_size=-4"], "input_size must be null, a side or [height, width], in pixels > 0; got -4"),
        (["input_size=[32]"], "input_size must be null, a side or [height, width], in pixels > 0; got [32]"),
        (["input_size=0"], "input_size must be null, a side or [height, width], in pixels > 0; got 0"),
        (["num_segments=0"], "num_segments must be a positive integer, got 0"),
        (["mode=clip", "num_segments=6"], "frames per clip, which its export keeps (num_segments applies to released"),
        (["precision=int8", "calibration.clips=2.5"], "calibration.clips must be a positive integer, got 2.5"),
        (["precision=int8", "compare.split=bogus"], "compare.split must be one of train, val, test, got 'bogus'"),
        (["format=tvm", "mode=stream", "tuning.trials=-1"], "tuning.trials must be an integer >= 0, got -1"),
        (["target=cortex-a72"], "target=cortex-a72 is a TVM library's CPU: set format=tvm"),
        (["out=."], "out=. is a folder: name the file to write"),
        (
            ["precision=int8", "+data.sampling.stride=2"],
            "data={'sampling': {'stride': 2}} names no dataset: give +data=NAME",
        ),
    ],
)
def test_a_bad_export_setting_names_the_key(ckpt, tmp_path, overrides, message):
    done = run_forked("src/export.py", [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}", *overrides], ok=False)
    assert message in done.stderr


def test_a_conversion_off_by_one_percent_is_caught(model, tmp_path, monkeypatch):
    """The check compares the file with the PyTorch stream, not with what was converted."""
    forward = NamedStream.forward

    def one_percent_off(self, frame, **buffers):
        outputs = forward(self, frame, **buffers)
        return {**outputs, "logits": outputs["logits"] * 1.01}

    monkeypatch.setattr(NamedStream, "forward", one_percent_off)
    with pytest.raises(ExportVerificationError, match="LiteRT differs from PyTorch"):
        to_tflite(model, tmp_path / "wrong.tflite", input_size=16)
    assert not (tmp_path / "wrong.tflite").exists()  # not left to be deployed


def test_tensors_over_four_dimensions_are_refused_naming_them():
    with pytest.raises(
        ValueError, match=r"at most 4 dimensions; these tensors have more: {'buffer_00': \(1, 2, 3, 4, 5\)}"
    ):
        check_dims({"frame": torch.zeros(1, 3, 8, 8), "buffer_00": torch.zeros(1, 2, 3, 4, 5)})


def test_stream_script_and_app_run_the_tflite_file_on_a_video(stream_file, tmp_path):
    """What users run: ``src/stream.py ckpt_path=FILE.tflite`` and ``python -m tsm.streaming.app FILE.tflite``."""
    video = write_video(tmp_path / "v.mp4")
    done = run_python(["src/stream.py", f"ckpt_path={stream_file}", f"source={video}", f"hydra.run.dir={tmp_path}"])
    assert "per-frame latency" in done.stdout
    done = run_python(["-m", "tsm.streaming.app", stream_file, "--source", video, "--out-video", tmp_path / "a.mp4"])
    assert "per-frame latency" in done.stdout and (tmp_path / "a.mp4").stat().st_size > 0


@pytest.fixture(scope="module")
def int8_stream(ckpt, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("int8") / "stream.tflite"
    extra = ["calibration.clips=8", "compare.clips=4"]
    args = [f"ckpt_path={ckpt}", "format=tflite", "mode=stream", "precision=int8", f"out={out}"]
    run_forked("src/export.py", [*args, *extra, f"hydra.run.dir={out.parent}"])
    return out, json.loads(report_file(out).read_text())


def test_int8_stream_file_carries_int8_buffers_and_stays_near_fp32(ckpt, int8_stream, tmp_path):
    """Full-integer LiteRT, calibrated on the checkpoint's own training clips: float32 frame and logits, int8
    buffers in the quantization of the activation they are cut from. On validation clips its logits stay within
    the measured int8 error of the fp32 file's (measured: 0.03 of the largest logit; a broken scale or zero point
    gives errors near 1)."""
    path, report = int8_stream
    session = open_stream(path)
    assert session.precision == "int8"
    inputs, outputs = session.runner.get_input_details(), session.runner.get_output_details()
    assert inputs["frame"]["dtype"] == outputs["logits"]["dtype"] == np.float32  # quantized inside the graph
    for name in session.buffer_names:  # carried from frame to frame as they are: no requantization
        assert inputs[name]["dtype"] == np.int8
        assert inputs[name]["quantization"] == outputs[f"{name}_out"]["quantization"]
    assert ops_of(path).count("QUANTIZE") == 1  # the frame's: the shifts requantize nothing
    assert set(session.buffers()) == set(session.buffer_names) and all(
        not b.any() for b in session.buffers().values()
    )  # a fresh stream: every buffer at its zero point, the int8 of 0.0
    fp32 = path.with_suffix(".fp32.tflite")
    val = datamodule_from_record({**data_config(ckpt), "log_dir": None}, str(ckpt), DATA_KEY).unaugmented("val")
    clips = [val[i][0].numpy() for i in range(4)]
    assert rel_error(clip_logits(path, clips), clip_logits(fp32, clips)) < 0.1
    without_torch = stream_without_torch(path, {"clip": clips[0]}, tmp_path)
    assert str(without_torch["precision"]) == "int8"
    np.testing.assert_allclose(without_torch["clip"].mean(0), clip_logits(path, clips[:1])[0], rtol=0, atol=1e-6)
    assert report["clips"] == 4 and 0 <= report["agreement"] <= 1 and report["size_ratio"] < 0.8
    assert json.loads(read_tflite_metadata(path)[CALIBRATION_KEY])["split"] == "train"


def test_int8_convolutions_keep_bias_scale_equal_to_input_times_weight_scale(int8_stream):
    """The kernels assume it; the rewrite that gives a shift's concatenation its activation's scale must
    requantize the biases after it to keep it (:func:`tsm.litert_graph.integer_carry`)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(int8_stream[0]))
    scales = {t["index"]: t["quantization_parameters"]["scales"] for t in interpreter.get_tensor_details()}
    convolutions = [op for op in interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert len(convolutions) > 10
    for op in convolutions:
        source, weight, bias = op["inputs"][:3]
        np.testing.assert_allclose(scales[bias], scales[source] * scales[weight], rtol=1e-5)


def test_int8_without_calibration_clips_names_the_key(ckpt, tmp_path):
    out = tmp_path / "s.tflite"
    args = [f"ckpt_path={ckpt}", "format=tflite", "mode=stream", "precision=int8", f"out={out}"]
    done = run_forked("src/export.py", [*args, "calibration.clips=0", f"hydra.run.dir={tmp_path}"], ok=False)
    assert "int8 needs calibration clips and got none: set calibration.clips >= 1" in done.stderr


def test_int8_file_gives_the_same_logits_on_avx2_sse_and_this_cpu(ckpt, int8_stream, tmp_path):
    """XNNPACK's int8 kernels sum exactly on every x86 level (checked: no saturation on AVX2, unlike
    onnxruntime's 8-bit weights), so the file needs no 7-bit weights."""
    needs_qemu_x86()
    path, _ = int8_stream
    frames = datamodule_from_record({**data_config(ckpt), "log_dir": None}, str(ckpt), DATA_KEY).unaugmented("val")
    clip = frames[0][0].numpy()[:4]
    avx2, sse = logits_on_cpu("Haswell", path, clip, tmp_path), logits_on_cpu("Nehalem", path, clip, tmp_path)
    session = open_stream(path)
    here = np.stack([session.step(frame[None])[0] for frame in clip])
    np.testing.assert_array_equal(avx2, sse)
    np.testing.assert_array_equal(avx2, here)
