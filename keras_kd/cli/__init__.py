"""The `keras-kd` command line: `demo`, `distill`, `tune`, `export` and
`compress`.

`main(argv=None) -> int` parses the arguments, runs one subcommand and
returns the exit status: 0 on success, 2 on bad usage (argparse errors and
input mistakes found before training: a missing file, a bad value, a teacher
and student with different classes, an unknown layer, a dataset that is not
on this machine), 1 when the run itself fails. Errors are one line on stderr,
`keras-kd <command>: error: <message>`; `--debug` shows the traceback.

Example:

```
examples:
  keras-kd demo
  keras-kd distill teacher.keras student.keras --data digits --tflite s.tflite
  python -m keras_kd export s.keras --quantize int8 --representative-data digits
  keras-kd compress teacher.keras --data digits --width 0.5 --output s.tflite
```
"""

import logging
import sys
import time
import warnings

from keras_kd.cli import _common
from keras_kd.cli import compress
from keras_kd.cli import demo
from keras_kd.cli import distill
from keras_kd.cli import export
from keras_kd.cli import tune

COMMANDS = (demo, distill, tune, export, compress)

# Errors whose message is meant for the user as it is; others are prefixed
# with their type.
_PLAIN_ERRORS = (ValueError, TypeError, OSError, ImportError,
                 NotImplementedError, RuntimeError)
# Python loggers of the libraries below keras_kd; errors still show.
_NOISY_LOGGERS = ("tensorflow", "absl", "jax._src.xla_bridge", "h5py")


def build_parser():
    """The `keras-kd` argument parser with one sub-parser per command."""
    parser = _common.ArgumentParser(
        prog=_common.PROG,
        description="Knowledge distillation for Keras 3 from the command "
        "line. Run `keras-kd COMMAND --help` for the options of a command.",
        epilog=__doc__.split("```")[1].strip("\n"),
        formatter_class=_common.HelpFormatter,
    )
    from keras_kd.version import __version__

    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True,
        parser_class=_common.ArgumentParser)
    for module in COMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    """Runs `keras-kd` with `argv` (default `sys.argv[1:]`).

    The arguments are parsed and checked before Keras, TensorFlow or JAX is
    imported, so `--help` and argument errors are quick; the backend is then
    imported with its C++ start-up logs silenced (all of them show with
    `--debug`).

    Returns:
        The exit status: 0 (success), 1 (the run failed) or 2 (bad usage).
    """
    _common.STARTED[0] = time.perf_counter()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _common.UsageError as error:
        return _report(error.prog or _common.PROG, error, 2)
    except SystemExit as exit_:  # --help and --version.
        return exit_.code if isinstance(exit_.code, int) else 0
    prog = f"{_common.PROG} {args.command}"
    # A filter, not a level: absl resets its logger's level when it parses
    # its flags (TensorFlow's converter does).
    loggers = [] if args.debug else [
        logging.getLogger(name) for name in _NOISY_LOGGERS]
    for logger in loggers:
        logger.addFilter(_errors_only)
    with warnings.catch_warnings():
        if not args.debug:
            warnings.showwarning = _show_warning
        try:
            # Files and outputs first: a mistake costs no import.
            args.check(args)
            _common.import_backend(quiet=not args.debug)
            return int(args.run(args) or 0)
        except _common.UsageError as error:
            if args.debug:
                raise
            return _report(prog, error, 2)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # One line instead of a traceback.
            if args.debug:
                raise
            text = _common.one_line(error)
            if not isinstance(error, _PLAIN_ERRORS) or not text:
                text = f"{type(error).__name__}: {text}"
            return _report(prog, f"{text} (run with --debug for the "
                           "traceback)", 1)
        finally:
            for logger in loggers:
                logger.removeFilter(_errors_only)


def _errors_only(record):
    return record.levelno >= logging.ERROR


def _report(prog, error, code):
    print(f"{prog}: error: {_common.one_line(error)}", file=sys.stderr)
    return code


def _show_warning(message, category, filename, lineno, file=None,
                  line=None):
    text = _common.one_line(message)
    print(f"{_common.PROG}: warning: {text}", file=file or sys.stderr)


__all__ = ["build_parser", "main"]
