"""Distillation losses: `keras.ops` functions and `keras.losses.Loss` classes.

Every function takes the teacher's tensor first and the student's second and
returns one value per sample, shape `(batch_size,)`.
"""

import keras

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
from keras_kd.losses.logits import hard_cross_entropy
from keras_kd.losses.logits import label_mask
from keras_kd.losses.logits import soft_target_kl
from keras_kd.losses.relation import PKT
from keras_kd.losses.relation import RKDAngle
from keras_kd.losses.relation import RKDDistance
from keras_kd.losses.relation import SimilarityPreserving
from keras_kd.losses.relation import pkt
from keras_kd.losses.relation import rkd_angle
from keras_kd.losses.relation import rkd_distance
from keras_kd.losses.relation import similarity_preserving
from keras_kd.utils import validation

# String id -> Loss class. Several ids may name one class.
_LOSSES = {
    "kd": SoftTargetKL,
    "soft_target_kl": SoftTargetKL,
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


def serialize(loss):
    """Returns the Keras config of a keras_kd (or Keras) loss object."""
    return keras.saving.serialize_keras_object(loss)


def deserialize(config, custom_objects=None):
    """Rebuilds a loss from `serialize(loss)`."""
    return keras.saving.deserialize_keras_object(
        config, custom_objects=custom_objects
    )


def get(identifier, **kwargs):
    """Resolves a loss identifier to a `keras.losses.Loss` instance.

    Args:
        identifier: A string id (see `keras_kd.losses.ALL_IDS`), a
            `keras.losses.Loss` instance, or a config dict.
        **kwargs: Constructor arguments used when `identifier` is a string.

    Returns:
        A `keras.losses.Loss` instance, never a bare function.

    Example:

    >>> keras_kd.losses.get("kd", temperature=2.0)
    <SoftTargetKL ...>
    """
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        if identifier not in _LOSSES:
            raise validation.unknown_name_error("loss", identifier, _LOSSES)
        return _LOSSES[identifier](**kwargs)
    raise TypeError(
        "Argument `identifier` must be a string id, a `keras.losses.Loss` or "
        f"a config dict. Received: identifier={identifier!r} of type "
        f"{type(identifier).__name__}"
    )


ALL_IDS = tuple(sorted(_LOSSES))

__all__ = [
    "ALL_IDS",
    "AttentionTransfer",
    "FeatureCosine",
    "FeatureL1",
    "FeatureMSE",
    "FeatureSmoothL1",
    "PKT",
    "RKDAngle",
    "RKDDistance",
    "SimilarityPreserving",
    "SoftTargetKL",
    "attention_transfer",
    "deserialize",
    "feature_cosine",
    "feature_l1",
    "feature_mse",
    "feature_smooth_l1",
    "get",
    "hard_cross_entropy",
    "label_mask",
    "pkt",
    "rkd_angle",
    "rkd_distance",
    "serialize",
    "similarity_preserving",
    "soft_target_kl",
]
