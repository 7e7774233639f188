"""What an int8 ONNX file's graph gets after onnxruntime's quantizer writes it (:func:`tsm.quantize.to_int8`).

- :func:`frame_convolutions`: the convolutions that read the frame's 3 channels stay float32. onnxruntime's int8
  kernel for them is slower than its float one (TSM-MobileNetV2 x0.5's stem at 224x224: 0.84 against 0.33 ms).
- :func:`integer_buffers`: a stream file's shift buffers become uint8 graph inputs and outputs in the
  quantization of the activation they are cut from, laid out NHWC. The quantizer leaves each buffer as float
  input -> Quantize -> Dequantize -> Concat -> Quantize, and its output as Slice -> Quantize -> Dequantize. In
  onnxruntime that is a QLinearConcat that its NHWC layout pass cannot see through, so each shift costs three
  transposes and a Quantize/Dequantize pair. Rewritten as a uint8 Concat fed an NHWC buffer, the transposes
  cancel. Where the concatenation had a scale of its own, the biases of the convolution reading it are
  requantized to the activation's (onnxruntime fuses a convolution only when bias scale = input x weight scale).
  The reset state of a buffer is its zero point, recorded in ``tsm_buffers`` (``dtype``, ``zero_point``; NHWC
  ``shape``).
- :func:`compact`: the weights' all-zero zero points are dropped (zero is the default) and the graph's
  internal tensors get short names.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def frame_convolutions(model: onnx.ModelProto) -> list[str]:
    """The names of the Conv nodes whose weights take 3 input channels (the frame's RGB)."""
    weights = {w.name: w.dims for w in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Conv" and len(weights.get(node.input[1], ())) == 4 and weights[node.input[1]][1] == 3
    ]


class _Graph:
    """Producers, consumers and initializers of a graph, for rewriting it."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.init = {i.name: i for i in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        found = self.consumers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def params(self, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray]:
        """A (De)QuantizeLinear node's scale and zero point."""
        return tuple(self.value(name) for name in node.input[1:3])

    def value(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.init[name])

    def set_value(self, name: str, value: np.ndarray) -> None:
        self.init[name].CopyFrom(numpy_helper.from_array(value, name))

    def set_params(self, node: onnx.NodeProto, scale: np.ndarray, zero_point: np.ndarray) -> None:
        for name, value in zip(node.input[1:3], (scale, zero_point), strict=True):
            self.set_value(name, value)


def _rewrite_buffer(g: _Graph, name: str, removed: set[int]) -> int | None:
    """Rewrite buffer ``name`` as uint8 (see the module); returns its zero point, or None where the graph has
    another pattern (the buffer then stays float32)."""
    quantize = g.only_consumer(name, "QuantizeLinear")
    dequantize = quantize and g.only_consumer(quantize.output[0], "DequantizeLinear")
    concat = dequantize and g.only_consumer(dequantize.output[0], "Concat")
    requantize = concat and g.only_consumer(concat.output[0], "QuantizeLinear")
    if requantize is None or len(concat.input) != 2:
        return None
    rest = next(i for i in concat.input if i != dequantize.output[0])
    rest_dequantize = g.made_by(rest, "DequantizeLinear")
    out_dequantize = g.made_by(f"{name}_out", "DequantizeLinear")
    out_quantize = out_dequantize and g.made_by(out_dequantize.input[0], "QuantizeLinear")
    cut = out_quantize and g.made_by(out_quantize.input[0], "Slice")
    source = cut and g.made_by(cut.input[0], "DequantizeLinear")
    if rest_dequantize is None or source is None:
        return None
    scale, zero_point = g.params(source)  # the activation both parts are cut from
    rest_scale, rest_zero = g.params(rest_dequantize)
    same = np.array_equal(rest_scale, scale) and np.array_equal(rest_zero, zero_point)
    if zero_point.dtype != np.uint8 or scale.size != 1 or not same:
        return None
    # in: a uint8 Concat of the buffer and the rest, in the activation's quantization
    for reader in g.consumers[requantize.output[0]]:  # the Dequantize nodes of the concatenation
        _requantize_biases(g, reader.output[0], scale)
    g.set_params(requantize, scale, zero_point)
    inputs = [name if i == dequantize.output[0] else rest_dequantize.input[0] for i in concat.input]
    uint8_concat = helper.make_node("Concat", inputs, [requantize.output[0]], name=concat.name)
    uint8_concat.attribute.extend(concat.attribute)  # its axis
    g.graph.node.append(uint8_concat)
    removed |= {id(quantize), id(dequantize), id(concat), id(requantize)}
    if len(g.consumers[rest]) == 1:
        removed.add(id(rest_dequantize))
    # out: the uint8 slice, in the same quantization
    g.set_params(out_quantize, scale, zero_point)
    out_quantize.output[0] = f"{name}_out"
    removed.add(id(out_dequantize))
    return int(zero_point)


def _requantize_biases(g: _Graph, activation: str, scale: np.ndarray) -> None:
    """The int32 biases of the convolutions reading ``activation``, in ``scale`` x each weight's scale: what
    onnxruntime requires to fuse a convolution into QLinearConv once the activation's scale changes."""
    for conv in g.consumers[activation]:
        if conv.op_type != "Conv" or len(conv.input) < 3 or conv.input[0] != activation:
            continue
        weight, bias = g.made_by(conv.input[1], "DequantizeLinear"), g.made_by(conv.input[2], "DequantizeLinear")
        if weight is None or bias is None:
            continue
        values, bias_scale = (g.value(name).astype(np.float64) for name in bias.input[:2])
        new_scale = (scale * g.params(weight)[0]).astype(np.float32)
        info = np.iinfo(np.int32)
        new_values = np.clip(np.round(values * bias_scale / new_scale), info.min, info.max).astype(np.int32)
        g.set_value(bias.input[0], new_values)
        g.set_value(bias.input[1], new_scale)


def integer_buffers(model: onnx.ModelProto, spec: list[dict]) -> list[dict]:
    """Rewrite the QDQ stream graph ``model``'s buffers as NHWC uint8 in place (see the module); returns ``spec``
    (``tsm_buffers``) with each rewritten buffer's ``dtype``, ``zero_point`` and NHWC ``shape``."""
    g = _Graph(model.graph)
    removed: set[int] = set()
    zero_points = {b["name"]: _rewrite_buffer(g, b["name"], removed) for b in spec}
    kept = [node for node in model.graph.node if id(node) not in removed]
    transposes_in, transposes_out, described = [], [], []
    for entry in spec:
        name, zero_point = entry["name"], zero_points[entry["name"]]
        if zero_point is None:
            log.warning("int8: buffer %s stays float32 (its graph is not the quantizer's usual pattern)", name)
            described.append(entry)
            continue
        for node in kept:  # the graph's own nodes read and write the NCHW tensors; the transposes cancel in onnxruntime
            node.input[:] = [f"{name}_nchw" if i == name else i for i in node.input]
            node.output[:] = [f"{name}_out_nchw" if o == f"{name}_out" else o for o in node.output]
        transposes_in.append(helper.make_node("Transpose", [name], [f"{name}_nchw"], perm=TO_NCHW))
        transposes_out.append(helper.make_node("Transpose", [f"{name}_out_nchw"], [f"{name}_out"], perm=TO_NHWC))
        shape = [entry["shape"][i] for i in TO_NHWC]
        for value in (*model.graph.input, *model.graph.output):
            if value.name in (name, f"{name}_out"):
                value.type.tensor_type.elem_type = TensorProto.UINT8
                dims = [onnx.TensorShapeProto.Dimension() for _ in TO_NHWC]
                for dim, axis in zip(dims, TO_NHWC, strict=True):
                    dim.CopyFrom(value.type.tensor_type.shape.dim[axis])
                del value.type.tensor_type.shape.dim[:]
                value.type.tensor_type.shape.dim.extend(dims)
        described.append({**entry, "shape": shape, "dtype": "uint8", "zero_point": zero_point})
    del model.graph.node[:]
    model.graph.node.extend(_topological([*transposes_in, *kept, *transposes_out], model.graph))
    return described


def _topological(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """``nodes`` in an order where each runs after what it reads (ONNX requires it)."""
    ready = {value.name for value in graph.input} | {i.name for i in graph.initializer} | {""}
    order, pending = [], nodes
    while pending:
        waiting = []
        for node in pending:
            if all(name in ready for name in node.input):
                order.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError(f"int8 graph rewrite left a cycle or a dangling input at {waiting[0].name!r}")
        pending = waiting
    return order


def compact(model: onnx.ModelProto) -> None:
    """Drop the all-zero zero points of the convolutions' weights and biases (zero is the default; onnxruntime
    fuses a Gemm only with them), the initializers nothing reads and the stored shape annotations, and give
    internal tensors and nodes short names (in place)."""
    graph = model.graph
    g = _Graph(graph)
    for node in graph.node:
        weight = len(node.input) == 3 and {node.input[0], node.input[2]} <= g.init.keys()
        if node.op_type != "DequantizeLinear" or not weight:
            continue
        zero_point = g.value(node.input[2])
        into_conv = all(consumer.op_type == "Conv" for consumer in g.consumers[node.output[0]])
        if into_conv and zero_point.dtype in (np.int8, np.int32) and not zero_point.any():
            del node.input[2]
    read = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]  # onnxruntime infers the shapes itself
    outside = {value.name for value in (*graph.input, *graph.output)} | {""}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        return name if name in outside else short.setdefault(name, np.base_repr(len(short), 36))

    for initializer in graph.initializer:
        initializer.name = rename(initializer.name)
    for index, node in enumerate(graph.node):
        node.name = f"n{index}"
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]
