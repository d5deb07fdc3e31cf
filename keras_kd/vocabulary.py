"""Teachers whose vocabulary is the student's plus padding rows.

Model families pad their output layer beyond the tokenizer (Qwen2.5's
7B model has 152,064 logits for the same 151,665-token tokenizer as its
0.5B model's 151,936). Such a teacher and student share the first entries;
the Distiller still refuses different vocabulary sizes, because for
different tokenizers the entries mean different tokens. Wrapping the
teacher in `TruncatedVocabulary` is the explicit opt-in: it keeps the first
`vocabulary_size` logits, and `dropped_mass` says how much of the teacher's
probability the dropped rows held (near 0 for padding rows that were never
trained to be predicted; a large value means the vocabularies differ).
"""

import keras
from keras import ops

from keras_kd.utils import validation


def dropped_mass(teacher_logits, vocabulary_size, temperature=1.0):
    """The teacher's probability on the entries at or after `vocabulary_size`.

    Formula:

    ```python
    p = softmax(teacher_logits / T)
    dropped = sum(p[..., vocabulary_size:], axis=-1)
    ```

    computed as `exp(logsumexp(tail) - logsumexp(all))`, finite for large
    logits.

    Args:
        teacher_logits: Tensor of shape `(..., teacher_vocabulary)`.
        vocabulary_size: Positive integer, the number of entries kept.
        temperature: Positive float. Defaults to `1.0`.

    Returns:
        Float32 tensor of the logits' shape without the last axis, in
        `[0, 1]`.

    Example:

    >>> logits = np.array([[0.0, 0.0, 0.0, 0.0]])
    >>> keras_kd.vocabulary.dropped_mass(logits, 3)
    array([0.25], dtype=float32)
    """
    logits = ops.cast(ops.convert_to_tensor(teacher_logits), "float32")
    size = logits.shape[-1]
    vocabulary_size = validation.check_positive_integer(
        "vocabulary_size", vocabulary_size)
    if size is not None and vocabulary_size > size:
        raise ValueError(
            "Argument `vocabulary_size` must not exceed the teacher's "
            f"{size} logits. Received: vocabulary_size={vocabulary_size}"
        )
    logits = logits / validation.check_positive_number(
        "temperature", temperature)
    if size == vocabulary_size:
        return ops.zeros(ops.shape(logits)[:-1], "float32")
    tail = ops.logsumexp(logits[..., vocabulary_size:], axis=-1)
    return ops.exp(tail - ops.logsumexp(logits, axis=-1))


@keras.saving.register_keras_serializable(package="keras_kd")
class KeepFirst(keras.layers.Layer):
    """Keeps the first `vocabulary_size` entries of the last axis."""

    def __init__(self, vocabulary_size, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = validation.check_positive_integer(
            "vocabulary_size", vocabulary_size)

    def call(self, inputs):
        return inputs[..., :self.vocabulary_size]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.vocabulary_size)

    def get_config(self):
        return {**super().get_config(),
                "vocabulary_size": self.vocabulary_size}


@keras.saving.register_keras_serializable(package="keras_kd")
class TruncatedVocabulary(keras.Model):
    """A teacher restricted to the first `vocabulary_size` logits.

    For a teacher whose vocabulary is the student's plus padding rows (the
    same tokenizer, a larger output layer), pass
    `TruncatedVocabulary(teacher, student_vocabulary_size)` as the
    Distiller's teacher. It returns `teacher(x)[..., :vocabulary_size]`; the
    softmax of those logits renormalizes the teacher's distribution over the
    shared entries. `dropped_mass(x)` measures the probability the teacher
    put on the dropped rows, on your data: check it before distilling.

    Different tokenizers are not made compatible by truncation: with
    `tokenizer=` (the student's tokenizer) and a teacher that has a
    `preprocessor.tokenizer` (a KerasHub task), the two vocabularies are
    compared and a difference in the shared entries is refused, as is a
    teacher whose tokenizer has more than `vocabulary_size` tokens (the
    dropped rows would be real tokens).

    Args:
        teacher: A built `keras.Model` with logits of shape
            `(..., teacher_vocabulary)`.
        vocabulary_size: Positive integer, the student's vocabulary size,
            at most the teacher's.
        tokenizer: Optional student tokenizer (KerasHub), to check the
            shared entries against the teacher's tokenizer. Defaults to
            `None`.
        name: String. Defaults to `"truncated_<teacher name>"`.

    Example:

    ```python
    teacher = keras_kd.vocabulary.TruncatedVocabulary(
        big_teacher, vocabulary_size=student_vocabulary)
    print(teacher.dropped_mass(x))  # e.g. 1e-7 for padding rows
    distiller = keras_kd.Distiller(teacher, student)
    ```
    """

    def __init__(self, teacher, vocabulary_size, tokenizer=None, name=None,
                 **kwargs):
        validation.check_model("teacher", teacher)
        vocabulary_size = validation.check_positive_integer(
            "vocabulary_size", vocabulary_size)
        size = _vocabulary_of(teacher)
        if size is not None and vocabulary_size > size:
            raise ValueError(
                f"The teacher {teacher.name!r} has {size} logits, fewer than "
                "the `vocabulary_size` to keep, so it cannot be truncated to "
                f"it. Received: vocabulary_size={vocabulary_size}. A "
                "teacher with a smaller vocabulary uses another tokenizer; "
                "distil from a teacher that shares the student's."
            )
        _check_tokenizers(teacher, tokenizer, vocabulary_size)
        outputs = KeepFirst(vocabulary_size, name="keep_first")(
            teacher(teacher.input))
        super().__init__(teacher.input, outputs,
                         name=name or f"truncated_{teacher.name}", **kwargs)
        self.teacher = teacher
        self.vocabulary_size = vocabulary_size
        self.teacher_vocabulary_size = size

    def dropped_mass(self, x, sample_weight=None, temperature=1.0,
                     batch_size=32):
        """Mean teacher probability on the dropped rows over the positions
        of `x` (weighted by `sample_weight`, e.g. a padding mask).

        Args:
            x: Inputs of the teacher (arrays, or a dict of them).
            sample_weight: Optional weights per position (or per sample).
                Defaults to `None`.
            temperature: Positive float. Defaults to `1.0`.
            batch_size: Positive integer. Defaults to `32`.

        Returns:
            Python float in `[0, 1]`.
        """
        import numpy as np

        logits = self.teacher.predict(x, batch_size=batch_size, verbose=0)
        mass = np.asarray(keras.ops.convert_to_numpy(dropped_mass(
            logits, self.vocabulary_size, temperature)), "float64")
        weights = np.ones_like(mass) if sample_weight is None else \
            np.broadcast_to(np.reshape(np.asarray(sample_weight, "float64"),
                                       mass.shape[:1] + (-1,) * (
                                           mass.ndim > 1)), mass.shape)
        total = weights.sum()
        return float((mass * weights).sum() / total) if total else 0.0

    def get_config(self):
        teacher = keras.saving.serialize_keras_object(self.teacher)
        # A KerasHub task's own compile state (it compiles itself) is no
        # part of the teacher's, and reloading it would warn.
        teacher.pop("compile_config", None)
        return {
            "name": self.name,
            "teacher": teacher,
            "vocabulary_size": self.vocabulary_size,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = config.copy()
        teacher = dict(config["teacher"])
        teacher.pop("compile_config", None)
        config["teacher"] = keras.saving.deserialize_keras_object(
            teacher, custom_objects=custom_objects)
        return cls(**config)


def _vocabulary_of(model):
    shape = getattr(model, "output_shape", None)
    if isinstance(shape, (list, tuple)) and shape and isinstance(
            shape[-1], int):
        return shape[-1]
    return None


def _tokenizer_vocabulary(tokenizer):
    if tokenizer is None or not hasattr(tokenizer, "get_vocabulary"):
        return None
    return list(tokenizer.get_vocabulary())


def _check_tokenizers(teacher, tokenizer, vocabulary_size):
    preprocessor = getattr(teacher, "preprocessor", None)
    teacher_tokens = _tokenizer_vocabulary(
        getattr(preprocessor, "tokenizer", None))
    if teacher_tokens is not None and len(teacher_tokens) > vocabulary_size:
        raise ValueError(
            f"The teacher's tokenizer has {len(teacher_tokens)} tokens, "
            f"more than the {vocabulary_size} kept: truncating would drop "
            "real tokens, so teacher and student use different tokenizers. "
            "Received: vocabulary_size="
            f"{vocabulary_size}. Distil from a teacher with the student's "
            "tokenizer."
        )
    if tokenizer is None:
        return
    student_tokens = _tokenizer_vocabulary(tokenizer)
    if student_tokens is None:
        raise TypeError(
            "Argument `tokenizer` must be a KerasHub tokenizer (with "
            f"`get_vocabulary()`). Received: tokenizer={tokenizer!r}"
        )
    if teacher_tokens is None:
        return
    shared = min(len(teacher_tokens), len(student_tokens))
    differ = [i for i in range(shared)
              if teacher_tokens[i] != student_tokens[i]]
    if differ or len(teacher_tokens) != len(student_tokens):
        first = differ[0] if differ else shared
        raise ValueError(
            "The teacher and the student use different tokenizers, so their "
            "logits do not mean the same tokens and truncation cannot make "
            f"them match. Received: {len(teacher_tokens)} teacher tokens, "
            f"{len(student_tokens)} student tokens, first difference at id "
            f"{first}. Distil from a teacher with the student's tokenizer."
        )


__all__ = [
    "TruncatedVocabulary",
    "dropped_mass",
]
