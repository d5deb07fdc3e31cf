"""Fake quantization in `keras.ops`, as TensorFlow's FakeQuant ops and LiteRT.

`fake_quant(x, min_value, max_value)` rounds `x` to the grid that a LiteRT
int8 tensor with the range `[min_value, max_value]` can hold, and returns it
as floats. The range is first *nudged* so that `0.0` is exactly
representable (the zero point is an integer), as
`tf.quantization.fake_quant_with_min_max_vars` nudges it; values are clipped
to the nudged range and rounded half up on the shifted grid
(`floor(v / scale + 0.5)`), which is TensorFlow's rounding. Gradients pass
straight through inside the nudged range and are zero outside
(straight-through estimator).

Activations use the full range of 256 levels (`narrow_range=False`,
asymmetric, int8 `[-128, 127]` with a zero point); weights use the narrow
symmetric range `[-127, 127]` with zero point 0, per output channel for
convolutions, as LiteRT stores them.
"""

from keras import ops


def nudged_range(min_value, max_value, num_bits=8, narrow_range=False):
    """The range TensorFlow's FakeQuant ops actually use.

    Args:
        min_value: Float tensor (a scalar, or one value per channel), the
            lower end of the range; should be `<= 0`.
        max_value: Float tensor of the same shape, the upper end; should be
            `>= 0` and `> min_value`.
        num_bits: Integer, bits of the quantized type. Defaults to `8`.
        narrow_range: Boolean, whether the lowest level is left out
            (`[1, 255]` instead of `[0, 255]`). Defaults to `False`.

    Returns:
        A tuple `(nudged_min, nudged_max, scale)` of float32 tensors with
        the shape of `min_value`: `nudged_min` and `nudged_max` are
        multiples of `scale` with `0.0` on the grid.
    """
    min_value = ops.cast(min_value, "float32")
    max_value = ops.cast(max_value, "float32")
    quant_min = 1.0 if narrow_range else 0.0
    quant_max = float(2**num_bits - 1)
    scale = (max_value - min_value) / (quant_max - quant_min)
    zero_point_from_min = quant_min - min_value / scale
    zero_point = ops.clip(
        ops.floor(zero_point_from_min + 0.5), quant_min, quant_max
    )
    nudged_min = (quant_min - zero_point) * scale
    nudged_max = (quant_max - zero_point) * scale
    return nudged_min, nudged_max, scale


def fake_quant(x, min_value, max_value, num_bits=8, narrow_range=False):
    """Quantizes and dequantizes `x` with TensorFlow's FakeQuant arithmetic.

    Args:
        x: Float tensor.
        min_value: Float scalar or tensor broadcastable to the last axis of
            `x` (one value per channel), the lower end of the range.
        max_value: Same shape as `min_value`, the upper end.
        num_bits: Integer, bits of the quantized type. Defaults to `8`.
        narrow_range: Boolean, `True` for weights (levels `[-127, 127]`).
            Defaults to `False`.

    Returns:
        A tensor like `x` holding values of the quantization grid. Its
        gradient with respect to `x` is `1` inside the nudged range and `0`
        outside; no gradient flows to the range.

    Example:

    >>> fake_quant(np.array([0.1, 0.52, 9.0]), 0.0, 6.0)
    array([0.09411766, 0.51764715, 6.        ], dtype=float32)
    """
    x = ops.convert_to_tensor(x)
    min_value = ops.stop_gradient(ops.convert_to_tensor(min_value, x.dtype))
    max_value = ops.stop_gradient(ops.convert_to_tensor(max_value, x.dtype))
    nudged_min, nudged_max, scale = nudged_range(
        min_value, max_value, num_bits, narrow_range
    )
    nudged_min = ops.cast(nudged_min, x.dtype)
    nudged_max = ops.cast(nudged_max, x.dtype)
    scale = ops.cast(scale, x.dtype)
    inverse_scale = 1.0 / scale
    clipped = ops.minimum(ops.maximum(x, nudged_min), nudged_max)
    quantized = (
        ops.floor((clipped - nudged_min) * inverse_scale + 0.5) * scale
        + nudged_min
    )
    inside = ops.cast(
        ops.logical_and(
            ops.greater_equal(x, nudged_min), ops.less_equal(x, nudged_max)
        ),
        x.dtype,
    )
    # Straight-through estimator: the value of `quantized`, the gradient of
    # `x` masked to the range (what FakeQuantWithMinMaxVarsGradient gives).
    return ops.stop_gradient(quantized) + inside * (x - ops.stop_gradient(x))


# The smallest range a weight channel may have: an all-zero channel would
# otherwise give a zero scale.
WEIGHT_EPSILON = 1e-8


def weight_range(kernel, per_channel=True):
    """Symmetric range `(-m, m)` of a kernel, per output channel or tensor.

    The output channel is the last axis (`Dense`, `Conv2D`; reshape a
    depthwise kernel to `(..., channels * multiplier)` first).

    Args:
        kernel: Float tensor.
        per_channel: Boolean, one range per output channel (`True`) or one
            for the whole tensor. Defaults to `True`.

    Returns:
        A tuple `(min_value, max_value)`: vectors of the last axis' length,
        or scalars.
    """
    magnitude = ops.abs(kernel)
    if per_channel:
        axes = tuple(range(len(kernel.shape) - 1))
        largest = ops.max(magnitude, axis=axes)
    else:
        largest = ops.max(magnitude)
    largest = ops.maximum(largest, WEIGHT_EPSILON)
    return -largest, largest


def fake_quant_weights(kernel, per_channel=True, num_bits=8):
    """Fake-quantizes a kernel as LiteRT stores it: symmetric, narrow range.

    Args:
        kernel: Float tensor whose last axis is the output channel.
        per_channel: Boolean, one scale per output channel. Defaults to
            `True`.
        num_bits: Integer. Defaults to `8`.

    Returns:
        The kernel on the grid `scale * [-127, ..., 127]`.
    """
    min_value, max_value = weight_range(kernel, per_channel)
    return fake_quant(kernel, min_value, max_value, num_bits, True)


def weight_levels(kernel, per_channel=True, num_bits=8):
    """The integer levels LiteRT stores for a kernel, and their scales.

    Args:
        kernel: Float tensor whose last axis is the output channel.
        per_channel: Boolean, one scale per output channel. Defaults to
            `True`.
        num_bits: Integer. Defaults to `8`.

    Returns:
        A tuple `(levels, scale)`: `levels` holds integer values in
        `[-127, 127]` (as floats) with `levels * scale ==
        fake_quant_weights(kernel, per_channel)`; `scale` is a vector of
        the last axis' length, or a scalar.
    """
    min_value, max_value = weight_range(kernel, per_channel)
    _, _, scale = nudged_range(min_value, max_value, num_bits, True)
    quantized = fake_quant(kernel, min_value, max_value, num_bits, True)
    scale = ops.cast(scale, quantized.dtype)
    return ops.round(quantized / scale), scale


def activation_levels(x, min_value, max_value, num_bits=8):
    """The integer values `q - zero_point` of a fake-quantized tensor.

    Args:
        x: Float tensor on the grid of `fake_quant(., min_value,
            max_value)`, such as the output of that call.
        min_value: Float scalar, the lower end of the range.
        max_value: Float scalar, the upper end.
        num_bits: Integer. Defaults to `8`.

    Returns:
        A tuple `(levels, scale)`: `levels` holds the integers
        `round(x / scale)` (as floats), so `levels * scale` is `x` up to
        float rounding; `scale` is the grid's step.
    """
    x = ops.convert_to_tensor(x)
    _, _, scale = nudged_range(min_value, max_value, num_bits, False)
    scale = ops.cast(scale, x.dtype)
    return ops.round(x / scale), scale
