"""int8 and fp16 exports (``src/export.py precision=...``): they run, agree with fp32, describe themselves."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.helpers.compare import rel_error
from tests.helpers.config import tiny_checkpoint
from tests.helpers.scripts import run_forked, run_python
from tests.helpers.streams import logits_on_cpu, needs_qemu_x86
from tests.helpers.videos import make_tree
from tsm.data.recorded import datamodule_from_record
from tsm.metadata import BUFFERS_KEY, CALIBRATION_KEY, PRECISION_KEY
from tsm.models.checkpoints import data_config, load_recognizer
from tsm.quantize import (
    calibration_data,
    calibration_feeds,
    clip_logits,
    moved,
    node_census,
    report_file,
    to_int8,
)
from tsm.shift import TemporalShift
from tsm.streaming.runtime import OnnxStreamSession, buffer_zeros, ort_session, read_metadata

CAUSAL = ["model/shift=causal", "model.shift.place=residual"]


def export(ckpt: Path, out: Path, *overrides: str) -> dict:
    """Run the exporter as users do; the report it writes for fp16/int8 files."""
    run_forked("src/export.py", [f"ckpt_path={ckpt}", f"out={out}", f"hydra.run.dir={out.parent}", *overrides])
    report = report_file(out)
    return json.loads(report.read_text()) if report.is_file() else {}


# one worker runs the module: its fixtures (exports of a trained checkpoint) are built once, not on both
pytestmark = pytest.mark.xdist_group("quantize")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)  # the same weights on every run: the tolerances below hold for these
    return tiny_checkpoint(tmp_path_factory.mktemp("causal"), CAUSAL)


@pytest.fixture(scope="module")
def exports(ckpt, tmp_path_factory) -> dict[tuple[str, str], tuple[Path, dict]]:
    out = tmp_path_factory.mktemp("exports")
    files = {}
    for mode, precision in (("stream", "int8"), ("clip", "int8"), ("stream", "fp16")):
        path = out / f"{mode}_{precision}.onnx"
        extra = ["calibration.clips=8", "compare.clips=3"]
        files[mode, precision] = path, export(ckpt, path, f"mode={mode}", f"precision={precision}", *extra)
    return files


def test_a_recorded_data_root_missing_here_is_named_with_the_override(ckpt, exports, tmp_path):
    """A checkpoint trained on another machine: its recorded data.root is said to come from the checkpoint, with
    the override that moves it (+data.root=DIR; before, the dataset's own error named a data.root the user had never
    set, and +data.root alone failed late on a config with no dataset)."""
    state = torch.load(ckpt, weights_only=True)
    state["tsm_data"] = {**state["tsm_data"], "root": str(tmp_path / "elsewhere")}
    away = tmp_path / "away.ckpt"
    torch.save(state, away)
    fp32_file = exports["stream", "int8"][0].with_suffix(".fp32.onnx")
    message = r"away.ckpt records its data at '.*elsewhere', not a directory here: give \+data.root=DIR where"
    with pytest.raises(FileNotFoundError, match=message):
        calibration_data(away, fp32_file)
    with pytest.raises(FileNotFoundError, match=r"\+data.root='.*gone' is not a directory here"):
        calibration_data(away, fp32_file, {"root": str(tmp_path / "gone")})
    recorded = {"root": "/a", "source": {"root": "/a", "classes": 3}, "crop_size": 32}
    assert moved(recorded, "/b") == {"root": "/b", "source": {"root": "/b", "classes": 3}, "crop_size": 32}
    assert moved({"root": None, "source": {"root": None}}, "/b") == {"root": "/b", "source": {"root": None}}


def test_a_non_square_export_is_calibrated_and_no_report_or_data_describes_another_file(ckpt, tmp_path):
    """int8 at [height, width] failed (square calibration clips); an fp32 export over an int8 one kept the int8
    file's report; data numbering other classes was compared with the model's classes without a word."""
    out, small = tmp_path / "wide.onnx", ["calibration.clips=2", "compare.clips=2"]
    report = export(ckpt, out, "mode=stream", "precision=int8", "input_size=[32,48]", *small)
    session = OnnxStreamSession(out)
    assert report["clips"] == 2 and session.precision == "int8" and session.info["input_size"] == [32, 48]
    export(ckpt, out, "mode=stream")  # fp32, over it
    assert OnnxStreamSession(out).precision == "fp32" and not report_file(out).exists()
    before = out.read_bytes()
    other = ["+data=list", f"data.root={make_tree(tmp_path / 'other')}", "data.source.format=tree", "data.frames=false"]
    args = [f"ckpt_path={ckpt}", f"out={out}", f"hydra.run.dir={tmp_path}", "mode=stream", "precision=int8"]
    done = run_forked("src/export.py", [*args, *small, *other], ok=False)
    assert "the data's 2 classes (jump, run, ...) are not the 9 classes" in done.stderr
    assert out.read_bytes() == before  # refused before it was replaced


def val_clips(ckpt: Path, count: int = 4) -> list[np.ndarray]:
    dataset = datamodule_from_record({**data_config(ckpt), "log_dir": None}, str(ckpt), "tsm_data").unaugmented("val")
    return [dataset[i][0].numpy() for i in range(count)]


# int8: 8-bit activations and 7-bit weights through the default network's 14 convolutions after one
# training step, at 32x32, calibrated on 8 clips (measured: 0.03 for both files; a broken scale or zero
# point gives errors near 1); fp16: 11-bit mantissas (measured: 5e-4)
@pytest.mark.parametrize(
    ("mode", "precision", "tolerance"), [("stream", "int8", 0.1), ("clip", "int8", 0.1), ("stream", "fp16", 1e-2)]
)
def test_quantized_files_compute_what_fp32_computes(ckpt, exports, mode, precision, tolerance):
    path, report = exports[mode, precision]
    reference = path.with_suffix(".fp32.onnx")
    clips = val_clips(ckpt)
    assert rel_error(clip_logits(path, clips), clip_logits(reference, clips)) < tolerance
    assert report["clips"] == 3 and 0 <= report["agreement"] <= 1
    assert report["size_ratio"] == pytest.approx(path.stat().st_size / reference.stat().st_size)
    assert report["size_ratio"] < (0.45 if precision == "int8" else 0.6)


def test_stream_logits_averaged_over_a_clip_are_the_clip_files_logits(ckpt, exports):
    """The comparison's stream path against the clip file of the same causal model (fp32, independent graphs)."""
    clips = val_clips(ckpt)
    stream = exports["stream", "int8"][0].with_suffix(".fp32.onnx")
    clip = exports["clip", "int8"][0].with_suffix(".fp32.onnx")
    assert rel_error(clip_logits(stream, clips), clip_logits(clip, clips)) < 1e-4


@pytest.mark.parametrize("mode", ["stream", "clip"])
def test_int8_graph_runs_integer_convolutions(ckpt, exports, mode):
    """Every convolution but the one reading the frame runs in int8; the graph leaves int8 only at the clip
    file's shifts (its reshapes and slices), the input and the logits. A stream file's shifts concatenate
    its uint8 buffers in int8 (no QLinearConcat, which onnxruntime's layout pass cannot see through)."""
    census = node_census(exports[mode, "int8"][0])
    print(mode, dict(census))  # the note's node census
    shifts = sum(isinstance(m, TemporalShift) for m in load_recognizer(ckpt).modules())
    assert census["QLinearConv"] > 0 and census["Conv"] == 1  # the stem's first convolution (3 channels in)
    if mode == "clip":
        assert census["QuantizeLinear"] <= shifts + 1 and census["DequantizeLinear"] <= 2 * shifts + 1
    else:
        assert census["QuantizeLinear"] == census["DequantizeLinear"] == 1  # after the stem, the logits
        assert census["Concat"] == shifts and census["QLinearConcat"] == 0


def test_int8_stream_buffers_are_nhwc_uint8_reset_to_their_zero_point(exports):
    """onnxruntime's full optimisation (NHWC integer convolutions on this CPU) then leaves no transpose at the
    shifts: two remain, after the float stem and before the pooled logits."""
    path = exports["stream", "int8"][0]
    spec = json.loads(read_metadata(path)[BUFFERS_KEY])
    fp32 = json.loads(read_metadata(path.with_suffix(".fp32.onnx"))[BUFFERS_KEY])
    assert [b["shape"] for b in spec] == [[b["shape"][i] for i in (0, 2, 3, 1)] for b in fp32]
    assert all(b["dtype"] == "uint8" and 0 <= b["zero_point"] <= 255 for b in spec)
    session = OnnxStreamSession(path)
    session.step(np.random.default_rng(0).standard_normal((1, 3, 32, 32), np.float32))
    assert any(values.any() for values in session.buffers().values())
    session.reset()
    for b, values in zip(spec, session.buffers().values(), strict=True):
        assert values.dtype == np.uint8 and (values == b["zero_point"]).all()
    census = node_census(path, layout=True)
    assert census["Transpose"] <= 2 and census["Concat"] == len(spec)


@pytest.mark.parametrize("mode", ["stream", "clip"])
def test_int8_biases_are_in_their_input_scale_times_their_weight_scale(exports, mode):
    """onnxruntime fuses a convolution into QLinearConv only then; the stream rewrite changes some inputs' scales."""
    graph = onnx.load(exports[mode, "int8"][0]).graph
    values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    made = {out: node for node in graph.node for out in node.output}
    convs = [
        n
        for n in graph.node
        if n.op_type == "Conv" and getattr(made.get(n.input[0]), "op_type", "") == "DequantizeLinear"
    ]
    assert convs
    for conv in convs:
        activation, weight, bias = (made[name] for name in conv.input)
        expected = values[activation.input[1]] * values[weight.input[1]]
        np.testing.assert_allclose(values[bias.input[1]], expected, rtol=1e-6)


def test_metadata_round_trips(ckpt, exports):
    for (mode, precision), (path, _) in exports.items():
        metadata, fp32 = read_metadata(path), read_metadata(path.with_suffix(".fp32.onnx"))
        assert metadata[PRECISION_KEY] == precision and metadata["tsm_mode"] == mode
        assert json.loads(metadata["tsm_info"]) == json.loads(fp32["tsm_info"])
        calibration = json.loads(metadata[CALIBRATION_KEY])
        if precision == "int8":
            assert calibration["clips"] == 8 and calibration["split"] == "train"
    session = OnnxStreamSession(exports["stream", "int8"][0])
    assert session.precision == "int8"
    assert session.step(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, len(session.info["class_names"]))


def test_stream_calibration_carries_the_fp32_buffers(exports):
    fp32 = exports["stream", "int8"][0].with_suffix(".fp32.onnx")
    clips = [np.random.default_rng(0).standard_normal((3, 3, 32, 32), np.float32)]
    feeds = list(calibration_feeds(fp32, clips))
    assert len(feeds) == 3
    assert all(not value.any() for name, value in feeds[0].items() if name != "frame")
    session = ort_session(fp32)
    names = [node.name for node in session.get_inputs()[1:]]
    _, *carried = session.run(None, {"frame": clips[0][0][None], **buffer_zeros(read_metadata(fp32), 1)})
    for name, value in zip(names, carried, strict=True):  # what the second frame reads
        np.testing.assert_array_equal(feeds[1][name], value)
    np.testing.assert_array_equal(feeds[2]["frame"][0], clips[0][2])


def test_int8_without_clips_names_the_key(exports, tmp_path):
    fp32 = exports["stream", "int8"][0].with_suffix(".fp32.onnx")
    with pytest.raises(ValueError, match=r"calibration.clips >= 1"):
        to_int8(fp32, tmp_path / "int8.onnx", [], {"split": "train"})
    assert not (tmp_path / "int8.onnx").exists()


def test_a_checkpoint_without_its_data_names_the_override(tmp_path):
    bare = tmp_path / "bare.ckpt"
    torch.save({"pytorch-lightning_version": "2", "hyper_parameters": {}, "state_dict": {}}, bare)
    with pytest.raises(ValueError, match=r"\+data=NAME"):
        data_config(bare)


def test_stream_script_runs_an_int8_file(exports, tmp_path):
    from tests.helpers.videos import write_video

    video = write_video(tmp_path / "video.mp4", num_frames=6)
    path = exports["stream", "int8"][0]
    done = run_python(["src/stream.py", f"ckpt_path={path}", f"source={video}", f"hydra.run.dir={tmp_path}"])
    assert "per-frame latency" in done.stdout


def test_int8_file_gives_the_same_logits_on_avx2_as_without_it(ckpt, exports, tmp_path):
    """x86 CPUs without VNNI run uint8 x int8 products through int16 pair sums (AVX2's vpmaddubsw), which
    saturate for 8-bit weights; the exporter's 7-bit weights must give the integers the SSE kernels give
    (exact int32 sums, as VNNI and the browser compute; checked: fails with 8-bit weights)."""
    needs_qemu_x86()
    path = exports["stream", "int8"][0]
    frames = val_clips(ckpt, 1)[0]
    avx2 = logits_on_cpu("Haswell", path, frames, tmp_path)
    sse = logits_on_cpu("Nehalem", path, frames, tmp_path)
    np.testing.assert_array_equal(avx2, sse)


def test_the_onnx_and_the_tflite_file_of_one_stem_keep_a_report_each():
    assert report_file(Path("out/m_int8.onnx")) == Path("out/m_int8.onnx.report.json")
    assert report_file("out/m_int8.tflite") == Path("out/m_int8.tflite.report.json")
