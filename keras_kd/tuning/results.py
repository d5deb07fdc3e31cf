"""Results of a distillation search: the best student, a table and a plot."""

import math
import os

from keras_kd.utils import io
from keras_kd.utils import validation

_COMPLETED = "COMPLETED"
PLOT_IMPORT_MESSAGE = (
    "keras_kd.tuning.plot_trials requires Matplotlib. Install it with: "
    "pip install 'keras-kd[tuning]'"
)


def _check_tuner(tuner):
    from keras_kd.tuning.hypermodel import DistillerHyperModel

    oracle = getattr(tuner, "oracle", None)
    if oracle is None or not isinstance(getattr(tuner, "hypermodel", None),
                                        DistillerHyperModel):
        raise tuner_type_error(tuner)
    return oracle


def _completed(oracle):
    return [t for t in oracle.trials.values() if t.status == _COMPLETED]


def best_student(tuner):
    """The student of the best completed trial, at its best epoch.

    The tuner rebuilds the trial's Distiller and loads the weights saved at
    the epoch with the best objective; the student is returned alone (a
    plain `keras.Model`, without teacher or heads).

    Args:
        tuner: A KerasTuner tuner whose hypermodel is a
            `DistillerHyperModel`, after `tuner.search(...)`.

    Returns:
        The student `keras.Model`.

    Raises:
        ValueError: if no trial completed.

    Example:

    ```python
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=5)
    student = keras_kd.tuning.best_student(tuner)
    student.save("student.keras")
    ```
    """
    oracle = _check_tuner(tuner)
    completed = _completed(oracle)
    if not completed:
        raise no_completed_trial_error(
            {t.trial_id: t.status for t in oracle.trials.values()})
    best = [t for t in oracle.get_best_trials(len(oracle.trials))
            if t.status == _COMPLETED][0]
    return tuner.load_model(best).student


def trial_table(tuner):
    """One row per trial: its id, status, hyperparameters and objective.

    Rows are sorted best first; trials that did not complete (failed,
    invalid, running) come last with the objective `None`. KerasTuner's
    bookkeeping hyperparameters (`tuner/epochs`, ...) are left out.

    Args:
        tuner: A KerasTuner tuner whose hypermodel is a
            `DistillerHyperModel`.

    Returns:
        A list of dicts `{"trial_id", "status", "temperature", "alpha", ...,
        <objective name>}`.
    """
    oracle = _check_tuner(tuner)
    objective = oracle.objective
    rows = []
    for trial in oracle.trials.values():
        score = trial.score if trial.status == _COMPLETED else None
        if score is not None and not math.isfinite(score):
            score = None
        row = {"trial_id": trial.trial_id, "status": trial.status}
        row.update({k: v for k, v in trial.hyperparameters.values.items()
                    if not k.startswith("tuner/")})
        row[objective.name] = None if score is None else float(score)
        rows.append(row)
    sign = -1.0 if objective.direction == "max" else 1.0
    rows.sort(key=lambda r: (r[objective.name] is None,
                             sign * (r[objective.name] or 0.0), r["trial_id"]))
    return rows


def format_trial_table(table):
    """The rows of `trial_table` as aligned text, best trial first.

    Returns:
        A string with a header line and one line per trial.
    """
    if not table:
        return "(no trials)"
    columns = []
    for row in table:
        for key in row:
            if key not in columns:
                columns.append(key)
    cells = [[_cell(row.get(key)) for key in columns] for row in table]
    widths = [max(len(key), *(len(c[i]) for c in cells))
              for i, key in enumerate(columns)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(columns, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths))
              for line in cells]
    return "\n".join(lines)


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def plot_trials(tuner, path):
    """Saves a scatter plot of the objective over temperature and alpha.

    Temperature is on a log x axis, alpha on the y axis, the colour is the
    objective (the best value when several trials share a point, as in
    Hyperband); trials that did not complete are grey crosses and the best
    trial is circled. Drawn with Matplotlib's Agg canvas (no display) and
    written atomically.

    Args:
        tuner: A KerasTuner tuner whose hypermodel is a
            `DistillerHyperModel`.
        path: Path of the `.png` file to write; its folder is created.

    Returns:
        The path written.
    """
    path = io.check_file_target("path", check_png_path(path))
    table = trial_table(tuner)
    name = tuner.oracle.objective.name
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(PLOT_IMPORT_MESSAGE) from error

    best = {}
    failed = []
    for row in table:
        point = (row.get("temperature"), row.get("alpha"))
        if None in point:
            continue
        if row[name] is None:
            failed.append(point)
        elif point not in best:  # Rows are sorted best first.
            best[point] = row[name]
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if best:
        (ts, alphas), scores = zip(*best.keys()), list(best.values())
        points = ax.scatter(ts, alphas, c=scores, cmap="viridis", s=60,
                            edgecolors="black", linewidths=0.5)
        fig.colorbar(points, ax=ax, label=name)
        top = next(iter(best))
        ax.scatter([top[0]], [top[1]], s=260, facecolors="none",
                   edgecolors="red", linewidths=1.5,
                   label=f"best: T={top[0]:.3g}, alpha={top[1]:.3g}")
    if failed:
        ax.scatter(*zip(*failed), marker="x", color="grey",
                   label="not completed")
    ax.set_xscale("log")
    ax.set_xlabel("temperature (log scale)")
    ax.set_ylabel("alpha (weight of the hard loss)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{name} over temperature and alpha ({len(table)} trials)")
    if best or failed:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    with io.atomic_path(path, make_parents=True) as temp:
        fig.savefig(temp, format="png")
    return path


# Error messages.


def tuner_type_error(tuner):
    return TypeError(
        "Argument `tuner` must be a KerasTuner tuner built with a "
        "`keras_kd.tuning.DistillerHyperModel`, for example "
        "`keras_tuner.RandomSearch(DistillerHyperModel(...), ...)`. "
        f"Received: tuner={validation.short_repr(tuner)} of type "
        f"{type(tuner).__name__}"
    )


def no_completed_trial_error(statuses):
    return ValueError(
        "The search has no completed trial to take the student from. Run "
        "`tuner.search(...)` first; if trials failed, read "
        "`tuner.oracle.trials[trial_id].message`. Received: trial statuses "
        f"{statuses}"
    )


def check_png_path(path):
    """Returns `path` as a string if it names a `.png` file."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "Argument `path` must be a string or `os.PathLike` ending in "
            f"`.png`. Received: path={path!r} of type {type(path).__name__}"
        )
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(
            f"Argument `path` must end in `.png`. Received: path={path!r}"
        )
    return path
