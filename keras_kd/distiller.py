"""The Distiller: a `keras.Model` that trains a student to imitate a teacher."""

import contextvars
import warnings

import keras
from keras import ops

from keras_kd import _inputs
from keras_kd import _pipeline
from keras_kd import _teachers
from keras_kd._steps import BackendSteps
from keras_kd.losses.logits import is_dense_labels
from keras_kd.losses.logits import label_mask
from keras_kd.terms.base import Term
from keras_kd.terms.hard import HardLoss
from keras_kd.terms.kd import SoftTargets
from keras_kd.utils import io
from keras_kd.utils import keras_compat
from keras_kd.utils import models as model_utils
from keras_kd.utils import validation

# Set by `load_distiller` so that `from_config` can receive the teacher that
# was deliberately left out of the saved file.
_TEACHER_FOR_LOADING = contextvars.ContextVar("keras_kd_teacher", default=None)

# Attributes that lead to the teacher's weights; hidden from the saving walk
# unless `save_teacher=True` (see `__dir__`).
_TEACHER_ATTRIBUTES = ("teacher", "teachers", "_teacher_models",
                       "_teacher_views", "layers")

# Keys of the target dict that carries cached teacher outputs.
LABELS_KEY = "labels"
TEACHER_LOGITS_KEY = "teacher_logits"
TEACHER_FEATURES_KEY = "teacher_features"


@keras.saving.register_keras_serializable(package="keras_kd")
class Distiller(BackendSteps, keras.Model):
    """Trains a student model to imitate a frozen teacher with `fit`.

    The loss of a batch is a weighted sum of distillation terms
    (`keras_kd.Term`). By default the terms are `HardLoss()` and
    `SoftTargets()`:

    ```python
    loss = alpha * hard + (1 - alpha) * soft + sum(weight_k * feature_k)
    hard = cross_entropy(labels, student_logits)
    soft = temperature**2 * KL(softmax(teacher / T) || softmax(student / T))
    ```

    Every term returns one value per sample; the Distiller weighs them by
    the sample weights and averages them over the samples of the global
    batch (label terms over its labeled samples), the same way for the
    built-in terms and a user's own.

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
        alpha: Float in [0, 1], the weight of the label terms; the response
            terms (the soft loss) get `1 - alpha`. `None` means `0.5` with
            the default terms and no balancing with `terms=`. Defaults to
            `None`.
        temperature: Positive float, the temperature of the logit terms
            that do not set their own (a `keras.Variable`, schedulable).
            Defaults to `4.0`.
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
        terms: Optional list of `keras_kd.Term` replacing the default
            `[HardLoss(), SoftTargets()]`, e.g.
            `[keras_kd.HardLoss(), keras_kd.DKD()]`. With `terms` and
            `alpha=None`, every term counts at its own `weight`; with an
            `alpha`, label terms are multiplied by `alpha` and response terms
            by `1 - alpha`. Defaults to `None`.
        teachers: Optional list (or dict `{name: model}`) of several
            teachers, instead of `teacher`. Each runs once per step; logit
            terms average their softened probabilities unless a term names
            one with `teacher=`. Defaults to `None`.
        outputs: `"auto"`, `"softmax"` or `"sigmoid"`. `"auto"` takes one
            logit (or a teacher ending in a sigmoid) as sigmoid outputs:
            binary or multi-label classifiers, distilled with a Bernoulli
            KL per output and binary cross-entropy. Defaults to `"auto"`.
        preprocessor: `"auto"`, `None`, or a layer mapping a batch of raw
            inputs to `(x, y, sample_weight)` (a KerasHub preprocessor such
            as `keras_hub.models.GPT2CausalLMPreprocessor`). `fit` and
            `evaluate` then take raw inputs (strings) and tokenize them in a
            `tf.data` pipeline, as a KerasHub task does; teacher and student
            receive the same token ids, and the padding mask becomes the
            per-token sample weight. `"auto"` uses the student's
            `preprocessor` attribute if it has one (KerasHub tasks). Pass
            `None` to feed token ids yourself. Defaults to `"auto"`.
        teacher_dtype: `None`, `"float32"`, `"bfloat16"` or `"float16"`. Runs
            the frozen teacher in that precision (Keras mixed precision: its
            weights stay as they are and are cast when read) while the
            student trains in its own; on accelerators the teacher's forward
            is often half the step. The teacher's logits are cast to float32
            before the loss, and the teacher model itself is left with its
            own policy. Defaults to `None` (the teacher's own precision).
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
        teacher=None,
        student=None,
        alpha=None,
        temperature=4.0,
        features=None,
        scale_by_temperature_squared=True,
        teacher_outputs="auto",
        teacher_preprocessing=None,
        student_preprocessing=None,
        augmentation=None,
        save_teacher=False,
        terms=None,
        teachers=None,
        outputs="auto",
        preprocessor="auto",
        teacher_dtype=None,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        names, models, paths = _teachers.normalize_teachers(teacher, teachers)
        validation.check_model("student", student)
        for model in models:
            if model is student:
                raise ValueError(
                    "Arguments `teacher` and `student` are the same model. "
                    "Distillation needs a separate student to train."
                )
        if not student.trainable_weights:
            raise ValueError(
                f"The student model {student.name!r} has no trainable "
                "weights, so distillation cannot change it. Set "
                "`student.trainable = True` (and unfreeze its layers). "
                "Received: len(student.trainable_weights)=0"
            )
        self.teacher_names = names
        self._teacher_paths = paths
        self._several_teachers = teachers is not None or len(models) > 1
        self._balanced = alpha is not None or terms is None
        self._initial_alpha = validation.check_unit_interval(
            "alpha", 0.5 if alpha is None else alpha
        )
        self._alpha_given = alpha
        self._initial_temperature = validation.check_positive_number(
            "temperature", temperature
        )
        self.teacher_outputs = validation.check_one_of(
            "teacher_outputs", teacher_outputs,
            ("auto", "logits", "probabilities"))
        self.scale_by_temperature_squared = validation.check_bool(
            "scale_by_temperature_squared", scale_by_temperature_squared
        )
        self.save_teacher = bool(save_teacher)
        if alpha == 1.0:
            warnings.warn(
                "`alpha=1.0` puts no weight on the teacher: this trains the "
                "student on labels alone.",
                UserWarning,
                stacklevel=2,
            )

        self.num_classes = model_utils.num_classes(student)
        # 2 for a classifier, 3 for `(batch, sequence, vocabulary)` logits.
        self._output_rank = model_utils.output_rank(student)
        _teachers.check_class_counts(names, models, self.num_classes,
                                     self._output_rank)
        self.outputs = _teachers.detect_outputs(
            outputs, models, student, self.num_classes
        )
        self._outputs_arg = outputs
        self.teacher_dtype = _teachers.check_teacher_dtype(teacher_dtype)
        # Not tracked: the student already owns its preprocessor.
        object.__setattr__(self, "_preprocessor",
                           _pipeline.resolve(preprocessor, student))
        self._preprocessor_arg = preprocessor if preprocessor in (
            None, "auto") else "given"
        _teachers.check_student_logits(student, self.outputs)
        self._convert_probabilities = [
            _teachers.converts_probabilities(t, teacher_outputs, self.outputs)
            for t in models
        ]
        # The first teacher's, for code that distils from one teacher.
        self._convert_teacher_probabilities = self._convert_probabilities[0]
        self.teacher_preprocessing = teacher_preprocessing
        self.student_preprocessing = student_preprocessing
        if augmentation is not None and not callable(augmentation):
            raise TypeError(
                "Argument `augmentation` must be a Keras layer or a function. "
                f"Received: augmentation={augmentation!r}"
            )
        self.augmentation = augmentation
        if teacher_preprocessing is None and student_preprocessing is None:
            s_shapes = model_utils.input_shapes(student)
            for model in models:
                t_shapes = model_utils.input_shapes(model)
                if t_shapes and s_shapes and not _shapes_compatible(
                    t_shapes, s_shapes
                ):
                    raise ValueError(
                        "The teacher and the student take inputs of different "
                        "shapes, and no preprocessing maps the batch to both. "
                        "Pass `teacher_preprocessing=` and/or "
                        "`student_preprocessing=` (for example "
                        "`keras.layers.Resizing(...)`) so each model receives "
                        f"the shape it expects. Received: teacher input "
                        f"{t_shapes}, student input {s_shapes}"
                    )

        for model in models:
            model.trainable = False
        if isinstance(teacher_preprocessing, keras.layers.Layer):
            teacher_preprocessing.trainable = False
        self._teacher_models = models
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
        self._user_terms = None if terms is None else list(terms)
        if terms is None:
            terms = [
                HardLoss(),
                SoftTargets(scale_by_temperature_squared=(
                    self.scale_by_temperature_squared)),
            ]
        self.terms = list(terms) + self.features
        self._check_terms()
        self._build_views()
        self.term_trackers = [
            keras.metrics.Mean(name=term.log_name) for term in self.terms
        ]
        self.teacher_agreement_tracker = keras.metrics.Mean(
            name="teacher_agreement"
        )
        self.built = True

    # ------------------------------------------------------------------
    # Public attributes.

    @property
    def teacher(self):
        """The teacher (a Distiller with several: see `teachers`)."""
        if len(self._teacher_models) > 1:
            raise AttributeError(
                f"This Distiller has {len(self._teacher_models)} teachers "
                f"{self.teacher_names}; `distiller.teacher` names one. Use "
                "`distiller.teachers` (a dict name -> model)."
            )
        return self._teacher_models[0]

    def __getattr__(self, name):
        # Reached only when normal lookup fails. On PyTorch,
        # `torch.nn.Module.__getattr__` would replace the `teacher`
        # property's error with "no attribute 'teacher'": raise it again.
        if name == "teacher" and len(
            self.__dict__.get("_teacher_models") or ()
        ) > 1:
            return type(self).teacher.fget(self)
        fallback = getattr(super(), "__getattr__", None)
        if fallback is None:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            )
        return fallback(name)

    @property
    def teachers(self):
        """Dict `{name: model}` of the teachers, in order."""
        return dict(zip(self.teacher_names, self._teacher_models))

    @property
    def alpha(self):
        """The `keras.Variable` holding the weight of the label terms."""
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
    # Terms and views: one forward pass per model gives every read tensor.

    def _check_terms(self):
        for term in self.terms:
            if not isinstance(term, Term):
                raise TypeError(
                    "Every distillation term must be a `keras_kd.Term` (e.g. "
                    "`keras_kd.SoftTargets`, `keras_kd.FeatureMatch`, or a "
                    f"subclass of your own). Received: {term!r} of type "
                    f"{type(term).__name__}"
                )
            term._attach(self.outputs, self._temperature,
                         max(1, (self._output_rank or 2) - 1))
        names = [term.log_name for term in self.terms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                "Two distillation terms have the same name, so their history "
                "keys would collide. Give each a distinct `name=`. Received "
                f"duplicate names: {duplicates}"
            )
        if not any(term.uses_teacher for term in self.terms):
            raise ValueError(
                "None of the distillation terms reads the teacher, so this "
                "would train the student on labels alone. Add a term such as "
                "`keras_kd.SoftTargets()`. Received terms: "
                f"{[term.log_name for term in self.terms]}"
            )

    def _build_views(self):
        teacher_taps = [[] for _ in self._teacher_models]
        student_taps = []
        self._reads = []
        for term in self.terms:
            t_read = None
            if term.uses_teacher:
                t_read = self._teacher_read(term, teacher_taps)
            s_index = _tap(self.student, term.student_layer, "student",
                           student_taps)
            s_shape = _tap_shape(self.student, student_taps, s_index)
            if t_read is None:
                t_shape = None
            elif isinstance(t_read, list):
                t_shape = [
                    _tap_shape(self._teacher_models[i], teacher_taps[i], j)
                    for i, j in t_read
                ]
            else:
                i, j = t_read
                t_shape = _tap_shape(self._teacher_models[i],
                                     teacher_taps[i], j)
            term.build_for(t_shape, s_shape)
            self._reads.append((t_read, s_index))
        self._teacher_tap_names_per_teacher = [
            [_tensor_layer_name(t) for t in taps] for taps in teacher_taps
        ]
        self._teacher_views = [
            model_utils.feature_view(model, taps, f"{model.name}_taps")
            if taps else None
            for model, taps in zip(self._teacher_models, teacher_taps)
        ]
        self._student_view = (
            model_utils.feature_view(
                self.student, student_taps, f"{self.student.name}_taps"
            )
            if student_taps
            else None
        )

    def _teacher_read(self, term, teacher_taps):
        """`(teacher, tap)` a term reads, or a list of them (ensemble)."""
        if term.teacher is not None:
            indices = [_teachers.teacher_index(
                self.teacher_names, term.teacher, term.log_name)]
        elif len(self._teacher_models) == 1:
            indices = [0]
        elif term.teacher_layer is None:
            return [(i, 0) for i in range(len(self._teacher_models))]
        else:
            raise ValueError(
                f"The term {term.log_name!r} reads the teacher layer "
                f"{term.teacher_layer!r}, but this Distiller has several "
                f"teachers {self.teacher_names}. Name one: "
                f"`teacher='{self.teacher_names[0]}'`. Received: teacher=None"
            )
        i = indices[0]
        return (i, _tap(self._teacher_models[i], term.teacher_layer,
                        "teacher", teacher_taps[i]))

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
        if isinstance(self.augmentation, keras.layers.Layer):
            return self.augmentation(x, training=True)
        return self.augmentation(x)

    def _teacher_outputs(self, x, cached):
        """Per teacher, `[logits, *tapped features]` (float32 logits)."""
        if cached is not None:
            return self._cached_teacher_outputs(cached)
        inputs = _apply(self.teacher_preprocessing, x)
        result = []
        for model, view, convert in zip(
            self._teacher_models, self._teacher_views,
            self._convert_probabilities,
        ):
            models = [model] if view is None else [model, view]
            with _teachers.computing_in(models, self.teacher_dtype):
                outputs = self._forward(model, view, inputs, training=False)
            if self.teacher_dtype is not None:
                # Terms see float32, whatever precision the teacher ran in.
                outputs = [ops.cast(o, "float32") for o in outputs]
            logits = outputs[0]
            if convert:
                logits = _teachers.to_logits(logits, self.outputs)
            outputs[0] = ops.cast(logits, "float32")
            result.append([ops.stop_gradient(o) for o in outputs])
        return result

    def _cache_keys(self):
        """Names of the cached teacher outputs, in `_flat_teacher_outputs`
        order: `"logits"`, then the first teacher's taps; with several
        teachers, `"<teacher>/logits"` and `"<teacher>/<layer>"` (Keras layer
        names hold no "/")."""
        keys = []
        several = len(self._teacher_models) > 1
        for i, (name, taps) in enumerate(zip(
                self.teacher_names, self._teacher_tap_names_per_teacher)):
            prefix = f"{name}/" if several else ""
            keys.append("logits" if i == 0 else f"{name}/logits")
            keys.extend(prefix + tap for tap in taps)
        return keys

    def _flat_teacher_outputs(self, x):
        """The live teacher outputs as one list, in `_cache_keys` order."""
        return [o for outputs in self._teacher_outputs(x, None)
                for o in outputs]

    def _cached_teacher_outputs(self, cached):
        values = dict(cached.get(TEACHER_FEATURES_KEY) or {})
        values["logits"] = cached[TEACHER_LOGITS_KEY]
        keys = self._cache_keys()
        missing = [k for k in keys if k not in values]
        if missing:
            raise validation.cache_mismatch_error(
                "teacher outputs the terms read are missing (a cache of "
                "another teacher, other teachers or other matched layers)",
                keys, sorted(values),
            )
        result, it = [], iter(keys)
        for taps in self._teacher_tap_names_per_teacher:
            logits = values[next(it)]
            if logits.shape[-1] != self.num_classes:
                raise validation.cache_mismatch_error(
                    "the number of classes", self.num_classes,
                    logits.shape[-1],
                )
            outputs = [ops.cast(logits, "float32")]
            outputs.extend(values[next(it)] for _ in taps)
            result.append([ops.stop_gradient(o) for o in outputs])
        return result

    def fit(self, x=None, y=None, batch_size=None, sample_weight=None,
            callbacks=None, **kwargs):
        """As `keras.Model.fit`, with the Distiller's checks first.

        Labels and sample weights are checked before training (arrays) or on
        the first batch (a `tf.data.Dataset` or `PyDataset`); `batch_size=1`
        is refused with relation terms; `alpha` and `temperature` must hold
        valid values. Terms with an `on_epoch_begin(epoch)` method are told
        the epoch.
        """
        relational = [t.log_name for t in self.terms if t.relational]
        if batch_size == 1 and relational:
            raise ValueError(
                f"The relation terms {relational} compare the samples of a "
                "batch with each other and need at least 2 samples per batch. "
                "Received: batch_size=1. Use a larger batch size."
            )
        self.alpha = float(ops.convert_to_numpy(self._alpha))
        self.temperature = float(ops.convert_to_numpy(self._temperature))
        if self._preprocessor is not None:
            x = _pipeline.preprocessed(
                self._preprocessor, x, y, sample_weight, batch_size,
                shuffle=kwargs.get("shuffle", True))
            y = sample_weight = batch_size = None
            validation = kwargs.get("validation_data")
            if validation is not None:
                kwargs["validation_data"] = self._raw_to_dataset(validation)
        self._check_fit_inputs(x, y, sample_weight)
        hooks = [t for t in self.terms if hasattr(t, "on_epoch_begin")]
        if hooks:
            callbacks = list(callbacks or []) + [_TermEpochs(hooks)]
        return super().fit(x, y, batch_size=batch_size,
                           sample_weight=sample_weight, callbacks=callbacks,
                           **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, sample_weight=None,
                 **kwargs):
        """As `keras.Model.evaluate`; raw inputs go through the
        preprocessor (see `preprocessor`)."""
        if self._preprocessor is not None:
            x = _pipeline.preprocessed(self._preprocessor, x, y,
                                       sample_weight, batch_size)
            y = sample_weight = batch_size = None
        return super().evaluate(x, y, batch_size=batch_size,
                                sample_weight=sample_weight, **kwargs)

    def _raw_to_dataset(self, validation):
        import tensorflow as tf

        if isinstance(validation, tf.data.Dataset):
            return _pipeline.preprocessed(self._preprocessor, validation)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
            tuple(validation))
        return _pipeline.preprocessed(self._preprocessor, x, y, sample_weight)

    def _check_fit_inputs(self, x, y, sample_weight):
        if y is None:
            batch = _inputs.first_batch(x)
            if batch is None:
                return
            _, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
                tuple(batch) if isinstance(batch, list) else batch)
            where = "the first batch's labels"
        else:
            where = "y"
            n = len(y[LABELS_KEY]) if isinstance(y, dict) and \
                y.get(LABELS_KEY) is not None else _length(y)
            _inputs.check_sample_weight(sample_weight, n, self._output_rank)
        labels, _ = self._split_targets(y)
        _inputs.check_labels(labels, self.num_classes, self.outputs, where,
                             self._output_rank)

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
        the gradients summed over replicas equal those of one device. The
        loop is the same for every term; what differs comes from the term's
        declarations (`needs_labels`, `relational`, `response`).
        """
        inputs = _apply(self.student_preprocessing, x)
        student = self._forward(
            self.student, self._student_view, inputs, training=training
        )
        logits = student[0]
        batch = ops.shape(logits)[0]
        samples = self._global_sum(ops.cast(batch, "float32"))
        weights, mask = self._position_weights(logits, labels, sample_weight)
        labeled = None
        if len(logits.shape) > 2:
            # Per token: only the real tokens of the global batch count, so
            # padding never does and 1 or 2 replicas weigh them the same.
            count = self._global_sum(ops.sum(mask))
            if labels is not None:
                labeled = count
        else:
            count = samples
            if labels is not None:
                labeled = self._global_sum(ops.sum(mask))
        alpha = self._effective_alpha(labeled)
        total = ops.zeros((), "float32")
        terms = {"loss": (None, count)}
        for term, (t_read, s_index) in zip(self.terms, self._reads):
            if term.needs_labels and labels is None:
                continue
            t_in = _select(teacher, t_read)
            s_in = student[s_index]
            if term.relational:
                # Relations span the global batch: gather it from every
                # replica, keep this replica's rows.
                gather = self._gather_batch
                values = self._local_rows(term(
                    _map(gather, t_in), gather(s_in),
                    labels=self._gather_labels(labels),
                ), batch)
            else:
                values = term(t_in, s_in, labels=labels)
            values = _per_position(ops.cast(values, "float32"), weights)
            if term.needs_labels:
                value = ops.divide_no_nan(
                    ops.sum(weights * mask * values), labeled)
                terms[term.log_name] = (value, labeled)
            else:
                value = ops.divide_no_nan(ops.sum(weights * values), count)
                terms[term.log_name] = (value, count)
            total = total + _term_scale(term, alpha) * value
        regularization = self.student.losses + [
            loss for term in self.terms for loss in term.losses
        ]
        if regularization:
            # As Keras' `compute_loss`: one share per replica.
            total = total + ops.sum(ops.stack(regularization)) / (
                samples / ops.cast(batch, "float32")
            )
        total = self._guard_variables(total)
        terms["loss"] = (total, count)
        return total, terms, logits

    def _position_weights(self, logits, labels, sample_weight):
        """`(weights, mask)` per position: per sample for `(batch, classes)`
        logits, per token for `(batch, sequence, vocabulary)` logits.

        For a classifier, `weights` are the sample weights and `mask` marks
        the labeled samples (or is None without labels). Per token, a
        position is real when its sample weight is positive and its label
        is not -1 (the padding of KerasHub's preprocessors and Hugging
        Face's -100 convention); `mask` marks the real tokens and `weights`
        are zero elsewhere, for every term.
        """
        rank = len(logits.shape)
        positions = ops.shape(logits)[:-1]
        if sample_weight is None:
            weights = ops.ones(positions, "float32")
        else:
            # One weight per sample or per position: (batch, 1) or
            # (batch, positions) once flat, which broadcasts to every
            # position. (Under tf.function a retraced step may see the
            # weights with an unknown rank.)
            weights = ops.reshape(ops.cast(sample_weight, "float32"),
                                  (positions[0], -1))
            size = 1
            for dim in positions[1:]:
                size = size * dim
            weights = ops.reshape(
                ops.broadcast_to(weights, (positions[0], size)), positions)
        mask = None
        if labels is not None:
            mask = label_mask(labels, self.num_classes, self.outputs, rank)
        if rank == 2:
            return weights, mask
        real = ops.cast(weights > 0, "float32")
        if mask is not None:
            real = real * mask
        return weights * real, real

    def _gather_labels(self, labels):
        # Integer tensors live on the host under tf.distribute, where
        # `all_gather` has no destination: gather them as float32.
        if labels is None:
            return None
        gathered = self._gather_batch(ops.cast(labels, "float32"))
        return ops.cast(gathered, labels.dtype)

    def _effective_alpha(self, labeled):
        """`alpha`, 0 for a batch without labels, None when unbalanced."""
        if not self._balanced:
            return None
        if labeled is None:
            return ops.zeros((), "float32")
        alpha = ops.cast(self._alpha, "float32")
        return ops.where(labeled > 0, alpha, ops.zeros_like(alpha))

    def _guard_variables(self, total):
        # `alpha.assign(5)` or `temperature.assign(-3)` bypass the setters'
        # checks; inside a traced step the loss then becomes NaN (and
        # `fit` refuses such values before it starts).
        alpha = ops.cast(self._alpha, "float32")
        temperature = ops.cast(self._temperature, "float32")
        valid = ops.logical_and(
            ops.logical_and(alpha >= 0.0, alpha <= 1.0), temperature > 0.0
        )
        return ops.where(valid, total, ops.full_like(total, float("nan")))

    def _update_loss_trackers(self, loss, terms):
        # Each logged value is the global (all-replica) value, weighted by
        # its count, so a Mean over replicas and batches is exact.
        _, count = terms["loss"]
        keras_compat.loss_tracker(self).update_state(
            self._global_sum(loss), sample_weight=count
        )
        for term, tracker in zip(self.terms, self.term_trackers):
            if term.log_name in terms:
                value, n = terms[term.log_name]
                tracker.update_state(self._global_sum(value), sample_weight=n)

    def _update_metrics(self, labels, logits, teacher, sample_weight):
        teacher_logits = [outputs[0] for outputs in teacher]
        agreement_weight = sample_weight
        if len(logits.shape) > 2:
            agreement_weight, _ = self._position_weights(
                logits, labels, sample_weight)
        self.teacher_agreement_tracker.update_state(
            _agreement(logits, teacher_logits, self.outputs),
            sample_weight=agreement_weight,
        )
        logs = self.compute_metrics(None, labels, logits, sample_weight)
        if labels is None:
            # Without labels the label metrics saw nothing: leave them out of
            # the logs rather than report a misleading 0.
            unlabeled = {t.log_name for t in self.terms if t.needs_labels}
            container = keras_compat.compile_metrics(self)
            if container is not None:
                unlabeled.update(m.name for m in container.metrics)
            logs = {k: v for k, v in logs.items() if k not in unlabeled}
        return logs

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the compiled metrics on the labeled samples only.

        `metrics` stay unweighted and `weighted_metrics` use the sample
        weights, as in Keras; unlabeled samples are left out of both. For
        sigmoid outputs the metrics see `sigmoid(logits)`, so Keras'
        thresholds at 0.5 apply.
        """
        labels, _ = self._split_targets(y)
        metrics = keras_compat.compile_metrics(self)
        if labels is not None and metrics is not None:
            rank = len(y_pred.shape)
            weighted, mask = self._position_weights(
                y_pred, labels, sample_weight)
            if rank == 2:
                weighted = weighted * mask
            if self.outputs == "sigmoid":
                y_pred = ops.sigmoid(ops.cast(y_pred, "float32"))
                safe = ops.reshape(ops.maximum(ops.cast(labels, "float32"),
                                               0.0), ops.shape(y_pred))
            elif is_dense_labels(labels, self.num_classes, logits_rank=rank):
                safe = labels
            else:
                safe = ops.where(labels >= 0, labels, ops.zeros_like(labels))
            if not metrics.built:
                metrics.build(safe, y_pred)
            unweighted, weighted_metrics = keras_compat.flat_metrics(metrics)
            # Keras' CompileMetrics gives unweighted metrics no weights at
            # all, so each list is updated here with its own weights.
            for group, weights in (
                (unweighted, mask),
                (weighted_metrics, weighted),
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
        return {
            "name": self.name,
            "trainable": self.trainable,
            "teacher": teacher,
            "teachers": teachers,
            "student": keras.saving.serialize_keras_object(self.student),
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
        for key in ("student", "teacher_preprocessing",
                    "student_preprocessing", "augmentation", "preprocessor"):
            config[key] = load(config.get(key))
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
        spec = model_utils.output_spec(model)
        return None if spec is None else tuple(spec.shape)
    return tuple(taps[index - 1].shape)


def _tensor_layer_name(tensor):
    return keras_compat.producing_operation(tensor).name


def _select(teacher, read):
    """What a term reads from the teachers' outputs (see `_teacher_read`)."""
    if read is None:
        return None
    if isinstance(read, list):
        return [teacher[i][j] for i, j in read]
    i, j = read
    return teacher[i][j]


def _map(fn, value):
    if value is None:
        return None
    if isinstance(value, list):
        return [fn(v) for v in value]
    return fn(value)


def _per_position(values, weights):
    """Broadcasts one value per sample to every token of a sequence batch."""
    extra = len(weights.shape) - len(values.shape)
    if extra <= 0:
        return values
    values = ops.reshape(values, ops.shape(values) + (1,) * extra)
    return ops.broadcast_to(values, ops.shape(weights))


def _term_scale(term, alpha):
    """The weight of a term: its own, times `alpha` for label terms and
    `1 - alpha` for response terms when the Distiller balances them."""
    if alpha is None:
        return term.weight
    if term.needs_labels:
        return term.weight * alpha
    if term.response:
        return term.weight * (1.0 - alpha)
    return term.weight


def _agreement(logits, teacher_logits, outputs):
    """Per sample: does the student decide as the (ensembled) teachers?"""
    logits = ops.cast(logits, "float32")
    if outputs == "sigmoid":
        p_t = sum(ops.sigmoid(t) for t in teacher_logits) / len(
            teacher_logits)
        same = ops.cast((logits > 0) == (p_t > 0.5), "float32")
        return ops.mean(same, axis=-1)
    p_t = sum(ops.softmax(t, axis=-1) for t in teacher_logits)
    return ops.cast(
        ops.argmax(logits, axis=-1) == ops.argmax(p_t, axis=-1), "float32"
    )


def _length(data):
    try:
        return len(data)
    except TypeError:
        return None


class _TermEpochs(keras.callbacks.Callback):
    """Tells terms with an `on_epoch_begin(epoch)` hook the epoch."""

    def __init__(self, terms):
        super().__init__()
        self._terms = terms

    def on_epoch_begin(self, epoch, logs=None):
        for term in self._terms:
            term.on_epoch_begin(epoch)
