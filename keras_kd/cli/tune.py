"""`keras-kd tune`: a KerasTuner search of the temperature and alpha."""

import csv
import os

from keras_kd.cli import _common
from keras_kd.cli import distill
from keras_kd.utils import io

HELP = "search the temperature and alpha with KerasTuner"

DESCRIPTION = """\
Runs a KerasTuner search over the temperature and alpha of distilling
TEACHER.keras into STUDENT.keras (cloned with fresh weights for every
trial), ranking trials by the student's validation accuracy on a split of
the training data. Prints the trial table, writes it as CSV or JSON with a
PNG plot, and saves the best trial's student. The teacher's outputs are
computed once for the whole search. The search resumes from --directory
unless --overwrite."""

EXAMPLE = """\
example:
  keras-kd tune teacher.keras student.keras --data digits --tuner bayesian \\
      --max-trials 12 --epochs 20 --temperature-range 1 8 --alpha-range 0 1
"""

TUNERS = ("random", "bayesian", "hyperband", "grid")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "tune", help=HELP, description=DESCRIPTION, epilog=EXAMPLE,
        formatter_class=_common.HelpFormatter)
    _common.add_model_arguments(parser)
    _common.add_data_arguments(parser)
    parser.set_defaults(validation_split=0.2)
    group = parser.add_argument_group("search")
    group.add_argument("--tuner", default="bayesian", choices=TUNERS,
                       help="KerasTuner search algorithm")
    _common.add_number(group, "--max-trials", "positive_int", default=10,
                       help="trials to run (random, bayesian)")
    _common.add_number(group, "--epochs", "positive_int", default=10,
                       help="epochs per trial (hyperband: the most epochs "
                       "of a trial)")
    _common.add_number(group, "--temperature-range", "positive", nargs=2,
                       default=(1.0, 20.0), metavar=("MIN", "MAX"),
                       help="temperatures to search (log scale)")
    _common.add_number(group, "--alpha-range", "unit", nargs=2,
                       default=(0.0, 1.0), metavar=("MIN", "MAX"),
                       help="alphas (weight of the label loss) to search")
    _common.add_number(group, "--grid-size", "positive_int", default=3,
                       help="values per range for --tuner grid")
    _common.add_number(group, "--learning-rate", "positive", default=1e-3,
                       help="Adam learning rate")
    group.add_argument("--directory", default="keras_kd_tuning",
                       help="folder of the KerasTuner state and outputs")
    group.add_argument("--project-name", default="distill",
                       help="sub-folder of this search in --directory")
    group.add_argument("--overwrite", action="store_true",
                       help="start a new search instead of resuming")
    distill.add_distillation_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--table", metavar="PATH",
                     help="trial table, .csv or .json (default: "
                     "DIRECTORY/trials.csv)")
    out.add_argument("--plot", metavar="PATH.png",
                     help="plot of the trials (default: "
                     "DIRECTORY/trials.png)")
    out.add_argument("--output", metavar="STUDENT.keras",
                     help="best trial's student (default: "
                     "DIRECTORY/best_student.keras)")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                        help="Keras and KerasTuner progress output")
    _common.add_common_arguments(parser)
    parser.set_defaults(check=check, run=run)
    return parser


def search_space(args):
    """The `temperature` and `alpha` arguments of the hypermodel."""
    import numpy as np

    (t_low, t_high), (a_low, a_high) = args.temperature_range, \
        args.alpha_range
    if args.tuner != "grid":
        return (t_low, t_high), (a_low, a_high)
    n = args.grid_size
    temperatures = [round(float(v), 4) for v in np.geomspace(
        t_low, t_high, n)] if t_low > 0 else [t_low, t_high]
    alphas = [round(float(v), 4) for v in np.linspace(a_low, a_high, n)]
    return temperatures, alphas


def make_tuner(args, hypermodel):
    import keras_tuner

    common = dict(objective="val_accuracy", directory=args.directory,
                  project_name=args.project_name, overwrite=args.overwrite,
                  seed=args.seed)
    if args.tuner == "random":
        return keras_tuner.RandomSearch(hypermodel,
                                        max_trials=args.max_trials, **common)
    if args.tuner == "bayesian":
        return keras_tuner.BayesianOptimization(
            hypermodel, max_trials=args.max_trials, **common)
    if args.tuner == "grid":
        return keras_tuner.GridSearch(hypermodel, **common)
    return keras_tuner.Hyperband(hypermodel, max_epochs=args.epochs,
                                 **common)


def write_table(path, rows):
    """Writes the trial table as JSON or CSV, atomically."""
    if path.lower().endswith(".json"):
        io.write_json(path, rows, name="--table", indent=2)
        return path
    columns = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with io.atomic_write(path, "w", name="--table", make_parents=True,
                         newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def output_paths(args):
    """`(table, plot, output)`, with their defaults in --directory."""
    return (args.table or os.path.join(args.directory, "trials.csv"),
            args.plot or os.path.join(args.directory, "trials.png"),
            args.output or os.path.join(args.directory,
                                        "best_student.keras"))


def check(args):
    """Checks the files and outputs before anything is imported or read."""
    table_path, plot_path, output = output_paths(args)
    _common.check_suffix("--table", table_path, ".csv", ".json")
    _common.check_suffix("--plot", plot_path, ".png")
    _common.check_suffix("--output", output, ".keras")
    _common.check_exists("TEACHER.keras", args.teacher)
    _common.check_exists("STUDENT.keras", args.student)
    inputs = _common.input_files(args, distill.INPUTS)
    _common.check_outputs({"--table": table_path, "--plot": plot_path,
                           "--output": output}, inputs)
    check_directory(args, inputs)


def check_directory(args, inputs):
    """`--directory` must be a folder; `--overwrite` deletes only a
    KerasTuner project (KerasTuner removes DIRECTORY/PROJECT_NAME)."""
    if os.path.exists(args.directory) and not os.path.isdir(args.directory):
        raise _common.UsageError(
            "Argument `--directory` must be a folder, but it names a file. "
            f"Received: --directory={args.directory!r}. Pass a folder path."
        )
    project = os.path.join(args.directory, args.project_name)
    if not args.overwrite or not os.path.exists(project):
        return
    is_project = os.path.isdir(project) and os.path.isfile(
        os.path.join(project, "oracle.json"))
    holds_input = any(_common.same_path(project, path) or os.path.realpath(
        path).startswith(os.path.realpath(project) + os.sep)
        for path in inputs.values())
    if not is_project or holds_input or _common.same_path(project, "."):
        raise _common.UsageError(
            "Argument `--overwrite` deletes the folder DIRECTORY/"
            f"PROJECT_NAME ({project!r}), but it is not a KerasTuner project "
            "(no oracle.json), holds an input or is the working directory, "
            "so keras-kd refuses to delete it. Received: "
            f"--directory={args.directory!r}, "
            f"--project-name={args.project_name!r}. Pass another "
            "--project-name or --directory."
        )


def run(args):
    import keras

    from keras_kd import tuning
    from keras_kd.utils import models as model_utils

    table_path, plot_path, output = output_paths(args)
    teacher, student, data, x, y = distill.load_inputs(args)
    if data.validation is None:
        raise _common.requires_error(
            "--validation-split", "a fraction > 0 for data without a test "
            "split (trials are ranked by val_accuracy)",
            f"--validation-split={args.validation_split}")
    temperature, alpha = search_space(args)
    keras.utils.set_random_seed(args.seed)
    with _common.checking_inputs():
        hypermodel = tuning.DistillerHyperModel(
            teacher, student, temperature=temperature, alpha=alpha,
            learning_rate=args.learning_rate, metrics=["accuracy"],
            features=distill.feature_matches(args))
    num_classes = model_utils.num_classes(student)
    _common.check_labels("--data", y, num_classes)
    _common.check_labels("--data", data.validation[1], num_classes)
    tuner = make_tuner(args, hypermodel)
    with _common.Timer() as timer:
        tuner.search(x, y, validation_data=data.validation,
                     epochs=args.epochs, batch_size=args.batch_size,
                     verbose=args.verbose)
    rows = tuning.trial_table(tuner)
    print()
    print(tuning.format_trial_table(rows))
    write_table(table_path, rows)
    tuning.plot_trials(tuner, plot_path)
    best = tuning.best_student(tuner)
    _common.save_model(best, output)
    completed = sum(row["status"] == "COMPLETED" for row in rows)
    print(f"\n{completed} of {len(rows)} trials completed in "
          f"{timer.seconds:.1f} s; best: " + ", ".join(
              f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
              for k, v in rows[0].items() if k not in ("trial_id",
                                                       "status")))
    if data.test is not None:
        accuracy = _common.accuracy(best, data.test)
        print(f"Best student: {accuracy:.2%} accuracy on the test split.")
    print(f"Wrote {table_path}, {plot_path} and {output}")
    return 0
