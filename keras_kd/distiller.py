"""The Distiller: a `keras.Model` that trains a student to imitate a teacher."""

import contextvars
import warnings

import keras
from keras import ops

from keras_kd import _hard_loss
from keras_kd._steps import BackendSteps
from keras_kd.losses.logits import label_mask
from keras_kd.losses.logits import soft_target_kl
from keras_kd.utils import models as model_utils
from keras_kd.utils import validation

# Set by `load_distiller` so that `from_config` can receive the teacher that
# was deliberately left out of the saved file.
_TEACHER_FOR_LOADING = contextvars.ContextVar("keras_kd_teacher", default=None)

# Attributes that lead to the teacher's weights; hidden from the saving walk
# unless `save_teacher=True` (see `__dir__`).
_TEACHER_ATTRIBUTES = ("teacher", "_teacher", "_teacher_view", "layers")

# Keys of the target dict that carries cached teacher outputs.
LABELS_KEY = "labels"
TEACHER_LOGITS_KEY = "teacher_logits"
TEACHER_FEATURES_KEY = "teacher_features"


@keras.saving.register_keras_serializable(package="keras_kd")
class Distiller(BackendSteps, keras.Model):
    """Trains a student model to imitate a frozen teacher with `fit`.

    The loss of a batch is

    ```python
    loss = alpha * hard + (1 - alpha) * soft + sum(weight_k * feature_k)
    hard = cross_entropy(labels, student_logits)
    soft = temperature**2 * KL(softmax(teacher / T) || softmax(student / T))
    ```

    The teacher runs once per step with `training=False`, outside the
    gradient computation, and is never updated. The student runs once per
    step, also when feature matches read its hidden layers. `alpha` and
    `temperature` are non-trainable variables: a callback (see
    `keras_kd.callbacks`) can change them during `fit` without retracing.

    Batches may be `(x, y)`, `(x, y, sample_weight)` or `x` alone (unlabeled:
    the soft loss at full weight). A label of `-1` (or an all-zero one-hot
    row) marks an unlabeled sample inside a labeled batch: the hard loss is
    averaged over the labeled samples, the soft loss over all of them, and a
    batch without any label uses the soft loss at full weight. `y` may also be
    a dict `{"labels": ..., "teacher_logits": ..., "teacher_features": {...}}`
    carrying cached teacher outputs (see `keras_kd.data`); the teacher is then
    skipped for that batch.

    NaN or Inf in a batch is not hidden: the loss becomes NaN, the weights are
    updated with NaN gradients as in any Keras model, and
    `keras.callbacks.TerminateOnNaN` stops `fit` at that batch.

    Args:
        teacher: A built `keras.Model` returning logits (or probabilities, see
            `teacher_outputs`), or the path of a saved `.keras` teacher. It is
            frozen (`teacher.trainable = False`).
        student: A built `keras.Model` returning logits for the same classes.
        alpha: Float in [0, 1], the weight of the hard (label) loss; the soft
            loss gets `1 - alpha`. Defaults to `0.5`.
        temperature: Positive float, the softmax temperature of the soft
            loss. Defaults to `4.0`.
        features: Optional list of `keras_kd.FeatureMatch` /
            `keras_kd.RelationMatch` terms added to the loss with their own
            weights. Defaults to `None`.
        scale_by_temperature_squared: Boolean. Multiply the soft loss by
            `temperature**2` (Hinton et al.), which keeps its gradient scale
            independent of the temperature. Defaults to `True`.
        teacher_outputs: One of `"auto"`, `"logits"`, `"probabilities"`.
            `"auto"` detects a teacher that ends in a softmax, warns and
            converts its probabilities to logits with `log(p)`. Defaults to
            `"auto"`.
        teacher_preprocessing: Optional layer or function applied to the
            inputs before the teacher, e.g. `keras.layers.Resizing(224, 224)`
            when the teacher takes larger images than the student.
        student_preprocessing: Optional layer or function applied to the
            inputs before the student.
        augmentation: Optional layer (e.g. a `keras.Sequential` of
            `keras.layers.RandomTranslation`, `RandomFlip`...) applied to each
            training batch once, before the teacher and the student, so both
            see the same augmented images ("function matching", Beyer et al.
            2022). Not applied in `evaluate`/`predict`. A batch with cached
            teacher outputs cannot be augmented (the cache would be stale).
        save_teacher: Boolean. If `True`, `save()` embeds the teacher's
            config and weights. By default the file holds the student, the
            heads, `alpha`, `temperature` and the optimizer state only; reload
            it with `keras_kd.load_distiller(path, teacher=...)`.
            Defaults to `False`.
        name: String, the model name. Defaults to `"distiller"`.

    Example:

    ```python
    distiller = keras_kd.Distiller(teacher, student, alpha=0.5,
                                   temperature=4.0)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=5)
    student = distiller.student  # a plain keras.Model
    ```

    Reference:
    - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531)
    """

    def __init__(
        self,
        teacher,
        student,
        alpha=0.5,
        temperature=4.0,
        features=None,
        scale_by_temperature_squared=True,
        teacher_outputs="auto",
        teacher_preprocessing=None,
        student_preprocessing=None,
        augmentation=None,
        save_teacher=False,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self._teacher_path = None
        if isinstance(teacher, str):
            self._teacher_path = teacher
            teacher = keras.saving.load_model(teacher, compile=False)
        validation.check_model("teacher", teacher)
        validation.check_model("student", student)
        if teacher is student:
            raise ValueError(
                "Arguments `teacher` and `student` are the same model. "
                "Distillation needs a separate student to train."
            )
        validation.check_student_trainable(student)
        self._initial_alpha = validation.check_unit_interval("alpha", alpha)
        self._initial_temperature = validation.check_positive_number(
            "temperature", temperature
        )
        self.teacher_outputs = validation.check_teacher_outputs_mode(
            teacher_outputs
        )
        self.scale_by_temperature_squared = bool(scale_by_temperature_squared)
        self.save_teacher = bool(save_teacher)
        if self._initial_alpha == 1.0:
            warnings.warn(
                "`alpha=1.0` puts no weight on the teacher: this trains the "
                "student on labels alone.",
                UserWarning,
                stacklevel=2,
            )

        self.num_classes = model_utils.num_classes(student)
        validation.check_class_counts(
            model_utils.num_classes(teacher), self.num_classes
        )
        how = model_utils.detect_probabilities(student)
        if how:
            raise validation.student_probabilities_error(student.name, how)
        self._convert_teacher_probabilities = teacher_outputs == "probabilities"
        if teacher_outputs == "auto":
            how = model_utils.detect_probabilities(teacher)
            if how:
                warnings.warn(
                    validation.teacher_probabilities_message(teacher.name, how),
                    UserWarning,
                    stacklevel=2,
                )
                self._convert_teacher_probabilities = True
        self.teacher_preprocessing = teacher_preprocessing
        self.student_preprocessing = student_preprocessing
        if augmentation is not None and not callable(augmentation):
            raise TypeError(
                "Argument `augmentation` must be a Keras layer or a function. "
                f"Received: augmentation={augmentation!r}"
            )
        self.augmentation = augmentation
        if teacher_preprocessing is None and student_preprocessing is None:
            t_shapes = model_utils.input_shapes(teacher)
            s_shapes = model_utils.input_shapes(student)
            if t_shapes and s_shapes and not _shapes_compatible(
                t_shapes, s_shapes
            ):
                raise validation.input_shape_mismatch_error(t_shapes, s_shapes)

        teacher.trainable = False
        if isinstance(teacher_preprocessing, keras.layers.Layer):
            teacher_preprocessing.trainable = False
        self.teacher = teacher
        self.student = student

        self._alpha = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self._initial_alpha),
            trainable=False,
            dtype="float32",
            name="alpha",
        )
        self._temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self._initial_temperature),
            trainable=False,
            dtype="float32",
            name="temperature",
        )
        self.features = list(features or [])
        self._build_views()

        self.hard_loss_tracker = keras.metrics.Mean(name="hard_loss")
        self.soft_loss_tracker = keras.metrics.Mean(name="soft_loss")
        self.teacher_agreement_tracker = keras.metrics.Mean(
            name="teacher_agreement"
        )
        self.feature_trackers = [
            keras.metrics.Mean(name=match.log_name) for match in self.features
        ]
        self._hard_loss_fn = _hard_loss.resolve_hard_loss(None)
        self.built = True

    # ------------------------------------------------------------------
    # Public attributes.

    @property
    def alpha(self):
        """The `keras.Variable` holding the weight of the hard loss."""
        return self._alpha

    @alpha.setter
    def alpha(self, value):
        self._alpha.assign(validation.check_unit_interval("alpha", value))

    @property
    def temperature(self):
        """The `keras.Variable` holding the softmax temperature."""
        return self._temperature

    @temperature.setter
    def temperature(self, value):
        self._temperature.assign(
            validation.check_positive_number("temperature", value)
        )

    # ------------------------------------------------------------------
    # Views: one forward pass gives the logits and every matched layer.

    def _build_views(self):
        teacher_taps, student_taps = [], []
        self._feature_indices = []
        for match in self.features:
            if not getattr(match, "_is_keras_kd_match", False):
                raise TypeError(
                    "Argument `features` must be a list of "
                    "`keras_kd.FeatureMatch` or `keras_kd.RelationMatch`. "
                    f"Received an item {match!r}"
                )
            t_index = _tap(self.teacher, match.teacher_layer, "teacher",
                           teacher_taps)
            s_index = _tap(self.student, match.student_layer, "student",
                           student_taps)
            t_shape = _tap_shape(self.teacher, teacher_taps, t_index)
            s_shape = _tap_shape(self.student, student_taps, s_index)
            match.build_for(t_shape, s_shape)
            self._feature_indices.append((t_index, s_index))
        self._teacher_tap_names = [
            _tensor_layer_name(t) for t in teacher_taps
        ]
        self._teacher_view = (
            model_utils.feature_view(
                self.teacher, teacher_taps, f"{self.teacher.name}_taps"
            )
            if teacher_taps
            else None
        )
        self._student_view = (
            model_utils.feature_view(
                self.student, student_taps, f"{self.student.name}_taps"
            )
            if student_taps
            else None
        )

    def _forward(self, model, view, inputs, training):
        if view is None:
            return [model(inputs, training=training)]
        return list(view(inputs, training=training))

    def _augment(self, x, cached):
        """The training batch both models see: augmented once, if asked."""
        if self.augmentation is None:
            return x
        if cached is not None:
            raise validation.augmented_cache_error()
        return self.augmentation(x, training=True)

    def _teacher_outputs(self, x, cached):
        """Teacher logits and tapped features (index 0 = logits)."""
        if cached is not None:
            return self._cached_teacher_outputs(cached)
        inputs = _apply(self.teacher_preprocessing, x)
        outputs = self._forward(
            self.teacher, self._teacher_view, inputs, training=False
        )
        logits = ops.cast(outputs[0], "float32")
        if self._convert_teacher_probabilities:
            logits = ops.log(ops.maximum(logits, 1e-30))
        outputs[0] = logits
        return [ops.stop_gradient(o) for o in outputs]

    def _cached_teacher_outputs(self, cached):
        logits = cached[TEACHER_LOGITS_KEY]
        if logits.shape[-1] != self.num_classes:
            raise validation.cache_mismatch_error(
                "the number of classes",
                self.num_classes,
                logits.shape[-1],
            )
        outputs = [ops.cast(logits, "float32")]
        features = cached.get(TEACHER_FEATURES_KEY) or {}
        for name in self._teacher_tap_names:
            if name not in features:
                raise validation.cache_mismatch_error(
                    "a matched teacher layer is missing",
                    sorted(self._teacher_tap_names),
                    sorted(features),
                )
            outputs.append(features[name])
        return [ops.stop_gradient(o) for o in outputs]

    def fit(self, x=None, y=None, batch_size=None, **kwargs):
        """As `keras.Model.fit`; refuses `batch_size=1` with relation terms."""
        if batch_size == 1 and any(
            match.relational for match in self.features
        ):
            names = [m.log_name for m in self.features if m.relational]
            raise ValueError(
                f"The relation losses {names} compare the samples of a batch "
                "with each other and need at least 2 samples per batch. "
                "Received: batch_size=1. Use a larger batch size."
            )
        return super().fit(x, y, batch_size=batch_size, **kwargs)

    def export_student(self, path, **kwargs):
        """Writes the student (never the teacher or heads) to `.tflite`.

        Shortcut for `keras_kd.export.export_student(self, path, **kwargs)`;
        see there for the quantization modes.
        """
        from keras_kd.export import export_student

        return export_student(self, path, **kwargs)

    def call(self, inputs, training=None):
        """Returns the student's logits."""
        inputs = _apply(self.student_preprocessing, inputs)
        return self.student(inputs, training=training)

    # ------------------------------------------------------------------
    # Loss.

    def _split_targets(self, y):
        """Returns `(labels, cached_teacher_outputs)` from the target `y`."""
        if isinstance(y, dict) and TEACHER_LOGITS_KEY in y:
            return y.get(LABELS_KEY), y
        if isinstance(y, dict):
            raise ValueError(
                "A dict target must hold the key 'teacher_logits' (cached "
                "teacher outputs, see `keras_kd.data`). Received keys: "
                f"{sorted(y)}"
            )
        return y, None

    def _distillation_loss(self, x, labels, sample_weight, teacher, training):
        """Total loss, the logged terms and the student logits of a batch.

        Every term is `sum over this replica / count over all replicas`, so
        the gradients summed over replicas equal those of one device.
        """
        inputs = _apply(self.student_preprocessing, x)
        student = self._forward(
            self.student, self._student_view, inputs, training=training
        )
        logits = student[0]
        batch = ops.shape(logits)[0]
        if sample_weight is None:
            weights = ops.ones((batch,), "float32")
        else:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (batch,))
        count = self._global_sum(ops.cast(batch, "float32"))

        soft_values = soft_target_kl(
            teacher[0],
            logits,
            self._temperature,
            self.scale_by_temperature_squared,
        )
        soft = ops.sum(weights * soft_values) / count
        terms = {"soft_loss": (soft, count)}
        alpha = ops.cast(self._alpha, "float32")
        if labels is not None:
            mask = label_mask(labels, self.num_classes)
            labeled = self._global_sum(ops.sum(mask))
            hard_values = self._hard_loss_fn(labels, logits)
            hard = ops.divide_no_nan(
                ops.sum(weights * mask * hard_values), labeled
            )
            alpha = ops.where(labeled > 0, alpha, ops.zeros_like(alpha))
            total = alpha * hard + (1.0 - alpha) * soft
            terms["hard_loss"] = (hard, labeled)
        else:
            total = soft
        for match, (t_index, s_index) in zip(
            self.features, self._feature_indices
        ):
            if match.relational:
                # Relations span the global batch: gather it from every
                # replica, keep this replica's rows.
                values = self._local_rows(match(
                    self._gather_batch(teacher[t_index]),
                    self._gather_batch(student[s_index]),
                ), batch)
            else:
                values = match(teacher[t_index], student[s_index])
            term = ops.sum(weights * values) / count
            total = total + match.weight * term
            terms[match.log_name] = (term, count)
        regularization = self.student.losses + [
            loss for match in self.features for loss in match.losses
        ]
        if regularization:
            # As Keras' `compute_loss`: one share per replica.
            total = total + ops.sum(ops.stack(regularization)) / (
                count / ops.cast(batch, "float32")
            )
        return total, terms, logits

    def _update_loss_trackers(self, loss, terms):
        # Each logged value is the global (all-replica) value, weighted by
        # its count, so a Mean over replicas and batches is exact.
        loss = self._global_sum(loss)
        count = terms["soft_loss"][1]
        self._loss_tracker.update_state(loss, sample_weight=count)
        soft, _ = terms["soft_loss"]
        self.soft_loss_tracker.update_state(
            self._global_sum(soft), sample_weight=count
        )
        if "hard_loss" in terms:
            hard, labeled = terms["hard_loss"]
            self.hard_loss_tracker.update_state(
                self._global_sum(hard), sample_weight=labeled
            )
        for match, tracker in zip(self.features, self.feature_trackers):
            term, _ = terms[match.log_name]
            tracker.update_state(self._global_sum(term), sample_weight=count)

    def _update_metrics(self, labels, logits, teacher, sample_weight):
        agreement = ops.cast(
            ops.argmax(logits, axis=-1) == ops.argmax(teacher[0], axis=-1),
            "float32",
        )
        self.teacher_agreement_tracker.update_state(
            agreement, sample_weight=sample_weight
        )
        logs = self.compute_metrics(None, labels, logits, sample_weight)
        if labels is None:
            # Without labels the label metrics saw nothing: leave them out of
            # the logs rather than report a misleading 0.
            unlabeled = {"hard_loss"}
            if self._compile_metrics is not None:
                unlabeled.update(
                    m.name for m in self._compile_metrics.metrics
                )
            logs = {k: v for k, v in logs.items() if k not in unlabeled}
        return logs

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the compiled metrics on the labeled samples only.

        `metrics` stay unweighted and `weighted_metrics` use the sample
        weights, as in Keras; unlabeled samples are left out of both.
        """
        labels, _ = self._split_targets(y)
        metrics = self._compile_metrics
        if labels is not None and metrics is not None:
            mask = label_mask(labels, self.num_classes)
            weighted = mask
            if sample_weight is not None:
                weighted = mask * ops.reshape(
                    ops.cast(sample_weight, "float32"), ops.shape(mask)
                )
            safe = labels
            if not (
                len(labels.shape) >= 2 and labels.shape[-1] == self.num_classes
            ):
                safe = ops.where(labels >= 0, labels, ops.zeros_like(labels))
            if not metrics.built:
                metrics.build(safe, y_pred)
            # Keras' CompileMetrics gives unweighted metrics no weights at
            # all, so each list is updated here with its own weights.
            for group, weights in (
                (metrics._flat_metrics, mask),
                (metrics._flat_weighted_metrics, weighted),
            ):
                for metric in group:
                    if metric is not None:
                        metric.update_state(safe, y_pred, sample_weight=weights)
        return self.get_metrics_result()

    # ------------------------------------------------------------------
    # Compile, save and load.

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures the Distiller for training.

        Args:
            optimizer: Optimizer or its string id. Defaults to `"adam"`.
            loss: The hard (label) loss. `None` (default) is cross-entropy
                from logits with sparse or one-hot labels, decided by the label
                shape. The Keras ids `"sparse_categorical_crossentropy"` and
                `"categorical_crossentropy"` also mean "from logits" here.
                Any other Keras loss works per sample.
            metrics: Metrics of the student's logits against the labels, e.g.
                `["accuracy"]`. They skip unlabeled samples.
            **kwargs: Other `keras.Model.compile` arguments.
        """
        self._hard_loss_fn = _hard_loss.resolve_hard_loss(loss)
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
            for layer in self.student._flatten_layers()
        )

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

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

    def get_config(self):
        if self.save_teacher:
            teacher = keras.saving.serialize_keras_object(self.teacher)
        else:
            teacher = self._teacher_path
        return {
            "name": self.name,
            "trainable": self.trainable,
            "teacher": teacher,
            "student": keras.saving.serialize_keras_object(self.student),
            "alpha": self._initial_alpha,
            "temperature": self._initial_temperature,
            "features": [
                keras.saving.serialize_keras_object(m) for m in self.features
            ],
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

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = config.copy()
        override = _TEACHER_FOR_LOADING.get()
        if override is not None:
            config["teacher"] = override
        elif isinstance(config.get("teacher"), dict):
            config["teacher"] = keras.saving.deserialize_keras_object(
                config["teacher"], custom_objects=custom_objects
            )
        elif config.get("teacher") is None:
            raise validation.missing_teacher_error()
        for key in ("student", "teacher_preprocessing",
                    "student_preprocessing", "augmentation"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        config["features"] = [
            keras.saving.deserialize_keras_object(
                m, custom_objects=custom_objects
            )
            for m in config.get("features") or []
        ]
        return cls(**config)


def load_distiller(path, teacher=None, custom_objects=None, compile=True):
    """Loads a Distiller saved with `distiller.save(path)`.

    Args:
        path: Path of the `.keras` file.
        teacher: The teacher: a `keras.Model`, or the path of its `.keras`
            file. Needed when the Distiller was saved without its teacher
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
    if isinstance(teacher, str):
        teacher = keras.saving.load_model(teacher, compile=False)
    token = _TEACHER_FOR_LOADING.set(teacher)
    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, compile=compile
        )
    finally:
        _TEACHER_FOR_LOADING.reset(token)


def _apply(preprocessing, inputs):
    return inputs if preprocessing is None else preprocessing(inputs)


def _serialize_optional(obj):
    if obj is None:
        return None
    return keras.saving.serialize_keras_object(obj)


def _shapes_compatible(a, b):
    if len(a) != len(b):
        return False
    for sa, sb in zip(a, b):
        if len(sa) != len(sb):
            return False
        for da, db in zip(sa[1:], sb[1:]):
            if da is not None and db is not None and da != db:
                return False
    return True


def _tap(model, layer, role, taps):
    """Adds the output of `layer` to `taps`; returns its view index.

    Index 0 is the model's logits (used when `layer` is None).
    """
    if layer is None:
        return 0
    resolved = model_utils.resolve_layer(model, layer, role)
    tensor = model_utils.layer_output(model, resolved, role)
    for i, existing in enumerate(taps):
        if existing is tensor:
            return i + 1
    taps.append(tensor)
    return len(taps)


def _tap_shape(model, taps, index):
    if index == 0:
        return tuple(model_utils.output_spec(model).shape)
    return tuple(taps[index - 1].shape)


def _tensor_layer_name(tensor):
    return tensor._keras_history.operation.name
