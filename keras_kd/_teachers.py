"""The teachers of a Distiller: names, output kinds and probability outputs.

Error texts about the models given to a Distiller live here, beside the
checks that raise them.
"""

import contextlib
import warnings

import keras
from keras import ops

from keras_kd.utils import keras_compat
from keras_kd.utils import models as model_utils
from keras_kd.utils import validation

OUTPUT_MODES = ("auto", "softmax", "sigmoid")


def normalize_teachers(teacher, teachers):
    """Returns `(names, models, paths)` from the `teacher`/`teachers` args.

    Each entry may be a `keras.Model` or the path of a `.keras` file; a list
    takes the models' names, a dict its keys.
    """
    if teacher is not None and teachers is not None:
        raise ValueError(
            "Pass either `teacher` (one model) or `teachers` (a list or dict "
            "of models), not both. Received: teacher="
            f"{_short(teacher)}, teachers={_short(teachers)}"
        )
    given = teachers if teachers is not None else teacher
    if given is None:
        raise ValueError(
            "A Distiller needs a teacher. Pass `teacher=model` or "
            "`teachers=[model, ...]`. Received: teacher=None"
        )
    if isinstance(given, dict):
        items = [(str(k), v) for k, v in given.items()]
    elif isinstance(given, (list, tuple)):
        items = [(None, v) for v in given]
    else:
        items = [(None, given)]
    if not items:
        raise ValueError(
            "Argument `teachers` is empty. Pass at least one teacher model. "
            f"Received: teachers={given!r}"
        )
    names, models, paths = [], [], []
    for name, model in items:
        if name is not None and "/" in name:
            raise ValueError(
                "Teacher names may not contain '/', which keras_kd uses in "
                f"the keys of cached outputs. Received: a teacher named "
                f"{name!r}"
            )
        path = None
        if isinstance(model, str):
            from keras_kd.utils import io

            path = model
            io.check_keras_file("teacher", model)
            model = keras.saving.load_model(model, compile=False)
        validation.check_model("teacher", model)
        names.append(name or model.name)
        models.append(model)
        paths.append(path)
    if len(set(names)) != len(names):
        raise ValueError(
            "Several teachers have the same name, so terms and caches could "
            "not tell them apart. Pass a dict `teachers={'a': t1, 'b': t2}`. "
            f"Received names: {names}"
        )
    return names, models, paths


def teacher_index(names, teacher, term_name):
    """The index of the teacher a term names (a name or an index)."""
    if isinstance(teacher, int) and not isinstance(teacher, bool):
        if 0 <= teacher < len(names):
            return teacher
    elif teacher in names:
        return names.index(teacher)
    raise validation.unknown_name_error(
        "teacher", teacher, names,
        where=f"the Distiller's teachers (term {term_name!r})"
    )


def last_activation(model):
    """`"softmax"`, `"sigmoid"` or None: what the output layer applies."""
    layer = model_utils.last_layer(model)
    if layer is None:
        return None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None) if activation else None
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", None)
    return name if name in ("softmax", "sigmoid") else None


def detect_outputs(outputs, teachers, student, num_classes):
    """Resolves `outputs="auto"` to `"softmax"` or `"sigmoid"`."""
    outputs = validation.check_one_of("outputs", outputs, OUTPUT_MODES)
    if outputs == "softmax" and num_classes == 1:
        raise ValueError(
            "The models output one logit, and a softmax over one logit is "
            "always 1: nothing would be distilled and nothing trained. A "
            "one-logit model is a binary classifier: use `outputs='sigmoid'` "
            "(or 'auto'). Received: outputs='softmax', num_classes=1"
        )
    if outputs != "auto":
        return outputs
    if num_classes == 1:
        return "sigmoid"
    if any(last_activation(t) == "sigmoid" for t in teachers):
        return "sigmoid"
    return "softmax"


def check_student_logits(student, outputs):
    activation = last_activation(student)
    how = None
    if activation is not None:
        how = f"its last layer applies a {activation}"
    elif outputs == "softmax":
        how = model_utils.detect_probabilities(student)
    if how:
        raise ValueError(
            f"The student {student.name!r} outputs probabilities ({how}), "
            "but distillation trains on logits: an activation before the "
            "loss squashes the gradients and breaks the temperature. Build "
            "the student with `activation=None` on its last layer; add the "
            "activation after training if the deployed model must return "
            "probabilities."
        )


def converts_probabilities(teacher, mode, outputs):
    """Whether the teacher's outputs must be turned into logits."""
    mode = validation.check_one_of(
        "teacher_outputs", mode, ("auto", "logits", "probabilities")
    )
    if mode != "auto":
        return mode == "probabilities"
    activation = last_activation(teacher)
    if activation is not None:
        how = f"its last layer {model_utils.last_layer(teacher).name!r} " \
            f"applies a {activation}"
    elif outputs == "softmax":
        how = model_utils.detect_probabilities(teacher)
    else:
        how = None
    if not how:
        return False
    inverse = "`log(p)`" if outputs == "softmax" else "`log(p / (1 - p))`"
    warnings.warn(
        f"The teacher {teacher.name!r} outputs probabilities ({how}). "
        f"keras_kd converts them to logits with {inverse} (exact up to a "
        "constant, which softmax ignores). Pass `teacher_outputs='logits'` "
        "to silence this check, or `'probabilities'` to say so explicitly.",
        UserWarning,
        stacklevel=4,
    )
    return True


def to_logits(probabilities, outputs):
    """Logits from a teacher's probabilities (see `converts_probabilities`)."""
    p = ops.cast(probabilities, "float32")
    if outputs == "sigmoid":
        p = ops.clip(p, 1e-7, 1.0 - 1e-7)
        return ops.log(p) - ops.log1p(-p)
    return ops.log(ops.maximum(p, 1e-30))


def check_class_counts(names, teachers, student_classes, student_rank=None):
    _check_teachers_agree(names, teachers, student_classes)
    for name, teacher in zip(names, teachers):
        classes = model_utils.num_classes(teacher)
        rank = model_utils.output_rank(teacher)
        if None not in (rank, student_rank) and rank != student_rank:
            raise ValueError(
                f"The teacher {name!r} outputs logits of rank {rank} and the "
                f"student of rank {student_rank}: a term compares them "
                "position by position, so both must output "
                "`(batch_size, num_classes)` or both "
                "`(batch_size, sequence_length, vocabulary_size)`. Received: "
                f"teacher rank={rank}, student rank={student_rank}"
            )
        if None not in (classes, student_classes) and \
                classes != student_classes and (rank or 2) > 2:
            raise ValueError(
                "The teacher and the student must share one vocabulary, but "
                f"the teacher {name!r} has a vocabulary of {classes} tokens "
                f"and the student {student_classes}. Build the student with "
                f"`vocabulary_size={classes}` and the teacher's tokenizer; "
                "if the teacher's extra rows are only padding of the same "
                "tokenizer, wrap it in "
                "`keras_kd.vocabulary.TruncatedVocabulary(teacher, "
                f"{student_classes})`. "
                f"Received: teacher vocabulary_size={classes}, student "
                f"vocabulary_size={student_classes}"
            )
        if None not in (classes, student_classes) and \
                classes != student_classes:
            raise ValueError(
                "The teacher and the student must predict the same classes, "
                f"but the teacher {name!r} outputs {classes} logits and the "
                f"student {student_classes}. Give the student a last layer "
                f"with {classes} units. Received: teacher classes={classes}, "
                f"student classes={student_classes}"
            )


def _check_teachers_agree(names, teachers, student_classes):
    """Several teachers must output as many logits as each other: name each
    teacher's count, since the student cannot follow both."""
    counts = {name: model_utils.num_classes(teacher)
              for name, teacher in zip(names, teachers)}
    known = {name: c for name, c in counts.items() if c is not None}
    if len(set(known.values())) < 2:
        return
    each = ", ".join(f"teacher {name!r} outputs {c}"
                     for name, c in known.items())
    raise ValueError(
        "The teachers disagree on the number of classes: "
        f"{each} logits (the student {student_classes}). Every teacher "
        "and the student must predict the same classes: pass teachers "
        "trained on the same labels. Received: teacher classes="
        f"{dict(known)}, student classes={student_classes}"
    )


def _short(value):
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


TEACHER_DTYPES = ("float32", "bfloat16", "float16")


def check_teacher_dtype(value):
    if value is None:
        return None
    if value not in TEACHER_DTYPES:
        raise ValueError(
            "Argument `teacher_dtype` must be None (the teacher's own "
            f"precision) or one of {list(TEACHER_DTYPES)}. Received: "
            f"teacher_dtype={value!r}"
        )
    return value


@contextlib.contextmanager
def computing_in(models, dtype):
    """Runs the teachers' layers in `dtype` (their weights stay as they
    are, cast when read, as in Keras mixed precision), and restores every
    layer's own policy afterwards, so the user's model is left unchanged.

    A traced step records the reduced-precision computation; an eager step
    switches the policies around each teacher call.
    """
    if dtype is None:
        yield
        return
    policy = keras.DTypePolicy(
        dtype if dtype == "float32" else f"mixed_{dtype}")
    saved = []
    seen = set()
    for model in models:
        for layer in [model] + list(keras_compat.flatten_layers(model)):
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            own = layer.dtype_policy
            if getattr(own, "quantization_mode", None) is not None:
                continue  # A quantized layer keeps its own computation.
            saved.append((layer, own))
            layer.dtype_policy = policy
    try:
        yield
    finally:
        for layer, own in saved:
            layer.dtype_policy = own
