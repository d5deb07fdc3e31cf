"""The Distiller: a `keras.Model` that trains a student to imitate a teacher."""

import warnings

import keras
from keras import ops

from keras_kd import _inputs
from keras_kd import fused as _fused
from keras_kd._loss import LABELS_KEY  # noqa: F401  (public keys)
from keras_kd._loss import TEACHER_FEATURES_KEY
from keras_kd._loss import TEACHER_LOGITS_KEY
from keras_kd._loss import LossMixin
from keras_kd._loss import apply as _apply
from keras_kd._saving import SavingMixin
from keras_kd._saving import load_distiller  # noqa: F401  (keras_kd.load_distiller)
from keras_kd import _pipeline
from keras_kd import _teachers
from keras_kd._steps import BackendSteps
from keras_kd.terms.base import Term
from keras_kd.terms.hard import HardLoss
from keras_kd.terms.kd import SoftTargets
from keras_kd.utils import keras_compat
from keras_kd.utils import models as model_utils
from keras_kd.utils import validation



@keras.saving.register_keras_serializable(package="keras_kd")
class Distiller(LossMixin, SavingMixin, BackendSteps, keras.Model):
    """Trains a student model to imitate a frozen teacher with `fit`.

    The loss of a batch is a weighted sum of distillation terms
    (`keras_kd.Term`). By default the terms are `HardLoss()` and
    `SoftTargets()`:

    ```python
    loss = alpha * hard + (1 - alpha) * soft + sum(weight_k * feature_k)
    hard = cross_entropy(labels, student_logits)
    soft = temperature**2 * KL(softmax(teacher / T) || softmax(student / T))
    ```

    Every term returns one value per sample (per token, for
    `(batch, sequence, vocabulary)` logits); the Distiller weighs them by
    the sample weights and averages them over the samples of the global
    batch (label terms over its labeled samples), or over its real tokens
    (padding never counts), the same way for the built-in terms and a
    user's own.

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
    skipped for that batch. For sequence models, labels hold one token id
    per position and `sample_weight` may be `(batch, sequence)` (a padding
    mask); a position with weight 0 or label -1 counts for no term.

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
            own policy. On CPUs float16 convolutions are emulated and can be
            tens of times slower: use `"bfloat16"` there, or nothing.
            Defaults to `None` (the teacher's own precision).
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
            _fused.attach(term, self.student)  # `keras_kd.fused` terms
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
        on_policy = getattr(x, "_keras_kd_callbacks", None)
        if on_policy is not None:
            # `keras_kd.data.on_policy`: its callback generates each batch
            # right before the step (token ids, no preprocessor).
            callbacks = list(callbacks or []) + on_policy(self)
        elif self._preprocessor is not None:
            x = _pipeline.preprocessed(
                self._preprocessor, x, y, sample_weight, batch_size,
                shuffle=kwargs.get("shuffle", True))
            y = sample_weight = batch_size = None
            validation = kwargs.get("validation_data")
            if validation is not None:
                kwargs["validation_data"] = self._raw_to_dataset(validation)
        if "shuffle" not in kwargs and hasattr(x, "element_spec"):
            # A `tf.data.Dataset` keeps its own order (shuffle it with
            # `.shuffle(...)`): Keras would warn that its default
            # `shuffle=True` is ignored.
            kwargs["shuffle"] = False
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
        if isinstance(inputs, dict) and "_on_policy" in inputs:
            # An on-policy batch (`keras_kd.data.on_policy`) seen by Keras'
            # symbolic build: its generation instructions are not inputs.
            inputs = {k: v for k, v in inputs.items() if k != "_on_policy"}
            if "token_ids" in inputs and not isinstance(
                    self.student.input, dict):
                inputs = inputs["token_ids"]
        inputs = _apply(self.student_preprocessing, inputs)
        return self.student(inputs, training=training)

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
