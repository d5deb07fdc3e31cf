"""DistillerHyperModel: a KerasTuner search over temperature and alpha."""

import difflib
import inspect
import math
import warnings

import keras
import keras_tuner

from keras_kd.distiller import Distiller
from keras_kd.tuning._space import check_search_space
from keras_kd.tuning._space import declare as _declare
from keras_kd.tuning._space import logged_metric_names
from keras_kd.tuning._space import takes_hp as _takes_hp
from keras_kd.tuning._teacher_cache import TeacherCacheStore
from keras_kd.utils import validation

# The terms every Distiller logs (see `Distiller`), besides compiled metrics.
# Logged whatever the terms: the total and the agreement with the teacher.
_LOGGED_TERMS = ("loss", "teacher_agreement")
# Objectives whose scale depends on the temperature and alpha themselves.
_LOSS_OBJECTIVES = ("loss", "soft_loss")
# Distiller warning that is expected at one end of the default alpha range.
_ALPHA_ONE_WARNING = r"`alpha=1\.0` puts no weight on the teacher"


class DistillerHyperModel(keras_tuner.HyperModel):
    """A `keras_tuner.HyperModel` that builds a compiled `Distiller` per trial.

    Each trial gets a fresh student and a Distiller with the trial's
    `temperature` (default range 1 to 20, log scale) and `alpha` (the weight
    of the hard label loss, with `1 - alpha` on the soft loss; default range
    0 to 1), and optionally its learning rate and `FeatureMatch` weights.
    The teacher is shared by every trial and never trained.

    Every search argument takes a number (a fixed value), a `(min, max)`
    tuple (a range) or a list (choices). Extra hyperparameters belong to the
    student builder: `student(hp)` may call `hp.Int(...)` and friends.

    Use the student's validation metric as the tuner's objective (for
    example `"val_accuracy"`), not a loss: the soft loss is measured at the
    trial's own temperature (and weighted by its own alpha), so losses of two
    trials are not comparable. Every term the Distiller logs is accepted
    (`loss`, `hard_loss`, `soft_loss`, `teacher_agreement`, the compiled
    metrics, the feature terms, and their `val_` versions); an objective that
    is not logged is refused before the first trial trains.

    When the training data are arrays, or a `tf.data.Dataset` that yields the
    same batches on every pass, the teacher's outputs are computed once (on
    the first trial) and reused by every later trial, including Hyperband's
    continued trials: N trials cost about N student trainings. Validation
    data are cached the same way. A reshuffling dataset, a generator or
    `augmentation=` runs the live teacher (a warning says so for the data).

    A trial whose training loss becomes NaN or Inf is stopped by
    `keras.callbacks.TerminateOnNaN` and recorded as `FAILED`; the search goes
    on (KerasTuner stops after `max_consecutive_failed_trials` failures in a
    row). KerasTuner keeps its state in `directory`, so a search that was
    interrupted resumes where it stopped when the tuner is built again.

    KerasTuner calls `gc.collect()` twice per trial; in a process holding
    many Python objects that costs up to a second per trial. Calling
    `gc.freeze()` once after the setup (before `search`) makes it cheap.

    Args:
        teacher: The trained teacher, a built `keras.Model` returning logits
            (or the path of its `.keras` file, loaded once). It is frozen and
            shared by all trials.
        student: A function returning a new student `keras.Model` (it
            receives `hp` if it takes an argument), or a built `keras.Model`
            whose architecture is cloned with fresh weights for every trial.
            The student returns logits and need not be compiled: the
            Distiller is compiled for it.
        temperature: Positive number, `(min, max)` range (log scale) or list
            of choices. Defaults to `(1.0, 20.0)`.
        alpha: Number in [0, 1], `(min, max)` range or list of choices, the
            weight of the hard loss (`1 - alpha` on the soft loss). Defaults
            to `(0.0, 1.0)`.
        learning_rate: `None` (the optimizer's default), a positive number,
            a `(min, max)` range (log scale) or a list. Defaults to `None`.
        optimizer: Optimizer string id or instance; a new copy is made for
            every trial. Defaults to `"adam"`.
        metrics: Metrics of the student passed to `Distiller.compile`.
            Defaults to `("accuracy",)`.
        features: Optional list of `keras_kd.FeatureMatch` /
            `keras_kd.RelationMatch`, copied (with new heads) for every trial.
        feature_weights: `None` (each match keeps its weight), one search
            argument for every match (a number, range or list; a range is log
            scale when its min is above 0), or a dict from a term's name
            (`term.log_name`, of `features` or `terms`) to a search argument.
            The hyperparameter of a term is named
            `f"{term.log_name}_weight"`.
        terms: Optional list of `keras_kd.Term` (built-in or your own),
            passed to every trial's Distiller as `terms=` (copied from their
            configs, so each trial starts fresh). `alpha` is searched only if
            given explicitly; with `terms` and the default `alpha`, the terms
            count at their own weights. Defaults to `None`.
        cache_teacher_outputs: Boolean, reuse the teacher's outputs across
            trials when the data allow it. Defaults to `True`.
        cache_batch_size: Integer, batch size of the teacher pass that fills
            the cache. Defaults to `256`.
        name: Optional name of the hypermodel.
        tunable: Boolean, as in `keras_tuner.HyperModel`. Defaults to `True`.
        **distiller_kwargs: Other `keras_kd.Distiller` arguments, the same in
            every trial (`teacher_preprocessing`, `augmentation`, ...).

    Example:

    ```python
    hypermodel = keras_kd.tuning.DistillerHyperModel(
        teacher, build_student, temperature=(1.0, 20.0), alpha=(0.0, 1.0))
    tuner = keras_tuner.BayesianOptimization(
        hypermodel, objective="val_accuracy", max_trials=20,
        directory="tuning", project_name="kd")
    tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=5)
    student = keras_kd.tuning.best_student(tuner)
    print(keras_kd.tuning.format_trial_table(
        keras_kd.tuning.trial_table(tuner)))
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        temperature=(1.0, 20.0),
        alpha=(0.0, 1.0),
        learning_rate=None,
        optimizer="adam",
        metrics=("accuracy",),
        features=None,
        feature_weights=None,
        terms=None,
        cache_teacher_outputs=True,
        cache_batch_size=256,
        name=None,
        tunable=True,
        **distiller_kwargs,
    ):
        super().__init__(name=name, tunable=tunable)
        if isinstance(teacher, str):
            teacher = keras.saving.load_model(teacher, compile=False)
        self.teacher = validation.check_model("teacher", teacher)
        if isinstance(student, keras.Model):
            validation.check_model("student", student)
            self._student_template, self._student_builder = student, None
        elif callable(student):
            self._student_template, self._student_builder = None, student
            self._builder_takes_hp = _takes_hp(student)
        else:
            raise student_source_type_error(student)
        self.space = {
            "temperature": check_search_space(
                "temperature", temperature, "positive"),
            "alpha": check_search_space("alpha", alpha, "unit"),
        }
        # With `terms=`, alpha balances label and response terms only when
        # the caller asked for it (the default range is for the default
        # terms).
        self._alpha_given = None if (
            terms is not None and alpha == (0.0, 1.0)) else alpha
        if self._alpha_given is None and terms is not None:
            del self.space["alpha"]
        if learning_rate is not None:
            self.space["learning_rate"] = check_search_space(
                "learning_rate", learning_rate, "positive")
        self.optimizer = optimizer
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            metrics = [metrics]
        self.metrics = list(metrics or [])
        self.features = list(features or [])
        self.terms = None if terms is None else list(terms)
        self._feature_spaces = self._read_feature_weights(feature_weights)
        self.cache_teacher_outputs = validation.check_bool(
            "cache_teacher_outputs", cache_teacher_outputs)
        self.distiller_kwargs = dict(distiller_kwargs)
        self.teacher_cache = TeacherCacheStore(
            validation.check_positive_integer("cache_batch_size",
                                              cache_batch_size))
        self._last_student = None
        self._warned_loss_objective = False
        # Build one Distiller now, so a bad student, optimizer or feature
        # match fails here rather than inside the first trial. It also
        # detects once whether the teacher outputs probabilities (and warns
        # once), instead of probing the teacher in every trial.
        distiller = self.build(keras_tuner.HyperParameters())
        if distiller_kwargs.get("teacher_outputs", "auto") == "auto":
            self.distiller_kwargs["teacher_outputs"] = (
                "probabilities" if distiller._convert_teacher_probabilities
                else "logits")

    def _read_feature_weights(self, feature_weights):
        if feature_weights is None:
            return {}
        names = [match.log_name for match in self.features]
        if isinstance(feature_weights, dict):
            known = names + [t.log_name for t in self.terms or []]
            for key in feature_weights:
                if key not in known:
                    raise validation.unknown_name_error(
                        "term", key, known, "`feature_weights`")
            specs = dict(feature_weights)
        elif not self.features:
            raise feature_weights_without_features_error(
                feature_weights)
        else:
            specs = {name: feature_weights for name in names}
        return {
            name: check_search_space(
                f"{name}_weight", spec, "non_negative")
            for name, spec in specs.items()
        }

    # ------------------------------------------------------------------
    # Build: every hp call, then a compiled Distiller with a fresh student.

    def build(self, hp):
        """Returns a compiled `Distiller` with a fresh student for `hp`."""
        values = {name: _declare(hp, name, spec)
                  for name, spec in self.space.items()}
        values.setdefault("alpha", None)
        features = [self._copy_term(hp, match) for match in self.features]
        extra = {}
        if self.terms is not None:
            extra["terms"] = [self._copy_term(hp, t) for t in self.terms]
            if self._alpha_given is None:
                extra["alpha"] = None
        student = self._new_student(hp)
        try:
            with warnings.catch_warnings():
                # The search space asked for alpha=1 (labels alone): a
                # legitimate point of comparison, not a mistake.
                warnings.filterwarnings("ignore", message=_ALPHA_ONE_WARNING,
                                        category=UserWarning)
                kwargs = dict(alpha=values["alpha"],
                              temperature=values["temperature"],
                              features=features, **self.distiller_kwargs)
                kwargs.update(extra)
                distiller = Distiller(self.teacher, student, **kwargs)
        except (TypeError, ValueError) as error:
            raise _fatal(incompatible_student_error(error)) from \
                error
        distiller.compile(
            optimizer=self._new_optimizer(values.get("learning_rate")),
            metrics=list(self.metrics) or None,
        )
        return distiller

    def _copy_term(self, hp, term):
        """A fresh copy of a term (new heads), with its searched weight."""
        config = term.get_config()
        if term.log_name in self._feature_spaces:
            config["weight"] = _declare(
                hp, f"{term.log_name}_weight",
                self._feature_spaces[term.log_name])
        return type(term).from_config(config)

    def _new_student(self, hp):
        if self._student_template is not None:
            student = keras.models.clone_model(self._student_template)
        elif self._builder_takes_hp:
            student = self._student_builder(hp)
        else:
            student = self._student_builder()
        if not isinstance(student, keras.Model):
            raise _fatal(built_student_type_error(student))
        if student is self._last_student or student is self.teacher:
            raise _fatal(reused_student_error(student.name))
        self._last_student = student
        return student

    def _new_optimizer(self, learning_rate):
        optimizer = self.optimizer
        if isinstance(optimizer, keras.optimizers.Optimizer):
            config = optimizer.get_config()
            cls = type(optimizer)
        else:
            optimizer = keras.optimizers.get(optimizer)
            config, cls = optimizer.get_config(), type(optimizer)
        if learning_rate is not None:
            config["learning_rate"] = learning_rate
        return cls.from_config(config)

    # ------------------------------------------------------------------
    # Fit: cached teacher outputs, objective check, NaN trials fail.

    def fit(self, hp, model, *args, **kwargs):
        """Trains the trial's Distiller; called by the tuner for each trial.

        Takes the arguments of `keras.Model.fit` (those given to
        `tuner.search`). Replaces the targets by the cached teacher outputs
        when possible, and raises `keras_tuner.errors.FailedTrialError` when
        the training loss became NaN or Inf.

        Returns:
            The `keras.callbacks.History` of the trial.
        """
        arguments = inspect.signature(model.fit).bind(*args, **kwargs)
        arguments = dict(arguments.arguments)
        arguments.update(arguments.pop("kwargs", {}))
        callbacks = list(arguments.get("callbacks") or [])
        tuner = _find_tuner(callbacks)
        if tuner is not None:
            self._check_objective(tuner.oracle.objective, model, arguments)
        if self.cache_teacher_outputs and model.augmentation is None:
            arguments["x"], arguments["y"] = \
                self.teacher_cache.training_targets(
                    model, arguments.get("x"), arguments.get("y"))
            if arguments.get("validation_data") is not None:
                arguments["validation_data"] = \
                    self.teacher_cache.validation_data(
                        model, arguments["validation_data"])
        arguments["callbacks"] = [keras.callbacks.TerminateOnNaN()] + \
            callbacks
        history = model.fit(**arguments)
        losses = history.history.get("loss", [])
        if any(not math.isfinite(float(v)) for v in losses):
            raise keras_tuner.errors.FailedTrialError(
                diverged_trial_message(_tuned_values(hp)))
        return history

    def logged_names(self, model, include_validation=True):
        """The history keys a compiled Distiller logs (objective names)."""
        names = list(_LOGGED_TERMS)
        names += [term.log_name for term in model.terms]
        names += logged_metric_names(model)
        if include_validation:
            names += [f"val_{name}" for name in names]
        return names

    def _check_objective(self, objective, model, arguments):
        objectives = getattr(objective, "objectives", None) or [objective]
        if any(type(o).__name__ == "DefaultObjective" for o in objectives):
            raise _fatal(missing_objective_error())
        has_validation = (arguments.get("validation_data") is not None
                          or bool(arguments.get("validation_split")))
        logged = self.logged_names(model)
        for item in objectives:
            name = item.name
            if name not in logged:
                raise _fatal(objective_not_logged_error(
                    name, logged))
            if name.startswith("val_") and not has_validation:
                raise _fatal(
                    objective_without_validation_error(name))
            base = name[4:] if name.startswith("val_") else name
            # The loss scale moves with these, not with the learning rate.
            scales = [self.space[k] for k in ("temperature", "alpha")
                      if k in self.space]
            scales += list(self._feature_spaces.values())
            tuned = any(spec[0] != "fixed" for spec in scales)
            if base in _LOSS_OBJECTIVES and tuned and \
                    not self._warned_loss_objective:
                self._warned_loss_objective = True
                warnings.warn(loss_objective_message(name),
                              UserWarning, stacklevel=3)


def _fatal(error):
    """The KerasTuner error that stops the search instead of one trial."""
    if isinstance(error, TypeError):
        return keras_tuner.errors.FatalTypeError(str(error))
    return keras_tuner.errors.FatalValueError(str(error))


def _find_tuner(callbacks):
    """The tuner behind this `fit`, from the callback KerasTuner adds."""
    for callback in callbacks:
        tuner = getattr(callback, "tuner", None)
        if tuner is not None and hasattr(tuner, "oracle"):
            return tuner
    return None


def _tuned_values(hp):
    return {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}


# Error messages.


def student_source_type_error(student):
    return TypeError(
        "Argument `student` must be a function that builds a new student "
        "`keras.Model` (called once per trial, optionally with `hp`), or a "
        "built `keras.Model` whose architecture is cloned with fresh weights "
        "for every trial. Received: "
        f"student={validation.short_repr(student)} of type "
        f"{type(student).__name__}"
    )


def built_student_type_error(result):
    return TypeError(
        "The student builder must return a new `keras.Model` (the student, "
        "returning logits) each time it is called. Received: the builder "
        f"returned {validation.short_repr(result)} of type "
        f"{type(result).__name__}"
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


def diverged_trial_message(values):
    shown = ", ".join(f"{k}={v!r}" for k, v in sorted(values.items()))
    return (
        f"The trial diverged: the training loss became NaN or Inf ({shown}). "
        "keras.callbacks.TerminateOnNaN stopped it; it is recorded as FAILED "
        "and the search goes on. Lower the learning rate or narrow the "
        "ranges if many trials fail."
    )
