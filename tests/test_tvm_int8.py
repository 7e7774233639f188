"""int8 TVM libraries: quantized convolutions run on integers and compute their definition; a stream library gives
onnxruntime's int8 logits on this CPU and, cross-compiled, under qemu's aarch64; the export command writes one."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tests.helpers.scripts import run_forked
from tests.helpers.streams import ELF_MACHINE, emulated_arm64, needs_arm64_sysroot, stream_without_torch
from tsm.errors import DataError
from tsm.quantize import report_file
from tsm.streaming.sessions import open_stream, read_file_metadata
from tsm.tvm_export import to_tvm

tvm = pytest.importorskip("tvm")


def quantized_conv_file(path: Path, channels: int, out_channels: int, groups: int, seed: int, w_zero: int = 0) -> dict:
    """An ONNX file of one quantized convolution, uint8 in and out (a 3x3 kernel, stride 2, padding 1), as the
    quantizer writes them (per-channel int8 weights, an int32 bias), but with a bias scale of its own, and its
    parameters."""
    rng = np.random.default_rng(seed)
    p = {
        "x_scale": np.float32(0.05),
        "x_zero": np.uint8(rng.integers(0, 256)),
        "w": rng.integers(-127, 128, (out_channels, channels // groups, 3, 3)).astype(np.int8),
        "w_scale": rng.uniform(0.002, 0.02, out_channels).astype(np.float32),
        "w_zero": np.full(out_channels, w_zero, np.int8),
        "b": rng.integers(-5000, 5000, out_channels).astype(np.int32),
        "b_scale": rng.uniform(1e-4, 1e-3, out_channels).astype(np.float32),
        "b_zero": np.zeros(out_channels, np.int32),
        "y_scale": np.float32(0.3),
        "y_zero": np.uint8(rng.integers(100, 156)),
    }
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zero"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wf"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "b_scale", "b_zero"], ["bf"], axis=0),
        helper.make_node("Conv", ["xf", "wf", "bf"], ["yf"], strides=[2, 2], pads=[1, 1, 1, 1], group=groups),
        helper.make_node("QuantizeLinear", ["yf", "y_scale", "y_zero"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "quantized_conv",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, channels, 9, 7])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, out_channels, 5, 4])],
        [numpy_helper.from_array(np.asarray(value), name) for name, value in p.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return p | {"groups": groups}


def conv_by_definition(x: np.ndarray, p: dict) -> np.ndarray:
    """The quantized convolution from its definition, in float64: dequantize, convolve (zero padding), add the
    bias, quantize (round half to even, saturate to uint8)."""
    real = (x.astype(np.float64) - p["x_zero"]) * p["x_scale"]
    weights = (p["w"].astype(np.float64) - p["w_zero"][:, None, None, None]) * p["w_scale"][:, None, None, None]
    padded = np.pad(real, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out_channels, per_group = weights.shape[:2]
    height, width = (padded.shape[2] - 3) // 2 + 1, (padded.shape[3] - 3) // 2 + 1
    y = np.zeros((1, out_channels, height, width))
    for o in range(out_channels):
        group = o // (out_channels // p["groups"])
        inputs = padded[0, group * per_group : (group + 1) * per_group]
        for i in range(height):
            for j in range(width):
                y[0, o, i, j] = np.sum(inputs[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] * weights[o])
    y += ((p["b"].astype(np.float64) - p["b_zero"]) * p["b_scale"])[None, :, None, None]
    return np.clip(np.round(y / p["y_scale"]) + p["y_zero"], 0, 255)


def compiled(path: Path, rewrite: bool = True):
    """The Relax VM of the ONNX file ``path`` (its quantized convolutions on integers, unless not ``rewrite``), the
    number rewritten and the number left in float."""
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from tsm.tvm_int8 import integer_convolutions, quantized_convolutions

    module = from_onnx(onnx.load(path), keep_params_in_input=False)
    module, rewritten = integer_convolutions(module) if rewrite else (module, 0)
    vm = relax.VirtualMachine(tvm.compile(module, target="llvm"), tvm.cpu())
    return vm, rewritten, quantized_convolutions(module["main"])


@pytest.mark.parametrize(("channels", "out_channels", "groups"), [(5, 6, 1), (6, 6, 6)])
def test_a_quantized_convolution_runs_on_integers_and_computes_its_definition(tmp_path, channels, out_channels, groups):
    p = quantized_conv_file(tmp_path / "conv.onnx", channels, out_channels, groups, seed=groups)
    vm, rewritten, left = compiled(tmp_path / "conv.onnx")
    assert (rewritten, left) == (1, 0)  # no float convolution is left beside the integer one
    x = np.random.default_rng(7).integers(0, 256, (1, channels, 9, 7)).astype(np.uint8)
    got = vm["main"](tvm.runtime.tensor(x)).numpy().astype(np.float64)
    expected = conv_by_definition(x, p)
    # float32 scaling of exact integer sums against float64: a value within rounding of a .5 tie may round the
    # other way (measured: none of these 2 x 120 outputs, 89 and 62 distinct values)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1 and np.mean(got == expected) >= 0.97


def test_weights_with_a_zero_point_stay_float_and_are_counted(tmp_path):
    """Weights less a zero point do not factor out of the sums: that convolution is left as Relax read it."""
    p = quantized_conv_file(tmp_path / "conv.onnx", 4, 3, 1, seed=1, w_zero=3)
    vm, rewritten, left = compiled(tmp_path / "conv.onnx")
    assert (rewritten, left) == (0, 1)
    x = np.random.default_rng(7).integers(0, 256, (1, 4, 9, 7)).astype(np.uint8)
    got = vm["main"](tvm.runtime.tensor(x)).numpy().astype(np.float64)
    assert np.abs(got - conv_by_definition(x, p)).max() <= 1


@pytest.fixture(scope="module")
def exported(causal_ckpt, tmp_path_factory) -> Path:
    """``src/export.py format=tvm precision=int8`` of the tiny causal checkpoint, as users run it (x86): the
    library, with its int8 ONNX file, the fp32 library and the report beside it."""
    out = tmp_path_factory.mktemp("tvm_int8") / "int8.so"
    args = [f"ckpt_path={causal_ckpt}", "format=tvm", "precision=int8", "mode=stream", f"out={out}"]
    run_forked("src/export.py", [*args, "calibration.clips=2", "compare.clips=3", f"hydra.run.dir={out.parent}"])
    return out


@pytest.fixture(scope="module")
def int8_file(exported) -> Path:
    return exported.with_name("int8.so.onnx")


@pytest.fixture(scope="module")
def clips(exported) -> dict[str, np.ndarray]:
    """Two clips of 7 and 11 frames of the library's input size (the checkpoint's own)."""
    side = open_stream(exported).frame_shape[2:]
    generator = torch.Generator().manual_seed(6)
    return {f"clip{n}": torch.randn(n, 3, *side, generator=generator).numpy() for n in (7, 11)}


def onnxruntime_logits(path: Path, clip: np.ndarray) -> np.ndarray:
    session = open_stream(path)
    return np.concatenate([session.step(frame[None]) for frame in clip])


# TVM's integer sums are exact and its float32 requantization rounds as onnxruntime's int8 kernels do, to a tie:
# where a value rounds the other way, logits differ by a step of a quantized activation (measured: equal on these
# clips; TSM-MobileNetV2 x0.5 at 224x224 with random weights on noise, at most 2.0% of the largest logit, one to
# three steps of the logits' quantization, the same top-1 on 8 frames)
INT8_TOLERANCE = 0.05


def test_x86_int8_library_streams_onnxruntimes_int8_logits_without_torch(exported, int8_file, clips, tmp_path):
    got = stream_without_torch(exported, clips, tmp_path)
    for name, clip in clips.items():
        expected = onnxruntime_logits(int8_file, clip)
        assert np.abs(got[name] - expected).max() / np.abs(expected).max() <= INT8_TOLERANCE, name
    assert str(got["precision"]) == "int8" and read_file_metadata(exported)["tsm_precision"] == "int8"
    session = open_stream(exported)
    zero_points = [entry["zero_point"] for entry in json.loads(read_file_metadata(exported)["tsm_buffers"])]
    assert [(b.dtype, int(b.flat[0])) for b in session.buffers().values()] == [(np.uint8, z) for z in zero_points]


@needs_arm64_sysroot
def test_cortex_a57_int8_library_runs_under_qemu_and_gives_onnxruntimes_int8_logits(int8_file, clips, tmp_path):
    library = to_tvm(int8_file, tmp_path / "stream_a57.so", target="cortex-a57")
    assert ELF_MACHINE[library.read_bytes()[18:20]] == "aarch64"
    got = stream_without_torch(library, clips, tmp_path, **emulated_arm64())
    for name, clip in clips.items():
        expected = onnxruntime_logits(int8_file, clip)
        assert np.abs(got[name] - expected).max() / np.abs(expected).max() <= INT8_TOLERANCE, name


def test_an_int8_file_with_a_convolution_tvm_cannot_run_on_integers_is_refused(int8_file, tmp_path):
    """One convolution's weights given a zero point (as another quantizer may write them): named, not compiled
    into a library that is int8 in name and partly float."""
    model = onnx.load(int8_file)
    weights = {i.name: i for i in model.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) == 4}
    dequantize = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights)
    channels = weights[dequantize.input[0]].dims[0]
    model.graph.initializer.append(numpy_helper.from_array(np.ones(channels, np.int8), "crafted_zero"))
    dequantize.input[2:] = ["crafted_zero"]
    onnx.save(model, tmp_path / "crafted.onnx")
    with pytest.raises(DataError, match="1 quantized convolutions TVM cannot run on integers"):
        to_tvm(tmp_path / "crafted.onnx", tmp_path / "crafted.so")
    assert not (tmp_path / "crafted.so").exists()


def test_export_command_writes_an_int8_library_and_its_report(exported):
    report = json.loads(report_file(exported).read_text())
    assert report["compared"] == ["int8.fp32.so", "int8.so"] and report["clips"] == 3
    assert report["mb"] == pytest.approx(exported.stat().st_size / 2**20)
    assert report["fp32_mb"] == pytest.approx(exported.with_suffix(".fp32.so").stat().st_size / 2**20)
    assert (
        open_stream(exported.with_suffix(".fp32.so")).precision == "fp32"
        and exported.with_name("int8.so.fp32.onnx").is_file()
    )
