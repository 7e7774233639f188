"""Integer convolutions for TVM: what makes an int8 ONNX file an int8 TVM library.

Relax's ONNX frontend reads an int8 (QDQ) file's convolutions as ``quantize(conv2d(dequantize(x), dequantize(w)) +
dequantize(b))``: the weights are stored as int8, but the convolution runs in float32. :func:`integer_convolutions`
rewrites each such convolution to run on integers: ``x - zero_point`` (uint8 -> int16, so that padding reads the
zero point, as the float convolution's zero padding of the dequantized input does) convolved with the int8
weights (as int16) into int32 sums, then scaled by the input's and the weights' scales, the bias added, and
quantized as before. The float convolution it replaces computes the same sums in float32, so the two differ by
float rounding only; convolutions of float inputs (the first, which reads the frame) stay float.
"""

from __future__ import annotations

import numpy as np


def _dequantized(value):
    """The pattern of ``dequantize(value, scale, zero_point)`` with a constant scale and zero point."""
    from tvm.relax.dpl import is_const, is_op

    return is_op("relax.dequantize")(value, is_const(), is_const())


def integer_convolutions(module):
    """``module`` (a Relax IRModule from an int8 QDQ ONNX file) with its quantized convolutions on integers, and the
    number of convolutions rewritten."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    activation, weight, bias = wildcard(), is_const(), is_const()
    dequantized_input, dequantized_weight = _dequantized(activation), _dequantized(weight)
    conv = is_op("relax.nn.conv2d")(dequantized_input, dequantized_weight)
    dequantized_bias = _dequantized(bias)
    added = is_op("relax.add")(conv, is_op("relax.reshape")(dequantized_bias, wildcard()))
    pattern = is_op("relax.quantize")(added, is_const(), is_const())
    rewritten = 0

    def on_integers(quantize, match):
        nonlocal rewritten
        x_scale, x_zero = _scale_and_zero(match[dequantized_input])
        w_scale, w_zero = _scale_and_zero(match[dequantized_weight])
        b_scale, b_zero = _scale_and_zero(match[dequantized_bias])
        attrs = match[conv].attrs
        per_output_channel = w_scale.size == 1 or match[dequantized_weight].attrs.axis == 0
        if x_scale.size != 1 or not per_output_channel or attrs.data_layout != "NCHW":
            return quantize  # scales that do not factor out of the sums: left in float
        weights = match[weight].data.numpy().astype(np.int16) - _per_channel(w_zero, 4).astype(np.int16)
        shifted = relax.op.subtract(
            relax.op.astype(match[activation], "int16"), relax.const(_per_channel(x_zero, 4, 1).astype(np.int16))
        )
        sums = relax.op.nn.conv2d(
            shifted,
            relax.const(weights, "int16"),
            strides=attrs.strides,
            padding=attrs.padding,
            dilation=attrs.dilation,
            groups=attrs.groups,
            data_layout=attrs.data_layout,
            kernel_layout=attrs.kernel_layout,
            out_layout=attrs.out_layout,
            out_dtype="int32",
        )
        scale = (x_scale.astype(np.float64) * w_scale.astype(np.float64)).astype(np.float32)
        real_bias = (match[bias].data.numpy().astype(np.float64) - b_zero) * b_scale
        real = relax.op.add(
            relax.op.multiply(relax.op.astype(sums, "float32"), relax.const(_per_channel(scale, 4, 1))),
            relax.const(_per_channel(real_bias.astype(np.float32), 4, 1)),
        )
        rewritten += 1
        return relax.op.quantize(
            real, quantize.args[1], quantize.args[2], axis=quantize.attrs.axis, out_dtype=quantize.attrs.out_dtype
        )

    module["main"] = rewrite_call(pattern, on_integers, module["main"])
    return module, rewritten


def _scale_and_zero(dequantize) -> tuple[np.ndarray, np.ndarray]:
    """A ``dequantize`` call's constant scale and zero point."""
    return dequantize.args[1].data.numpy(), dequantize.args[2].data.numpy()


def _per_channel(values: np.ndarray, ndim: int, axis: int = 0) -> np.ndarray:
    """``values`` (a scalar or one per channel) shaped to broadcast along ``axis`` of an ``ndim``-dimensional
    tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(values).reshape(shape)
