"""What a LiteRT stream file's flatbuffer gets after the converters write it (:mod:`tsm.litert_export`).

- :func:`nhwc_buffers` (every stream file): ``litert-torch`` writes each shift in PyTorch's NCHW layout: TRANSPOSE
  the activation to NCHW, SLICE out the buffer and the rest, CONCATENATE the buffer in, TRANSPOSE back to NHWC for
  the convolution. Rewritten, the buffers are NHWC graph inputs and outputs, SLICE and CONCATENATION work on the
  channel axis of the NHWC activation, and both TRANSPOSEs go (the first stays where another op reads its output).
- :func:`integer_carry` (full-integer files): the quantizer gives each buffer input a scale of its own and each
  shift's concatenation another, so every frame the runner requantized the buffers and the graph requantized
  both halves of the concatenation. A buffer input now takes the quantization of the output it is carried from,
  a concatenation that of the activation it is cut from (the int32 biases of the convolutions reading it are
  requantized to match), and QUANTIZE ops that then change nothing are removed. The frame input and the logits
  output become float32, quantized and dequantized inside the graph (XNNPACK's kernels, not numpy's).
A buffer whose shift does not have the converter's pattern is left as it was (logged).
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np

log = logging.getLogger(__name__)

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def unpack(content: bytes):
    """A TFLite flatbuffer as the schema's object tree (``ModelT``), with data stored after the flatbuffer
    (offset, size) moved into its buffers, since repacking drops it."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    for buffer in model.buffers:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(content, np.uint8, count=buffer.size, offset=buffer.offset)
            buffer.offset = buffer.size = 0
    return model


def pack(model, size_hint: int = 1 << 20) -> bytes:
    """``ModelT`` ``model`` as a TFLite flatbuffer."""
    import flatbuffers

    from tsm.streaming.litert import TFLITE_IDENTIFIER

    builder = flatbuffers.Builder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


class _Graph:
    """The first subgraph of a ``ModelT``, its signature's tensors, and who produces and reads each tensor."""

    def __init__(self, model) -> None:
        self.model, self.subgraph = model, model.subgraphs[0]
        self.tensors = self.subgraph.tensors
        signature = model.signatureDefs[0]
        self.inputs = {entry.name.decode(): entry for entry in signature.inputs}
        self.outputs = {entry.name.decode(): entry for entry in signature.outputs}
        self.index()

    def index(self) -> None:
        self.producer, self.consumers = {}, defaultdict(list)
        for op in self.subgraph.operators:
            for t in op.outputs:
                self.producer[t] = op
            for t in op.inputs:
                if t >= 0:
                    self.consumers[t].append(op)

    def code(self, op) -> int:
        opcode = self.model.operatorCodes[op.opcodeIndex]
        return max(opcode.builtinCode, opcode.deprecatedBuiltinCode)

    def made_by(self, tensor: int, code: int):
        op = self.producer.get(tensor)
        return op if op is not None and self.code(op) == code else None

    def only_consumer(self, tensor: int, code: int):
        found = self.consumers.get(tensor, [])
        return found[0] if len(found) == 1 and self.code(found[0]) == code else None

    def constant(self, tensor: int) -> np.ndarray:
        t = self.tensors[tensor]
        data = self.model.buffers[t.buffer].data
        return np.frombuffer(np.asarray(data, np.uint8).tobytes(), _NUMPY[t.type]).reshape(t.shape)

    def add_constant(self, values: np.ndarray, name: str) -> int:
        from ai_edge_litert import schema_py_generated as schema

        buffer = schema.BufferT()
        buffer.data = np.frombuffer(values.astype(np.int32).tobytes(), np.uint8)
        self.model.buffers.append(buffer)
        tensor = schema.TensorT()
        tensor.shape, tensor.type = list(values.shape), schema.TensorType.INT32
        tensor.buffer = len(self.model.buffers) - 1
        tensor.name = name.encode()
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def add_tensor(self, like: int, name: str) -> int:
        """A new activation tensor of ``like``'s shape, type and quantization."""
        from ai_edge_litert import schema_py_generated as schema

        source, tensor = self.tensors[like], schema.TensorT()
        tensor.shape, tensor.shapeSignature, tensor.type = list(source.shape), source.shapeSignature, source.type
        tensor.quantization, tensor.name = source.quantization, name.encode()
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def opcode(self, code: int, version: int) -> int:
        from ai_edge_litert import schema_py_generated as schema

        for i, opcode in enumerate(self.model.operatorCodes):
            if max(opcode.builtinCode, opcode.deprecatedBuiltinCode) == code:
                return i
        opcode = schema.OperatorCodeT()
        opcode.builtinCode, opcode.deprecatedBuiltinCode, opcode.version = code, min(code, 127), version
        self.model.operatorCodes.append(opcode)
        return len(self.model.operatorCodes) - 1

    def remove(self, op) -> None:
        self.subgraph.operators.remove(op)

    def rewire(self, old: int, new: int) -> None:
        """Every op that reads tensor ``old`` reads ``new`` instead."""
        for op in self.consumers.get(old, []):
            op.inputs = [new if t == old else t for t in op.inputs]


_NUMPY = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}  # schema.TensorType -> numpy


def _reshape(tensor, shape: list[int]) -> None:
    tensor.shape = list(shape)
    if tensor.shapeSignature is not None and len(tensor.shapeSignature):
        tensor.shapeSignature = list(shape)


def nhwc_buffers(content: bytes, spec: list[dict]) -> tuple[bytes, list[dict]]:
    """The stream file ``content`` with its buffers NHWC (see the module), and ``spec`` (``tsm_buffers``) with
    their new shapes."""
    from ai_edge_litert import schema_py_generated as schema

    ops = schema.BuiltinOperator
    model = unpack(content)
    graph, spec = _Graph(model), [dict(entry) for entry in spec]
    for entry in spec:
        name = entry["name"]
        b_in, b_out = graph.inputs[name].tensorIndex, graph.outputs[f"{name}_out"].tensorIndex
        cut = graph.made_by(b_out, ops.SLICE)
        to_nchw = cut and graph.made_by(cut.inputs[0], ops.TRANSPOSE)
        concat = graph.only_consumer(b_in, ops.CONCATENATION)
        pair = concat and len(concat.inputs) == 2 and concat.inputs[0] == b_in
        rest = pair and graph.made_by(concat.inputs[1], ops.SLICE)
        back = concat and graph.only_consumer(concat.outputs[0], ops.TRANSPOSE)
        if not (
            to_nchw and rest and back and rest.inputs[0] == cut.inputs[0]
            and graph.constant(to_nchw.inputs[1]).tolist() == TO_NCHW
            and graph.constant(back.inputs[1]).tolist() == TO_NHWC
            and concat.builtinOptions.axis in (1, -3)
        ):  # fmt: skip
            log.warning("LiteRT stream file: buffer %s's shift has not the converter's pattern; it stays NCHW", name)
            continue
        activation = to_nchw.inputs[0]
        n, height, width, channels = graph.tensors[activation].shape
        fold = int(graph.tensors[b_out].shape[1])
        for op, begin, size, out in ((cut, 0, fold, b_out), (rest, fold, channels - fold, rest.outputs[0])):
            op.inputs = [
                activation,
                graph.add_constant(np.array([0, 0, 0, begin]), f"{name}_begin_{begin}"),
                graph.add_constant(np.array([n, height, width, size]), f"{name}_size_{size}"),
            ]
            _reshape(graph.tensors[out], [n, height, width, size])
        _reshape(graph.tensors[b_in], [n, height, width, fold])
        concat.builtinOptions.axis = 3
        concat.outputs = list(back.outputs)
        graph.remove(back)
        graph.index()
        if not graph.consumers.get(to_nchw.outputs[0]):
            graph.remove(to_nchw)
            graph.index()
        entry["shape"] = [entry["shape"][i] for i in TO_NHWC]
    _drop_unused(model)
    return pack(model, len(content) + 4096), spec


def integer_carry(content: bytes) -> bytes:
    """The full-integer stream file ``content`` with the buffers carried without requantization and float32
    frame and logits (see the module)."""
    from ai_edge_litert import schema_py_generated as schema

    ops = schema.BuiltinOperator
    model = unpack(content)
    graph = _Graph(model)
    for name, entry in graph.inputs.items():
        if name.startswith("buffer_") and f"{name}_out" in graph.outputs:
            source = graph.tensors[graph.outputs[f"{name}_out"].tensorIndex]
            if source.type == graph.tensors[entry.tensorIndex].type:
                graph.tensors[entry.tensorIndex].quantization = source.quantization
    for concat in [op for op in graph.subgraph.operators if graph.code(op) == ops.CONCATENATION]:
        _concatenate_in_source_scale(graph, concat)
    for op in [op for op in graph.subgraph.operators if graph.code(op) == ops.QUANTIZE]:
        source, target = (graph.tensors[t] for t in (op.inputs[0], op.outputs[0]))
        kept = op.outputs[0] in graph.subgraph.outputs  # a graph output keeps its op
        if source.type == target.type and _same(source.quantization, target.quantization) and not kept:
            graph.rewire(op.outputs[0], op.inputs[0])
            graph.remove(op)
            graph.index()
    _float_frame_and_logits(graph)
    _drop_unused(model)
    return pack(model, len(content) + 4096)


def _same(a, b) -> bool:
    key = lambda q: (list(q.scale), list(q.zeroPoint)) if q is not None and q.scale is not None else None  # noqa: E731
    return key(a) == key(b)


def _concatenate_in_source_scale(graph: _Graph, concat) -> None:
    """Where every input of ``concat`` is a QUANTIZE from one quantization, ``concat`` takes that quantization
    and the QUANTIZEs go; the biases of the convolutions reading it (directly or through a PAD) are requantized
    (bias scale = input scale x weight scale). Left as it is when another op reads its output."""
    from ai_edge_litert import schema_py_generated as schema

    requants = [graph.made_by(t, schema.BuiltinOperator.QUANTIZE) for t in concat.inputs]
    if not all(requants):
        return
    sources = [graph.tensors[q.inputs[0]] for q in requants]
    target = graph.tensors[concat.outputs[0]]
    if any(not _same(s.quantization, sources[0].quantization) or s.type != target.type for s in sources):
        return
    found = _convolutions_reading(graph, concat.outputs[0])
    if found is None:
        return
    convolutions, padded = found
    old, new = target.quantization.scale[0], sources[0].quantization.scale[0]
    for convolution in convolutions:
        bias = graph.tensors[convolution.inputs[2]]
        values = graph.constant(convolution.inputs[2]).astype(np.float64) * (old / new)
        limits = np.iinfo(np.int32)  # as tsm.int8_graph requantizes an ONNX file's biases
        values = np.clip(np.round(values), limits.min, limits.max).astype(np.int32)
        graph.model.buffers[bias.buffer].data = np.frombuffer(values.tobytes(), np.uint8)
        bias.quantization.scale = [s * new / old for s in bias.quantization.scale]
    for tensor in [concat.outputs[0], *padded]:
        graph.tensors[tensor].quantization = sources[0].quantization
    for requant in requants:
        concat.inputs = [requant.inputs[0] if t == requant.outputs[0] else t for t in concat.inputs]
    graph.index()
    for requant in requants:
        if not graph.consumers.get(requant.outputs[0]):
            graph.remove(requant)
    graph.index()


def _convolutions_reading(graph: _Graph, tensor: int) -> tuple[list, list[int]] | None:
    """The convolutions that read ``tensor`` as their input, directly or through PADs (which keep its
    quantization), and the PADs' outputs; None where anything else reads it."""
    from ai_edge_litert import schema_py_generated as schema

    convolutions, padded = [], []
    for op in graph.consumers.get(tensor, []):
        pad = graph.code(op) == schema.BuiltinOperator.PAD and op.inputs[0] == tensor
        if pad and _same(graph.tensors[op.outputs[0]].quantization, graph.tensors[tensor].quantization):
            found = _convolutions_reading(graph, op.outputs[0])
            if found is None:
                return None
            convolutions += found[0]
            padded += [op.outputs[0], *found[1]]
        elif _reads_as_convolution_input(graph, op, tensor):
            convolutions.append(op)
        else:
            return None
    return (convolutions, padded) if convolutions else None


def _reads_as_convolution_input(graph: _Graph, op, tensor: int) -> bool:
    """``op`` is a convolution with an int32 bias of its own that reads ``tensor`` as its input only."""
    from ai_edge_litert import schema_py_generated as schema

    if graph.code(op) not in (schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D):
        return False
    if op.inputs[0] != tensor or tensor in op.inputs[1:] or len(op.inputs) < 3 or op.inputs[2] < 0:
        return False
    bias = graph.tensors[op.inputs[2]]
    shared = sum(t.buffer == bias.buffer for t in graph.tensors)
    return bias.type == schema.TensorType.INT32 and shared == 1 and bias.quantization is not None


def float_clip_and_logits(content: bytes) -> bytes:
    """The full-integer clip file ``content`` with a float32 ``clip`` input and ``logits`` output, as its fp32 file
    has (the quantizer leaves them int8, which no runner of this project feeds)."""
    model = unpack(content)
    _float_frame_and_logits(_Graph(model), "clip")
    _drop_unused(model)
    return pack(model, len(content) + 4096)


def _float_frame_and_logits(graph: _Graph, source: str = "frame") -> None:
    """An int8 ``source`` input (``frame``, or a clip file's ``clip``) becomes float32, quantized by a QUANTIZE op
    first; an int8 ``logits`` output becomes float32, dequantized by a DEQUANTIZE op last."""
    from ai_edge_litert import schema_py_generated as schema

    ops, types = schema.BuiltinOperator, schema.TensorType
    frame, logits = graph.inputs[source].tensorIndex, graph.outputs["logits"].tensorIndex
    if graph.tensors[frame].type == types.INT8:
        quantized = graph.add_tensor(frame, f"{source}_int8")
        graph.rewire(frame, quantized)
        graph.tensors[frame].type, graph.tensors[frame].quantization = types.FLOAT32, None
        graph.subgraph.operators.insert(0, _op(graph.opcode(ops.QUANTIZE, 2), frame, quantized))
    if graph.tensors[logits].type == types.INT8:
        quantized = graph.add_tensor(logits, "logits_int8")
        graph.producer[logits].outputs = [quantized]
        graph.tensors[logits].type, graph.tensors[logits].quantization = types.FLOAT32, None
        graph.subgraph.operators.append(_op(graph.opcode(ops.DEQUANTIZE, 2), quantized, logits))
    graph.index()


def _op(opcode: int, source: int, target: int):
    from ai_edge_litert import schema_py_generated as schema

    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, [source], [target]
    return op


def _drop_unused(model) -> None:
    """Remove the tensors no op, subgraph input or output reads or writes any more, renumbering the rest."""
    subgraph = model.subgraphs[0]
    used = {t for op in subgraph.operators for t in (*op.inputs, *op.outputs) if t >= 0}
    used |= set(subgraph.inputs) | set(subgraph.outputs)
    new_index = {old: new for new, old in enumerate(sorted(used))}
    subgraph.tensors = [subgraph.tensors[old] for old in sorted(used)]
    for op in subgraph.operators:
        op.inputs = [new_index[t] if t >= 0 else t for t in op.inputs]
        op.outputs = [new_index[t] for t in op.outputs]
    subgraph.inputs = [new_index[t] for t in subgraph.inputs]
    subgraph.outputs = [new_index[t] for t in subgraph.outputs]
    for signature in model.signatureDefs:
        for entry in (*signature.inputs, *signature.outputs):
            entry.tensorIndex = new_index[entry.tensorIndex]
