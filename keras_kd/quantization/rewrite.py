"""`quantize_aware`: rewrites a student into quantize-aware layers."""

import difflib

import keras
import numpy as np

from keras_kd.quantization import layers as qlayers
from keras_kd.utils import keras_compat

_KERNEL = ("Dense", "Conv2D", "DepthwiseConv2D", "SeparableConv2D")
# Layers LiteRT runs with the scale of their input: no quantizer after them.
_PASS_THROUGH = (
    "Dropout",
    "Flatten",
    "GlobalMaxPooling2D",
    "MaxPooling2D",
    "Reshape",
    "ZeroPadding2D",
)
# Layers whose output gets a quantization point of its own.
_REQUANTIZE = (
    "Add",
    "Concatenate",
    "GlobalAveragePooling2D",
)
_ACTIVATION_LAYERS = ("Activation", "ReLU")
SUPPORTED_LAYERS = tuple(
    sorted(
        _KERNEL
        + _PASS_THROUGH
        + _REQUANTIZE
        + _ACTIVATION_LAYERS
        + ("BatchNormalization", "InputLayer")
    )
)


def quantize_aware(
    student,
    representative_data=None,
    weights="int8",
    activations="int8",
    ema_decay=0.999,
    batch_size=128,
):
    """Returns a copy of `student` that computes what its int8 LiteRT file will.

    Every `Dense` and convolution runs with fake-quantized weights
    (symmetric int8 in `[-127, 127]`, one scale per output channel for
    convolutions, one per tensor for `Dense`); a `BatchNormalization` that
    follows a convolution or `Dense` is folded into it with its moving
    statistics, which stay frozen. Activations are fake-quantized per tensor
    (asymmetric int8 with a zero point) where LiteRT quantizes them: at the
    input, after each convolution, `Dense` or fused block (convolution, batch
    norm, ReLU/ReLU6), before and after hard-swish, after `Add`,
    `Concatenate` and global average pooling, and at the output (the inputs
    of a `Concatenate` take its range, as LiteRT gives them). Ranges are
    calibrated on `representative_data` (or taken from the first training
    batch), then tracked with a moving average while training. Gradients go
    straight through the rounding (zero outside a range). In inference each
    `Dense` and convolution computes as LiteRT's int8 kernel does (integer
    input and weight levels, an exact sum, the bias rounded to the int32
    grid), from the range of the quantizer before it, so the fake-quant
    model rounds where the `.tflite` file rounds.

    The result is a functional `keras.Model` of registered layers: distil
    it as any student (TensorFlow, JAX or PyTorch), save it as `.keras`, and
    export it with `keras_kd.export.export_student(model, path,
    quantization="int8")`, which needs no representative data.

    Args:
        student: A built `keras.Sequential` or functional `keras.Model` made
            of the layers in `keras_kd.quantization.SUPPORTED_LAYERS`.
            Convolutions must be channels-last. It is not modified.
        representative_data: Optional inputs to calibrate the activation
            ranges: a NumPy array, an `(x, y)` tuple (labels are ignored), a
            `tf.data.Dataset` or an iterable of batches. A few hundred
            training examples are enough. Defaults to `None`.
        weights: String, the weight type; only `"int8"`. Defaults to
            `"int8"`.
        activations: String, the activation type; only `"int8"`. Defaults
            to `"int8"`.
        ema_decay: Float in `[0, 1)`, weight of the old activation range in
            the moving average of each training step. Defaults to `0.999`.
        batch_size: Positive integer, examples per calibration batch.
            Defaults to `128`.

    Returns:
        A new `keras.Model` with the student's weights.

    Raises:
        ValueError: For a layer that cannot be quantized (named, with its
            class and the supported ones), a shared layer or a nested model,
            or an unsupported `weights` / `activations`.

    Example:

    >>> qat_student = keras_kd.quantization.quantize_aware(
    ...     student, x_train[:512])
    >>> distiller = keras_kd.Distiller(teacher, qat_student, alpha=0.0)
    >>> distiller.compile(optimizer="adam")
    >>> distiller.fit(x_train, y_train, epochs=1)
    >>> keras_kd.export.export_student(distiller, "student.tflite",
    ...                                quantization="int8")
    """
    for name, value in (("weights", weights), ("activations", activations)):
        if value != "int8":
            raise ValueError(
                f"Argument `{name}` must be 'int8', the type LiteRT's "
                f"full-integer kernels use. Received: {name}={value!r}"
            )
    if not isinstance(student, keras.Model):
        raise TypeError(
            "Argument `student` must be a `keras.Model`. Received: "
            f"student={student!r} of type {type(student).__name__}"
        )
    graph = _functional(student)
    consumers, producers, calls, ranks = _graph_links(graph)
    folded = {}  # id(kernel layer) -> BatchNormalization
    for layer in graph.operations:
        _check_layer(layer, calls.get(id(layer), 0))
        if type(layer).__name__ == "BatchNormalization":
            producer = producers.get(id(layer))
            rank = ranks.get(id(layer))
            if not _can_fold(producer, layer, consumers, rank):
                raise _batch_norm_error(layer, producer)
            folded[id(producer)] = layer

    def quantized_after(layer):
        """Whether the output of `layer` (and its folded batch norm) gets
        a FakeQuant: yes unless only a fusable activation reads it."""
        last = folded.get(id(layer), layer)
        readers = consumers.get(id(last), [])
        if len(readers) != 1:
            return True
        # LiteRT fuses ReLU/ReLU6 into the op, and gives the inputs of a
        # concatenation the output's scale when only it reads them.
        reader = readers[0]
        return not (
            _fusable_activation(reader)
            or type(reader).__name__ == "Concatenate"
        )

    copies = []  # (new wrapper, old layer, old batch norm)
    # id(new tensor) -> the `[min, max]` tensor of the FakeQuant whose grid
    # it lies on, for the exact integer inference of the wrappers reading it.
    ranges = {}

    def quantize(quantizer, x):
        y, value_range = quantizer(x, return_range=True)
        ranges[id(y)] = value_range
        return y

    def wrap(wrapper, x, *args, **kwargs):
        value_range = ranges.get(id(x))
        if value_range is not None and not args:
            kwargs["input_range"] = value_range
        return wrapper(x, *args, **kwargs)

    def pass_through(clone, x, *args, **kwargs):
        y = clone(x, *args, **kwargs)
        if id(x) in ranges:
            ranges[id(y)] = ranges[id(x)]
        return y

    def rebuild(layer):
        kind = type(layer).__name__
        quantizer = qlayers.FakeQuant(ema_decay, name=f"{layer.name}_quant")
        if kind == "BatchNormalization":
            return lambda x, *args, **kwargs: x
        if kind in _KERNEL:
            bn = folded.get(id(layer))
            inner = _clone(layer)
            inner_bn = _clone(bn) if bn is not None else None
            wrapper = qlayers.QuantizeWrapper(
                inner, inner_bn, ema_decay, name=f"quant_{layer.name}"
            )
            copies.append((wrapper, layer, bn))
            if not quantized_after(layer):
                return lambda *a, **k: wrap(wrapper, *a, **k)
            return lambda *a, **k: quantize(
                quantizer, wrap(wrapper, *a, **k)
            )
        clone = _clone(layer)
        copies.append((clone, layer, None))
        if kind in _PASS_THROUGH:
            return lambda *a, **k: pass_through(clone, *a, **k)
        if kind in _ACTIVATION_LAYERS and _activation_of(layer) == "hard_silu":
            # LiteRT's HARD_SWISH takes a quantized input of its own.
            pre = qlayers.FakeQuant(ema_decay, name=f"{layer.name}_in_quant")
            if not quantized_after(layer):
                return lambda x, **k: clone(pre(x), **k)
            return lambda x, **k: quantize(quantizer, clone(pre(x), **k))
        if not quantized_after(layer):
            return clone
        return lambda *a, **k: quantize(quantizer, clone(*a, **k))

    inputs = [
        keras.Input(
            shape=tensor.shape[1:],
            batch_size=tensor.shape[0],
            dtype=tensor.dtype,
            name=tensor.name,
        )
        for tensor in graph.inputs
    ]
    quantized_inputs = [
        quantize(qlayers.FakeQuant(ema_decay, name=f"{x.name}_quant"), x)
        for x in inputs
    ]
    outputs = graph._run_through_graph(quantized_inputs, operation_fn=rebuild)
    model = keras.Model(
        inputs if len(inputs) > 1 else inputs[0],
        outputs,
        name=f"{student.name}_quantize_aware",
    )
    for new, old, bn in copies:
        inner = new.layer if isinstance(new, qlayers.QuantizeWrapper) else new
        inner.set_weights(old.get_weights())
        if bn is not None:
            new.batch_norm.set_weights(bn.get_weights())
    if representative_data is not None:
        calibrate(model, representative_data, batch_size)
    return model


def calibrate(model, data, batch_size=128):
    """Sets the activation ranges of a quantize-aware model from `data`.

    Each `FakeQuant` range becomes the smallest that covers every value it
    sees on `data` (with `0` included).

    Args:
        model: A model made by `quantize_aware`.
        data: Inputs, as `representative_data` of `quantize_aware`.
        batch_size: Positive integer, examples per model call. Defaults to
            `128`.

    Returns:
        The number of examples seen.
    """
    from keras_kd.export import _data

    for layer in qlayers.quantize_aware_layers(model):
        if isinstance(layer, qlayers.FakeQuant):
            layer.initialized.assign(0.0)
    seen = 0
    with qlayers.calibrating(model):
        run, finish = _calibration_runner(model)
        for x, _ in _data.iter_batches("representative_data", data):
            for start in range(0, len(x), batch_size):
                batch = np.asarray(x[start : start + batch_size], "float32")
                run(batch)
                seen += len(batch)
        finish()
    if not seen:
        raise ValueError(
            "Argument `representative_data` holds no examples. Pass some "
            "training inputs, for example `representative_data=x_train[:512]`."
        )
    return seen


def _calibration_runner(model):
    """`(run(batch), finish())`: eager calls, or on JAX one compiled
    stateless call per batch shape (eager JAX convolutions are slow)."""
    if keras.backend.backend() != "jax":
        return (lambda batch: model(batch, training=False)), (lambda: None)
    import jax

    @jax.jit
    def step(trainable, non_trainable, batch):
        _, non_trainable = model.stateless_call(
            trainable, non_trainable, batch, training=False
        )
        return non_trainable

    trainable = [v.value for v in model.trainable_variables]
    state = {"values": [v.value for v in model.non_trainable_variables]}

    def run(batch):
        state["values"] = step(trainable, state["values"], batch)

    def finish():
        for variable, value in zip(
            model.non_trainable_variables, state["values"]
        ):
            variable.assign(value)

    return run, finish


def _functional(student):
    if not student.built or not getattr(student, "inputs", None):
        raise ValueError(
            "Argument `student` must be a built Sequential or functional "
            "model with known inputs (start it with `keras.Input(...)`). "
            f"Received: student={student.name!r} of type "
            f"{type(student).__name__}"
        )
    if isinstance(student, keras.Sequential) or (
        keras_compat.nodes_by_depth(student) is None
    ):
        try:
            inputs, outputs = student.inputs, student.outputs
            return keras.Model(
                inputs[0] if len(inputs) == 1 else inputs,
                outputs[0] if len(outputs) == 1 else outputs,
            )
        except Exception as error:  # noqa: BLE001
            raise ValueError(
                "`quantize_aware` rewrites Sequential and functional models; "
                f"student {student.name!r} of type {type(student).__name__} "
                "has no layer graph. Build it with `keras.Input` and layers."
            ) from error
    return student


def _graph_links(graph):
    consumers, producers, calls, ranks = {}, {}, {}, {}
    for nodes in keras_compat.nodes_by_depth(graph).values():
        for node in nodes:
            if not node.operation or node.is_input:
                continue
            key = id(node.operation)
            calls[key] = calls.get(key, 0) + 1
            if node.input_tensors:
                ranks[key] = len(node.input_tensors[0].shape)
            for tensor in node.input_tensors:
                producer = keras_compat.producing_operation(tensor)
                readers = consumers.setdefault(id(producer), [])
                if node.operation not in readers:
                    readers.append(node.operation)
                producers[id(node.operation)] = producer
    return consumers, producers, calls, ranks


def _activation_of(layer):
    kind = type(layer).__name__
    if kind == "ReLU":
        if layer.negative_slope or layer.threshold:
            return None
        if layer.max_value is None:
            return "relu"
        return "relu6" if float(layer.max_value) == 6.0 else None
    if kind == "Activation":
        return qlayers.activation_name(layer.activation)
    return None


def _fusable_activation(layer):
    return type(layer).__name__ in _ACTIVATION_LAYERS and _activation_of(
        layer
    ) in ("relu", "relu6")


def _can_fold(producer, bn, consumers, rank):
    if producer is None or type(producer).__name__ not in _KERNEL:
        return False
    if qlayers.activation_name(producer.activation) != "linear":
        return False
    if len(consumers.get(id(producer), [])) != 1:
        return False
    return bn.axis in (-1, [-1]) or (rank is not None and bn.axis == rank - 1)


def _check_layer(layer, calls):
    kind = type(layer).__name__
    if isinstance(layer, keras.Model):
        raise ValueError(
            f"Layer {layer.name!r} is a nested model ({kind}); "
            "`quantize_aware` rewrites one flat graph. Rebuild the student "
            "with the nested model's layers inline (call them on the "
            "outer tensors)."
        )
    if kind not in SUPPORTED_LAYERS:
        close = difflib.get_close_matches(kind, SUPPORTED_LAYERS, n=2)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ValueError(
            f"Layer {layer.name!r} of class {kind} cannot be quantized as "
            "LiteRT runs it in int8, so `quantize_aware` does not support "
            f"it. Supported layers: {', '.join(SUPPORTED_LAYERS)}.{hint} "
            "Replace the layer, or keep the student in float and use "
            "post-training quantization (`export_student(..., "
            "quantization='int8', representative_data=...)`)."
        )
    if kind == "InputLayer":
        return
    if calls > 1:
        raise ValueError(
            f"Layer {layer.name!r} ({kind}) is called more than once "
            f"({calls} calls); `quantize_aware` needs "
            "each layer to be used once. Use a separate layer per call."
        )
    if kind in _KERNEL:
        qlayers.check_kernel_layer(layer)
    if kind in _ACTIVATION_LAYERS and _activation_of(layer) not in (
        qlayers.ACTIVATIONS
    ):
        raise ValueError(
            f"Layer {layer.name!r} ({kind}) has an activation that "
            "`quantize_aware` cannot quantize as LiteRT does. Supported: "
            "relu, relu6 (ReLU(max_value=6)), hard_swish and linear. "
            f"Received: {layer.get_config()}"
        )


def _batch_norm_error(layer, producer):
    before = "nothing" if producer is None else (
        f"{producer.name!r} ({type(producer).__name__})"
    )
    return ValueError(
        f"Layer {layer.name!r} (BatchNormalization) follows {before}; "
        "`quantize_aware` folds a batch norm into the Dense or convolution "
        "right before it (without activation, not read by other layers, "
        "over the last axis), as LiteRT does, and cannot quantize it "
        "alone. Move the activation after the batch norm "
        "(`Conv2D(..., activation=None)`, `BatchNormalization()`, `ReLU()`)."
    )


def _clone(layer):
    return type(layer).from_config(layer.get_config())
