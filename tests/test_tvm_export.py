"""TVM libraries: this CPU's streams PyTorch's per-frame logits without torch; a Cortex-A72 build, cross-compiled,
runs under qemu's aarch64 user mode and gives onnxruntime's logits."""

import platform
import struct
from pathlib import Path

import numpy as np
import numpy._core._multiarray_umath as numpy_core
import pytest
import torch

from tests.helpers.scripts import run_forked
from tests.helpers.streams import ELF_MACHINE, emulated_arm64, needs_arm64_sysroot, stream_without_torch
from tests.helpers.weights import randomize_norms
from tsm.errors import DataError
from tsm.export import to_onnx
from tsm.models.checkpoints import load_recognizer
from tsm.models.factory import for_deployment
from tsm.streaming.elf import PROGRAM_HEADER, check_shared_library
from tsm.streaming.model import StreamingTSM
from tsm.streaming.sessions import open_stream, read_file_metadata
from tsm.tvm_export import to_tvm

SIZE = (33, 45)


@pytest.fixture(scope="module")
def ckpt(causal_ckpt) -> Path:
    return causal_ckpt


@pytest.fixture(scope="module")
def model(ckpt):
    return randomize_norms(load_recognizer(ckpt), seed=4).eval()


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory) -> Path:
    return to_onnx(model, tmp_path_factory.mktemp("tvm") / "stream.onnx", mode="stream", input_size=SIZE)


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(6)
    return {f"clip{n}": torch.randn(n, 3, *SIZE, generator=generator).numpy() for n in (7, 11)}


@pytest.fixture(scope="module")
def x86_library(onnx_file) -> Path:
    return to_tvm(onnx_file, onnx_file.with_suffix(".so"), target="x86")


def test_x86_library_streams_pytorchs_logits_without_torch(model, x86_library, clips, tmp_path):
    library = x86_library
    assert ELF_MACHINE[library.read_bytes()[18:20]] == "x86-64"
    got = stream_without_torch(library, clips, tmp_path)
    stream = StreamingTSM.from_model(for_deployment(model))
    for name, clip in clips.items():
        stream.reset()
        expected = torch.cat([stream.step(torch.from_numpy(frame)[None]) for frame in clip]).numpy()
        error = np.abs(got[name] - expected).max(axis=1) / np.abs(expected).max(axis=1)
        assert got[name].shape == expected.shape and error.max() <= 1e-4, (name, error)
    assert str(got["precision"]) == "fp32" and read_file_metadata(library)["tsm_mode"] == "stream"
    with pytest.raises(ValueError, match="frame of dtype uint8: step\\(\\) takes a normalised float frame"):
        open_stream(library).step(np.zeros((1, 3, *SIZE), np.uint8))  # pixels, not normalised
    with pytest.raises(ValueError, match="frame values up to 255, where normalised pixels stay within 2.64: step"):
        open_stream(library).step(np.full((1, 3, *SIZE), 255, np.float32))  # float pixels: not refused before


@needs_arm64_sysroot
def test_cortex_a72_library_runs_under_qemu_and_gives_onnxruntimes_logits(onnx_file, clips, tmp_path):
    """Measured: 2e-6 of the largest logit (the same float32 arithmetic, another instruction set)."""
    library = to_tvm(onnx_file, tmp_path / "stream_a72.so", target="cortex-a72")
    assert ELF_MACHINE[library.read_bytes()[18:20]] == "aarch64"
    got = stream_without_torch(library, clips, tmp_path, **emulated_arm64())
    reference = open_stream(onnx_file)
    for name, clip in clips.items():
        reference.reset()
        expected = np.concatenate([reference.step(frame[None]) for frame in clip])
        assert np.abs(got[name] - expected).max() / np.abs(expected).max() <= 1e-4, name


def test_export_command_cross_compiles_for_a_jetson_nano(ckpt, tmp_path):
    out = tmp_path / "nano.so"
    args = [f"ckpt_path={ckpt}", "format=tvm", "target=cortex-a57", "mode=stream", f"out={out}"]
    run_forked("src/export.py", [*args, f"hydra.run.dir={tmp_path}"])
    assert ELF_MACHINE[out.read_bytes()[18:20]] == "aarch64" and out.with_name("nano.so.onnx").is_file()
    if platform.machine() == "x86_64":  # a board's library here: refused before the loader, naming both CPUs
        board = r"compiled for aarch64 \(target=cortex-a72\|cortex-a57\); this machine is x86_64"
        with pytest.raises(DataError, match=board):
            open_stream(out)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["format=tvm", "target=cortex-m4"],
            "target='cortex-m4' is not known; choose one of x86, cortex-a72, cortex-a57",
        ),
        (["format=tvm", "mode=clip"], "format=tvm compiles stream-mode files"),
        (
            ["format=tvm", "mode=stream", "target=cortex-a72", "tuning.trials=8"],
            "set tuning.trials=0 for target=cortex-a72",
        ),
        (["format=tvm", "precision=fp16"], "format=tvm takes precision=fp32|int8, got 'fp16'"),
    ],
)
def test_bad_target_mode_tuning_or_precision_names_the_key(ckpt, tmp_path, overrides, message):
    done = run_forked("src/export.py", [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}", *overrides], ok=False)
    assert message in done.stderr


def test_a_tuning_log_folder_without_a_log_is_refused_naming_the_key(onnx_file, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tuning.log=\S+ holds no MetaSchedule log .* set tuning.trials=N"):
        to_tvm(onnx_file, tmp_path / "stream.so", log_dir=tmp_path / "no_log")
    assert not (tmp_path / "stream.so").exists()


def test_a_library_without_the_metadata_is_refused(tmp_path):
    from tvm import relax

    builder = relax.BlockBuilder()
    frame = relax.Var("frame", relax.TensorType((1, 3, 4, 4), "float32"))
    with builder.function("main", [frame]):
        builder.emit_func_output(frame)
    relax.build(builder.get(), target="llvm").export_library(str(tmp_path / "bare.so"))
    with pytest.raises(DataError, match="no tsm_metadata function with this project's metadata"):
        open_stream(tmp_path / "bare.so")


def test_a_shared_library_that_tvm_did_not_write_is_refused(tmp_path):
    other = tmp_path / "numpy.so"  # a whole shared library for this CPU, not a TVM one
    other.write_bytes(Path(numpy_core.__file__).read_bytes())
    with pytest.raises(DataError, match="TVM cannot load it"):
        open_stream(other)


def test_a_truncated_library_is_refused_before_the_loader_maps_it(x86_library, tmp_path):
    """The loader maps a truncated library and the process dies of a bus error (an interrupted copy to a board)."""
    content = x86_library.read_bytes()
    half = len(content) // 2
    (tmp_path / "half.so").write_bytes(content[:half])
    message = rf"truncated: its ELF headers say it has at least \d+ bytes, the file has {half} "
    with pytest.raises(DataError, match=message):
        open_stream(tmp_path / "half.so")
    # without section headers only the segments tell: the whole file passes, one cut inside its last segment not
    bare = bytearray(content)
    bare[40:48], bare[58:64] = bytes(8), bytes(6)  # e_shoff; e_shentsize, e_shnum, e_shstrndx
    (tmp_path / "bare.so").write_bytes(bare)
    check_shared_library(tmp_path / "bare.so")
    table = content[64 : 64 + PROGRAM_HEADER.size * struct.unpack_from("<H", content, 56)[0]]
    end = max(offset + length for _, _, offset, _, _, length, _, _ in PROGRAM_HEADER.iter_unpack(table))
    (tmp_path / "cut.so").write_bytes(bare[: end - 100])
    with pytest.raises(DataError, match=rf"at least {end} bytes, the file has {end - 100} "):
        check_shared_library(tmp_path / "cut.so")
    for name, data, message in [
        ("text.so", b"not a library", "not a shared library: no ELF header"),
        ("short.so", content[:40], "truncated: 40 bytes, shorter than an ELF header"),
        ("32bit.so", content[:4] + b"\x01" + content[5:], "not a 64-bit little-endian ELF file"),
        ("exe.so", content[:16] + b"\x02\x00" + content[18:], "not a shared library \\(ELF type 2"),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=message):
            open_stream(tmp_path / name)


def test_tuning_builds_and_measures_candidates_and_its_log_is_reused(tmp_path):
    """MetaSchedule on one odd-sized convolution: candidates build and run (TVM's own builder timed out on every
    candidate here, :mod:`tsm.tvm_tuning`), the tuned module computes the convolution (float64 reference), a second
    call with no trials applies the same log, a third with trials tunes nothing again, a module with another
    convolution tunes that one only, and a task whose logged candidates all failed counts as untuned."""
    import json

    import tvm
    from onnx import TensorProto, helper, numpy_helper
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from tsm.tvm_export import llvm_target
    from tsm.tvm_tuning import TUNING_RECORDS, tasks_of, tuned, untuned_tasks

    rng = np.random.default_rng(0)
    frame = rng.standard_normal((1, 3, 13, 17), np.float32)
    padded = np.pad(frame.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # (1, 3, 13, 17, 3, 3)
    target = llvm_target("x86")

    def records() -> list:  # (workload index, (trace, run seconds, ...)) per measured candidate
        return [json.loads(line) for line in (tmp_path / TUNING_RECORDS).read_text().splitlines()]

    def convolution(channels: int) -> tuple:
        weight = rng.standard_normal((channels, 3, 3, 3), np.float32)
        graph = helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
            "conv",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, frame.shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(weight, "w")],
        )
        return from_onnx(helper.make_model(graph), keep_params_in_input=False), weight

    def tune_convolution(channels: int, trials: int) -> None:
        module, weight = convolution(channels)
        scheduled = tuned(module, target, trials, tmp_path)
        convolutions = [f for f in scheduled.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
        assert convolutions and all(f.attrs.get("tirx.is_scheduled") for f in convolutions), trials  # the log's
        vm = relax.VirtualMachine(tvm.compile(scheduled, target=target), tvm.cpu())
        got = vm["main"](tvm.runtime.tensor(frame)).numpy()
        expected = np.einsum("bchwij,ocij->bohw", windows, weight.astype(np.float64))
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), (channels, trials)

    tune_convolution(5, 2)
    first = records()
    assert first and all(r[1][1] and 0 < min(r[1][1]) < 1 for r in first), first
    tune_convolution(5, 0)  # the log applied
    tune_convolution(5, 2)  # in the log: not tuned again
    assert records() == first
    tune_convolution(7, 2)  # another convolution: tuned, into the same log
    assert records()[: len(first)] == first and {r[0] for r in records()[len(first) :]} == {first[0][0] + 1}
    logged = [[i, [trace, [1e10] if i == first[0][0] else secs, *rest]] for i, (trace, secs, *rest) in records()]
    (tmp_path / TUNING_RECORDS).write_text("".join(json.dumps(record) + "\n" for record in logged))
    with target:  # the 5-channel convolution's candidates all failed (as a failed build is logged): to tune again
        assert len(untuned_tasks(tasks_of(convolution(5)[0], target)[1], tmp_path)) == 1
        assert not untuned_tasks(tasks_of(convolution(7)[0], target)[1], tmp_path)
