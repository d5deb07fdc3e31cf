"""`keras-kd distill`: distil a saved teacher into a saved student."""

import argparse

from keras_kd.cli import _common

HELP = "distil a saved teacher into a saved student architecture"

DESCRIPTION = """\
Trains the student saved in STUDENT.keras (an untrained architecture that
returns logits) to imitate the teacher saved in TEACHER.keras, with the loss
alpha * cross_entropy(labels) + (1 - alpha) * T**2 * KL(teacher || student)
plus one term per --feature. The teacher's outputs are computed once and
reused every epoch (unless --no-cache). Writes the trained student (.keras)
and, with --tflite, its LiteRT file with a parity report."""

EXAMPLE = """\
example:
  keras-kd distill teacher.keras student.keras --data digits \\
      --temperature 2 --alpha 0.5 --epochs 30 --feature embedding:hidden \\
      --output distilled.keras --tflite distilled.tflite --quantize float16
"""


# Logit terms balanced against the label loss by --alpha.
BALANCED = ("kd", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "distill", help=HELP, description=DESCRIPTION, epilog=EXAMPLE,
        formatter_class=_common.HelpFormatter)
    _common.add_model_arguments(parser)
    _common.add_data_arguments(parser)
    group = parser.add_argument_group("distillation")
    _common.add_number(group, "--temperature", "positive", default=4.0,
                       help="softmax temperature of the soft loss")
    _common.add_number(group, "--alpha", "unit", default=0.5,
                       help="weight of the label loss; the soft loss gets "
                       "1 - alpha (--method kd)")
    group.add_argument(
        "--method", default="kd", choices=BALANCED + ("dkd", "dist"),
        help="the logit term: kd (Hinton soft targets), reverse_kl, jsd "
        "(generalized Jensen-Shannon, beta 0.5), skew_kl or skew_reverse_kl "
        "(skew 0.1), balanced by --alpha; dkd or dist (added at weight 1 to "
        "the label loss, as in their papers)")
    group.add_argument(
        "--standardize", action="store_true",
        help="z-score the logits before the logit term (logit "
        "standardization; its paper uses --temperature 2)")
    _common.add_number(group, "--epochs", "positive_int", default=10,
                       help="training epochs")
    _common.add_number(group, "--learning-rate", "positive", default=1e-3,
                       help="Adam learning rate")
    group.add_argument("--no-cache", action="store_true",
                       help="run the teacher on every batch instead of "
                       "caching its outputs once")
    group.add_argument(
        "--quantize-aware", action="store_true",
        help="train the student as it will run in int8 "
        "(keras_kd.quantization.quantize_aware, ranges calibrated on 512 "
        "training inputs); start from a float-distilled student, use "
        "--alpha 0 and a small --learning-rate, and export with --tflite "
        "--quantize int8 (no calibration)")
    add_distillation_arguments(parser)
    add_output_arguments(parser, "distilled_student.keras")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                        help="Keras progress output (0 silent, 1 bars, 2 one "
                        "line per epoch)")
    _common.add_common_arguments(parser)
    parser.set_defaults(check=check, run=run)
    return parser


def add_distillation_arguments(parser):
    group = parser.add_argument_group("feature matching")
    group.add_argument(
        "--feature", action="append", default=[], type=feature_spec,
        metavar="TEACHER_LAYER:STUDENT_LAYER",
        help="match a teacher layer with a student layer (repeatable; a "
        "projection head is added when the shapes differ)")
    group.add_argument(
        "--feature-loss", default="mse", metavar="LOSS",
        help="loss comparing matched features: mse, l1, smooth_l1, cosine, "
        "attention, or a name registered with keras_kd.losses.register")
    _common.add_number(group, "--feature-weight", "non_negative",
                       default=1.0,
                       help="weight of each feature term in the loss")


def feature_spec(value):
    """argparse type of `--feature`: `"teacher:student"` -> a pair."""
    parts = value.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise argparse.ArgumentTypeError(
            "Argument `--feature` must be `TEACHER_LAYER:STUDENT_LAYER`, two "
            "layer names joined by one colon (for example "
            f"`--feature dense:hidden`). Received: --feature={value!r}")
    return parts[0].strip(), parts[1].strip()


def method_arguments(args):
    """`alpha` and `terms` of the Distiller for `--method`."""
    import keras_kd

    term = keras_kd.terms.get(args.method, standardize=args.standardize)
    if args.method in BALANCED:
        return {"alpha": args.alpha, "terms": [keras_kd.HardLoss(), term]}
    return {"terms": [keras_kd.HardLoss(), term]}


def feature_matches(args):
    import keras_kd

    return [
        keras_kd.FeatureMatch(t, s, loss=args.feature_loss,
                              weight=args.feature_weight)
        for t, s in args.feature
    ]


def add_output_arguments(parser, default_output):
    group = parser.add_argument_group("output")
    group.add_argument("--output", default=default_output,
                       metavar="STUDENT.keras",
                       help="where to write the trained student")
    group.add_argument("--tflite", metavar="PATH.tflite",
                       help="also export the student to this LiteRT file")
    group.add_argument("--quantize", default="none",
                       choices=_common.QUANTIZATION_MODES,
                       help="quantization of the --tflite file; int8 is "
                       "calibrated on training inputs")


# The inputs of `distill` and `tune`: `{flag: attribute of args}`.
INPUTS = {"TEACHER.keras": "teacher", "STUDENT.keras": "student",
          "--data": "data", "--unlabeled": "unlabeled"}


def check(args):
    """Checks the files and outputs before anything is imported or read."""
    _common.check_suffix("--output", args.output, ".keras")
    _common.check_suffix("--tflite", args.tflite, ".tflite")
    if args.quantize != "none" and args.tflite is None:
        raise _common.requires_error(
            "--quantize", "`--tflite PATH.tflite`",
            f"--quantize={args.quantize} without --tflite")
    _common.check_exists("TEACHER.keras", args.teacher)
    _common.check_exists("STUDENT.keras", args.student)
    _common.check_outputs({"--output": args.output, "--tflite": args.tflite},
                          _common.input_files(args, INPUTS))


def load_inputs(args):
    """Teacher, student and data of `distill` and `tune`, all checked."""
    teacher = _common.load_model("TEACHER.keras", args.teacher)
    student = _common.load_model("STUDENT.keras", args.student)
    data, x, y = _common.load_training_data(args, "student", student)
    return teacher, student, data, x, y


def run(args):
    import keras
    import numpy as np

    import keras_kd

    teacher, student, data, x, y = load_inputs(args)
    keras.utils.set_random_seed(args.seed)
    if getattr(args, "quantize_aware", False):
        student = quantize_aware_student(student, x, args.seed)
    with _common.checking_inputs():
        distiller = keras_kd.Distiller(
            teacher, student, temperature=args.temperature,
            features=feature_matches(args), **method_arguments(args))
        distiller.compile(
            optimizer=keras.optimizers.Adam(args.learning_rate),
            metrics=["accuracy"])
    _common.check_labels("--data", y, distiller.num_classes)
    for split in (data.validation, data.test):
        if split is not None:
            _common.check_labels("--data", split[1], distiller.num_classes)

    targets, validation = y, data.validation
    if not args.no_cache:
        print(f"Caching the teacher's outputs on {len(x)} samples...")
        cache = keras_kd.data.cache_teacher_outputs(
            distiller, x, verbose=min(args.verbose, 1))
        targets = cache.targets(y, x=x)
        if validation is not None:
            # Validation then runs the student alone, not the teacher too.
            x_val, y_val = validation
            val_cache = keras_kd.data.cache_teacher_outputs(
                distiller, x_val, verbose=0)
            validation = (x_val, val_cache.targets(y_val, x=x_val))
    print(f"Distilling {teacher.name!r} into {student.name!r}: "
          f"{len(x)} training samples, T={args.temperature}, "
          f"alpha={args.alpha}, {len(args.feature)} feature match(es).")
    with _common.Timer() as timer:
        distiller.fit(x, targets, batch_size=args.batch_size,
                      epochs=args.epochs, validation_data=validation,
                      shuffle=True, verbose=args.verbose)
    _common.save_model(distiller.student, args.output)
    rows = summary_rows(args, teacher, distiller.student, data, timer)
    rows += export_rows(args, distiller.student, data, np.asarray(x))
    print_summary(rows, data)
    print(f"Wrote {args.output}" + (f" and {args.tflite}" if args.tflite
                                    else ""))
    return 0


def quantize_aware_student(student, x, seed):
    """The student rewritten for int8 training, calibrated on 512 inputs."""
    import numpy as np

    from keras_kd import quantization

    order = np.random.default_rng(seed).permutation(len(x))
    with _common.checking_inputs():
        student = quantization.quantize_aware(
            student, np.asarray(x)[order[:512]])
    print(f"Quantize-aware student {student.name!r}: int8 weights and "
          "activations, ranges calibrated on "
          f"{min(512, len(x))} training inputs.")
    return student


def summary_rows(args, teacher, student, data, timer):
    evaluation = data.evaluation
    rows = []
    for name, model, path, seconds in (
        ("teacher", teacher, args.teacher, None),
        ("student (distilled)", student, args.output, timer.seconds),
    ):
        accuracy = _common.accuracy(model, evaluation) if evaluation else None
        rows.append((name, accuracy, model.count_params(),
                     _common.file_size(path), seconds))
    return rows


def export_rows(args, student, data, x):
    """Exports to `--tflite` if asked; returns its summary row."""
    if not args.tflite:
        return []
    from keras_kd import export

    from keras_kd.quantization import layers as quantize_layers

    representative = None
    if args.quantize == "int8" and not quantize_layers.is_quantize_aware(
            student):
        import numpy as np

        order = np.random.default_rng(args.seed).permutation(len(x))
        representative = x[order[:100]]
    quiet = not args.debug
    print(f"Exporting the student to {args.tflite} "
          f"({_common.export_label(args.quantize)})...", flush=True)
    with _common.native_output_silenced(quiet):
        export.export_student(student, _common.make_parent(args.tflite),
                              quantization=args.quantize,
                              representative_data=representative)
    evaluation = data.evaluation
    accuracy = None
    if evaluation is not None:
        with _common.native_output_silenced(quiet):
            report = export.parity_report(student, args.tflite, evaluation,
                                          latency_runs=20)
        print(report)
        accuracy = report.tflite_accuracy
    return [(f"student (.tflite, {_common.export_label(args.quantize)})",
             accuracy, None,
             _common.file_size(args.tflite), None)]


def print_summary(rows, data):
    header = ("model", f"accuracy ({data.evaluation_name})", "parameters",
              "size", "train time")
    print()
    print(_common.format_table(header, [
        (name,
         "-" if acc is None else f"{acc:.2%}",
         "-" if params is None else f"{params:,}",
         _common.format_size(size),
         "-" if seconds is None else f"{seconds:.1f} s")
        for name, acc, params, size, seconds in rows
    ]))
