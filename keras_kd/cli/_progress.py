"""Progress of the command line's long phases, one line at a time.

`keras-kd demo` trains a teacher and then, per seed, two students for tens of
epochs with Keras' own progress bar off (it would print thousands of lines).
`PhaseProgress` is a Keras callback that prints one line for a phase every
`interval` seconds instead: the epoch reached, the time spent and the time
left, estimated from the epochs done. A line is also printed once the phase
ends. Lines, not a bar redrawn in place, so that a log file or a CI console
reads the same as a terminal.

Example:

```python
progress = PhaseProgress("seed 1, distilled")
model.fit(x, y, epochs=60, verbose=0, callbacks=[progress])
#   seed 1, distilled: epoch 14/60, 5 s, about 16 s left
#   seed 1, distilled: epoch 60/60 done in 21 s
```
"""

import sys
import time

import keras

# Seconds between two lines of one phase.
INTERVAL = 5.0


def format_seconds(seconds):
    """`"42 s"`, `"3 min 05 s"` or `"1 h 02 min"`."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class PhaseProgress(keras.callbacks.Callback):
    """Prints `"<name>: epoch k/N, t, about r left"` every `interval` s.

    Args:
        name: String, the phase, e.g. `"teacher"` or `"seed 1, distilled"`.
        interval: Positive float, seconds between two lines. Defaults to
            `INTERVAL` (5 s).
        stream: File to print to. Defaults to `sys.stdout`.
        clock: Function returning seconds (for tests). Defaults to
            `time.perf_counter`.
        indent: String put before each line. Defaults to two spaces.
    """

    def __init__(self, name, interval=INTERVAL, stream=None, clock=None,
                 indent="  "):
        super().__init__()
        self.name = name
        self.interval = float(interval)
        self.stream = stream
        self.clock = clock or time.perf_counter
        self.indent = indent
        self.lines = 0

    def on_train_begin(self, logs=None):
        self.epochs = self.params.get("epochs") or 0
        self.steps = self.params.get("steps") or 0
        self.started = self.last = self.clock()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        # Also inside a long epoch: the fraction of it done counts. The last
        # step is left to `on_epoch_end`.
        if self.steps and batch + 1 >= self.steps:
            return
        if self.clock() - self.last >= self.interval:
            done = self.epoch + ((batch + 1) / self.steps if self.steps
                                 else 0.0)
            self._line(done)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch = epoch + 1
        if self.epoch < self.epochs and \
                self.clock() - self.last >= self.interval:
            self._line(self.epoch)

    def on_train_end(self, logs=None):
        elapsed = self.clock() - self.started
        self._print(f"{self.name}: epoch {self.epoch}/{self.epochs} done in "
                    f"{format_seconds(elapsed)}")

    def _line(self, done):
        now = self.clock()
        elapsed = now - self.started
        epoch = int(done)
        if done > epoch:  # Inside an epoch: the one running, and how far.
            epoch = f"{epoch + 1}/{self.epochs} " \
                    f"({int(100 * (done - epoch))} %)"
        else:
            epoch = f"{epoch}/{self.epochs}"
        text = f"{self.name}: epoch {epoch}, {format_seconds(elapsed)}"
        if done > 0 and self.epochs:
            left = elapsed * (self.epochs - done) / done
            text += f", about {format_seconds(left)} left"
        self._print(text)
        self.last = now

    def _print(self, text):
        stream = self.stream or sys.stdout
        print(self.indent + text, file=stream, flush=True)
        self.lines += 1


def callbacks(name, quiet):
    """`[PhaseProgress(name)]`, or `[]` when `quiet`."""
    return [] if quiet else [PhaseProgress(name)]
