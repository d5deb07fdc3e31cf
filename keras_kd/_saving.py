"""Compiling, saving and loading a Distiller, as a mixin of `Distiller`.

The saved file holds the student, the heads, `alpha`, `temperature` and the
optimizer state; the teacher only with `save_teacher=True`.
"""

import contextvars

import keras

from keras_kd import lora
from keras_kd.utils import io
from keras_kd.utils import keras_compat

# Set by `load_distiller` so that `from_config` can receive the teacher that
# was deliberately left out of the saved file.
_TEACHER_FOR_LOADING = contextvars.ContextVar("keras_kd_teacher", default=None)

# Attributes that lead to the teacher's weights; hidden from the saving walk
# unless `save_teacher=True` (see `__dir__`).
_TEACHER_ATTRIBUTES = ("teacher", "teachers", "_teacher_models",
                       "_teacher_views", "layers")


class SavingMixin:
    """`compile`, `save`, `get_config` and `from_config` of a Distiller."""

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures the Distiller for training.

        Args:
            optimizer: Optimizer or its string id. Defaults to `"adam"`.
            loss: The hard (label) loss of the label terms
                (`keras_kd.HardLoss`). `None` (default) is cross-entropy from
                logits: softmax cross-entropy with sparse or one-hot labels,
                decided by the label shape, or binary cross-entropy for
                sigmoid outputs. The Keras ids `"sparse_categorical_crossentropy"` and
                `"categorical_crossentropy"` also mean "from logits" here.
                Any other Keras loss works per sample.
            metrics: Metrics of the student's logits against the labels, e.g.
                `["accuracy"]`. They skip unlabeled samples.
            **kwargs: Other `keras.Model.compile` arguments.
        """
        for term in self.terms:
            if hasattr(term, "set_label_loss"):
                term.set_label_loss(loss)
        if metrics and getattr(self.student, "fused", False) is True:
            raise ValueError(
                "A `keras_kd.fused.FusedStudent` never forms its full logits, "
                "so compiled metrics (which read them) cannot run; the "
                "Distiller logs `teacher_agreement` and every term. Received: "
                f"metrics={metrics!r}. Evaluate `student.model` for them."
            )
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        super().compile(optimizer=optimizer, loss=None, metrics=metrics,
                        **kwargs)
        if self._student_uses_float16() and not isinstance(
            self.optimizer, keras.optimizers.LossScaleOptimizer
        ):
            # Keras wraps the optimizer only when the Distiller's own policy
            # is mixed_float16; a float16 student needs loss scaling anyway.
            self.optimizer = keras.optimizers.LossScaleOptimizer(
                self.optimizer
            )
        # Built now, so a Distiller saved before `fit` reloads its optimizer.
        self.optimizer.build(self.trainable_variables)
        self._hard_loss_arg = loss

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["loss"] = keras.saving.serialize_keras_object(
                getattr(self, "_hard_loss_arg", None)
            )
        return config

    def _student_uses_float16(self):
        return any(
            layer.dtype_policy.compute_dtype == "float16"
            for layer in keras_compat.flatten_layers(self.student)
        )

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def save(self, filepath, overwrite=True, **kwargs):
        """As `keras.Model.save`, written atomically: a failed save leaves
        the previous file intact. The teacher is left out unless
        `save_teacher=True` (see `keras_kd.load_distiller`)."""
        return io.atomic_keras_save(self, filepath, overwrite=overwrite,
                                    **kwargs)

    def __dir__(self):
        # Keras' saving walk visits the attributes in `dir(model)`, `layers`
        # included (a list that holds the teacher). Leaving those out keeps
        # the teacher's weights out of the file unless `save_teacher=True`;
        # the student, the heads and the rest are saved through their own
        # attributes.
        names = super().__dir__()
        if getattr(self, "save_teacher", True):
            return names
        return [n for n in names if n not in _TEACHER_ATTRIBUTES]

    @property
    def _lora_state(self):
        # The student's unmerged LoRA kernels and factors in the file; a
        # private name, so Keras' saving walk visits it after the student.
        state = self.__dict__.get("_lora_state_cache")
        if state is None or state._model is not self.student:
            state = lora.LoraState(self.student, name="lora_state")
            object.__setattr__(self, "_lora_state_cache", state)
        return state

    def get_config(self):
        teachers = []
        for model, path in zip(self._teacher_models, self._teacher_paths):
            if self.save_teacher:
                teachers.append(keras.saving.serialize_keras_object(model))
            else:
                teachers.append(path)
        if self._several_teachers:
            teacher, teachers = None, dict(zip(self.teacher_names, teachers))
        else:
            teacher, teachers = teachers[0], None
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "teacher": teacher,
            "teachers": teachers,
            "student": _serialize_student(self.student),
            "alpha": self._alpha_given,
            "temperature": self._initial_temperature,
            "features": [
                keras.saving.serialize_keras_object(m) for m in self.features
            ],
            "terms": None if self._user_terms is None else [
                keras.saving.serialize_keras_object(t)
                for t in self._user_terms
            ],
            "outputs": self._outputs_arg,
            "teacher_dtype": self.teacher_dtype,
            "preprocessor": _serialize_optional(self._preprocessor)
            if self._preprocessor_arg == "given" else self._preprocessor_arg,
            "scale_by_temperature_squared": self.scale_by_temperature_squared,
            "teacher_outputs": self.teacher_outputs,
            "teacher_preprocessing": _serialize_optional(
                self.teacher_preprocessing
            ),
            "student_preprocessing": _serialize_optional(
                self.student_preprocessing
            ),
            "augmentation": _serialize_optional(self.augmentation),
            "save_teacher": self.save_teacher,
        }
        student_lora = lora.lora_config(self.student)
        if student_lora is not None:
            config["student_lora"] = student_lora
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = config.copy()

        def load(value):
            if isinstance(value, dict) and "class_name" in value:
                return keras.saving.deserialize_keras_object(
                    value, custom_objects=custom_objects)
            return value

        override = _TEACHER_FOR_LOADING.get()
        if override is not None:
            config["teacher"], config["teachers"] = None, None
            key = "teachers" if isinstance(override, (list, tuple, dict)) \
                else "teacher"
            config[key] = override
        else:
            config["teacher"] = load(config.get("teacher"))
            teachers = config.get("teachers")
            if isinstance(teachers, dict):
                teachers = {k: load(v) for k, v in teachers.items()}
            config["teachers"] = teachers
            missing = config["teacher"] is None and (
                teachers is None or any(v is None for v in teachers.values()))
            if missing:
                raise ValueError(
                    "This Distiller was saved without its teacher (the "
                    "default, so the file holds only the student, the heads "
                    "and the training state). Load it with "
                    "`keras_kd.load_distiller(path, teacher=teacher)`, where "
                    "`teacher` is the teacher model or the path of its "
                    "`.keras` file; or save with "
                    "`Distiller(..., save_teacher=True)`."
                )
        student_lora = config.pop("student_lora", None)
        if isinstance(config.get("student"), dict):
            # A KerasHub task compiles itself; its own compile state is no
            # part of the Distiller's (and reloading it would warn).
            config["student"] = dict(config["student"])
            config["student"].pop("compile_config", None)
        for key in ("student", "teacher_preprocessing",
                    "student_preprocessing", "augmentation", "preprocessor"):
            config[key] = load(config.get(key))
        # LoRA before the Distiller collects the trainable weights.
        lora.restore_lora(config["student"], student_lora)
        for key in ("features", "terms"):
            if config.get(key) is not None:
                config[key] = [load(m) for m in config[key]]
        return cls(**config)


def load_distiller(path, teacher=None, custom_objects=None, compile=True):
    """Loads a Distiller saved with `distiller.save(path)`.

    Args:
        path: Path of the `.keras` file.
        teacher: The teacher: a `keras.Model`, or the path of its `.keras`
            file (a list or dict of them for several teachers). Needed when the Distiller was saved without its teacher
            (the default); overrides a saved teacher otherwise.
        custom_objects: As in `keras.saving.load_model`.
        compile: Boolean, restore the compiled state (optimizer included) so
            `fit` resumes where it stopped. Defaults to `True`.

    Returns:
        The `Distiller`, with the student, the heads, `alpha`,
        `temperature` and the optimizer state restored.

    Example:

    ```python
    distiller.save("run.keras")
    distiller = keras_kd.load_distiller("run.keras", teacher=teacher)
    distiller.fit(x, y, epochs=5)  # resumes
    ```
    """
    io.check_keras_file("path", path)
    token = _TEACHER_FOR_LOADING.set(teacher)
    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, compile=compile
        )
    finally:
        _TEACHER_FOR_LOADING.reset(token)


def _serialize_student(student):
    config = keras.saving.serialize_keras_object(student)
    config.pop("compile_config", None)
    return config


def _serialize_optional(obj):
    if obj is None:
        return None
    return keras.saving.serialize_keras_object(obj)
