"""Hyperparameter search for distillation with KerasTuner.

- `DistillerHyperModel`: a `keras_tuner.HyperModel` that builds and compiles
  a `Distiller` with a fresh student for each trial, searching `temperature`
  and `alpha` (and optionally the learning rate and feature-match weights),
  with the teacher's outputs computed once for the whole search.
- `best_student`: the student of the best trial.
- `trial_table` / `format_trial_table`: the trials, best first.
- `plot_trials`: the objective over temperature and alpha, as a PNG.

Rank trials by the student's validation metric (`objective="val_accuracy"`):
distillation losses at different temperatures are not comparable.

This sub-package needs KerasTuner (`pip install 'keras-kd[tuning]'`);
`import keras_kd` does not import it.
"""

TUNING_IMPORT_MESSAGE = (
    "keras_kd.tuning requires KerasTuner. Install it with: "
    "pip install 'keras-kd[tuning]'"
)

try:
    import keras_tuner  # noqa: F401
except ImportError as _error:  # pragma: no cover - depends on the install
    raise ImportError(TUNING_IMPORT_MESSAGE) from _error

from keras_kd.tuning.hypermodel import DistillerHyperModel  # noqa: E402
from keras_kd.tuning.results import best_student  # noqa: E402
from keras_kd.tuning.results import format_trial_table  # noqa: E402
from keras_kd.tuning.results import plot_trials  # noqa: E402
from keras_kd.tuning.results import trial_table  # noqa: E402

__all__ = [
    "DistillerHyperModel",
    "best_student",
    "format_trial_table",
    "plot_trials",
    "trial_table",
]
