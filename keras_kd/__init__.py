"""keras_kd: knowledge distillation for Keras 3."""

import importlib as _importlib
import os as _os
import sys as _sys

from keras_kd.version import __version__

# Where each public name lives (`keras_kd.Distiller` -> keras_kd.distiller).
_NAMES = {
    "Distiller": "keras_kd.distiller",
    "load_distiller": "keras_kd.distiller",
    "FeatureMatch": "keras_kd.feature_match",
    "RelationMatch": "keras_kd.feature_match",
    "DIST": "keras_kd.terms",
    "DKD": "keras_kd.terms",
    "GeneralizedJSD": "keras_kd.terms",
    "ReverseKL": "keras_kd.terms",
    "SkewKL": "keras_kd.terms",
    "SkewReverseKL": "keras_kd.terms",
    "HardLoss": "keras_kd.terms",
    "LogitTerm": "keras_kd.terms",
    "SoftTargets": "keras_kd.terms",
    "Term": "keras_kd.terms",
}
_SUBMODULES = ("callbacks", "data", "export", "fused", "lora", "losses",
               "quantization", "students", "terms", "vocabulary")


def _started_by_the_command_line():
    """`keras-kd ...` or `python -m keras_kd ...`: the command line parses its
    arguments before it imports Keras, so `--help` and argument errors do not
    wait for TensorFlow (keras_kd/cli imports what it needs)."""
    script = _os.path.basename(_sys.argv[0]) if _sys.argv else ""
    argv = getattr(_sys, "orig_argv", [])
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else None
    return script in ("keras-kd", "keras-kd.exe") or module == "keras_kd"


def __getattr__(name):
    # `keras_kd.tuning` imports KerasTuner, so it loads only when asked for;
    # everything loads on first use when the command line started us.
    if name == "tuning" or name in _SUBMODULES:
        return _importlib.import_module(f"keras_kd.{name}")
    if name in _NAMES:
        return getattr(_importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'keras_kd' has no attribute {name!r}")


if not _started_by_the_command_line():
    # A library import: everything at once, so `keras.saving.load_model`
    # finds keras_kd's registered classes after a bare `import keras_kd`.
    from keras_kd import callbacks  # noqa: E402,F401
    from keras_kd import data  # noqa: E402,F401
    from keras_kd import export  # noqa: E402,F401
    from keras_kd import fused  # noqa: E402,F401
    from keras_kd import lora  # noqa: E402,F401
    from keras_kd import losses  # noqa: E402,F401
    from keras_kd import quantization  # noqa: E402,F401
    from keras_kd import students  # noqa: E402,F401
    from keras_kd import terms  # noqa: E402,F401
    from keras_kd import vocabulary  # noqa: E402,F401
    from keras_kd.distiller import Distiller  # noqa: E402,F401
    from keras_kd.distiller import load_distiller  # noqa: E402,F401
    from keras_kd.feature_match import FeatureMatch  # noqa: E402,F401
    from keras_kd.feature_match import RelationMatch  # noqa: E402,F401
    from keras_kd.terms import DIST  # noqa: E402,F401
    from keras_kd.terms import DKD  # noqa: E402,F401
    from keras_kd.terms import GeneralizedJSD  # noqa: E402,F401
    from keras_kd.terms import ReverseKL  # noqa: E402,F401
    from keras_kd.terms import SkewKL  # noqa: E402,F401
    from keras_kd.terms import SkewReverseKL  # noqa: E402,F401
    from keras_kd.terms import HardLoss  # noqa: E402,F401
    from keras_kd.terms import LogitTerm  # noqa: E402,F401
    from keras_kd.terms import SoftTargets  # noqa: E402,F401
    from keras_kd.terms import Term  # noqa: E402,F401


__all__ = [
    "DIST",
    "DKD",
    "Distiller",
    "FeatureMatch",
    "GeneralizedJSD",
    "HardLoss",
    "LogitTerm",
    "RelationMatch",
    "ReverseKL",
    "SkewKL",
    "SkewReverseKL",
    "SoftTargets",
    "Term",
    "__version__",
    "callbacks",
    "data",
    "export",
    "fused",
    "load_distiller",
    "lora",
    "losses",
    "quantization",
    "students",
    "terms",
    "vocabulary",
]
