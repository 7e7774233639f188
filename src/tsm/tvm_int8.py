"""Integer convolutions for TVM: what makes an int8 ONNX file an int8 TVM library.

Relax's ONNX frontend reads an int8 (QDQ) file's convolutions as ``quantize(conv2d(dequantize(x), dequantize(w)) +
reshape(dequantize(b)))``: the weights are stored as int8, but the convolution runs in float32.
:func:`integer_convolutions` rewrites each such convolution to run on integers, as integer inference engines do:
the uint8 input, padded with its zero point, convolved with the int8 weights into int32 sums; the zero point's
share of the sums (``zero_point x`` the sum of each filter's weights) subtracted as an integer; then the sums scaled
by the input's and the weights' scales, the bias added and the result quantized as before. The float convolution
it replaces computes the same values, so the two differ by float rounding only. Convolutions of float inputs (the
first, which reads the frame) are not quantized and stay float.
"""

from __future__ import annotations

import numpy as np


def _dequantized(value):
    """The pattern of ``dequantize(value, scale, zero_point)`` with a constant scale and zero point."""
    from tvm.relax.dpl import is_const, is_op

    return is_op("relax.dequantize")(value, is_const(), is_const())


def _scale_and_zero(dequantize) -> tuple[np.ndarray, np.ndarray]:
    """A ``dequantize`` call's constant scale and zero point."""
    return dequantize.args[1].data.numpy(), dequantize.args[2].data.numpy()


def _per_channel(values: np.ndarray) -> np.ndarray:
    """``values`` (a scalar or one per channel) shaped to broadcast along the channels of an NCHW tensor."""
    return np.asarray(values).reshape(1, -1, 1, 1)


def quantized_convolutions(function) -> int:
    """How many ``conv2d`` calls of the Relax ``function`` read dequantized weights (float convolutions of an int8
    file)."""
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    found = 0

    def count(call, _match):
        nonlocal found
        found += 1
        return call

    rewrite_call(is_op("relax.nn.conv2d")(wildcard(), _dequantized(wildcard())), count, function)
    return found


def integer_convolutions(module):
    """``module`` (a Relax IRModule from an int8 QDQ ONNX file) with its quantized convolutions on integers, and
    the number rewritten. A convolution left in float (its scales or zero points do not factor out of the sums: a
    per-channel input scale, weights with a zero point) is counted by :func:`quantized_convolutions`."""
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    activation, weight, bias = wildcard(), is_const(), is_const()
    dequantized_input, dequantized_weight, dequantized_bias = (_dequantized(p) for p in (activation, weight, bias))
    conv = is_op("relax.nn.conv2d")(dequantized_input, dequantized_weight)
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
        layouts = (attrs.data_layout, attrs.kernel_layout) == ("NCHW", "OIHW")
        if x_scale.size != 1 or x_zero.size != 1 or np.any(w_zero) or not per_output_channel or not layouts:
            return quantize
        weights = match[weight].data.numpy()
        data, zero = match[activation], int(x_zero.reshape(()))
        top, left, bottom, right = (int(side) for side in attrs.padding)
        if top or left or bottom or right:  # padding reads the zero point: a real 0, as the float convolution's
            data = relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(zero))
        sums = relax.op.nn.conv2d(
            data,
            relax.const(weights),
            strides=attrs.strides,
            dilation=attrs.dilation,
            groups=attrs.groups,
            out_dtype="int32",
        )
        zero_share = zero * weights.astype(np.int64).sum(axis=(1, 2, 3))
        sums = relax.op.subtract(sums, relax.const(_per_channel(zero_share.astype(np.int32))))
        scale = (x_scale.astype(np.float64) * w_scale.astype(np.float64)).astype(np.float32)
        real_bias = ((match[bias].data.numpy().astype(np.float64) - b_zero) * b_scale).astype(np.float32)
        real = relax.op.add(
            relax.op.multiply(relax.op.astype(sums, "float32"), relax.const(_per_channel(scale))),
            relax.const(_per_channel(real_bias)),
        )
        rewritten += 1
        return relax.op.quantize(
            real, quantize.args[1], quantize.args[2], axis=quantize.attrs.axis, out_dtype=quantize.attrs.out_dtype
        )

    module["main"] = rewrite_call(pattern, on_integers, module["main"])
    return module, rewritten
