"""Argument and model checks: the one place where keras_kd writes error text.

Every message follows the Keras sentence: the argument in backticks, what is
expected, the value received, and how to fix it.
"""

import difflib
import math
import numbers

import keras


def check_positive_number(name, value):
    """Returns `value` as a float if it is a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a positive finite number. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"Argument `{name}` must be a positive finite number. "
            f"Received: {name}={value}"
        )
    return float(value)


def check_non_negative_number(name, value):
    """Returns `value` as a float if it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a finite number >= 0. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"Argument `{name}` must be a finite number >= 0. "
            f"Received: {name}={value}"
        )
    return float(value)


def check_unit_interval(name, value):
    """Returns `value` as a float if it lies in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a number in [0, 1]. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"Argument `{name}` must be a number in [0, 1]. "
            f"Received: {name}={value}"
        )
    return float(value)


def check_one_of(name, value, options):
    """Returns `value` if it is one of `options`, else a helpful error."""
    if value in options:
        return value
    message = (
        f"Argument `{name}` must be one of {sorted(options)}. "
        f"Received: {name}={value!r}"
    )
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(o) for o in options])
        if close:
            message += f". Did you mean {close[0]!r}?"
    raise ValueError(message)


def unknown_name_error(kind, name, known, where=""):
    """Builds the ValueError for a name that does not exist."""
    close = difflib.get_close_matches(str(name), list(known), n=3)
    hint = f" Close matches: {close}." if close else ""
    where = f" in {where}" if where else ""
    return ValueError(
        f"Unknown {kind} {name!r}{where}. Expected one of "
        f"{sorted(known)}.{hint}"
    )


def check_model(role, model):
    """Checks that `model` is a built `keras.Model`."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `{role}` must be a `keras.Model`. "
            f"Received: {role}={model!r} of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"The {role} model {model.name!r} is not built, so its weights "
            f"and output shape are unknown. Build it first: give it an "
            f"`keras.Input`, call `{role}.build(input_shape)`, or call it on a "
            f"batch of data. Received: {role}.built=False"
        )
    return model


def check_student_trainable(student):
    if not student.trainable_weights:
        raise ValueError(
            f"The student model {student.name!r} has no trainable weights, so "
            "distillation cannot change it. Set `student.trainable = True` "
            "(and unfreeze its layers). Received: "
            f"len(student.trainable_weights)=0"
        )


def check_class_counts(teacher_classes, student_classes):
    if (
        teacher_classes is not None
        and student_classes is not None
        and teacher_classes != student_classes
    ):
        raise ValueError(
            "The teacher and the student must predict the same classes, but "
            f"the teacher outputs {teacher_classes} logits and the student "
            f"{student_classes}. Give the student a last layer with "
            f"{teacher_classes} units. Received: teacher classes="
            f"{teacher_classes}, student classes={student_classes}"
        )


def input_shape_mismatch_error(teacher_shape, student_shape):
    return ValueError(
        "The teacher and the student take inputs of different shapes, and no "
        "preprocessing maps the batch to both. Pass "
        "`teacher_preprocessing=` and/or `student_preprocessing=` (for example "
        "`keras.layers.Resizing(...)`) so each model receives the shape it "
        f"expects. Received: teacher input {teacher_shape}, student input "
        f"{student_shape}"
    )


def student_probabilities_error(student_name, how):
    return ValueError(
        f"The student {student_name!r} outputs probabilities ({how}), but "
        "distillation trains on logits: a softmax before the loss squashes "
        "the gradients and breaks the temperature. Build the student with "
        "`activation=None` on its last layer; add `keras.layers.Softmax()` "
        "after training if the deployed model must return probabilities."
    )


def teacher_probabilities_message(teacher_name, how):
    return (
        f"The teacher {teacher_name!r} outputs probabilities ({how}). "
        "keras_kd converts them to logits with `log(p)` (exact up to a "
        "constant, which softmax ignores). Pass `teacher_outputs='logits'` to "
        "silence this check, or `'probabilities'` to say so explicitly."
    )


def check_teacher_outputs_mode(value):
    return check_one_of(
        "teacher_outputs", value, ("auto", "logits", "probabilities")
    )


def cache_mismatch_error(what, expected, received):
    return ValueError(
        f"The cached teacher outputs do not match this Distiller: {what}. "
        f"Expected: {expected}. Received: {received}. Recompute the cache "
        "with `keras_kd.data.cache_teacher_outputs` for this teacher and "
        "these features."
    )


def missing_teacher_error():
    return ValueError(
        "This Distiller was saved without its teacher (the default, so the "
        "file holds only the student, the heads and the training state). "
        "Load it with `keras_kd.load_distiller(path, teacher=teacher)`, "
        "where `teacher` is the teacher model or the path of its `.keras` "
        "file; or save with `Distiller(..., save_teacher=True)`."
    )


def check_number_at_least(name, value, minimum):
    """Returns `value` as a float if it is a finite number >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a finite number >= {minimum}. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or value < minimum:
        raise ValueError(
            f"Argument `{name}` must be a finite number >= {minimum}. "
            f"Received: {name}={value}"
        )
    return float(value)


def _shape_text(shape):
    return str(tuple(shape))


def feature_shape_mismatch_error(loss_name, teacher_shape, student_shape):
    return ValueError(
        f"`{loss_name}` compares teacher and student features element by "
        "element, so both must have the same shape. Received: "
        f"teacher_features.shape={_shape_text(teacher_shape)}, "
        f"student_features.shape={_shape_text(student_shape)}. Put a "
        "projection on the student (for example a `Dense` or 1x1 `Conv2D` "
        "layer) so its features take the teacher's shape."
    )


def feature_rank_error(loss_name, argument, shape, expected):
    return ValueError(
        f"`{loss_name}` expects `{argument}` of {expected}. Received: "
        f"{argument}.shape={_shape_text(shape)}"
    )


def attention_spatial_mismatch_error(teacher_shape, student_shape):
    return ValueError(
        "`attention_transfer` average-pools the larger attention map down to "
        "the smaller one, which needs each spatial size of the larger map to "
        "be a multiple of the smaller one. Received: "
        f"teacher_features.shape={_shape_text(teacher_shape)}, "
        f"student_features.shape={_shape_text(student_shape)}. Pick layers "
        "whose spatial sizes divide evenly, or resize one of the maps first "
        "(for example with `keras.layers.Resizing`)."
    )


def batch_size_mismatch_error(loss_name, teacher_shape, student_shape):
    return ValueError(
        f"`{loss_name}` needs the teacher and the student features of the "
        "same samples, so both must have the same batch size. Received: "
        f"teacher_features.shape={_shape_text(teacher_shape)}, "
        f"student_features.shape={_shape_text(student_shape)}"
    )


def check_relation_batch_size(loss_name, batch_size):
    """Raises if a relation loss gets a batch with a single sample."""
    if batch_size is not None and batch_size < 2:
        raise ValueError(
            f"`{loss_name}` compares the samples of a batch with each other, "
            "so it needs at least 2 samples per batch. Received: "
            f"batch_size={batch_size}. Use a batch size of 2 or more (and "
            "`drop_remainder=True` in `tf.data`, or a dataset size that the "
            "batch size divides, so the last batch is not a single sample)."
        )
    return batch_size


# Export to LiteRT (`keras_kd.export`).

LITERT_IMPORT_MESSAGE = (
    "keras_kd.export requires ai-edge-litert. Install it with: "
    "pip install 'keras-kd[litert]'"
)


def check_positive_integer(name, value):
    """Returns `value` if it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be a positive integer. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(
            f"Argument `{name}` must be a positive integer. "
            f"Received: {name}={value}"
        )
    return int(value)


def check_bool(name, value):
    """Returns `value` as a bool if it is a Python or NumPy boolean."""
    import numpy as np

    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"Argument `{name}` must be a boolean. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    return bool(value)


def check_tflite_path(path):
    """Returns `path` as a string if it names a `.tflite` file we can write."""
    import os

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
    return path


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


def empty_data_error(name, data):
    return ValueError(
        f"Argument `{name}` yielded no examples. Pass at least one batch of "
        "inputs (int8 calibration and the parity report measure on them). "
        f"Received: {name}={_short_repr(data)}"
    )


def representative_data_ignored_message(quantization):
    return (
        "Argument `representative_data` is only used with "
        f"`quantization='int8'`; it is ignored for "
        f"quantization={quantization!r}."
    )


def export_data_type_error(name, data):
    return TypeError(
        f"Argument `{name}` must be a NumPy array or tensor of inputs, an "
        "`(x, y)` or `(x, y, sample_weight)` tuple, a `tf.data.Dataset` or "
        "an iterable of such batches, with one input tensor per batch. "
        f"Received: {name}={_short_repr(data)} of type {type(data).__name__}"
    )


def input_shape_error(name, expected, received):
    return ValueError(
        f"Argument `{name}` holds inputs of shape {received}, but the model "
        f"takes inputs of shape {expected} (`None` is any size). Reshape the "
        f"data to match the student's input. Received: {name} of shape "
        f"{received}"
    )


def multiple_io_error(what, count):
    return NotImplementedError(
        f"keras_kd.export runs and calibrates models with one input and one "
        f"output, but this model has {count} {what}s. Export it with "
        "`model.export(path, format='litert')` and drive "
        "`ai_edge_litert.interpreter.Interpreter` yourself. Received: "
        f"{count} {what}s"
    )


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


def _short_repr(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def student_preprocessing_message(preprocessing):
    return (
        "The Distiller applies `student_preprocessing` "
        f"({_short_repr(preprocessing)}) before the student, but the "
        "exported file holds the student alone. Apply the same "
        "preprocessing to the inputs of the `.tflite` model, or export a "
        "`keras.Sequential([preprocessing, student])` instead."
    )


def augmented_cache_error():
    return ValueError(
        "This batch carries cached teacher outputs, but the Distiller has an "
        "`augmentation`: the teacher's cached outputs belong to the original "
        "images, not to the augmented ones the student would see. Use the "
        "live teacher with augmentation (no cache), or drop `augmentation=` "
        "to train on the cache."
    )


# Hyperparameter search (`keras_kd.tuning`).

TUNING_IMPORT_MESSAGE = (
    "keras_kd.tuning requires KerasTuner. Install it with: "
    "pip install 'keras-kd[tuning]'"
)

_RANGE_DOMAINS = {
    "positive": "positive finite numbers",
    "unit": "numbers in [0, 1]",
    "non_negative": "finite numbers >= 0",
}


def _in_domain(value, domain):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if not math.isfinite(value):
        return False
    if domain == "positive":
        return value > 0
    if domain == "unit":
        return 0.0 <= value <= 1.0
    return value >= 0


def check_search_space(name, value, domain):
    """Reads a search-space argument: a fixed value, a range or choices.

    Args:
        name: The argument name (also the hyperparameter name).
        value: A number (fixed), a `(min, max)` tuple (a range) or a list of
            numbers (choices).
        domain: `"positive"`, `"unit"` or `"non_negative"`.

    Returns:
        `("fixed", value)`, `("range", min, max)` or `("choice", values)`,
        with floats; choices keep their order (the first is the default).
    """
    expected = (
        f"Argument `{name}` must be a number (a fixed value), a "
        "`(min, max)` tuple (a range to search) or a list of numbers (the "
        "values to choose from)"
    )
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(
                f"{expected}; a tuple must hold exactly `(min, max)`. "
                f"Received: {name}={value!r}"
            )
        items = list(value)
    elif isinstance(value, list):
        if not value:
            raise ValueError(
                f"{expected}; the list of choices is empty. "
                f"Received: {name}={value!r}"
            )
        items = list(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        items = [value]
    else:
        raise TypeError(
            f"{expected}. Received: {name}={value!r} of type "
            f"{type(value).__name__}"
        )
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Real):
            raise TypeError(
                f"{expected}. Received: {name}={value!r}, which holds "
                f"{item!r} of type {type(item).__name__}"
            )
    if not all(_in_domain(item, domain) for item in items):
        raise ValueError(
            f"Argument `{name}` must hold {_RANGE_DOMAINS[domain]}. "
            f"Received: {name}={value!r}"
        )
    items = [float(item) for item in items]
    if isinstance(value, tuple):
        low, high = items
        if low > high:
            raise ValueError(
                f"Argument `{name}` is a range `(min, max)` whose min is "
                f"larger than its max. Received: {name}={value!r}. Pass "
                f"`{name}=({high!r}, {low!r})`."
            )
        if low == high:
            return ("fixed", low)
        return ("range", low, high)
    if isinstance(value, list):
        return ("choice", list(dict.fromkeys(items)))
    return ("fixed", items[0])


def student_source_type_error(student):
    return TypeError(
        "Argument `student` must be a function that builds a new student "
        "`keras.Model` (called once per trial, optionally with `hp`), or a "
        "built `keras.Model` whose architecture is cloned with fresh weights "
        f"for every trial. Received: student={_short_repr(student)} of type "
        f"{type(student).__name__}"
    )


def built_student_type_error(result):
    return TypeError(
        "The student builder must return a new `keras.Model` (the student, "
        "returning logits) each time it is called. Received: the builder "
        f"returned {_short_repr(result)} of type {type(result).__name__}"
    )


def reused_student_error(name):
    return ValueError(
        f"The student builder returned the model {name!r} again. Every "
        "trial must start from a fresh student, so create the model inside "
        "the function (or pass the model itself as `student=`, which is "
        "cloned with new weights for every trial). Received: the same "
        "`keras.Model` object twice"
    )


def incompatible_student_error(error):
    cls = TypeError if isinstance(error, TypeError) else ValueError
    return cls(
        "The student built for this search cannot be distilled from the "
        f"teacher: {error}"
    )


def feature_weights_without_features_error(feature_weights):
    return ValueError(
        "Argument `feature_weights` sets the weights of `features`, but no "
        "`features` were given. Pass `features=[keras_kd.FeatureMatch(...)]`"
        " or leave `feature_weights=None`. Received: "
        f"feature_weights={feature_weights!r}, features=None"
    )


def missing_objective_error():
    return ValueError(
        "The tuner has no `objective`, so it cannot rank the Distillers it "
        "trains. Pass the student's validation metric, for example "
        "`keras_tuner.RandomSearch(hypermodel, objective='val_accuracy', "
        "...)`. Received: objective=None"
    )


def objective_not_logged_error(name, logged):
    close = difflib.get_close_matches(str(name), list(logged), n=3)
    hint = f" Close matches: {close}." if close else ""
    return ValueError(
        f"The objective {name!r} is not logged by the Distiller, so no trial "
        f"could ever be scored. Expected one of {sorted(logged)}.{hint} "
        f"Received: objective={name!r}"
    )


def objective_without_validation_error(name):
    return ValueError(
        f"The objective {name!r} is measured on validation data, but "
        "`search()` received no `validation_data` and no `validation_split`."
        " Pass `tuner.search(x, y, validation_data=(x_val, y_val), ...)`. "
        f"Received: objective={name!r}, validation_data=None"
    )


def loss_objective_message(name):
    return (
        f"The objective {name!r} is a distillation loss. Losses computed at "
        "different temperatures and alphas are not comparable (the soft loss "
        "grows with the temperature), so the search would rank them by their "
        "scale. Use the student's validation metric instead, for example "
        "`objective='val_accuracy'`."
    )


def uncached_teacher_message(reason):
    return (
        f"The teacher's outputs are not cached for this search ({reason}), "
        "so every trial runs the teacher on every training batch. For "
        "searches that cost about one student training per trial, pass "
        "arrays, or a `tf.data.Dataset` that yields the same batches on "
        "every pass (no reshuffling, no random augmentation)."
    )


def diverged_trial_message(values):
    shown = ", ".join(f"{k}={v!r}" for k, v in sorted(values.items()))
    return (
        f"The trial diverged: the training loss became NaN or Inf ({shown}). "
        "keras.callbacks.TerminateOnNaN stopped it; it is recorded as FAILED "
        "and the search goes on. Lower the learning rate or narrow the "
        "ranges if many trials fail."
    )


def tuner_type_error(tuner):
    return TypeError(
        "Argument `tuner` must be a KerasTuner tuner built with a "
        "`keras_kd.tuning.DistillerHyperModel`, for example "
        "`keras_tuner.RandomSearch(DistillerHyperModel(...), ...)`. "
        f"Received: tuner={_short_repr(tuner)} of type "
        f"{type(tuner).__name__}"
    )


def no_completed_trial_error(statuses):
    return ValueError(
        "The search has no completed trial to take the student from. Run "
        "`tuner.search(...)` first; if trials failed, read "
        "`tuner.oracle.trials[trial_id].message`. Received: trial statuses "
        f"{statuses}"
    )


def check_png_path(path):
    """Returns `path` as a string if it names a `.png` file."""
    import os

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "Argument `path` must be a string or `os.PathLike` ending in "
            f"`.png`. Received: path={path!r} of type {type(path).__name__}"
        )
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(
            f"Argument `path` must end in `.png`. Received: path={path!r}"
        )
    return path


# Command line (`keras_kd.cli`). Flags are named as the user typed them.


def cli_missing_path_error(flag, path, kind="file"):
    return FileNotFoundError(
        f"Argument `{flag}` names a {kind} that does not exist. Check the "
        f"path (relative paths start from {_cwd()!r}). Received: "
        f"{flag}={path!r}"
    )


def _cwd():
    import os

    return os.getcwd()


def cli_model_load_error(flag, path, error):
    return ValueError(
        f"Argument `{flag}` must be a Keras model saved with "
        f"`model.save('model.keras')`, but loading it failed "
        f"({type(error).__name__}: {error}). Received: {flag}={path!r}"
    )


def cli_suffix_error(flag, path, suffixes):
    expected = " or ".join(f"`{s}`" for s in suffixes)
    return ValueError(
        f"Argument `{flag}` must be a path ending in {expected}. Received: "
        f"{flag}={path!r}"
    )


def cli_feature_spec_error(value):
    return ValueError(
        "Argument `--feature` must be `TEACHER_LAYER:STUDENT_LAYER`, two "
        "layer names joined by one colon (for example "
        f"`--feature dense:hidden`). Received: --feature={value!r}"
    )


def cli_data_spec_error(flag, value):
    return ValueError(
        f"Argument `{flag}` must be 'digits', a `.npz` file in the "
        "keras.datasets layout, a folder of images (one sub-folder per "
        "class) or a TensorFlow Datasets name (with `--data-dir`). Received: "
        f"{flag}={value!r}"
    )


def cli_npz_inputs_error(flag, path, keys):
    return ValueError(
        f"Argument `{flag}` must be a `.npz` holding the inputs as `x_train` "
        f"(or `x`). Received: {flag}={path!r} with arrays {sorted(keys)}"
    )


def cli_empty_folder_error(flag, path):
    return ValueError(
        f"Argument `{flag}` names a folder without images. Expected image "
        "files (.png, .jpg, .jpeg, .bmp, .gif), in one sub-folder per class "
        f"for labeled data. Received: {flag}={path!r}"
    )


def cli_input_shape_error(role, flag, expected, received):
    return ValueError(
        f"The {role} takes inputs of shape {tuple(expected)}, but the data "
        f"of `{flag}` has samples of shape {tuple(received)}. Pass data of "
        f"the {role}'s input shape, or a model built for this data."
    )


def cli_label_range_error(flag, num_classes, low, high):
    return ValueError(
        f"The labels of `{flag}` must lie in [0, {num_classes}), the classes "
        f"of the student's {num_classes} logits. Received labels from {low} "
        f"to {high}"
    )


def cli_validation_split_error(value):
    return ValueError(
        "Argument `--validation-split` must be a number in [0, 1) that leaves "
        "at least one sample on each side. Received: "
        f"--validation-split={value!r}"
    )


def cli_requires_error(flag, needs, received):
    return ValueError(
        f"Argument `{flag}` needs {needs}. Received: {received}"
    )


def cli_at_least_error(flag, minimum, value):
    return ValueError(
        f"Argument `{flag}` must be at least {minimum}. Received: "
        f"{flag}={value}"
    )


PLOT_IMPORT_MESSAGE = (
    "keras_kd.tuning.plot_trials requires Matplotlib. Install it with: "
    "pip install 'keras-kd[tuning]'"
)


def cli_tfds_data_dir_error(flag, name):
    return ValueError(
        f"Argument `{flag}` names the TensorFlow Datasets dataset {name!r}, "
        "which keras-kd reads only from a folder where it is already "
        "prepared (it never downloads). Pass `--data-dir DIR` (or set "
        "TFDS_DATA_DIR), or pass 'digits' or a `.npz` file. Received: "
        f"{flag}={name!r} without --data-dir"
    )


def cli_demo_dataset_error(value):
    return ValueError(
        "Argument `--dataset` of `keras-kd demo` must be 'digits', a `.npz` "
        "file in the keras.datasets layout or a TensorFlow Datasets name: "
        "the demo needs a test split and builds its models for the images. "
        "Distil your own models on an image folder with `keras-kd distill`. "
        f"Received: --dataset={value!r}"
    )
