"""`keras-kd demo`: a teacher, a student alone and the student distilled."""

import json
import os
import platform
import time

from keras_kd.cli import _common
from keras_kd.utils import io

HELP = "train a teacher, a student alone and the same student distilled"

DESCRIPTION = """\
The whole distillation workflow on data that needs no network: a subset of
MNIST shipped with keras_kd (5,000 training and 2,000 test images, CC BY-SA
3.0) unless --dataset names other data ('digits' for scikit-learn's 8x8
digits, a .npz, or a prepared TensorFlow Datasets name). Trains a CNN teacher,
then, for each seed, the same small MLP student twice from the same initial
weights: alone on the labels, and distilled from the teacher (soft targets
plus a feature match from the teacher's embedding to the student's hidden
layer; the teacher's outputs are computed once). Prints the test accuracy of
every seed and their mean, a summary table (accuracy, parameters, size, train
time), exports the first seed's distilled student to LiteRT and writes into
--output-dir: demo.png (learning curves and accuracy bars), the models, the
.tflite file and results.json.
"""

EXAMPLE = """\
examples:
  keras-kd demo
  keras-kd demo --dataset ../shared/data/mnist.npz --epochs 10
  keras-kd demo --dataset mnist --data-dir ~/tensorflow_datasets
  keras-kd demo --quick --output-dir /tmp/demo
"""

# Recipes by training-set size (the first that fits): teacher and student
# epochs, temperature, alpha and feature weight. See `keras-kd demo --help`.
RECIPES = (
    (2_000, dict(teacher_epochs=30, epochs=60, temperature=2.0, alpha=0.5,
                 feature_weight=0.1)),
    # Distillation gains from long training on cached teacher outputs.
    (10_000, dict(teacher_epochs=15, epochs=60, temperature=4.0, alpha=0.1,
                  feature_weight=0.3)),
    (None, dict(teacher_epochs=5, epochs=10, temperature=4.0, alpha=0.1,
                feature_weight=0.3)),
)
QUICK = dict(teacher_epochs=2, epochs=2, train_samples=256)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo", help=HELP, description=DESCRIPTION, epilog=EXAMPLE,
        formatter_class=_common.HelpFormatter)
    parser.add_argument(
        "--dataset", default="mnist_subset", metavar="DATA",
        help="'mnist_subset', 'digits', a .npz in the keras.datasets layout "
        "(such as "
        "mnist.npz), or a prepared TensorFlow Datasets name")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder of prepared TensorFlow Datasets")
    parser.add_argument("--output-dir", default="keras_kd_demo",
                        help="folder of the figure, models and results")
    _common.add_number(parser, "--seeds", "positive_int",
                       help="number of student seeds, all reported: seed "
                       "+ 1, seed + 2, ... (default: 3; 1 with --quick)")
    recipe = parser.add_argument_group("recipe", _recipe_help())
    _common.add_number(recipe, "--epochs", "positive_int",
                       help="student epochs")
    _common.add_number(recipe, "--teacher-epochs", "positive_int",
                       help="teacher epochs")
    _common.add_number(recipe, "--temperature", "positive",
                       help="softmax temperature of the soft loss")
    _common.add_number(recipe, "--alpha", "unit", help="weight of the label "
                       "loss (1 - alpha on the soft loss)")
    _common.add_number(recipe, "--feature-weight", "non_negative",
                       help="weight of the embedding feature match (0 turns "
                       "it off)")
    _common.add_number(parser, "--batch-size", "positive_int", default=32,
                       help="training batch size")
    parser.add_argument("--quantize", default="none",
                        choices=_common.QUANTIZATION_MODES,
                        help="quantization of the exported student")
    parser.add_argument(
        "--quick", action="store_true",
        help=f"smoke run: {QUICK['train_samples']} training images, "
        f"{QUICK['epochs']} epochs")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                        help="Keras progress output while training (default: "
                        "0, one progress line per phase every few seconds)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress lines: the results of each phase "
                        "only")
    _common.add_common_arguments(parser)
    parser.set_defaults(check=check, run=run)
    return parser


def _recipe_help():
    names = {"teacher_epochs": "teacher epochs", "epochs": "epochs",
             "temperature": "T", "alpha": "alpha",
             "feature_weight": "feature weight"}
    lines = ["defaults by the number of training images:"]
    for size, values in RECIPES:
        limit = f"up to {size:,}" if size else "more"
        lines.append(f"  {limit:>12}: " + ", ".join(
            f"{names[k]} {v:g}" for k, v in values.items()))
    return "\n".join(lines)


def recipe(args, num_train):
    """The recipe for this training set, with the flags given applied."""
    chosen = next(r for n, r in RECIPES if n is None or num_train <= n)
    chosen = dict(chosen, **({k: v for k, v in QUICK.items()
                              if k != "train_samples"} if args.quick else {}))
    for key in chosen:
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    return chosen


def build_teacher(input_shape, num_classes):
    """A CNN; 8x8 digits keep their resolution until one pooling."""
    import keras

    layers = keras.layers
    if min(input_shape[:2]) < 16:
        convolutions = [
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D()]
    else:
        convolutions = [
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D()]
    return keras.Sequential([
        keras.Input(input_shape), *convolutions, layers.Flatten(),
        layers.Dropout(0.25),
        layers.Dense(128, activation="relu", name="embedding"),
        layers.Dropout(0.5), layers.Dense(num_classes, name="logits"),
    ], name="teacher")


def build_student(input_shape, num_classes):
    """An MLP with one hidden layer of 32 units."""
    import keras

    return keras.Sequential([
        keras.Input(input_shape), keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu", name="hidden"),
        keras.layers.Dense(num_classes, name="logits"),
    ], name="student")


def train_teacher(x, y, num_classes, epochs, args):
    import keras

    keras.utils.set_random_seed(args.seed)
    teacher = build_teacher(x.shape[1:], num_classes)
    teacher.compile(optimizer="adam", loss=keras.losses.
                    SparseCategoricalCrossentropy(from_logits=True))
    with _common.Timer() as timer:
        teacher.fit(x, y, epochs=epochs, batch_size=args.batch_size,
                    verbose=args.verbose,
                    callbacks=progress("teacher", args))
    return teacher, timer.seconds


def progress(name, args):
    """A progress line every few seconds, unless `--quiet` or `--verbose`
    (Keras' own progress bar) is given."""
    from keras_kd.cli import _progress

    quiet = getattr(args, "quiet", False) or getattr(args, "verbose", 0) > 0
    return _progress.callbacks(name, quiet)


def features_of(plan):
    import keras_kd

    if plan["feature_weight"] <= 0:
        return []
    return [keras_kd.FeatureMatch("embedding", "hidden",
                                  weight=plan["feature_weight"])]


def cache_teacher(teacher, x, test, num_classes, plan):
    """The teacher's outputs (logits and the matched embedding) on the
    training and the test images, computed once for every seed.

    Nothing is augmented, so the teacher's outputs are the same in every
    epoch and for every seed. Caching the test images too keeps the teacher
    out of the validation of every epoch, which otherwise costs as much as
    the student's whole epoch on the bundled MNIST subset.

    Returns:
        `(train targets function, validation targets function, seconds)`.
    """
    import keras_kd

    with _common.Timer() as timer:
        probe = keras_kd.Distiller(
            teacher, build_student(x.shape[1:], num_classes),
            features=features_of(plan))
        train = keras_kd.data.cache_teacher_outputs(probe, x, verbose=0)
        val = keras_kd.data.cache_teacher_outputs(probe, test[0], verbose=0)
    return train, val, timer.seconds


def train_student(method, teacher, x, y, test, num_classes, plan, seed,
                  args, caches=None):
    """The student alone (`"scratch"`) or distilled, from the same initial
    weights.

    Args:
        caches: For `"distilled"`, the `(train, test)` teacher-output caches
            of `cache_teacher` (their one-off cost is reported apart).

    Returns:
        `(student, test accuracy per epoch, train seconds)`.
    """
    import keras

    import keras_kd

    keras.utils.set_random_seed(seed)
    student = build_student(x.shape[1:], num_classes)
    fit = dict(epochs=plan["epochs"], batch_size=args.batch_size,
               validation_data=test, verbose=args.verbose,
               callbacks=progress(f"seed {seed}, {method}", args))
    with _common.Timer() as timer:
        if method == "scratch":
            student.compile(optimizer="adam", metrics=["accuracy"],
                            loss=keras.losses.SparseCategoricalCrossentropy(
                                from_logits=True))
            history = student.fit(x, y, **fit)
        else:
            distiller = keras_kd.Distiller(
                teacher, student, alpha=plan["alpha"],
                temperature=plan["temperature"], features=features_of(plan))
            distiller.compile(optimizer="adam", metrics=["accuracy"])
            train, val = caches
            fit["validation_data"] = (test[0], val.targets(test[1]))
            history = distiller.fit(x, train.targets(y), **fit)
    return student, history.history["val_accuracy"], timer.seconds


# The files the demo writes into --output-dir.
FILES = {"teacher": "teacher.keras", "scratch": "student_scratch.keras",
         "distilled": "student_distilled.keras",
         "tflite": "student_distilled.tflite", "figure": "demo.png",
         "results": "results.json"}


def check(args):
    """Checks the data and the output folder before anything is imported."""
    if os.path.isdir(args.dataset):
        raise _common.UsageError(
            "Argument `--dataset` of `keras-kd demo` must be 'digits', a "
            "`.npz` file in the keras.datasets layout or a TensorFlow "
            "Datasets name: the demo needs a test split and builds its "
            "models for the images. Distil your own models on an image "
            "folder with `keras-kd distill`. Received: "
            f"--dataset={args.dataset!r}")
    if args.dataset.lower().endswith(".npz"):
        _common.check_exists("--dataset", args.dataset)
    check_output_dir(args.output_dir)


def check_output_dir(folder):
    """The demo writes its files into `folder`; it replaces files of those
    names only if they come from an earlier demo (its results.json says so).
    """
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise _common.UsageError(
            "Argument `--output-dir` must be a folder, but it names a file. "
            f"Received: --output-dir={folder!r}. Pass a folder path.")
    paths = {k: os.path.join(folder, v) for k, v in FILES.items()}
    _common.check_outputs({f"--output-dir ({name})": path
                           for name, path in paths.items()}, {})
    existing = sorted(FILES[k] for k, p in paths.items()
                      if os.path.lexists(p))
    if existing and not _written_by_demo(paths["results"]):
        raise _common.UsageError(
            f"Argument `--output-dir` names a folder that holds "
            f"{', '.join(existing)}, which the demo would overwrite, and no "
            "results.json of an earlier `keras-kd demo`, so they may be "
            f"yours. Received: --output-dir={folder!r}. Pass a new folder, "
            "or move those files away.")


def _written_by_demo(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("command") == "keras-kd demo"
    except (OSError, ValueError, AttributeError):
        return False


def run(args):
    import numpy as np

    data = _common.load_data("--dataset", args.dataset, args.data_dir)
    (x, y), test = data.train, data.test
    if args.quick:
        x, y = x[:QUICK["train_samples"]], y[:QUICK["train_samples"]]
    _common.check_finite("--dataset", x)
    _common.check_finite("--dataset", test[0])
    plan = recipe(args, len(x))
    num_classes = int(max(y.max(), test[1].max())) + 1
    _common.check_labels("--dataset", y, num_classes, unlabeled=False)
    _common.check_labels("--dataset", test[1], num_classes, unlabeled=False)
    seeds = [args.seed + 1 + i for i in range(
        args.seeds or (1 if args.quick else 3))]
    os.makedirs(args.output_dir, exist_ok=True)
    results = {"dataset": {"name": args.dataset, "train": len(x),
                           "test": len(test[0]), "shape": x.shape[1:]},
               "recipe": plan, "seeds": seeds}
    print(f"Data {args.dataset!r}: {len(x)} training and {len(test[0])} test "
          f"images of shape {x.shape[1:]}, {num_classes} classes.")
    print(f"Training the teacher ({plan['teacher_epochs']} epochs)...",
          flush=True)
    teacher, seconds = train_teacher(x, y, num_classes,
                                     plan["teacher_epochs"], args)
    results["teacher"] = {"accuracy": _common.accuracy(teacher, test),
                          "train_time": seconds}
    print(f"  teacher: {results['teacher']['accuracy']:.2%} test accuracy "
          f"in {seconds:.0f} s")
    print(f"Training the student alone and distilled ({plan['epochs']} "
          f"epochs; T={plan['temperature']:g}, alpha={plan['alpha']:g}, "
          f"feature weight {plan['feature_weight']:g}), seeds {seeds}:",
          flush=True)
    train_cache, test_cache, seconds = cache_teacher(
        teacher, x, test, num_classes, plan)
    results["cache_time"] = seconds
    print(f"  teacher outputs cached once on the {len(x)} training and "
          f"{len(test[0])} test images in {seconds:.1f} s", flush=True)
    models = {}
    for seed in seeds:
        for method in ("scratch", "distilled"):
            model, curve, seconds = train_student(
                method, teacher, x, y, test, num_classes, plan, seed, args,
                caches=(train_cache, test_cache))
            models.setdefault(method, model)  # The first seed's is saved.
            results.setdefault(method, []).append({
                "seed": seed, "accuracy": _common.accuracy(model, test),
                "curve": [float(v) for v in curve], "train_time": seconds})
        a, b = (results[m][-1]["accuracy"] for m in ("scratch", "distilled"))
        print(f"  seed {seed}: scratch {a:.2%}, distilled {b:.2%} "
              f"({100 * (b - a):+.2f} points)", flush=True)
    means = results["mean_accuracy"] = {
        m: float(np.mean([r["accuracy"] for r in results[m]]))
        for m in ("scratch", "distilled")}
    print(f"  mean over {len(seeds)} seed(s): scratch {means['scratch']:.2%}"
          f", distilled {means['distilled']:.2%} "
          f"({100 * (means['distilled'] - means['scratch']):+.2f} points)")

    if not args.quiet:
        print(f"Saving the models and exporting the distilled student "
              f"(seed {seeds[0]}) to .tflite ({export_label(args.quantize)})"
              "...", flush=True)
    files = results["files"] = save_and_export(args, teacher, models, x,
                                               test, results)
    print()
    print(_common.format_table(
        ("model", "test accuracy", "parameters", "size", "train time"),
        summary_rows(teacher, models, results)))
    plot(files["figure"], results, args)
    results["elapsed"] = time.perf_counter() - _common.STARTED[0]
    write_results(files["results"], args, results)
    print(f"\nWrote {', '.join(sorted(files.values()))}")
    print(f"Finished in {results['elapsed']:.0f} s (from the start of "
          "`keras-kd demo`, imports included).")
    return 0


def save_and_export(args, teacher, models, x, test, results):
    """Saves the models, exports the distilled student, checks parity."""
    from keras_kd import export

    files = {k: os.path.join(args.output_dir, v) for k, v in FILES.items()}
    for key, model in (("teacher", teacher), *models.items()):
        _save_plain(model, files[key])
    quiet = not args.debug
    with _common.native_output_silenced(quiet):
        export.export_student(
            models["distilled"], files["tflite"], quantization=args.quantize,
            representative_data=x[:100] if args.quantize == "int8" else None)
    with _common.native_output_silenced(quiet):
        report = export.parity_report(models["distilled"], files["tflite"],
                                      test, latency_runs=20)
    results["tflite"] = report.to_dict()
    return files


def _save_plain(model, path):
    """Saves the architecture and weights only (no optimizer state), so the
    sizes of the three models compare."""
    copy = type(model).from_config(model.get_config())  # not compiled
    copy.set_weights(model.get_weights())
    _common.save_model(copy, path)


def summary_rows(teacher, models, results):
    import numpy as np

    files, size = results["files"], _common.file_size
    rows = [("teacher", f"{results['teacher']['accuracy']:.2%}",
             f"{teacher.count_params():,}",
             _common.format_size(size(files["teacher"])),
             f"{results['teacher']['train_time']:.1f} s")]
    for method in ("scratch", "distilled"):
        values = [r["accuracy"] for r in results[method]]
        accuracy = f"{np.mean(values):.2%}"
        if len(values) > 1:
            accuracy += f" +/- {100 * np.std(values):.2f}"
        seconds = np.mean([r["train_time"] for r in results[method]])
        time_text = f"{seconds:.1f} s"
        if method == "distilled" and "cache_time" in results:
            time_text += f" (+ {results['cache_time']:.1f} s cache, once)"
        rows.append((f"student, {method}", accuracy,
                     f"{models[method].count_params():,}",
                     _common.format_size(size(files[method])), time_text))
    tflite = results["tflite"]
    rows.append((f"distilled (seed {results['seeds'][0]}), .tflite "
                 f"{export_label(tflite['quantization'])}",
                 f"{tflite['tflite_accuracy']:.2%}", "-",
                 _common.format_size(tflite["file_size"]), "-"))
    return rows


export_label = _common.export_label


def plot(path, results, args):
    """Learning curves and accuracy bars, drawn with the Agg canvas."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    curves, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    colors = {"scratch": "tab:gray", "distilled": "tab:blue"}
    teacher = results["teacher"]["accuracy"] * 100
    for method, color in colors.items():
        values = np.array([r["curve"] for r in results[method]]) * 100
        epochs = np.arange(1, values.shape[1] + 1)
        for row in values:
            curves.plot(epochs, row, color=color, alpha=0.3, linewidth=0.8)
        curves.plot(epochs, values.mean(0), color=color, linewidth=2,
                    label=f"student, {method} (mean)")
    curves.axhline(teacher, color="black", linestyle="--", linewidth=1,
                   label="teacher")
    low = min(r["curve"][-1] for m in colors for r in results[m]) * 100
    curves.set(xlabel="epoch", ylabel="test accuracy (%)",
               ylim=(max(0.0, low - 6), 100),
               title=f"Learning curves ({len(results['seeds'])} seeds, "
               "thin lines: each seed)")
    curves.legend(loc="lower right", fontsize="small")

    values = [teacher] + [100 * results["mean_accuracy"][m] for m in colors]
    values.append(100 * results["tflite"]["tflite_accuracy"])
    names = ["teacher", "scratch", "distilled", f".tflite, seed "
             f"{results['seeds'][0]}\n"
             f"({export_label(results['tflite']['quantization'])})"]
    bars.bar(names, values, color=["black", *colors.values(), "tab:cyan"])
    tops = list(values)
    for i, method in enumerate(colors, start=1):
        points = [r["accuracy"] * 100 for r in results[method]]
        bars.scatter([i] * len(points), points, color="white", s=18,
                     edgecolors="black", zorder=3)
        tops[i] = max(tops[i], *points)
    for i, (value, top) in enumerate(zip(values, tops)):
        bars.annotate(f"{value:.2f}", (i, top), ha="center", va="bottom",
                      fontsize="small", xytext=(0, 2),
                      textcoords="offset points")
    bars.set(ylim=(max(0.0, min(values) - 4), 100.5),
             ylabel="test accuracy (%)",
             title="Accuracy (mean; dots: seeds)")
    plan = results["recipe"]
    fig.suptitle(f"keras-kd demo on {os.path.basename(args.dataset)}: "
                 f"T={plan['temperature']:g}, alpha={plan['alpha']:g}, "
                 f"feature weight {plan['feature_weight']:g}")
    fig.tight_layout()
    with io.atomic_path(path) as temp:
        fig.savefig(temp, format="png")
    return path


def write_results(path, args, results):
    import keras

    import keras_kd

    results = {
        "command": "keras-kd demo",
        "arguments": {k: v for k, v in vars(args).items()
                      if k not in ("run", "check")},
        **results,
        "versions": {"keras_kd": keras_kd.__version__,
                     "keras": keras.__version__,
                     "backend": keras.backend.backend(),
                     "python": platform.python_version()},
    }
    io.write_json(path, results, indent=2, default=str)
    return path
