"""`keras-kd compress`: a trained teacher to a small student `.tflite`."""

import os

from keras_kd.cli import _common

HELP = "shrink a trained teacher, distil it and export a small .tflite"

DESCRIPTION = """\
One command from a trained model to a small LiteRT file. Cuts a student out
of the teacher saved in TEACHER.keras (keras_kd.students.shrink: --depth
keeps that many residual blocks or transformer layers, --width keeps that
fraction of the channels, ranked by their mean absolute activation on
training inputs), distils the teacher into it (the teacher's outputs are
computed once and reused every epoch), optionally continues with a
quantization-aware phase, exports the student to --output and prints a
parity report of the .tflite file against the Keras student."""

EXAMPLE = """\
example:
  keras-kd compress teacher.keras --data digits --width 0.5 --epochs 10 \\
      --output student.tflite
"""

PHASES = ("shrink", "cache", "distill", "quantize-aware", "export", "parity")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "compress", help=HELP, description=DESCRIPTION, epilog=EXAMPLE,
        formatter_class=_common.HelpFormatter)
    parser.add_argument("teacher", metavar="TEACHER.keras",
                        help="the trained teacher (returns logits)")
    _common.add_data_arguments(parser)
    group = parser.add_argument_group("shrinking")
    _common.add_number(group, "--depth", "non_negative_int",
                       help="residual blocks (or transformer layers) to keep "
                       "(default: all)")
    _common.add_number(group, "--width", "positive", metavar="FRACTION",
                       help="fraction in (0, 1] of the channels of every "
                       "prunable layer to keep (default: all)")
    _common.add_number(group, "--importance-samples", "non_negative_int",
                       default=256,
                       help="training inputs that rank channels and blocks; "
                       "0 ranks channels by weight magnitude and keeps "
                       "evenly spaced blocks")
    group = parser.add_argument_group("distillation")
    _common.add_number(group, "--temperature", "positive", default=4.0,
                       help="softmax temperature of the soft loss")
    _common.add_number(group, "--alpha", "unit", default=0.5,
                       help="weight of the label loss; the soft loss gets "
                       "1 - alpha")
    _common.add_number(group, "--epochs", "non_negative_int", default=10,
                       help="distillation epochs (0 exports the shrunk "
                       "student as it is)")
    _common.add_number(group, "--learning-rate", "positive", default=1e-3,
                       help="Adam learning rate")
    group.add_argument(
        "--quantize-aware", action="store_true",
        help="after distilling in float, make the student quantization-aware "
        "(keras_kd.quantization.quantize_aware), distil it further with "
        "alpha=0 and export it as int8")
    _common.add_number(group, "--qat-epochs", "positive_int", default=2,
                       help="epochs of the quantization-aware phase")
    group = parser.add_argument_group("output")
    group.add_argument("--output", required=True, metavar="STUDENT.tflite",
                       help="the LiteRT file to write")
    group.add_argument("--keras-output", metavar="STUDENT.keras",
                       help="also write the Keras student here (default: "
                       "STUDENT.keras next to --output)")
    group.add_argument("--quantize", default="int8",
                       choices=_common.QUANTIZATION_MODES,
                       help="quantization of the .tflite file; int8 is "
                       "calibrated on training inputs")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress output, only the results")
    _common.add_common_arguments(parser)
    parser.set_defaults(check=check, run=run)
    return parser


def keras_output(args):
    return args.keras_output or os.path.splitext(args.output)[0] + ".keras"


def check(args):
    """Checks the files and outputs before anything is imported or read."""
    _common.check_suffix("--output", args.output, ".tflite")
    _common.check_suffix("--keras-output", args.keras_output, ".keras")
    if args.width is not None and args.width > 1:
        raise _common.UsageError(
            "Argument `--width` must be a fraction in (0, 1] of the channels "
            f"to keep. Received: --width={args.width}")
    if args.depth is None and args.width is None:
        raise _common.UsageError(
            "keras-kd compress needs `--depth N` (residual blocks or "
            "transformer layers to keep) or `--width FRACTION` (channels to "
            "keep), or both. Received neither")
    if args.quantize_aware and args.quantize != "int8":
        raise _common.requires_error(
            "--quantize-aware", "`--quantize int8` (the default)",
            f"--quantize={args.quantize}")
    _common.check_exists("TEACHER.keras", args.teacher)
    _common.check_outputs(
        {"--output": args.output, "--keras-output": keras_output(args)},
        _common.input_files(args, {"TEACHER.keras": "teacher",
                                   "--data": "data",
                                   "--unlabeled": "unlabeled"}))


class _Progress:
    """One line per phase: `[2/5] distill: 10 epochs, 3.2 s`."""

    def __init__(self, phases, quiet):
        self.phases, self.quiet = phases, quiet
        self.timer = None

    def start(self, phase):
        self.phase = phase
        self.timer = _common.Timer().__enter__()

    def done(self, text=""):
        self.timer.__exit__()
        if not self.quiet:
            number = self.phases.index(self.phase) + 1
            print(f"[{number}/{len(self.phases)}] {self.phase}: "
                  f"{text + ', ' if text else ''}{self.timer.seconds:.1f} s",
                  flush=True)
        return self.timer.seconds


def _quantize_aware_function():
    import keras_kd.quantization as quantization

    function = getattr(quantization, "quantize_aware", None)
    if function is None:
        raise _common.UsageError(
            "Argument `--quantize-aware` is not available yet in this "
            "version of keras_kd (keras_kd.quantization.quantize_aware is "
            "missing). Drop --quantize-aware: the student is then exported "
            "with post-training --quantize int8")
    return function


def load_inputs(args):
    teacher = _common.load_model("TEACHER.keras", args.teacher)
    data, x, y = _common.load_training_data(args, "teacher", teacher)
    return teacher, data, x, y


def run(args):
    import keras
    import numpy as np

    import keras_kd
    from keras_kd import export
    from keras_kd.students import shrink

    quantize_aware = _quantize_aware_function() if args.quantize_aware \
        else None
    teacher, data, x, y = load_inputs(args)
    phases = [p for p in PHASES if p != "quantize-aware"
              or args.quantize_aware]
    if args.epochs == 0:
        phases = [p for p in phases if p not in ("cache", "distill")]
    if data.evaluation is None:
        phases.remove("parity")
    progress = _Progress(phases, args.quiet)
    verbose = 0 if args.quiet else 1
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(x))
    keras.utils.set_random_seed(args.seed)

    progress.start("shrink")
    importance = x[order[:args.importance_samples]] \
        if args.importance_samples else None
    with _common.checking_inputs():
        student = shrink(teacher, depth=args.depth, width=args.width,
                         importance_data=importance)
    shrunk_accuracy = _accuracy(student, data)
    shrunk_params = student.count_params()
    progress.done(f"{teacher.count_params():,} -> "
                  f"{student.count_params():,} parameters")

    seconds = 0.0
    if args.epochs:
        with _common.checking_inputs():
            distiller = keras_kd.Distiller(
                teacher, student, temperature=args.temperature,
                alpha=args.alpha)
            distiller.compile(
                optimizer=keras.optimizers.Adam(args.learning_rate),
                metrics=["accuracy"])
        _common.check_labels("--data", y, distiller.num_classes)
        progress.start("cache")
        cache = keras_kd.data.cache_teacher_outputs(distiller, x, verbose=0)
        targets = cache.targets(y, x=x)
        progress.done(f"the teacher's outputs on {len(x)} samples")
        progress.start("distill")
        distiller.fit(x, targets, batch_size=args.batch_size,
                      epochs=args.epochs, shuffle=True, verbose=verbose)
        seconds += progress.done(
            f"{args.epochs} epoch(s), T={args.temperature}, "
            f"alpha={args.alpha}")
        student = distiller.student
        if quantize_aware is not None:
            progress.start("quantize-aware")
            with _common.checking_inputs():
                student = quantize_aware(student, x[order[:256]])
                qat = keras_kd.Distiller(teacher, student, alpha=0.0,
                                         temperature=args.temperature)
                qat.compile(optimizer=keras.optimizers.Adam(
                    args.learning_rate / 10))
            qat.fit(x, cache.targets(y, x=x), batch_size=args.batch_size,
                    epochs=args.qat_epochs, shuffle=True, verbose=verbose)
            seconds += progress.done(f"{args.qat_epochs} epoch(s), alpha=0")
    _common.save_model(student, keras_output(args))

    progress.start("export")
    quiet = not args.debug
    representative = None
    if args.quantize == "int8" and quantize_aware is None:
        representative = x[order[:100]]
    with _common.native_output_silenced(quiet):
        export.export_student(student, _common.make_parent(args.output),
                              quantization=args.quantize,
                              representative_data=representative)
    progress.done(f"{args.quantize}, "
                  f"{_common.format_size(_common.file_size(args.output))}")
    rows = [("teacher", _accuracy(teacher, data), teacher.count_params(),
             _common.file_size(args.teacher), None),
            ("student (shrunk, before training)", shrunk_accuracy,
             shrunk_params, None, None),
            ("student (distilled" + (", quantize-aware)" if quantize_aware
                                     else ")"), _accuracy(student, data),
             student.count_params(), _common.file_size(keras_output(args)),
             seconds)]
    if data.evaluation is not None:
        progress.start("parity")
        with _common.native_output_silenced(quiet):
            report = export.parity_report(student, args.output,
                                          data.evaluation, latency_runs=20,
                                          quantization=args.quantize)
        progress.done()
        print(report)
        rows.append((f"student (.tflite, {args.quantize})",
                     report.tflite_accuracy, None,
                     _common.file_size(args.output), None))
    print()
    print(_common.format_table(
        ("model", f"accuracy ({data.evaluation_name})", "parameters",
         "size", "train time"),
        [(name, "-" if acc is None else f"{acc:.2%}",
          "-" if params is None else f"{params:,}",
          _common.format_size(size),
          "-" if secs is None else f"{secs:.1f} s")
         for name, acc, params, size, secs in rows]))
    print(f"Wrote {args.output} and {keras_output(args)}")
    return 0


def _accuracy(model, data):
    if data.evaluation is None:
        return None
    return _common.accuracy(model, data.evaluation)
