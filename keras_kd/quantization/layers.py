"""Quantize-aware layers: what a full-integer LiteRT model computes, in Keras.

`FakeQuant` quantizes an activation tensor per tensor with a range that is
calibrated, then tracked with an exponential moving average while training
and frozen in inference. `QuantizeWrapper` runs a `Dense`, `Conv2D`,
`DepthwiseConv2D` or `SeparableConv2D` layer with fake-quantized weights
(symmetric, narrow range, per output channel for convolutions and per tensor
for `Dense`, the scheme of LiteRT's quantization-aware training), after
folding an optional `BatchNormalization` into the kernel and bias with its
moving statistics, as the LiteRT converter folds it.

While `export_constants(model)` is active (TensorFlow backend only), the
layers emit TensorFlow's `FakeQuantWithMinMaxArgs` /
`FakeQuantWithMinMaxVarsPerChannel` ops with the trained ranges, which the
LiteRT converter turns into int8 tensors without representative data.
"""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_kd.quantization import quantizers as fq

# id(layer) -> NumPy constants, filled by `export_constants` while a model
# is traced for export.
_EXPORT = {}

_FUSED_ACTIVATIONS = ("linear", "relu", "relu6")
ACTIVATIONS = _FUSED_ACTIVATIONS + ("hard_silu",)


def activation_name(activation):
    """The serialized name of an activation function (`"hard_silu"` for
    hard-swish), or `None` if Keras cannot name it."""
    try:
        name = keras.activations.serialize(activation)
    except Exception:  # noqa: BLE001 - a lambda or a custom callable.
        return None
    return name if isinstance(name, str) else None


def _apply_activation(name, x):
    if name == "relu":
        return ops.relu(x)
    if name == "relu6":
        return ops.relu6(x)
    if name == "hard_silu":
        # The form the LiteRT converter fuses into HARD_SWISH.
        return x * ops.relu6(x + 3.0) * (1.0 / 6.0)
    return x


def _check_ema_decay(ema_decay):
    if not isinstance(ema_decay, (int, float)) or not 0.0 <= ema_decay < 1.0:
        raise ValueError(
            "Argument `ema_decay` must be a float in [0, 1), the weight of "
            "the old range in the moving average. Received: "
            f"ema_decay={ema_decay!r}"
        )
    return float(ema_decay)


@keras.saving.register_keras_serializable(package="keras_kd")
class FakeQuant(keras.layers.Layer):
    """Per-tensor asymmetric int8 fake quantization of activations.

    The range `[min, max]` lives in non-trainable variables. It is set from
    sample inputs by `calibrate`, otherwise from the first training batch;
    each training call then moves it towards the batch's range with an
    exponential moving average; inference uses it as it is. The range always
    contains `0` and is nudged so that `0` is exactly representable, as in
    `tf.quantization.fake_quant_with_min_max_vars`.

    Args:
        ema_decay: Float in `[0, 1)`, weight of the old range in the moving
            average. Defaults to `0.999`.
        **kwargs: Base layer arguments (`name`, ...).

    Call arguments:
        inputs: Float tensor.
        training: Boolean, whether to update the range.
        return_range: Boolean, whether to return the range in use as well.
            `quantize_aware` passes it to the `QuantizeWrapper` layers that
            read this tensor, for their exact integer inference. Defaults
            to `False`.

    Returns:
        The tensor, rounded to the 256 levels of the range; with
        `return_range=True`, a tuple of it and the float32 vector
        `[min, max]` of the range.

    Example:

    >>> layer = keras_kd.quantization.FakeQuant()
    >>> layer.calibrate(np.array([[-1.0, 2.0]]))
    >>> layer(np.array([[0.5, 9.0]]))
    """

    def __init__(self, ema_decay=0.999, **kwargs):
        super().__init__(**kwargs)
        self.ema_decay = _check_ema_decay(ema_decay)
        self.supports_masking = True
        self._calibrating = False

    def build(self, input_shape):
        def variable(name, value):
            return self.add_weight(
                name=name,
                shape=(),
                initializer=keras.initializers.Constant(value),
                trainable=False,
            )

        self.min_value = variable("min_value", -6.0)
        self.max_value = variable("max_value", 6.0)
        self.initialized = variable("initialized", 0.0)

    def range(self):
        """The range in use: `(min, max)` tensors with `min <= 0 <= max`."""
        low = ops.minimum(ops.convert_to_tensor(self.min_value), 0.0)
        high = ops.maximum(ops.convert_to_tensor(self.max_value), 0.0)
        return low, ops.maximum(high, low + 1e-6)

    def scale(self):
        """Float, the quantization step of the nudged range."""
        low, high = self.range()
        return float(ops.convert_to_numpy((high - low) / 255.0))

    def calibrate(self, x):
        """Widens the range to cover `x` (a batch); returns `x`."""
        x = ops.convert_to_tensor(x, "float32")
        first = ops.convert_to_tensor(self.initialized) > 0.5
        low = ops.min(x)
        high = ops.max(x)
        old_min = ops.convert_to_tensor(self.min_value)
        old_max = ops.convert_to_tensor(self.max_value)
        self.min_value.assign(ops.where(first, ops.minimum(old_min, low), low))
        self.max_value.assign(
            ops.where(first, ops.maximum(old_max, high), high)
        )
        self.initialized.assign(1.0)
        return x

    def call(self, inputs, training=None, return_range=False):
        outputs = self._quantize(inputs, training)
        if not return_range:
            return outputs
        constants = _EXPORT.get(id(self))
        if constants is not None:
            low, high = constants
        else:
            low, high = self.range()
        return outputs, ops.cast(ops.stack([low, high]), "float32")

    def _quantize(self, inputs, training):
        constants = _EXPORT.get(id(self))
        if constants is not None:
            import tensorflow as tf

            return tf.quantization.fake_quant_with_min_max_args(
                inputs, min=constants[0], max=constants[1], num_bits=8
            )
        if self._calibrating:
            return self.calibrate(inputs)
        if training:
            x = ops.stop_gradient(ops.cast(inputs, "float32"))
            first = ops.convert_to_tensor(self.initialized) > 0.5
            decay = self.ema_decay
            old_min = ops.convert_to_tensor(self.min_value)
            old_max = ops.convert_to_tensor(self.max_value)
            low = ops.min(x)
            high = ops.max(x)
            self.min_value.assign(
                ops.where(first, decay * old_min + (1 - decay) * low, low)
            )
            self.max_value.assign(
                ops.where(first, decay * old_max + (1 - decay) * high, high)
            )
            self.initialized.assign(1.0)
        low, high = self.range()
        return fq.fake_quant(inputs, low, high)

    def _export_constants(self):
        low, high = self.range()
        return float(ops.convert_to_numpy(low)), float(
            ops.convert_to_numpy(high)
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs, training=None, return_range=False):
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if return_range:
            return outputs, keras.KerasTensor((2,), dtype="float32")
        return outputs

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay}


_KERNEL_LAYERS = ("Dense", "Conv2D", "DepthwiseConv2D", "SeparableConv2D")


@keras.saving.register_keras_serializable(package="keras_kd")
class QuantizeWrapper(keras.layers.Layer):
    """Runs a Dense or convolution layer as a LiteRT int8 kernel computes it.

    The wrapped layer keeps its variables (trainable as usual). In each call
    the kernel (after folding `batch_norm`, if any, with its frozen moving
    statistics: `kernel * gamma / sqrt(var + eps)`, bias
    `(bias - mean) * gamma / sqrt(var + eps) + beta`) is fake-quantized
    symmetrically to `[-127, 127]`: per output channel for convolutions,
    per tensor for `Dense` (LiteRT's fully connected op takes one weight
    scale in quantization-aware conversion). The activation
    (`linear`, `relu`, `relu6`, or `hard_swish`, which gets a quantized
    input of its own) is applied after the bias, as LiteRT fuses it. A
    `SeparableConv2D` quantizes its depthwise output too, since LiteRT runs
    it as two ops. The output itself is quantized by a `FakeQuant` that
    follows the wrapper in the model.

    Args:
        layer: A built or unbuilt `keras.layers.Dense`, `Conv2D`,
            `DepthwiseConv2D` or `SeparableConv2D` with
            `data_format="channels_last"`, `groups=1` and one of the
            activations above.
        batch_norm: Optional `keras.layers.BatchNormalization` over the last
            axis to fold into the layer. Defaults to `None`.
        ema_decay: Float, for the inner `FakeQuant` layers. Defaults to
            `0.999`.
        **kwargs: Base layer arguments.

    Call arguments:
        inputs: Float tensor, the input of the wrapped layer.
        input_range: Optional float vector `[min, max]`, the range of the
            `FakeQuant` that quantized `inputs` (`quantize_aware` wires
            it). With it, inference (`training=False`) computes as LiteRT's
            integer kernels do: the sum of integer input levels times
            integer weight levels (exact in float32), plus the bias rounded
            to the int32 grid of `input_scale * weight_scale`, times that
            scale; so the `FakeQuant` that follows rounds what the int8
            kernel rounds. Training and calibration use the float path
            (fake-quantized inputs times fake-quantized weights), whose
            gradients are the straight-through ones. Defaults to `None`:
            the float path always.
        training: Boolean, training or inference.

    Returns:
        The output of the layer (and batch norm, activation), float.
    """

    def __init__(self, layer, batch_norm=None, ema_decay=0.999, **kwargs):
        super().__init__(**kwargs)
        check_kernel_layer(layer)
        if batch_norm is not None:
            check_batch_norm(batch_norm)
        self.layer = layer
        self.batch_norm = batch_norm
        self.ema_decay = _check_ema_decay(ema_decay)
        self.kind = type(layer).__name__
        self.activation_name = activation_name(layer.activation)
        self.depthwise_quantizer = None
        self.activation_quantizer = None
        self._calibrating = False
        if self.kind == "SeparableConv2D":
            self.depthwise_quantizer = FakeQuant(
                ema_decay, name=f"{self.name}_depthwise_quant"
            )
        if self.activation_name == "hard_silu":
            self.activation_quantizer = FakeQuant(
                ema_decay, name=f"{self.name}_activation_quant"
            )

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        output_shape = self.layer.compute_output_shape(input_shape)
        if self.batch_norm is not None and not self.batch_norm.built:
            self.batch_norm.build(output_shape)
        if self.depthwise_quantizer is not None:
            self.depthwise_quantizer.build(None)
        if self.activation_quantizer is not None:
            self.activation_quantizer.build(None)

    def _main_kernel(self):
        if self.kind == "SeparableConv2D":
            return self.layer.pointwise_kernel
        return self.layer.kernel

    def folded_kernel_and_bias(self):
        """The kernel and bias with the batch norm folded in (floats)."""
        kernel = ops.convert_to_tensor(self._main_kernel())
        channels = kernel.shape[-1]
        if self.kind == "DepthwiseConv2D":
            channels = kernel.shape[-2] * kernel.shape[-1]
        if self.layer.use_bias:
            bias = ops.convert_to_tensor(self.layer.bias)
        else:
            bias = ops.zeros((channels,), kernel.dtype)
        bn = self.batch_norm
        if bn is None:
            return kernel, bias
        factor = ops.rsqrt(
            ops.convert_to_tensor(bn.moving_variance) + bn.epsilon
        )
        if bn.scale:
            factor = factor * bn.gamma
        offset = bn.beta if bn.center else ops.zeros_like(factor)
        bias = (bias - bn.moving_mean) * factor + offset
        if self.kind == "DepthwiseConv2D":
            factor = ops.reshape(factor, kernel.shape[-2:])
        return kernel * factor, bias

    def quantized_kernel(self, kernel):
        """Fake-quantizes a (folded) kernel as LiteRT stores it."""
        if self.kind == "DepthwiseConv2D":
            shape = kernel.shape
            flat = ops.reshape(kernel, (-1, shape[-2] * shape[-1]))
            return ops.reshape(fq.fake_quant_weights(flat), shape)
        return fq.fake_quant_weights(kernel, per_channel=self.kind != "Dense")

    def _convolve(self, x, kernel, depthwise_kernel, training):
        layer = self.layer
        if self.kind == "Dense":
            return ops.matmul(x, kernel)
        common = dict(
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format="channels_last",
        )
        if self.kind == "Conv2D":
            return ops.conv(x, kernel, **common)
        if self.kind == "DepthwiseConv2D":
            return ops.depthwise_conv(x, kernel, **common)
        x = ops.depthwise_conv(x, depthwise_kernel, **common)
        x = self.depthwise_quantizer(x, training=training)
        return ops.conv(x, kernel, strides=1, padding="valid")

    def call(self, inputs, input_range=None, training=None):
        constants = _EXPORT.get(id(self))
        if constants is not None:
            kernel, bias, depthwise = _export_kernels(self, constants)
        elif input_range is not None and not training and not (
            self._calibrating
        ):
            return self._integer_call(inputs, input_range)
        else:
            kernel, bias = self.folded_kernel_and_bias()
            kernel = self.quantized_kernel(kernel)
            depthwise = None
            if self.kind == "SeparableConv2D":
                depthwise = self._quantized_depthwise()
        x = self._convolve(inputs, kernel, depthwise, training) + bias
        if self.activation_quantizer is not None:
            x = self.activation_quantizer(x, training=training)
        return _apply_activation(self.activation_name, x)

    def _integer_call(self, inputs, input_range):
        """Inference as the int8 kernel computes it (see the class doc)."""
        x, input_scale = fq.activation_levels(
            inputs, input_range[0], input_range[1]
        )
        kernel, bias = self.folded_kernel_and_bias()
        if self.kind == "SeparableConv2D":
            depthwise, depthwise_scale = _depthwise_levels(
                self.layer.depthwise_kernel
            )
            # LiteRT's depthwise half has no bias; its output is requantized
            # by the inner FakeQuant before the pointwise half reads it.
            x = self._convolve_depthwise(x, depthwise)
            x, inner_range = self.depthwise_quantizer(
                x * (input_scale * depthwise_scale),
                training=False,
                return_range=True,
            )
            x, input_scale = fq.activation_levels(
                x, inner_range[0], inner_range[1]
            )
            kernel, kernel_scale = fq.weight_levels(kernel)
            x = ops.conv(x, kernel, strides=1, padding="valid")
        elif self.kind == "DepthwiseConv2D":
            kernel, kernel_scale = _depthwise_levels(kernel)
            x = self._convolve_depthwise(x, kernel)
        else:
            kernel, kernel_scale = fq.weight_levels(
                kernel, per_channel=self.kind != "Dense"
            )
            x = self._convolve(x, kernel, None, False)
        accumulator_scale = input_scale * kernel_scale
        x = (x + ops.round(bias / accumulator_scale)) * accumulator_scale
        if self.activation_quantizer is not None:
            x = self.activation_quantizer(x, training=False)
        return _apply_activation(self.activation_name, x)

    def _convolve_depthwise(self, x, kernel):
        layer = self.layer
        return ops.depthwise_conv(
            x,
            kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format="channels_last",
        )

    def _quantized_depthwise(self):
        kernel = ops.convert_to_tensor(self.layer.depthwise_kernel)
        shape = kernel.shape
        flat = ops.reshape(kernel, (-1, shape[-2] * shape[-1]))
        return ops.reshape(fq.fake_quant_weights(flat), shape)

    def _export_constants(self):
        kernel, bias = self.folded_kernel_and_bias()
        constants = {
            "kernel": ops.convert_to_numpy(kernel).astype("float32"),
            "bias": ops.convert_to_numpy(bias).astype("float32"),
        }
        if self.kind == "SeparableConv2D":
            constants["depthwise"] = ops.convert_to_numpy(
                self.layer.depthwise_kernel
            ).astype("float32")
        return constants

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, input_range=None, training=None):
        return keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )

    def get_config(self):
        config = {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.layer),
            "ema_decay": self.ema_decay,
        }
        if self.batch_norm is not None:
            config["batch_norm"] = keras.saving.serialize_keras_object(
                self.batch_norm
            )
        return config

    @classmethod
    def from_config(cls, config):
        config = config.copy()
        config["layer"] = keras.saving.deserialize_keras_object(
            config["layer"]
        )
        if config.get("batch_norm") is not None:
            config["batch_norm"] = keras.saving.deserialize_keras_object(
                config["batch_norm"]
            )
        return cls(**config)


def _tf_weight_quant(tf, kernel, per_channel):
    """TensorFlow FakeQuant ops on a constant kernel, LiteRT's weight
    quantization points."""
    if per_channel:
        axes = tuple(range(kernel.ndim - 1))
        largest = np.maximum(np.abs(kernel).max(axis=axes), fq.WEIGHT_EPSILON)
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            tf.constant(kernel),
            tf.constant(-largest.astype("float32")),
            tf.constant(largest.astype("float32")),
            num_bits=8,
            narrow_range=True,
        )
    largest = float(max(np.abs(kernel).max(), fq.WEIGHT_EPSILON))
    return tf.quantization.fake_quant_with_min_max_args(
        tf.constant(kernel),
        min=-largest,
        max=largest,
        num_bits=8,
        narrow_range=True,
    )


def _tf_depthwise_quant(tf, kernel):
    # One scale per output channel (input channel x multiplier).
    shape = kernel.shape
    flat = kernel.reshape(shape[:-2] + (1, shape[-2] * shape[-1]))
    return tf.reshape(_tf_weight_quant(tf, flat, True), shape)


def _depthwise_levels(kernel):
    """Integer levels of a depthwise kernel `(h, w, channels, multiplier)`,
    one scale per output channel (`channels * multiplier`)."""
    kernel = ops.convert_to_tensor(kernel)
    shape = kernel.shape
    flat = ops.reshape(kernel, (-1, shape[-2] * shape[-1]))
    levels, scale = fq.weight_levels(flat)
    return ops.reshape(levels, shape), scale


def _export_kernels(wrapper, constants):
    import tensorflow as tf

    kernel = constants["kernel"]
    if wrapper.kind == "DepthwiseConv2D":
        kernel = _tf_depthwise_quant(tf, kernel)
    else:
        kernel = _tf_weight_quant(tf, kernel, wrapper.kind != "Dense")
    depthwise = None
    if "depthwise" in constants:
        depthwise = _tf_depthwise_quant(tf, constants["depthwise"])
    return kernel, tf.constant(constants["bias"]), depthwise


def quantize_aware_layers(model):
    """The `FakeQuant` and `QuantizeWrapper` layers of a model, nested
    ones included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, (FakeQuant, QuantizeWrapper))
    ]


def is_quantize_aware(model):
    """Whether a model holds quantize-aware layers."""
    return bool(quantize_aware_layers(model))


@contextlib.contextmanager
def export_constants(model):
    """While active, the model's quantize-aware layers emit TensorFlow
    FakeQuant ops with their current weights and ranges as constants."""
    layers = quantize_aware_layers(model)
    constants = {id(layer): layer._export_constants() for layer in layers}
    _EXPORT.update(constants)
    try:
        yield
    finally:
        for key in constants:
            _EXPORT.pop(key, None)


@contextlib.contextmanager
def calibrating(model):
    """While active, `FakeQuant` layers widen their ranges to what they see
    and pass their inputs through unquantized, and `QuantizeWrapper` layers
    take the float path."""
    layers = quantize_aware_layers(model)
    for layer in layers:
        layer._calibrating = True
    try:
        yield
    finally:
        for layer in layers:
            layer._calibrating = False


def check_kernel_layer(layer):
    kind = type(layer).__name__
    if kind not in _KERNEL_LAYERS or not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "Argument `layer` of `QuantizeWrapper` must be one of "
            f"{', '.join(_KERNEL_LAYERS)}. Received: layer={layer!r} of type "
            f"{kind}"
        )
    problems = []
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        problems.append(f"data_format={layer.data_format!r}")
    if getattr(layer, "groups", 1) != 1:
        problems.append(f"groups={layer.groups}")
    name = activation_name(layer.activation)
    if name not in ACTIVATIONS:
        problems.append(f"activation={name or layer.activation!r}")
    if problems:
        raise ValueError(
            f"Layer {layer.name!r} ({kind}) cannot be quantized as LiteRT "
            f"runs it: {', '.join(problems)}. Supported: "
            "data_format='channels_last', groups=1 and an activation among "
            f"{', '.join(ACTIVATIONS)} (hard_silu is hard_swish). Change the "
            "layer, or move the activation into a separate layer."
        )


def check_batch_norm(layer):
    if not isinstance(layer, keras.layers.BatchNormalization):
        raise TypeError(
            "Argument `batch_norm` must be a `keras.layers.BatchNormalization`"
            f" over the last axis. Received: batch_norm={layer!r} of type "
            f"{type(layer).__name__}"
        )
