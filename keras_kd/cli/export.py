"""`keras-kd export`: a saved student to LiteRT, with a parity report."""

import os

from keras_kd.cli import _common

HELP = "export a saved student to LiteRT (.tflite) with a parity report"

DESCRIPTION = """\
Writes the student saved in STUDENT.keras to a LiteRT (.tflite) file with
built-in ops only, in one of four quantization modes: none (float32),
float16 (float16 weights), dynamic (int8 weights, float math) or int8
(full-integer, calibrated on --representative-data; a quantize-aware
student from `distill --quantize-aware` needs none: its trained ranges are
used). Then runs the file in
the LiteRT interpreter next to the Keras model and prints a parity report:
accuracies (with labels), top-1 agreement, logit differences, file size and
latency."""

EXAMPLE = """\
example:
  keras-kd export student.keras --quantize int8 --representative-data digits \\
      --eval-data digits --output student_int8.tflite
"""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export", help=HELP, description=DESCRIPTION, epilog=EXAMPLE,
        formatter_class=_common.HelpFormatter)
    parser.add_argument("student", metavar="STUDENT.keras",
                        help="the student to export (returns logits)")
    parser.add_argument(
        "--output", metavar="PATH.tflite",
        help="the file to write (default: STUDENT.tflite next to "
        "STUDENT.keras, or STUDENT_<quantize>.tflite when quantized)")
    parser.add_argument("--quantize", "--quantization", dest="quantize",
                        default="none",
                        choices=_common.QUANTIZATION_MODES,
                        help="quantization mode (--quantization is the same "
                        "flag)")
    parser.add_argument(
        "--representative-data", metavar="DATA",
        help="calibration inputs for int8, read like --data of `distill` "
        "(training split)")
    _common.add_number(parser, "--representative-steps", "positive_int",
                       default=100, help="calibration examples used for int8")
    parser.add_argument("--int8-io", action="store_true",
                        help="int8 input and output tensors (with int8)")
    parser.add_argument(
        "--eval-data", metavar="DATA",
        help="labeled data of the parity report (its test split); defaults "
        "to --representative-data")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder of prepared TensorFlow Datasets")
    _common.add_image_size_argument(parser)
    _common.add_number(parser, "--max-examples", "positive_int",
                       help="examples compared in the parity report "
                       "(default: all)")
    _common.add_common_arguments(parser)
    parser.set_defaults(check=check, run=run)
    return parser


def default_output(student_path, quantize):
    stem = os.path.splitext(student_path)[0]
    return stem + ("" if quantize == "none" else f"_{quantize}") + ".tflite"


def missing_representative_data_error():
    return _common.requires_error(
        "--quantize int8", "`--representative-data DATA` to calibrate "
        "the int8 ranges (or a quantize-aware student, from `keras-kd "
        "distill --quantize-aware`)", "--quantize=int8 without "
        "--representative-data")


def _is_quantize_aware(student):
    from keras_kd.quantization import layers

    return layers.is_quantize_aware(student)


def check(args):
    """Checks the files and outputs before anything is imported or read."""
    output = args.output or default_output(args.student, args.quantize)
    _common.check_suffix("--output", output, ".tflite")
    _common.check_exists("STUDENT.keras", args.student)
    if args.int8_io and args.quantize != "int8":
        raise _common.requires_error(
            "--int8-io", "`--quantize int8`", f"--quantize={args.quantize}")
    _common.check_outputs({"--output": output}, _common.input_files(args, {
        "STUDENT.keras": "student",
        "--representative-data": "representative_data",
        "--eval-data": "eval_data"}))


def run(args):
    from keras_kd import export

    output = args.output or default_output(args.student, args.quantize)
    student = _common.load_model("STUDENT.keras", args.student)
    quantize_aware = _is_quantize_aware(student)
    if (args.quantize == "int8" and not args.representative_data
            and not quantize_aware):
        raise missing_representative_data_error()
    image_shape = _common.image_shape_of(student, args.image_size)
    representative = None
    if args.representative_data:
        data = _common.load_data("--representative-data",
                                 args.representative_data, args.data_dir,
                                 image_shape)
        _common.check_inputs("student", "--representative-data", student,
                             data.train[0])
        x = data.train[0]
        _common.check_finite("--representative-data", x)
        if args.quantize == "int8" and not quantize_aware:
            import numpy as np

            order = np.random.default_rng(args.seed).permutation(len(x))
            representative = x[order[:args.representative_steps]]
    evaluation = None
    eval_spec = args.eval_data or args.representative_data
    if eval_spec:
        flag = "--eval-data" if args.eval_data else "--representative-data"
        data = _common.load_data(flag, eval_spec, args.data_dir,
                                 image_shape)
        evaluation = data.test if data.test is not None else data.train
        _common.check_inputs("student", flag, student, evaluation[0])
        num_classes = student.outputs[0].shape[-1] if getattr(
            student, "outputs", None) else None
        if num_classes:
            _common.check_labels(flag, evaluation[1], num_classes,
                                 unlabeled=False)

    quiet = not args.debug
    print(f"Converting {args.student} to LiteRT "
          f"({_common.export_label(args.quantize)})...", flush=True)
    with _common.Timer() as timer, _common.native_output_silenced(quiet):
        export.export_student(
            student, _common.make_parent(output),
            quantization=args.quantize,
            representative_data=representative,
            representative_steps=args.representative_steps,
            int8_io=args.int8_io)
    print(f"Wrote {output} ({_common.format_size(_common.file_size(output))}"
          f", {_common.export_label(args.quantize)}) in {timer.seconds:.1f} s")
    if evaluation is None:
        print("Pass --eval-data DATA for a parity report with accuracies.")
        return 0
    print(f"Comparing the file with the Keras model on {len(evaluation[0])} "
          "examples...", flush=True)
    with _common.native_output_silenced(quiet):
        report = export.parity_report(student, output, evaluation,
                                      max_examples=args.max_examples,
                                      quantization=args.quantize)
    print(report)
    return 0
