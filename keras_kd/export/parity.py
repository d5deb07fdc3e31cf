"""Parity between a Keras student and its exported `.tflite` file."""

import dataclasses
import os
import time

import numpy as np

from keras_kd.export import _data
from keras_kd.export import litert
from keras_kd.export.litert_model import LiteRTModel
from keras_kd.utils import keras_compat
from keras_kd.utils import validation


@dataclasses.dataclass(frozen=True)
class ParityReport:
    """How closely an exported student matches the Keras one.

    Built by `keras_kd.export.parity_report`. `print(report)` shows a table;
    `report.to_dict()` gives plain Python values for JSON or a DataFrame.
    Accuracies and the agreement are fractions in `[0, 1]`.

    Attributes:
        path: String, the `.tflite` file.
        quantization: String, `"none"`, `"float16"`, `"dynamic"` or
            `"int8"` (read from the file's tensor types unless given).
        file_size: Integer, bytes of the `.tflite` file.
        keras_size: Integer, bytes of the Keras student's weights.
        num_examples: Integer, examples compared.
        keras_accuracy: Float, top-1 accuracy of the Keras student, or
            `None` without labels.
        tflite_accuracy: Float, top-1 accuracy of the LiteRT model, or
            `None` without labels.
        top1_agreement: Float, fraction of examples where both models
            predict the same class.
        max_abs_diff: Float, largest `|keras - tflite|` over all logits
            (int8 outputs are dequantized first).
        mean_abs_diff: Float, mean `|keras - tflite|` over all logits.
        latency_ms: Float, median wall time of one interpreter call on one
            example (the fixed batch for fixed-batch exports), this machine.
        latency_runs: Integer, timed calls behind `latency_ms`.
        input_dtype: String, dtype the `.tflite` input takes.
        input_shape: Tuple, input shape of the `.tflite` model.
        max_diff_steps: Float, `max_abs_diff` in quantization steps of the
            output (its int8 scale), or `None` when the output scale is not
            known: for a quantize-aware student (the scale of its output
            `FakeQuant`) or an int8 output tensor.
    """

    path: str
    quantization: str
    file_size: int
    keras_size: int
    num_examples: int
    keras_accuracy: float | None
    tflite_accuracy: float | None
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    latency_ms: float
    latency_runs: int
    input_dtype: str
    input_shape: tuple
    max_diff_steps: float | None = None

    @property
    def accuracy_delta(self):
        """`tflite_accuracy - keras_accuracy`, or `None` without labels."""
        if self.keras_accuracy is None:
            return None
        return self.tflite_accuracy - self.keras_accuracy

    def to_dict(self):
        """Returns the fields and `accuracy_delta` as a plain dict."""
        return {
            **dataclasses.asdict(self),
            "input_shape": list(self.input_shape),
            "accuracy_delta": self.accuracy_delta,
        }

    def __str__(self):
        def percent(value):
            return "n/a (no labels)" if value is None else f"{value:.2%}"

        ratio = self.keras_size / self.file_size if self.file_size else 0.0
        accuracy = percent(self.tflite_accuracy)
        if self.accuracy_delta is not None:
            accuracy += f" ({100 * self.accuracy_delta:+.2f} points)"
        rows = [
            # The unquantized file is named by its precision, not "none".
            ("quantization", "float32" if self.quantization in (None, "none")
             else self.quantization),
            ("input", f"{self.input_dtype} {self.input_shape}"),
            (
                "file size",
                f"{_kib(self.file_size)} (Keras weights "
                f"{_kib(self.keras_size)}, {ratio:.1f}x)",
            ),
            ("examples", str(self.num_examples)),
            ("accuracy, Keras", percent(self.keras_accuracy)),
            ("accuracy, LiteRT", accuracy),
            ("top-1 agreement", percent(self.top1_agreement)),
            ("max |logit diff|", f"{self.max_abs_diff:.3g}"),
            ("mean |logit diff|", f"{self.mean_abs_diff:.3g}"),
        ]
        if self.max_diff_steps is not None:
            rows.append(
                ("max diff, int8 steps", f"{self.max_diff_steps:.2f}")
            )
        rows += [
            (
                "latency, 1 example",
                f"{_duration(self.latency_ms)} (median of "
                f"{self.latency_runs})",
            ),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"LiteRT parity report: {os.path.basename(self.path)}"]
        lines += [f"  {name:<{width}}  {value}" for name, value in rows]
        return "\n".join(lines)


def parity_report(
    model,
    tflite_path,
    data,
    batch_size=32,
    max_examples=None,
    latency_runs=100,
    quantization=None,
    num_threads=None,
):
    """Compares a Keras student with its exported `.tflite` file.

    Both models run on the same examples; the report holds their
    accuracies (when `data` has labels), their top-1 agreement, the
    absolute differences of their logits and the interpreter's
    single-example latency.

    Args:
        model: The Keras student, or an object with a `.student` attribute
            (a `keras_kd.Distiller`).
        tflite_path: String or `os.PathLike`, the exported file.
        data: A NumPy array of inputs, an `(x, y)` tuple (sparse or one-hot
            labels), a `tf.data.Dataset` of `(x, y)` batches or an iterable
            of batches.
        batch_size: Positive integer, examples per call of each model.
            Defaults to `32`.
        max_examples: Optional positive integer, the number of examples to
            compare. Defaults to `None` (all of `data`).
        latency_runs: Positive integer, timed interpreter calls (after 5
            warm-up calls). Defaults to `100`.
        quantization: Optional string for the report. Defaults to `None`,
            which reads it from the file's tensor types.
        num_threads: Optional positive integer, interpreter CPU threads.
            Defaults to `None`.

    Returns:
        A `keras_kd.export.ParityReport`.

    Raises:
        ImportError: If no LiteRT interpreter is installed.

    Example:

    >>> path = keras_kd.export.export_student(distiller, "student.tflite")
    >>> report = keras_kd.export.parity_report(
    ...     distiller, path, (x_test, y_test))
    >>> print(report)
    >>> report.top1_agreement >= 0.999
    True
    """
    student = litert._get_student(model)
    batch_size = validation.check_positive_integer("batch_size", batch_size)
    latency_runs = validation.check_positive_integer(
        "latency_runs", latency_runs
    )
    if max_examples is not None:
        max_examples = validation.check_positive_integer(
            "max_examples", max_examples
        )
    runner = LiteRTModel(tflite_path, num_threads=num_threads)
    x, y = _data.collect("data", data, max_examples)
    _data.check_shape("data", x.shape, runner.input_shape)
    expected = np.asarray(
        student.predict(x, batch_size=batch_size, verbose=0), "float32"
    )
    actual = runner.predict(x, batch_size=batch_size)
    difference = np.abs(expected - actual)
    keras_top1 = expected.argmax(-1)
    tflite_top1 = actual.argmax(-1)
    keras_accuracy = tflite_accuracy = None
    if y is not None:
        labels = _sparse_labels(y, expected.shape)
        keras_accuracy = float(np.mean(keras_top1 == labels))
        tflite_accuracy = float(np.mean(tflite_top1 == labels))
    return ParityReport(
        path=runner.path,
        quantization=quantization or _read_quantization(runner),
        file_size=runner.size,
        keras_size=_weights_size(student),
        num_examples=int(len(x)),
        keras_accuracy=keras_accuracy,
        tflite_accuracy=tflite_accuracy,
        top1_agreement=float(np.mean(keras_top1 == tflite_top1)),
        max_abs_diff=float(difference.max()),
        mean_abs_diff=float(difference.mean()),
        latency_ms=_latency_ms(runner, x, latency_runs),
        latency_runs=latency_runs,
        input_dtype=runner.input_dtype.name,
        input_shape=runner.input_shape,
        max_diff_steps=_diff_steps(difference.max(), student, runner),
    )


def _output_scale(student, runner):
    """The int8 step of the output: the quantize-aware student's output
    `FakeQuant`, else the file's int8 output tensor, else `None`."""
    from keras_kd.quantization import layers as qlayers

    outputs = getattr(student, "outputs", None) or []
    if len(outputs) == 1:
        layer = keras_compat.producing_operation(outputs[0])
        if isinstance(layer, qlayers.FakeQuant):
            return layer.scale()
    if runner.output_quantization is not None:
        return float(runner.output_quantization[0])
    return None


def _diff_steps(max_abs_diff, student, runner):
    scale = _output_scale(student, runner)
    if not scale:
        return None
    return float(max_abs_diff) / scale


def _sparse_labels(y, logits_shape):
    y = np.asarray(y)
    classes = logits_shape[-1]
    if y.ndim == len(logits_shape) and y.shape[-1] > 1:
        if y.shape[-1] != classes:
            raise ValueError(
                "Argument `data` holds one-hot labels of width "
                f"{y.shape[-1]}, but the student has {classes} classes. "
                f"Received: labels of shape {tuple(y.shape)}. Pass class ids "
                f"or one-hot rows of width {classes}."
            )
        return y.argmax(-1)
    if y.size != int(np.prod(logits_shape[:-1])):
        raise ValueError(
            "Argument `data` must hold one class id (or one one-hot row) per "
            f"input. Received: labels of shape {tuple(y.shape)} for "
            f"{logits_shape[0]} inputs. Pass `(x, y)` with `y` of shape "
            f"({logits_shape[0]},)."
        )
    return y.reshape(logits_shape[:-1]).astype("int64")


def _weights_size(model):
    return int(
        sum(
            np.prod(w.shape, dtype="int64") * np.dtype(w.dtype).itemsize
            for w in model.weights
        )
    )


def _latency_ms(runner, x, runs, warmup=5):
    batch = runner.fixed_batch_size or 1
    sample = runner.prepare(np.resize(x, (batch,) + x.shape[1:]))
    runner.set_input(sample)
    invoke = runner.interpreter.invoke
    for _ in range(warmup):
        invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def _read_quantization(runner):
    """Names the quantization mode from the tensor types of the file."""
    if runner.input_quantization is not None:
        return "int8"
    tensors = runner.interpreter.get_tensor_details()
    dtypes = {np.dtype(t["dtype"]) for t in tensors}
    if np.dtype("float16") in dtypes:
        return "float16"
    # Full-integer models quantize the input first: an int8 tensor with the
    # input's shape. Dynamic-range models only hold int8 weights.
    (details,) = runner.interpreter.get_input_details()
    signature = tuple(details.get("shape_signature", details["shape"]))
    int8 = [t for t in tensors if np.dtype(t["dtype"]) == np.int8]
    if any(tuple(t.get("shape_signature", ())) == signature for t in int8):
        return "int8"
    return "dynamic" if int8 else "none"


def _kib(size):
    return f"{size / 1024:.1f} KiB"


def _duration(milliseconds):
    if milliseconds < 1.0:
        return f"{milliseconds * 1000:.1f} us"
    return f"{milliseconds:.2f} ms"
