"""Distillation losses: `keras.ops` functions and `keras.losses.Loss` classes.

Every function takes the teacher's tensor first and the student's second and
returns one value per sample, shape `(batch_size,)`. Every class is a
`LossFunctionWrapper` around one of the functions. `get` resolves a string
id, a class, a function or a config to a `Loss`; `register` adds a string id.
"""

import difflib
import inspect

import keras

from keras_kd.losses import _wrapper
from keras_kd.losses._wrapper import LossFunctionWrapper

from keras_kd.losses.feature import AttentionTransfer
from keras_kd.losses.feature import FeatureCosine
from keras_kd.losses.feature import FeatureL1
from keras_kd.losses.feature import FeatureMSE
from keras_kd.losses.feature import FeatureSmoothL1
from keras_kd.losses.feature import attention_transfer
from keras_kd.losses.feature import feature_cosine
from keras_kd.losses.feature import feature_l1
from keras_kd.losses.feature import feature_mse
from keras_kd.losses.feature import feature_smooth_l1
from keras_kd.losses.logits import SoftTargetKL
from keras_kd.losses.logits import bernoulli_kl
from keras_kd.losses.logits import binary_cross_entropy
from keras_kd.losses.logits import ensemble_logits
from keras_kd.losses.logits import hard_cross_entropy
from keras_kd.losses.logits import label_mask
from keras_kd.losses.logits import soft_target_kl
from keras_kd.losses.logits import standardize_logits
from keras_kd.losses.relation import PKT
from keras_kd.losses.relation import RKDAngle
from keras_kd.losses.relation import RKDDistance
from keras_kd.losses.relation import SimilarityPreserving
from keras_kd.losses.relation import pkt
from keras_kd.losses.relation import rkd_angle
from keras_kd.losses.relation import rkd_distance
from keras_kd.losses.relation import similarity_preserving
from keras_kd.losses.tokens import GeneralizedJSDivergence
from keras_kd.losses.tokens import ReverseKLDivergence
from keras_kd.losses.tokens import SkewKLDivergence
from keras_kd.losses.tokens import SkewReverseKLDivergence
from keras_kd.losses.tokens import forward_kl_divergence
from keras_kd.losses.tokens import generalized_js_divergence
from keras_kd.losses.tokens import reverse_kl_divergence
from keras_kd.losses.tokens import skew_kl_divergence
from keras_kd.losses.tokens import skew_reverse_kl_divergence
from keras_kd.utils import validation

# Built-in string id -> Loss class. Several ids may name one class.
_LOSSES = {
    "kd": SoftTargetKL,
    "soft_target_kl": SoftTargetKL,
    "forward_kl": SoftTargetKL,
    "reverse_kl": ReverseKLDivergence,
    "jsd": GeneralizedJSDivergence,
    "skew_kl": SkewKLDivergence,
    "skew_reverse_kl": SkewReverseKLDivergence,
    "mse": FeatureMSE,
    "l1": FeatureL1,
    "smooth_l1": FeatureSmoothL1,
    "cosine": FeatureCosine,
    "attention": AttentionTransfer,
    "attention_transfer": AttentionTransfer,
    "rkd_distance": RKDDistance,
    "rkd_angle": RKDAngle,
    "similarity_preserving": SimilarityPreserving,
    "sp": SimilarityPreserving,
    "pkt": PKT,
}

# The built-in string ids. `ids()` adds those given to `register`.
ALL_IDS = tuple(sorted(_LOSSES))

# String id -> Loss class or function, filled by `register`. It lives in
# `_wrapper`, which reads it to save a wrapped function by its id.
_USER_LOSSES = _wrapper.USER_LOSSES


def ids():
    """Returns every string id that `get` accepts, sorted.

    The built-in ids (`ALL_IDS`) and those added by `register`.

    Example:

    >>> "mse" in keras_kd.losses.ids()
    True
    """
    return tuple(sorted({**_LOSSES, **_USER_LOSSES}))


def register(name, loss):
    """Adds a string id for a loss, usable wherever keras_kd takes one.

    After `register("my_loss", fn)`, `get("my_loss")`,
    `FeatureMatch(..., loss="my_loss")` and the command line's
    `--feature-loss my_loss` build that loss. A config that names it (a
    saved `FeatureMatch`) loads once the same registration has run again,
    as for `keras.saving.register_keras_serializable`.

    Args:
        name: String, the new id. It must not name a built-in or an already
            registered loss.
        loss: A `keras.losses.Loss` subclass, built with the keyword
            arguments given to `get`, or a function
            `fn(teacher, student, **kwargs)` returning one value per sample,
            wrapped in a `LossFunctionWrapper` named `name`.

    Returns:
        `loss`, unchanged.

    Raises:
        ValueError: if `name` is already an id.
        TypeError: if `name` is not a string, or `loss` is neither a `Loss`
            subclass nor a function (an instance would be shared by every
            `get`).

    Example:

    >>> def centered_mse(teacher, student):
    ...     diff = teacher - student
    ...     diff = diff - keras.ops.mean(diff, axis=-1, keepdims=True)
    ...     return keras.ops.mean(keras.ops.square(diff), axis=-1)
    >>> _ = keras_kd.losses.register("centered_mse", centered_mse)
    >>> keras_kd.losses.get("centered_mse")
    <LossFunctionWrapper(centered_mse, name='centered_mse')>
    """
    if not isinstance(name, str) or not name:
        raise TypeError(
            "Argument `name` must be a non-empty string. "
            f"Received: name={name!r} of type {type(name).__name__}"
        )
    taken = ids()
    if name in taken:
        close = difflib.get_close_matches(name, taken, n=3)
        raise ValueError(
            f"The loss id {name!r} already exists, and an id names one loss. "
            f"Pick a name that is not one of {list(taken)}. Close matches: "
            f"{close}. Received: name={name!r}"
        )
    is_class = inspect.isclass(loss)
    if (is_class and not issubclass(loss, keras.losses.Loss)) or (
        not is_class and (isinstance(loss, keras.losses.Loss)
                          or not callable(loss))
    ):
        raise TypeError(
            "Argument `loss` must be a `keras.losses.Loss` subclass or a "
            "function `fn(teacher, student, **kwargs)`. Pass the class, not "
            "an instance, so each `get` builds its own. "
            f"Received: loss={loss!r} of type {type(loss).__name__}"
        )
    _USER_LOSSES[name] = loss
    return loss


def serialize(loss):
    """Returns the Keras config of a keras_kd (or Keras) loss object."""
    return keras.saving.serialize_keras_object(loss)


def deserialize(config, custom_objects=None):
    """Rebuilds a loss from `serialize(loss)`."""
    return keras.saving.deserialize_keras_object(
        config, custom_objects=custom_objects
    )


def _wrap(fn, name, kwargs):
    kwargs = dict(kwargs)
    if "name" not in kwargs and name.isidentifier():
        kwargs["name"] = name
    return LossFunctionWrapper(fn, **kwargs)


def get(identifier, **kwargs):
    """Resolves a loss identifier to a `keras.losses.Loss` instance.

    Args:
        identifier: One of:
            - a string id: a built-in one (`keras_kd.losses.ALL_IDS`) or one
              added by `register` (`keras_kd.losses.ids()` lists both);
            - a `keras.losses.Loss` instance, returned as is;
            - a `keras.losses.Loss` subclass, built with `**kwargs`;
            - a config dict, from `serialize`;
            - a function `fn(teacher, student, **kwargs)` returning one value
              per sample, wrapped in a `LossFunctionWrapper`.
        **kwargs: Constructor arguments, used when `identifier` is a string
            id, a class or a function (for a function: its keyword
            arguments, plus `reduction`, `name` and `dtype`).

    Returns:
        A `keras.losses.Loss` instance, never a bare function.

    Raises:
        ValueError: for an unknown string id, listing the ids and the close
            matches, or for `**kwargs` given with an instance or a config.
        TypeError: for any other identifier.

    Example:

    >>> keras_kd.losses.get("kd", temperature=2.0)
    <SoftTargetKL(soft_target_kl, temperature=2.0, ...)>
    >>> keras_kd.losses.get(keras_kd.losses.feature_l1)
    <LossFunctionWrapper(feature_l1, name='feature_l1')>
    """
    if isinstance(identifier, (keras.losses.Loss, dict)) and kwargs:
        raise ValueError(
            "Keyword arguments build a loss from a string id, a class or a "
            "function; an instance or a config is already built. Received: "
            f"identifier={identifier!r} with {kwargs}"
        )
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        loss = _LOSSES.get(identifier, _USER_LOSSES.get(identifier))
        if loss is None:
            raise validation.unknown_name_error("loss", identifier, ids())
        if inspect.isclass(loss):
            return loss(**kwargs)
        return _wrap(loss, identifier, kwargs)
    if inspect.isclass(identifier) and issubclass(
        identifier, keras.losses.Loss
    ):
        return identifier(**kwargs)
    if callable(identifier) and not inspect.isclass(identifier):
        return _wrap(identifier, getattr(identifier, "__name__", ""), kwargs)
    raise TypeError(
        "Argument `identifier` must be a string id, a `keras.losses.Loss` "
        "instance or subclass, a config dict, or a function "
        f"`fn(teacher, student)`. Received: identifier={identifier!r} of "
        f"type {type(identifier).__name__}"
    )


__all__ = [
    "ALL_IDS",
    "AttentionTransfer",
    "FeatureCosine",
    "FeatureL1",
    "FeatureMSE",
    "FeatureSmoothL1",
    "GeneralizedJSDivergence",
    "LossFunctionWrapper",
    "PKT",
    "RKDAngle",
    "RKDDistance",
    "ReverseKLDivergence",
    "SimilarityPreserving",
    "SkewKLDivergence",
    "SkewReverseKLDivergence",
    "SoftTargetKL",
    "attention_transfer",
    "bernoulli_kl",
    "binary_cross_entropy",
    "deserialize",
    "ensemble_logits",
    "feature_cosine",
    "feature_l1",
    "feature_mse",
    "feature_smooth_l1",
    "forward_kl_divergence",
    "generalized_js_divergence",
    "get",
    "hard_cross_entropy",
    "ids",
    "label_mask",
    "pkt",
    "register",
    "reverse_kl_divergence",
    "rkd_angle",
    "rkd_distance",
    "serialize",
    "similarity_preserving",
    "skew_kl_divergence",
    "skew_reverse_kl_divergence",
    "soft_target_kl",
    "standardize_logits",
]
