"""keras_kd: knowledge distillation for Keras 3."""

from keras_kd import callbacks
from keras_kd import data
from keras_kd import export
from keras_kd import losses
from keras_kd import terms
from keras_kd.distiller import Distiller
from keras_kd.distiller import load_distiller
from keras_kd.feature_match import FeatureMatch
from keras_kd.feature_match import RelationMatch
from keras_kd.terms import DIST
from keras_kd.terms import DKD
from keras_kd.terms import HardLoss
from keras_kd.terms import LogitTerm
from keras_kd.terms import SoftTargets
from keras_kd.terms import Term
from keras_kd.version import __version__


def __getattr__(name):
    # `keras_kd.tuning` imports KerasTuner, so it loads only when asked for.
    if name == "tuning":
        import importlib

        return importlib.import_module("keras_kd.tuning")
    raise AttributeError(f"module 'keras_kd' has no attribute {name!r}")


__all__ = [
    "DIST",
    "DKD",
    "Distiller",
    "FeatureMatch",
    "HardLoss",
    "LogitTerm",
    "RelationMatch",
    "SoftTargets",
    "Term",
    "__version__",
    "callbacks",
    "data",
    "export",
    "load_distiller",
    "losses",
    "terms",
]
