"""Distillation terms: the public base class and the built-in terms.

A Distiller's loss is a weighted sum of terms. Each built-in method is one
file here (its loss function and its term); a method of your own is one
subclass of `Term`.
"""

from keras_kd.terms.base import LogitTerm
from keras_kd.terms.base import Term
from keras_kd.terms.dist import DIST
from keras_kd.terms.divergences import GeneralizedJSD
from keras_kd.terms.divergences import ReverseKL
from keras_kd.terms.divergences import SkewKL
from keras_kd.terms.divergences import SkewReverseKL
from keras_kd.terms.dkd import DKD
from keras_kd.terms.hard import HardLoss
from keras_kd.terms.kd import SoftTargets

# String id -> term class, for configs and the command line.
_TERMS = {
    "hard": HardLoss,
    "kd": SoftTargets,
    "soft_targets": SoftTargets,
    "forward_kl": SoftTargets,
    "reverse_kl": ReverseKL,
    "jsd": GeneralizedJSD,
    "skew_kl": SkewKL,
    "skew_reverse_kl": SkewReverseKL,
    "dkd": DKD,
    "dist": DIST,
}


def get(identifier, **kwargs):
    """Resolves a term identifier to a `keras_kd.Term` instance.

    Args:
        identifier: A string id (`"hard"`, `"kd"` or `"forward_kl"`,
            `"dkd"`, `"dist"`, `"reverse_kl"`, `"jsd"`, `"skew_kl"`,
            `"skew_reverse_kl"`), a `Term` instance (returned as is) or a
            config dict.
        **kwargs: Constructor arguments used with a string id.

    Returns:
        A `keras_kd.Term`.

    Example:

    >>> keras_kd.terms.get("dkd", nckd_weight=6.0)
    <DKD ...>
    """
    from keras_kd.utils import validation

    if isinstance(identifier, Term):
        return identifier
    if isinstance(identifier, dict):
        import keras

        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str):
        if identifier not in _TERMS:
            raise validation.unknown_name_error("term", identifier, _TERMS)
        return _TERMS[identifier](**kwargs)
    raise TypeError(
        "Argument `identifier` must be a string id, a `keras_kd.Term` or a "
        f"config dict. Received: identifier={identifier!r}"
    )


__all__ = ["DIST", "DKD", "GeneralizedJSD", "HardLoss", "LogitTerm",
           "ReverseKL", "SkewKL", "SkewReverseKL", "SoftTargets", "Term",
           "get"]
