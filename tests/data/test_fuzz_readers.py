"""Fuzzing the readers of untrusted files (Hypothesis): each reads what it is given, or refuses it with a
DataError (UnsafeFileError for a pickle that asks for code) whose message names the file; nothing else escapes.

Inputs are arbitrary bytes (and arbitrary UTF-8 text), and edits of a valid file: up to four byte
replacements, truncations, insertions (random bytes or snippets that parsers trip on) and line duplications.
Examples per run, every test deterministic (``derandomize=True``), 1,900 in all (TOTAL_EXAMPLES):

- 150 (ANNOTATION_EXAMPLES) for each of the 8 annotation layouts, 1,200 in all: Jester, Something-Something
  V1 and V2, Kinetics-400, UCF101, HMDB51, custom lists with and without class_names; one of the layout's
  files replaced, its train and val splits read under on_error=raise and skip;
- 100 (TREE_EXAMPLES) custom folder trees of arbitrary class and video names, read the same four ways;
- 150 (ONNX_FILE_EXAMPLES) stream files, read by read_metadata and OnnxStreamSession;
- 150 (ONNX_METADATA_EXAMPLES) stream files whose tsm_buffers or tsm_info text is edited (OnnxStreamSession);
- 150 (SAFE_LOAD_EXAMPLES) weights files (safe_load);
- 150 (FRAME_EXAMPLES) frame folders with one JPEG replaced (count_frames and read_frames).

The stream file is a miniature built here (a frame and one buffer in, logits and the new buffer out, an
export's metadata), so that most edits land in its graph and metadata rather than in weights. The file also
holds the stream-file checks the fuzzing is a net under (metadata against the graph, not ONNX, not UTF-8).
"""

import json
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from tests.helpers.videos import SOURCES, annotation_files, write_frames
from tsm.data.frame_folders import count_frames, read_frames
from tsm.data.sources import Custom
from tsm.errors import DataError, UnsafeFileError
from tsm.metadata import BUFFERS_KEY, INFO_KEY
from tsm.models.weight_files import safe_load
from tsm.streaming.runtime import OnnxStreamSession, read_metadata

LAYOUTS = [name for name in SOURCES if name != "tree"]
ANNOTATION_EXAMPLES = 150
TREE_EXAMPLES = 100
ONNX_FILE_EXAMPLES = 150
ONNX_METADATA_EXAMPLES = 150
SAFE_LOAD_EXAMPLES = 150
FRAME_EXAMPLES = 150
TOTAL_EXAMPLES = (
    len(LAYOUTS) * ANNOTATION_EXAMPLES
    + TREE_EXAMPLES
    + ONNX_FILE_EXAMPLES
    + ONNX_METADATA_EXAMPLES
    + SAFE_LOAD_EXAMPLES
    + FRAME_EXAMPLES
)


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Text parsers trip on these: a byte-order mark, Unicode digits, NUL, separators, JSON and CSV syntax,
# numbers too large or not finite, bytes that are not UTF-8.
SNIPPETS = [
    text.encode()
    for text in ("\ufeff", "\u0663", "\u00b2", "\x00", "\r", "\n", " ", ";", ",", '"', "{", "}", "[", "]", ":")
] + [b"-1", b"0", b"1.5", b"99999999999999999999", b"1e400", b"inf", b"null", b'"id"', b"..", b"\xff", b"\xe9"]


@st.composite
def edited(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` after 1 to 4 edits: a byte replaced, a truncation, an insertion, a line duplicated."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(("replace", "truncate", "insert", "duplicate")))
        at = draw(st.integers(0, len(data)))
        if edit == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif edit == "truncate":
            del data[at:]
        elif edit == "insert":
            data[at:at] = draw(st.sampled_from(SNIPPETS) | st.binary(min_size=1, max_size=8))
        elif edit == "duplicate":
            lines = bytes(data).split(b"\n")
            line = data[:at].count(b"\n")
            data = bytearray(b"\n".join(lines[: line + 1] + lines[line:]))
    return bytes(data)


def contents(original: bytes) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, arbitrary UTF-8 text, or an edit of ``original``."""
    return st.binary(max_size=300) | st.text(max_size=200).map(str.encode) | edited(original)


def reads_or_names(read, path: Path, also: tuple[type[Exception], ...] = ()) -> None:
    """``read()`` succeeds, or raises DataError or UnsafeFileError (or ``also``) with ``path``'s name in its message."""
    try:
        read()
    except (DataError, UnsafeFileError, *also) as error:
        assert path.name in str(error), repr(error)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Each annotation layout's dataset, built once; examples replace one file and put it back."""
    return {name: SOURCES[name][0](tmp_path_factory.mktemp(name)) for name in LAYOUTS}


@pytest.mark.parametrize("name", LAYOUTS)
@fuzz(ANNOTATION_EXAMPLES)
@given(data=st.data())
def test_annotation_readers(name, layouts, data):
    root, source = layouts[name], SOURCES[name][1]
    path = data.draw(st.sampled_from(annotation_files(root)), label="file")
    original = path.read_bytes()
    try:
        path.write_bytes(data.draw(contents(original), label="content"))
        for on_error in ("raise", "skip"):
            for split in ("train", "val"):
                reads_or_names(partial(source, root, split, on_error=on_error), path)
    finally:
        path.write_bytes(original)


NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12)
FOLDER = NAMES.filter(lambda name: name not in (".", ".."))
MEDIA = st.dictionaries(FOLDER, st.sampled_from([".mp4", ".MKV", ".txt", "", "/"]), max_size=3)  # "/": a folder


@fuzz(TREE_EXAMPLES)
@given(tree=st.fixed_dictionaries({split: st.dictionaries(FOLDER, MEDIA, max_size=3) for split in ("train", "val")}))
def test_folder_tree_reader(tmp_path_factory, tree):
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    for split, classes in tree.items():
        for name, media in classes.items():
            (root / split / name).mkdir(parents=True)
            for entry, suffix in media.items():
                path = root / split / name / (entry + suffix.strip("/"))
                if path.exists():  # "a" + ".mp4" met "a.mp4" + ""
                    continue
                if suffix == "/":
                    path.mkdir()
                else:
                    path.touch()
        (root / split).mkdir(exist_ok=True)
    for frames in (False, True):
        for on_error in ("raise", "skip"):
            for split in ("train", "val"):
                reads_or_names(partial(Custom, root, split, format="tree", frames=frames, on_error=on_error), root)


# ONNX stream files.

BUFFER_SHAPE = ["batch", 3, 4, 4]
BUFFER = {"name": "buffer_00", "shape": BUFFER_SHAPE}
METADATA = {
    "tsm_mode": "stream",
    BUFFERS_KEY: json.dumps([BUFFER]),
    INFO_KEY: json.dumps(
        {"class_names": ["a", "b"], "input_size": 4, "scale_size": 4, "mean": [0.5] * 3, "std": [1] * 3}
    ),
}


def stream_file(path: Path, metadata: dict[str, str]) -> Path:
    """A stream file in miniature: ``frame`` and ``buffer_00`` (batch, 3, 4, 4) in; ``logits`` (batch, 2) of
    their sum, pooled, and that sum as ``buffer_00_out`` out; ``metadata`` as an export writes it."""
    floats = [helper.make_tensor_value_info(name, TensorProto.FLOAT, BUFFER_SHAPE) for name in ("frame", "buffer_00")]
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    new_buffer = helper.make_tensor_value_info("buffer_00_out", TensorProto.FLOAT, BUFFER_SHAPE)
    nodes = [
        helper.make_node("Add", ["frame", "buffer_00"], ["buffer_00_out"]),
        helper.make_node("GlobalAveragePool", ["buffer_00_out"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["logits"]),
    ]
    weight = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "weight")
    graph = helper.make_graph(nodes, "stream", floats, [logits, new_buffer], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, metadata)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def stream_bytes(tmp_path_factory) -> bytes:
    return stream_file(tmp_path_factory.mktemp("onnx") / "stream.onnx", METADATA).read_bytes()


def test_the_miniature_stream_file_runs(tmp_path):
    session = OnnxStreamSession(stream_file(tmp_path / "stream.onnx", METADATA), batch=2)
    frame = np.ones((2, 3, 4, 4), np.float32)
    assert session.step(frame).tolist() == [[6.0, 9.0]] * 2  # (1, 1, 1) @ weight
    assert session.step(frame).tolist() == [[12.0, 18.0]] * 2  # the buffer carries the first frame


MISMATCH = r"tsm_buffers does not match the graph's buffer inputs \[\['buffer_00', \[3, 4, 4\]\]\]"


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (
            BUFFERS_KEY,
            [{"name": "buffer_00", "shape": ["batch", 2**20, 2**20, 2**12]}],
            "tsm_buffers does not match the graph",
        ),
        (BUFFERS_KEY, [{"name": "buffer_01", "shape": BUFFER_SHAPE}], "tsm_buffers does not match the graph"),
        (BUFFERS_KEY, [], "tsm_buffers does not match the graph"),
        (BUFFERS_KEY, [{"name": "buffer_00"}], "tsm_buffers is not a list of {name, shape} objects"),
        (BUFFERS_KEY, [{**BUFFER, "dtype": "float64"}], r"tsm_buffers has a buffer of dtype 'float64'; known: \["),
        (BUFFERS_KEY, [{**BUFFER, "zero_point": 3}], "tsm_buffers has a float32 buffer with a zero_point"),
        (BUFFERS_KEY, [{**BUFFER, "dtype": "uint8", "zero_point": 256}], "tsm_buffers: a uint8 buffer's zero_point"),
        (BUFFERS_KEY, [{**BUFFER, "dtype": "uint8", "zero_point": 9}], "tsm_buffers's dtypes do not match the graph"),
        (BUFFERS_KEY, "[{", "tsm_buffers is not valid JSON"),
        (INFO_KEY, "{", "tsm_info is not valid JSON"),
        (INFO_KEY, ["a", "b"], "tsm_info is not a JSON object"),
    ],
)
def test_stream_metadata_is_checked_against_the_graph(key, value, reason, tmp_path):
    """A buffer of 2^52 floats (16 PiB) is what the metadata alone would have allocated."""
    text = value if isinstance(value, str) else json.dumps(value)
    path = stream_file(tmp_path / "crafted.onnx", {**METADATA, key: text})
    with pytest.raises(DataError, match=f"crafted.onnx: metadata {reason}"):
        OnnxStreamSession(path)


def test_graph_names_that_are_not_utf8_are_a_data_error(stream_bytes, tmp_path):
    """onnxruntime loads them; Python cannot read them (a UnicodeDecodeError, before)."""
    path = tmp_path / "stream.onnx"
    path.write_bytes(stream_bytes.replace(b"batch", b"\x80atch", 1))
    with pytest.raises(DataError, match="stream.onnx: names or metadata that are not UTF-8 text"):
        OnnxStreamSession(path)


def test_a_file_that_is_not_onnx_is_a_data_error(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not an onnx file at all")
    with pytest.raises(DataError, match="model.onnx: not an ONNX file"):
        read_metadata(path)
    with pytest.raises(DataError, match="model.onnx: onnxruntime cannot load it"):
        OnnxStreamSession(path)


# OnnxStreamSession refuses a readable ONNX file that is no stream export of this project (a clip file, a
# tsm_mode other than "stream", no tsm_info) with a ValueError naming it, as tests/test_export.py expects.
NOT_A_STREAM_EXPORT = (ValueError,)


@fuzz(ONNX_FILE_EXAMPLES)
@given(data=st.data())
def test_onnx_files(tmp_path_factory, stream_bytes, data):
    path = tmp_path_factory.getbasetemp() / "fuzzed.onnx"
    path.write_bytes(data.draw(st.binary(max_size=300) | edited(stream_bytes)))
    reads_or_names(lambda: read_metadata(path), path)
    reads_or_names(lambda: OnnxStreamSession(path), path, also=NOT_A_STREAM_EXPORT)


@fuzz(ONNX_METADATA_EXAMPLES)
@given(data=st.data())
def test_stream_metadata(tmp_path_factory, data):
    key = data.draw(st.sampled_from([BUFFERS_KEY, INFO_KEY]))
    text = st.text(max_size=100) | edited(METADATA[key].encode()).map(lambda b: b.decode(errors="replace"))
    path = stream_file(tmp_path_factory.getbasetemp() / "metadata.onnx", {**METADATA, key: data.draw(text)})
    reads_or_names(lambda: OnnxStreamSession(path), path, also=NOT_A_STREAM_EXPORT)


# Weights files and frames.


@pytest.fixture(scope="module")
def weights_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("weights") / "weights.pt"
    state = {"fc.weight": torch.arange(6.0).view(2, 3), "fc.bias": torch.zeros(2, dtype=torch.int64)}
    torch.save({"state_dict": state, "epoch": 3, "classes": ["a", "b"]}, path)
    return path.read_bytes()


@fuzz(SAFE_LOAD_EXAMPLES)
@given(data=st.data())
def test_safe_load(tmp_path_factory, weights_bytes, data):
    path = tmp_path_factory.getbasetemp() / "fuzzed.pt"
    path.write_bytes(data.draw(st.binary(max_size=300) | edited(weights_bytes)))
    reads_or_names(lambda: safe_load(path, "model.init_from"), path)


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    return write_frames(tmp_path_factory.mktemp("frames") / "clip", 2)


@fuzz(FRAME_EXAMPLES)
@given(data=st.data())
def test_frame_folders(frames, data):
    path = frames / "00002.jpg"
    original = path.read_bytes()
    try:
        path.write_bytes(data.draw(st.binary(max_size=300) | edited(original)))
        assert count_frames(frames, "{:05d}.jpg") == 2
        reads_or_names(lambda: read_frames(frames, [0, 1, 1], "{:05d}.jpg"), frames)
    finally:
        path.write_bytes(original)


def test_the_docstring_counts_the_examples():
    assert TOTAL_EXAMPLES == 1900 and f"{TOTAL_EXAMPLES:,} in all" in __doc__
