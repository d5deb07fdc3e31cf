"""`Term`: the public base class of a distillation loss term.

A Distiller's loss is a weighted sum of terms. Each term declares what it
reads (the teachers' and the student's logits, or named hidden layers),
whether it needs labels, whether it is relational (compares the samples of a
batch with each other, so it needs the global batch across replicas) and
which output kinds it supports. It returns one value per sample; the
Distiller weighs, masks, sums and normalises those values the same way for
every term, so sample weights, unlabeled samples and several replicas work
for a user's term exactly as for the built-in ones.
"""

import keras
from keras import ops

from keras_kd.utils import validation

OUTPUT_KINDS = ("softmax", "sigmoid")


def _layer_name(layer):
    if layer is None or isinstance(layer, str):
        return layer
    return layer.name


@keras.saving.register_keras_serializable(package="keras_kd")
class Term(keras.layers.Layer):
    """Base class of a distillation term.

    Subclass it and implement `call(teacher, student, labels=None)`, which
    returns a float32 tensor of shape `(batch_size,)`: the loss of each
    sample; or, for models with `(batch_size, sequence_length, vocabulary)`
    logits, `(batch_size, sequence_length)`: the loss of each token (a
    per-sample value is counted once per real token). The Distiller then
    computes `sum(weights * values) / count`, where `count` is the number of
    samples of the global batch (or of its labeled samples, for a term with
    `needs_labels = True`), or per token the number of real tokens (sample
    weight above 0, label not -1), and adds `weight` times that to the total
    loss. Padding never counts.

    Declarations (class attributes a subclass may override):
    - `needs_labels`: the term is computed on labeled samples only (masked
      and normalised by the labeled count); a batch without labels skips it.
      Defaults to `False`.
    - `relational`: the values of a sample depend on the other samples of
      the batch; under several replicas the term receives the global batch.
      Defaults to `False`.
    - `response`: the term matches the teacher's output distribution, and
      `Distiller(alpha=...)` balances it against the label terms:
      label terms get `alpha`, response terms `1 - alpha`. Defaults to
      `False`.
    - `supported_outputs`: the output kinds the term can distill, among
      `"softmax"` and `"sigmoid"`. A Distiller refuses a term whose outputs
      it does not support, at construction. Defaults to both.
    - `uses_teacher`: `False` for a term that reads only the student and
      the labels (the hard loss). Defaults to `True`.

    Args:
        weight: Non-negative float, the weight of the term in the total loss.
            Defaults to `1.0`.
        teacher_layer: String name (or layer) of the teacher layer the term
            reads; `None` reads the teacher's logits. Defaults to `None`.
        student_layer: String name (or layer) of the student layer the term
            reads; `None` reads the student's logits. Defaults to `None`.
        teacher: With several teachers, the name (or index) of the one this
            term reads. `None` gives logit terms a list of every teacher's
            logits (see `LogitTerm`, which averages their probabilities).
            Defaults to `None`.
        name: String, the term's name and its key in the `fit` history.
            `"/"` is allowed. Defaults to the snake_case class name.

    Call arguments:
        teacher: Tensor read from the teacher (a list of tensors, one per
            teacher, for a logit term of a Distiller with several teachers
            and `teacher=None`).
        student: Tensor read from the student.
        labels: The batch's labels, or `None` for an unlabeled batch.

    Returns:
        Float32 tensor `(batch_size,)`, or `(batch_size, sequence_length)`
        per token.

    Example:

    ```python
    @keras.saving.register_keras_serializable(package="my_project")
    class LogitMSE(keras_kd.Term):
        response = True

        def call(self, teacher, student, labels=None):
            return keras.ops.mean(keras.ops.square(teacher - student), -1)

    distiller = keras_kd.Distiller(
        teacher, student, terms=[keras_kd.HardLoss(), LogitMSE()])
    ```
    """

    needs_labels = False
    relational = False
    response = False
    uses_teacher = True
    supported_outputs = OUTPUT_KINDS

    def __init__(self, weight=1.0, teacher_layer=None, student_layer=None,
                 teacher=None, name=None, **kwargs):
        name = name or _snake_case(type(self).__name__)
        # The history key may hold "/", which Keras layer names may not.
        self._log_name = name
        super().__init__(name=name.replace("/", "_"), **kwargs)
        self.weight = validation.check_non_negative_number("weight", weight)
        # Layers are stored by name only: tracking a layer object here would
        # make it a sublayer of the term.
        self.teacher_layer = _layer_name(teacher_layer)
        self.student_layer = _layer_name(student_layer)
        if teacher is not None and not isinstance(teacher, (str, int)):
            raise TypeError(
                "Argument `teacher` must be the name or index of one of the "
                f"Distiller's teachers, or None. Received: teacher={teacher!r}"
            )
        self.teacher = teacher
        # Set by the Distiller (`_attach`): its output kind and the shared
        # temperature variable. Kept out of Keras' tracking.
        object.__setattr__(self, "_outputs", None)
        object.__setattr__(self, "_shared_temperature", None)
        object.__setattr__(self, "_position_axes", 1)

    @property
    def log_name(self):
        """The key of this term in the `fit` history."""
        return self._log_name

    @property
    def outputs(self):
        """The output kind of the Distiller: `"softmax"` or `"sigmoid"`."""
        return self._outputs or "softmax"

    @property
    def position_axes(self):
        """How many leading axes index the positions the Distiller weighs:
        1 (samples) for classifiers, 2 (batch, sequence) for models with
        `(batch, sequence, vocabulary)` logits."""
        return self._position_axes

    def _attach(self, outputs, temperature, position_axes=1):
        """Called by the Distiller: its output kind, temperature and the
        number of position axes of its logits."""
        if outputs not in self.supported_outputs:
            raise ValueError(
                f"The term {self.log_name!r} ({type(self).__name__}) "
                f"supports {list(self.supported_outputs)} outputs, but the "
                f"models have {outputs!r} outputs. Received: "
                f"outputs={outputs!r}. Use another term for {outputs} "
                "outputs (e.g. `keras_kd.SoftTargets`)."
            )
        object.__setattr__(self, "_outputs", outputs)
        object.__setattr__(self, "_shared_temperature", temperature)
        object.__setattr__(self, "_position_axes", position_axes)

    def build_for(self, teacher_shape, student_shape):
        """Called once with the shapes of what the term reads.

        Override it to create weights (a projection head) or to check the
        shapes. `teacher_shape` is a list of shapes for a term that reads
        several teachers.
        """
        self.built = True

    def call(self, teacher, student, labels=None):
        raise NotImplementedError(
            f"{type(self).__name__} must implement "
            "`call(teacher, student, labels=None)` returning one value per "
            "sample, shape (batch_size,)."
        )

    def get_config(self):
        config = super().get_config()
        config.update({
            "name": self._log_name,
            "weight": self.weight,
            "teacher_layer": self.teacher_layer,
            "student_layer": self.student_layer,
            "teacher": self.teacher,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_kd")
class LogitTerm(Term):
    """Base of terms that compare softened logits (KD, DKD, DIST).

    Adds a temperature and logit standardization to `Term`. With several
    teachers and `teacher=None`, the teachers are ensembled by averaging
    their softened probabilities (not their logits): the term then sees the
    logits `T * log(mean_i softmax(t_i / T))`, whose softmax at temperature
    `T` is that average.

    Args:
        temperature: Positive float, or `None` to use the Distiller's
            `temperature` variable (which `keras_kd.callbacks` can schedule).
            Defaults to `None`.
        standardize: Boolean. Z-score the teacher's and the student's logits
            of each sample before the term (logit standardization, Sun et
            al., CVPR 2024), so the student matches the teacher's logit
            relations rather than their scale; the paper's base temperature
            is 2. Defaults to `False`.
        **kwargs: As in `Term`.
    """

    response = True

    def __init__(self, temperature=None, standardize=False, **kwargs):
        super().__init__(**kwargs)
        if temperature is not None:
            temperature = validation.check_positive_number(
                "temperature", temperature
            )
        self._own_temperature = temperature
        self.standardize = validation.check_bool("standardize", standardize)

    @property
    def temperature(self):
        """The temperature in use: the term's own, or the Distiller's."""
        if self._own_temperature is not None:
            return self._own_temperature
        if self._shared_temperature is not None:
            return ops.cast(self._shared_temperature, "float32")
        return 4.0

    def logits_pair(self, teacher, student):
        """Float32 `(teacher_logits, student_logits)` ready for the loss.

        Standardizes them if asked and ensembles a list of teachers.
        """
        from keras_kd.losses.logits import ensemble_logits
        from keras_kd.losses.logits import standardize_logits

        student = ops.cast(student, "float32")
        teachers = teacher if isinstance(teacher, (list, tuple)) else [teacher]
        teachers = [ops.cast(t, "float32") for t in teachers]
        if self.standardize:
            student = standardize_logits(student)
            teachers = [standardize_logits(t) for t in teachers]
        if len(teachers) == 1:
            return teachers[0], student
        return ensemble_logits(teachers, self.temperature, self.outputs), \
            student

    def get_config(self):
        config = super().get_config()
        config.update({
            "temperature": self._own_temperature,
            "standardize": self.standardize,
        })
        return config


def _snake_case(name):
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
