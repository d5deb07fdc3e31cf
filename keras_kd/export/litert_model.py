"""A thin runner around the LiteRT interpreter for exported students."""

import os

import numpy as np

from keras_kd.export import _data
from keras_kd.utils import validation

LITERT_IMPORT_MESSAGE = (
    "keras_kd.export requires ai-edge-litert. Install it with: "
    "pip install 'keras-kd[litert]'"
)


def interpreter_class():
    """Returns the LiteRT `Interpreter` class of the installed stack.

    Prefers `ai_edge_litert.interpreter.Interpreter`; falls back to
    `tf.lite.Interpreter` (deprecated by TensorFlow) only when
    `ai-edge-litert` is missing and TensorFlow still ships one.

    Raises:
        ImportError: If neither is installed, naming the `litert` extra.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError as error:
        try:
            import tensorflow as tf

            return tf.lite.Interpreter
        except (ImportError, AttributeError):
            raise ImportError(LITERT_IMPORT_MESSAGE) from error


class LiteRTModel:
    """Runs a `.tflite` student like a Keras model: NumPy in, logits out.

    The runner hides three interpreter chores: it resizes a dynamic batch
    axis to each batch it receives, quantizes float inputs with the input
    tensor's scale and zero point when the model takes int8 (`int8_io=True`
    exports), and dequantizes int8 outputs back to float32. It runs models
    with one input and one output, which is what `export_student` writes for
    a classifier.

    Args:
        path: String or `os.PathLike`, the `.tflite` file.
        num_threads: Optional positive integer, the interpreter's CPU
            threads. Defaults to `None` (the interpreter's choice).

    Attributes:
        input_shape: Tuple, the input shape with `None` for dynamic axes.
        input_dtype: NumPy dtype of the input tensor: `float32`, or `int8`
            for `int8_io=True` exports.
        output_dtype: NumPy dtype of the output tensor.
        input_quantization, output_quantization: `(scale, zero_point)` of
            int8 tensors, `None` for float ones.

    Example:

    >>> runner = keras_kd.export.LiteRTModel("student.tflite")
    >>> logits = runner.predict(x_test)  # float32, shape (n, num_classes)
    >>> logits.argmax(-1)
    """

    def __init__(self, path, num_threads=None):
        self.path = os.fspath(path)
        if num_threads is not None:
            num_threads = validation.check_positive_integer(
                "num_threads", num_threads
            )
        self._interpreter = interpreter_class()(
            model_path=self.path, num_threads=num_threads
        )
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1:
            raise _data.multiple_io_error("input", len(inputs))
        if len(outputs) != 1:
            raise _data.multiple_io_error("output", len(outputs))
        self._input, self._output = inputs[0], outputs[0]
        signature = self._input.get("shape_signature", self._input["shape"])
        self.input_shape = tuple(
            None if d < 0 else int(d) for d in signature
        )
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self.input_quantization = _quantization(self._input)
        self.output_quantization = _quantization(self._output)
        self._interpreter.allocate_tensors()
        self._current_shape = tuple(self._input["shape"])

    @property
    def size(self):
        """Size of the `.tflite` file in bytes."""
        return os.path.getsize(self.path)

    @property
    def fixed_batch_size(self):
        """The exported batch size, or `None` if the batch axis is dynamic."""
        return self.input_shape[0] if self.input_shape else None

    @property
    def interpreter(self):
        """The underlying LiteRT `Interpreter`, for anything else."""
        return self._interpreter

    def __call__(self, x, dequantize=True):
        """Runs one batch.

        Args:
            x: Array of shape `input_shape`. Floats are cast to float32, or
                quantized if the model takes int8; int8 values go through
                as they are.
            dequantize: Boolean. If `True`, int8 outputs are returned as
                float32 `(q - zero_point) * scale`. Defaults to `True`.

        Returns:
            NumPy array of shape `(batch_size, ...)`.
        """
        x = self.prepare(x)
        batch = self.fixed_batch_size
        if batch is not None and x.shape[0] != batch:
            raise fixed_batch_error(batch, x.shape[0])
        self.set_input(x)
        self._interpreter.invoke()
        return self.get_output(dequantize)

    def predict(self, x, batch_size=32, dequantize=True):
        """Runs `x` in batches and concatenates the outputs.

        With a fixed exported batch size, `x` is cut into batches of that
        size and the last one is padded with zeros, then trimmed.

        Args:
            x: Array of shape `(n, *input_shape[1:])`.
            batch_size: Positive integer, examples per interpreter call
                when the batch axis is dynamic. Defaults to `32`.
            dequantize: As in `__call__`. Defaults to `True`.

        Returns:
            NumPy array with `n` rows.
        """
        x = self.prepare(x)
        if len(x) == 0:
            raise _data.empty_data_error("x", x)
        step = self.fixed_batch_size or validation.check_positive_integer(
            "batch_size", batch_size
        )
        outputs = []
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            missing = step - len(chunk)
            if self.fixed_batch_size and missing:
                pad = np.zeros((missing,) + chunk.shape[1:], chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            outputs.append(self(chunk, dequantize)[: step - missing])
        return np.concatenate(outputs)

    def set_input(self, x):
        """Resizes the input if needed and sets `x` (already prepared)."""
        if tuple(x.shape) != self._current_shape:
            self._interpreter.resize_tensor_input(
                self._input["index"], list(x.shape)
            )
            self._interpreter.allocate_tensors()
            self._current_shape = tuple(x.shape)
        self._interpreter.set_tensor(self._input["index"], x)

    def get_output(self, dequantize=True):
        """Returns the output tensor of the last `invoke`."""
        y = self._interpreter.get_tensor(self._output["index"])
        if dequantize and self.output_quantization is not None:
            scale, zero_point = self.output_quantization
            y = (y.astype("float32") - zero_point) * np.float32(scale)
        return y

    def prepare(self, x):
        """Checks the shape of `x` and converts it to `input_dtype`.

        Float inputs of an int8 model are quantized:
        `clip(round(x / scale + zero_point), -128, 127)`.
        """
        x = np.asarray(x)
        _data.check_shape("x", x.shape, self.input_shape)
        if self.input_quantization is None:
            if not np.issubdtype(x.dtype, np.number):
                raise litert_input_dtype_error(
                    self.input_dtype.name, x.dtype.name, quantized=False
                )
            return x.astype(self.input_dtype, copy=False)
        if x.dtype == self.input_dtype:
            return x
        if not np.issubdtype(x.dtype, np.floating):
            raise litert_input_dtype_error(
                self.input_dtype.name, x.dtype.name, quantized=True
            )
        scale, zero_point = self.input_quantization
        info = np.iinfo(self.input_dtype)
        q = np.round(x / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def __repr__(self):
        return (
            f"<LiteRTModel path={self.path!r} input_shape={self.input_shape} "
            f"input_dtype={self.input_dtype.name}>"
        )


def _quantization(details):
    """`(scale, zero_point)` of a quantized integer tensor, else `None`."""
    if not np.issubdtype(np.dtype(details["dtype"]), np.integer):
        return None
    scale, zero_point = details.get("quantization", (0.0, 0))
    if not scale:
        return None
    return float(scale), int(zero_point)


# Error messages.


def litert_input_dtype_error(expected, received, quantized):
    if quantized:
        fix = (
            "Pass float inputs (they are quantized with the input tensor's "
            f"scale and zero point) or {expected} values."
        )
    else:
        fix = f"Pass numeric inputs (they are cast to {expected})."
    return TypeError(
        f"The LiteRT model takes {expected} inputs. {fix} Received: inputs "
        f"of dtype {received}"
    )


def fixed_batch_error(expected, received):
    return ValueError(
        f"The LiteRT model was exported with a fixed batch size of "
        f"{expected}. Call `predict(x)`, which splits and pads the data, or "
        f"pass exactly {expected} examples. Received: batch size {received}"
    )
