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
from tests.helpers.streams import stream_without_torch
from tests.helpers.weights import randomize_norms
from tests.test_tvm_export import ELF_MACHINE, SIZE, SYSROOT, emulated_arm64
from tsm.export import to_onnx
from tsm.models.checkpoints import load_recognizer
from tsm.quantize import to_int8
from tsm.streaming.sessions import open_stream, read_file_metadata
from tsm.tvm_export import to_tvm

tvm = pytest.importorskip("tvm")


def quantized_conv_file(path: Path, channels: int, out_channels: int, groups: int, seed: int) -> dict:
    """An ONNX file of one quantized convolution, uint8 in and out (a 3x3 kernel, stride 2, padding 1 and a bias,
    as the quantizer writes them: per-channel int8 weights, an int32 bias), and its parameters."""
    rng = np.random.default_rng(seed)
    p = {
        "x_scale": np.float32(0.05),
        "x_zero": np.uint8(rng.integers(0, 256)),
        "w": rng.integers(-127, 128, (out_channels, channels // groups, 3, 3)).astype(np.int8),
        "w_scale": rng.uniform(0.002, 0.02, out_channels).astype(np.float32),
        "b": rng.integers(-5000, 5000, out_channels).astype(np.int32),
        "y_scale": np.float32(0.3),
        "y_zero": np.uint8(rng.integers(100, 156)),
        "groups": groups,
    }
    p["b_scale"] = (p["x_scale"] * p["w_scale"]).astype(np.float32)
    constants = {name: p[name] for name in ("x_scale", "x_zero", "w", "w_scale", "b", "b_scale", "y_scale", "y_zero")}
    constants |= {"w_zero": np.zeros(out_channels, np.int8), "b_zero": np.zeros(out_channels, np.int32)}
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
        [numpy_helper.from_array(np.asarray(value), name) for name, value in constants.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return p


def conv_by_definition(x: np.ndarray, p: dict) -> np.ndarray:
    """The quantized convolution from its definition, in float64: dequantize, convolve (zero padding), add the
    bias, quantize (round half to even, saturate to uint8)."""
    real = (x.astype(np.float64) - p["x_zero"]) * p["x_scale"]
    weights = p["w"].astype(np.float64) * p["w_scale"].astype(np.float64)[:, None, None, None]
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
    y += p["b"].astype(np.float64)[None, :, None, None] * p["b_scale"].astype(np.float64)[None, :, None, None]
    return np.clip(np.round(y / p["y_scale"]) + p["y_zero"], 0, 255)


@pytest.mark.parametrize(("channels", "out_channels", "groups"), [(5, 6, 1), (6, 6, 6)])
def test_a_quantized_convolution_runs_on_integers_and_computes_its_definition(tmp_path, channels, out_channels, groups):
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from tsm.tvm_int8 import integer_convolutions

    p = quantized_conv_file(tmp_path / "conv.onnx", channels, out_channels, groups, seed=groups)
    module, rewritten = integer_convolutions(from_onnx(onnx.load(tmp_path / "conv.onnx"), keep_params_in_input=False))
    assert rewritten == 1 and 'out_dtype="int32"' in module.script() and 'dtype="int16"' in module.script()
    vm = relax.VirtualMachine(tvm.compile(module, target="llvm"), tvm.cpu())
    x = np.random.default_rng(7).integers(0, 256, (1, channels, 9, 7)).astype(np.uint8)
    got = vm["main"](tvm.runtime.tensor(x)).numpy().astype(np.float64)
    expected = conv_by_definition(x, p)
    # float32 scaling of exact integer sums against float64: a value within rounding of a .5 tie may round the
    # other way (measured: none of these 2 x 120 outputs, 89 and 62 distinct values)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1 and np.mean(got == expected) >= 0.97


@pytest.fixture(scope="module")
def int8_file(causal_ckpt, tmp_path_factory) -> Path:
    model = randomize_norms(load_recognizer(causal_ckpt), seed=4).eval()
    folder = tmp_path_factory.mktemp("tvm_int8")
    fp32 = to_onnx(model, folder / "stream.onnx", mode="stream", input_size=SIZE)
    calibration = [torch.randn(8, 3, *SIZE, generator=torch.Generator().manual_seed(s)).numpy() for s in (1, 2)]
    return to_int8(fp32, folder / "stream_int8.onnx", calibration, {"data": "Gaussian noise"})


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(6)
    return {f"clip{n}": torch.randn(n, 3, *SIZE, generator=generator).numpy() for n in (7, 11)}


def onnxruntime_logits(path: Path, clip: np.ndarray) -> np.ndarray:
    session = open_stream(path)
    return np.concatenate([session.step(frame[None]) for frame in clip])


# TVM's integer sums are exact and its float32 requantization rounds as onnxruntime's int8 kernels do, to a tie:
# where a value rounds the other way, logits differ by a step of a quantized activation (measured: equal on these
# clips; TSM-MobileNetV2 x0.5 at 224x224 on noise, one step of the logits' quantization, 0.7% of the largest logit)
INT8_TOLERANCE = 0.02


def test_x86_int8_library_streams_onnxruntimes_int8_logits_without_torch(int8_file, clips, tmp_path):
    library = to_tvm(int8_file, tmp_path / "stream_int8.so", target="x86")
    got = stream_without_torch(library, clips, tmp_path)
    for name, clip in clips.items():
        expected = onnxruntime_logits(int8_file, clip)
        assert np.abs(got[name] - expected).max() / np.abs(expected).max() <= INT8_TOLERANCE, name
    assert str(got["precision"]) == "int8" and read_file_metadata(library)["tsm_precision"] == "int8"
    session = open_stream(library)
    zero_points = [entry["zero_point"] for entry in json.loads(read_file_metadata(library)["tsm_buffers"])]
    assert [(b.dtype, int(b.flat[0])) for b in session.buffers().values()] == [(np.uint8, z) for z in zero_points]


@pytest.mark.skipif(not (SYSROOT / "usr" / "bin" / "python3.11").is_file(), reason=f"no arm64 sysroot at {SYSROOT}")
def test_cortex_a57_int8_library_runs_under_qemu_and_gives_onnxruntimes_int8_logits(int8_file, clips, tmp_path):
    library = to_tvm(int8_file, tmp_path / "stream_a57.so", target="cortex-a57")
    assert ELF_MACHINE[library.read_bytes()[18:20]] == "aarch64"
    got = stream_without_torch(library, clips, tmp_path, **emulated_arm64())
    for name, clip in clips.items():
        expected = onnxruntime_logits(int8_file, clip)
        assert np.abs(got[name] - expected).max() / np.abs(expected).max() <= INT8_TOLERANCE, name


def test_export_command_writes_an_int8_library_and_its_report(causal_ckpt, tmp_path):
    out = tmp_path / "int8.so"
    args = [f"ckpt_path={causal_ckpt}", "format=tvm", "precision=int8", "mode=stream", f"out={out}"]
    run_forked("src/export.py", [*args, "calibration.clips=2", "compare.clips=3", f"hydra.run.dir={tmp_path}"])
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["compared"] == [str(out.with_suffix(".fp32.so")), str(out)] and report["clips"] == 3
    assert 0 <= report["agreement"] <= 1 and report["size_ratio"] < 1
    assert open_stream(out).precision == "int8" and out.with_suffix(".onnx").is_file()
