"""The `keras.losses.Loss` that wraps a per-sample loss function.

Every keras_kd loss class is a thin subclass: its `__init__` checks the
hyper-parameters and hands them, with the function, to this base.
"""

import inspect

import keras

from keras_kd.utils import validation


@keras.saving.register_keras_serializable(package="keras_kd")
class LossFunctionWrapper(keras.losses.Loss):
    """Wraps a loss function `fn(teacher, student, **kwargs)` into a `Loss`.

    Written in the manner of Keras' own `LossFunctionWrapper`, with two
    differences: the tensors reach `fn` with the shapes they have (Keras
    squeezes or expands a last axis of size 1, which would change a feature
    or a relation), and each keyword argument becomes an attribute of the
    loss (`loss.temperature`), read again at every call.

    `y_true` is the teacher's tensor and `y_pred` the student's, so
    `loss(teacher, student)` computes `fn(teacher, student, **kwargs)`, one
    value per sample, then applies the sample weights, the mask and the
    reduction of `keras.losses.Loss`.

    Subclasses pass their own function and list only their constructor
    arguments in the config, so `cls(**config)` rebuilds them. A wrapper
    built directly on a function also saves the function: by its id if it
    was given to `keras_kd.losses.register`, else as Keras serializes
    functions (which needs `keras.saving.register_keras_serializable`).

    Args:
        fn: Callable `fn(teacher, student, **kwargs)` returning one value per
            sample, shape `(batch_size,)` (or `(batch_size, ...)`).
        reduction: As in `keras.losses.Loss`. Defaults to
            `"sum_over_batch_size"`, the batch mean.
        name: Name of the loss. Defaults to the snake_case class name.
        dtype: As in `keras.losses.Loss`.
        **kwargs: Keyword arguments passed to `fn` at every call.

    Example:

    >>> def centered_mse(teacher, student, scale=1.0):
    ...     diff = teacher - student
    ...     diff = diff - keras.ops.mean(diff, axis=-1, keepdims=True)
    ...     return scale * keras.ops.mean(keras.ops.square(diff), axis=-1)
    >>> loss = keras_kd.losses.LossFunctionWrapper(centered_mse, scale=2.0)
    >>> loss(np.ones((2, 3)), np.zeros((2, 3)))
    0.0
    """

    def __init__(
        self,
        fn,
        reduction="sum_over_batch_size",
        name=None,
        dtype=None,
        **kwargs,
    ):
        if not callable(fn):
            raise TypeError(
                "Argument `fn` must be a callable `fn(teacher, student, "
                f"**kwargs)`. Received: fn={fn!r} of type "
                f"{type(fn).__name__}"
            )
        for key in kwargs:
            if key.startswith("_") or hasattr(LossFunctionWrapper, key):
                raise ValueError(
                    f"The keyword argument `{key}` of the loss function "
                    "would replace an attribute of the `Loss`. Rename it in "
                    f"the function. Received: {key}={kwargs[key]!r}"
                )
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.fn = fn
        self._fn_kwarg_names = tuple(kwargs)
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def fn_kwargs(self):
        """The keyword arguments given to `fn`, as a new dict."""
        return {key: getattr(self, key) for key in self._fn_kwarg_names}

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self.fn_kwargs)

    def get_config(self):
        config = {**super().get_config(), **self.fn_kwargs}
        if type(self) is LossFunctionWrapper:
            config["fn"] = _serialize_fn(self.fn)
        return config

    @classmethod
    def from_config(cls, config):
        config = config.copy()
        if "fn" in config:
            config["fn"] = _deserialize_fn(config["fn"])
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(
            f"{key}={value!r}" for key, value in self.fn_kwargs.items()
        )
        fn_name = getattr(self.fn, "__name__", repr(self.fn))
        return (
            f"<{type(self).__name__}({fn_name}"
            f"{', ' + arguments if arguments else ''}, name={self.name!r})>"
        )


# String id -> Loss class or function, filled by
# `keras_kd.losses.register`.
USER_LOSSES = {}


def _serialize_fn(fn):
    registered = _registered_id(fn)
    if registered is not None:
        return registered
    return keras.saving.serialize_keras_object(fn)


def _deserialize_fn(config):
    if isinstance(config, str):
        return _registered_function(config)
    return keras.saving.deserialize_keras_object(config)


def _registered_id(fn):
    """The id under which the function `fn` is registered, or `None`."""
    for name, loss in USER_LOSSES.items():
        if loss is fn:
            return name
    return None


def _registered_function(name):
    """The function registered as `name` (a saved `LossFunctionWrapper`)."""
    loss = USER_LOSSES.get(name)
    if loss is None or inspect.isclass(loss):
        functions = [n for n, v in USER_LOSSES.items()
                     if not inspect.isclass(v)]
        raise validation.unknown_name_error(
            "registered loss function", name, functions,
            where="a saved `LossFunctionWrapper` config. Call "
            "`keras_kd.losses.register` with it before loading",
        )
    return loss
