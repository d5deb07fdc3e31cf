"""Export of distilled students to LiteRT (`.tflite`), with quantization.

On the TensorFlow backend the conversion is `keras.Model.export(path,
format="litert", **converter_options)`: Keras writes a SavedModel with
`keras.export.ExportArchive`, loads it in `tf.lite.TFLiteConverter` and sets
every keyword argument it receives as a converter attribute
(`optimizations`, `representative_dataset`, `inference_input_type`,
`inference_output_type`, and `target_spec` as a dict). That covers all four
quantization modes, full-integer int8 included. We only override Keras'
default op sets: built-in ops only, since the `ai_edge_litert` interpreter
cannot run the `SELECT_TF_OPS` (Flex) ops Keras also allows.

Keras 3.15 refuses `format="litert"` on the JAX backend, although its own
recipe works there: `ExportArchive` converts JAX functions with `jax2tf`, and
the converter lowers the result. On JAX we run that recipe with the same
converter options (see `_convert_with_archive`).
"""

import functools
import os
import re
import tempfile
import warnings

import keras

from keras_kd.export import _data
from keras_kd.utils import io
from keras_kd.utils import validation

QUANTIZATION_MODES = ("none", "float16", "dynamic", "int8")


def export_student(
    model,
    path,
    quantization="none",
    representative_data=None,
    representative_steps=100,
    int8_io=False,
    input_signature=None,
):
    """Writes the student of a distillation to a LiteRT `.tflite` file.

    Only the student is exported: given a `keras_kd.Distiller`, this takes
    `distiller.student`, so neither the teacher nor the `FeatureMatch`
    projection heads reach the file. The model keeps the student's input
    signature: a `None` batch axis stays dynamic (the interpreter resizes it),
    a fixed one stays fixed.

    The file runs on float32 inputs and returns float32 logits, except with
    `int8_io=True`, where both are int8 with the scale and zero point stored
    in the tensors (`keras_kd.export.LiteRTModel` applies them for you). Only
    LiteRT built-in ops are allowed, so the file runs in the
    `ai_edge_litert` interpreter without the TensorFlow (Flex) delegate.

    The file is written to a temporary file in the same directory and moved
    into place with `os.replace`, so a failed export leaves no partial file
    and keeps any previous file at `path`.

    Args:
        model: A `keras.Model` (the student) or an object whose `.student`
            attribute is one, such as a `keras_kd.Distiller`. It must be
            built.
        path: String or `os.PathLike` ending in `.tflite`, in an existing
            directory. An existing file is replaced.
        quantization: One of `"none"` (float32 weights and math),
            `"float16"` (float16 weights, float32 math), `"dynamic"`
            (dynamic-range int8: int8 weights of at least 1024 elements,
            activations quantized on the fly) or `"int8"` (full-integer:
            int8 weights and activations calibrated on
            `representative_data`). A quantize-aware student (from
            `keras_kd.quantization.quantize_aware`) gets `"int8"` from its
            own weight and trained activation ranges, with no
            `representative_data`, on every backend (JAX and PyTorch
            convert in a TensorFlow subprocess). Defaults to `"none"`.
        representative_data: Inputs used to calibrate `"int8"`, ideally
            taken from the distillation data: a NumPy array or tensor, an
            `(x, y)` tuple (labels are ignored), a `tf.data.Dataset` or an
            iterable of batches. Required for `"int8"` (except for a
            quantize-aware student, which ignores it with a warning),
            ignored (with a warning) otherwise. Defaults to `None`.
        representative_steps: Positive integer, the maximum number of
            calibration batches fed to the converter. Each holds one example
            (or the student's fixed batch size). Defaults to `100`.
        int8_io: Boolean. With `quantization="int8"`, makes the input and
            output tensors int8 too, for integer-only accelerators.
            Defaults to `False`.
        input_signature: Optional input signature, as in
            `keras.Model.export`. Defaults to `None`, which keeps the
            student's own.

    Returns:
        The `path` written, as a string.

    Raises:
        TypeError: If `model` holds no `keras.Model`, or an argument has the
            wrong type.
        ValueError: For a `path` not ending in `.tflite`, an unknown
            `quantization`, `"int8"` without `representative_data`,
            `int8_io=True` without `"int8"`, or a student with ops that
            LiteRT cannot run.
        ImportError: On the JAX backend without TensorFlow installed.
        NotImplementedError: On a backend other than TensorFlow and JAX.

    Example:

    >>> path = keras_kd.export.export_student(
    ...     distiller, "student_int8.tflite", quantization="int8",
    ...     representative_data=x_train)
    >>> runner = keras_kd.export.LiteRTModel(path)
    >>> runner.predict(x_test).argmax(-1)
    """
    student = _get_student(model)
    path = check_tflite_path(path)
    validation.check_one_of("quantization", quantization, QUANTIZATION_MODES)
    steps = validation.check_positive_integer(
        "representative_steps", representative_steps
    )
    if validation.check_bool("int8_io", int8_io) and quantization != "int8":
        raise int8_io_error(quantization)
    if quantization == "int8" and _is_quantize_aware(student):
        if representative_data is not None:
            warnings.warn(
                QUANTIZE_AWARE_DATA_MESSAGE, UserWarning, stacklevel=2
            )
        if input_signature is None:
            input_signature = _input_signature(student)
        _single_input_spec(input_signature)
        with io.atomic_path(path) as temp_path:
            _export_quantize_aware(student, temp_path, input_signature, int8_io)
        return path
    if quantization == "int8" and representative_data is None:
        raise missing_representative_data_error()
    if quantization != "int8" and representative_data is not None:
        warnings.warn(
            representative_data_ignored_message(quantization),
            UserWarning,
            stacklevel=2,
        )
    preprocessing = getattr(model, "student_preprocessing", None)
    if preprocessing is not None:
        warnings.warn(
            student_preprocessing_message(preprocessing),
            UserWarning,
            stacklevel=2,
        )
    tf = _import_tensorflow()
    if input_signature is None:
        input_signature = _input_signature(student)

    samples = None
    if quantization == "int8":
        spec = _single_input_spec(input_signature)
        # `tf.TensorSpec` dtypes name their NumPy dtype; `InputSpec` ones
        # are strings already.
        dtype = getattr(spec.dtype, "as_numpy_dtype", spec.dtype)
        samples = _data.calibration_samples(
            representative_data, steps, tuple(spec.shape), dtype
        )
    options = _converter_options(tf, quantization, samples, int8_io)

    def convert(temp_path):
        try:
            if keras.backend.backend() == "tensorflow":
                student.export(
                    temp_path,
                    format="litert",
                    verbose=False,
                    input_signature=input_signature,
                    **options,
                )
            else:
                _convert_with_archive(
                    tf, student, temp_path, input_signature, options
                )
        except Exception as error:
            if type(error).__name__ != "ConverterError":
                raise
            ops, details = _summarize_converter_error(str(error))
            raise unsupported_ops_error(
                student.name, quantization, ops, details
            ) from error

    with io.atomic_path(path) as temp_path:
        convert(temp_path)
    return path


QUANTIZE_AWARE_DATA_MESSAGE = (
    "Argument `representative_data` is ignored: the student is "
    "quantize-aware (`keras_kd.quantization.quantize_aware`), so its int8 "
    "ranges are the trained ones stored in the model."
)


def _is_quantize_aware(student):
    from keras_kd.quantization import layers as qlayers

    return qlayers.is_quantize_aware(student)


def _quantize_aware_options(tf, int8_io):
    # The FakeQuant ops carry every range: no representative dataset (the
    # int8-only op set would demand one; `_check_full_integer` checks the
    # result instead).
    options = {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
    }
    if int8_io:
        options["inference_input_type"] = tf.int8
        options["inference_output_type"] = tf.int8
    return options


def _export_quantize_aware(student, path, input_signature, int8_io):
    """Writes a full-integer file from a quantize-aware student's ranges.

    The quantize-aware layers emit TensorFlow's FakeQuant ops while the
    model is traced, which only the TensorFlow backend can do. On JAX and
    PyTorch the student is saved as `.keras` and converted by a TensorFlow
    subprocess.
    """
    if keras.backend.backend() != "tensorflow":
        _export_in_tensorflow_process(student, path, int8_io)
        return
    import tensorflow as tf

    from keras_kd.quantization import layers as qlayers

    options = _quantize_aware_options(tf, int8_io)
    try:
        with qlayers.export_constants(student):
            student.export(
                path,
                format="litert",
                verbose=False,
                input_signature=input_signature,
                **options,
            )
    except Exception as error:
        if type(error).__name__ != "ConverterError":
            raise
        ops, details = _summarize_converter_error(str(error))
        raise unsupported_ops_error(
            student.name, "int8", ops, details
        ) from error
    _check_full_integer(student.name, path, int8_io)


def float_tensors(path):
    """Names of the float tensors of a `.tflite` file other than its float
    inputs and outputs, or `None` without a LiteRT interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    import numpy as np

    interpreter = Interpreter(model_path=path)
    io_indices = {
        d["index"]
        for d in interpreter.get_input_details()
        + interpreter.get_output_details()
    }
    return [
        t["name"]
        for t in interpreter.get_tensor_details()
        if np.dtype(t["dtype"]).kind == "f" and t["index"] not in io_indices
    ]


def _check_full_integer(name, path, int8_io):
    names = float_tensors(path)
    if names:
        warnings.warn(
            f"The int8 file of the quantize-aware student {name!r} still "
            f"holds {len(names)} float tensors ({', '.join(names[:5])}): a "
            "layer's output has no trained range. Please report the layer "
            "types of the student.",
            UserWarning,
            stacklevel=3,
        )


_SUBPROCESS_EXPORT = """
import sys
import keras
import keras_kd
from keras_kd.export import litert
model = keras.saving.load_model(sys.argv[1], compile=False)
litert._export_quantize_aware(
    model, sys.argv[2], litert._input_signature(model), sys.argv[3] == "1")
"""


def _export_in_tensorflow_process(student, path, int8_io):
    import importlib.util
    import subprocess
    import sys

    backend = keras.backend.backend()
    if importlib.util.find_spec("tensorflow") is None:
        raise export_backend_error(backend, missing_tensorflow=True)
    with tempfile.TemporaryDirectory() as folder:
        saved = os.path.join(folder, "student.keras")
        student.save(saved)
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        result = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS_EXPORT, saved, path,
             "1" if int8_io else "0"],
            env=env,
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise RuntimeError(
            f"Converting the quantize-aware student {student.name!r} with "
            f"TensorFlow (from the {backend!r} backend) failed. No file was "
            "written. Last lines of the TensorFlow process: "
            + " | ".join(lines[-5:])
        )


def _get_student(model):
    student = getattr(model, "student", None)
    if isinstance(student, keras.Model):
        return validation.check_model("student", student)
    if isinstance(model, keras.Model):
        return validation.check_model("model", model)
    raise export_model_type_error(model)


def _import_tensorflow():
    """Returns the `tensorflow` module, or the error saying how to export."""
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise export_backend_error(backend)
    try:
        import tensorflow as tf
    except ImportError as error:
        raise export_backend_error(
            backend, missing_tensorflow=True
        ) from error
    return tf


def _input_signature(student):
    """The signature `Model.export` infers, with the student's batch size.

    Keras' (private) helper makes every batch axis `None`; a student built
    with `keras.Input(..., batch_size=n)` keeps `n` here.
    """
    from keras.src.export.export_utils import get_input_signature

    signature = get_input_signature(student)
    specs = keras.tree.flatten(signature)
    inputs = getattr(student, "inputs", None) or []
    if len(inputs) != len(specs):  # Subclassed models: dynamic batch.
        return signature
    specs = [
        keras.InputSpec(
            shape=(tensor.shape[0],) + tuple(spec.shape[1:]),
            dtype=spec.dtype,
            name=spec.name,
        )
        for spec, tensor in zip(specs, inputs)
    ]
    return keras.tree.pack_sequence_as(signature, specs)


def _single_input_spec(input_signature):
    flat = keras.tree.flatten(input_signature)
    if len(flat) != 1:
        raise _data.multiple_io_error("input", len(flat))
    return flat[0]


def _converter_options(tf, quantization, samples, int8_io):
    """Builds the `TFLiteConverter` attributes for a quantization mode."""
    # Keras adds `SELECT_TF_OPS` by default, whose (Flex) ops the
    # `ai_edge_litert` interpreter cannot run; built-in ops only, so an
    # unsupported op fails here rather than on the device.
    target_spec = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    options = {"target_spec": target_spec}
    if quantization == "none":
        return options
    options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        target_spec["supported_types"] = [tf.float16]
    elif quantization == "int8":
        target_spec["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        options["representative_dataset"] = functools.partial(
            _representative_dataset, samples
        )
        if int8_io:
            options["inference_input_type"] = tf.int8
            options["inference_output_type"] = tf.int8
    return options


def _representative_dataset(samples):
    # The converter wants a callable returning an iterable of input lists.
    for sample in samples:
        yield [sample]


def _convert_with_archive(tf, student, path, input_signature, options):
    """`LiteRTExporter._convert_to_tflite` of Keras 3.15, minus its backend
    check: ExportArchive -> SavedModel -> TFLiteConverter."""
    if not isinstance(input_signature, (list, tuple)):
        input_signature = [input_signature]
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive = keras.export.ExportArchive()
        archive.track(student)
        archive.add_endpoint(
            "serve",
            functools.partial(student.__call__, training=False),
            input_signature=input_signature,
        )
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.experimental_enable_resource_variables = True
        for attribute, value in options.items():
            if attribute == "target_spec":
                for key, spec_value in value.items():
                    setattr(converter.target_spec, key, spec_value)
            else:
                setattr(converter, attribute, value)
        content = converter.convert()
    with open(path, "wb") as f:
        f.write(content)


_OP_PATTERNS = (
    re.compile(r"(?:TF Select ops|Custom ops|Flex ops): ([\w.]+(?:, [\w.]+)*)"),
    re.compile(r"'((?:tf|tfl|vhlo|stablehlo|mhlo)\.[\w.]+)' op"),
    re.compile(r"legalize operation '([\w.]+)'"),
)


def _summarize_converter_error(message):
    """Returns (op names, short text) from a TFLite `ConverterError`."""
    ops = []
    for pattern in _OP_PATTERNS:
        for match in pattern.finditer(message):
            for op in match.group(1).split(", "):
                if op not in ops:
                    ops.append(op)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    useful = [line for line in lines if "error" in line or "ops:" in line]
    details = " | ".join((useful or lines)[-3:])
    return ops, details[-600:]


# Error messages.


def check_tflite_path(path):
    """Returns `path` as a string if it names a `.tflite` file we can write."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "Argument `path` must be a string or `os.PathLike` ending in "
            f"`.tflite`. Received: path={path!r} of type {type(path).__name__}"
        )
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(
            f"Argument `path` must end in `.tflite`. Received: path={path!r}"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(
            f"The directory of `path` does not exist: {directory!r}. Create "
            f"it first (`os.makedirs(...)`). Received: path={path!r}"
        )
    return io.check_file_target("path", path)


def export_model_type_error(model):
    return TypeError(
        "Argument `model` must be a `keras.Model` (the student) or an object "
        "with a `.student` attribute that is one, such as a "
        "`keras_kd.Distiller`. Received: "
        f"model={model!r} of type {type(model).__name__}"
    )


def int8_io_error(quantization):
    return ValueError(
        "Argument `int8_io=True` makes the model take and return int8 "
        "tensors, which needs a fully quantized model. Pass "
        "`quantization='int8'` (with `representative_data=`), or "
        f"`int8_io=False`. Received: quantization={quantization!r}"
    )


def missing_representative_data_error():
    return ValueError(
        "`quantization='int8'` calibrates the activation ranges on sample "
        "inputs, so it needs `representative_data`: a NumPy array, an "
        "`(x, y)` tuple, a `tf.data.Dataset` or an iterable of batches taken "
        "from the distillation data (for example `representative_data="
        "x_train`). Received: representative_data=None"
    )


def representative_data_ignored_message(quantization):
    return (
        "Argument `representative_data` is only used with "
        f"`quantization='int8'`; it is ignored for "
        f"quantization={quantization!r}."
    )


def export_backend_error(backend, missing_tensorflow=False):
    how = (
        "Save the student with `student.save('student.keras')`, load it in "
        "a process started with `KERAS_BACKEND=tensorflow` "
        "(`keras.saving.load_model('student.keras')`), and call "
        "`keras_kd.export.export_student(student, 'student.tflite')` there."
    )
    if missing_tensorflow:
        return ImportError(
            f"Exporting to LiteRT on the {backend!r} backend converts the "
            "student with TensorFlow (jax2tf and the TFLite converter), which "
            "is not installed. Install it with `pip install tensorflow`, or "
            f"export under TensorFlow: {how} Received: backend={backend!r}"
        )
    return NotImplementedError(
        f"keras_kd.export cannot export on the {backend!r} backend; it "
        f"supports 'tensorflow' and 'jax'. {how} Received: backend={backend!r}"
    )


def unsupported_ops_error(model_name, quantization, ops, details):
    listed = ", ".join(ops) if ops else "see the converter message below"
    return ValueError(
        f"The student {model_name!r} uses operations that the LiteRT "
        f"built-in op set cannot run with quantization={quantization!r}: "
        f"{listed}. Replace the layers that use them with layers built on "
        "supported ops (for example avoid `keras.ops.linalg` decompositions "
        "in the forward pass), or try another `quantization`. No file was "
        f"written. Converter message (last lines): {details}"
    )


def student_preprocessing_message(preprocessing):
    return (
        "The Distiller applies `student_preprocessing` "
        f"({validation.short_repr(preprocessing)}) before the student, but the "
        "exported file holds the student alone. Apply the same "
        "preprocessing to the inputs of the `.tflite` model, or export a "
        "`keras.Sequential([preprocessing, student])` instead."
    )
