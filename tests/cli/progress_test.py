"""Tests of keras_kd/cli/_progress.py (progress lines of long phases)."""

import io

import keras
import numpy as np

from keras_kd.cli import _progress
from tests.test_case import TestCase


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def drive(progress, clock, epochs, steps, seconds_per_step):
    """Calls the callback as `fit` would, the clock advancing per step."""
    progress.set_params({"epochs": epochs, "steps": steps})
    progress.on_train_begin()
    for epoch in range(epochs):
        progress.on_epoch_begin(epoch)
        for step in range(steps):
            clock.now += seconds_per_step
            progress.on_train_batch_end(step)
        progress.on_epoch_end(epoch)
    progress.on_train_end()


class PhaseProgressTest(TestCase):
    def test_a_line_every_interval_with_the_time_left(self):
        clock, out = FakeClock(), io.StringIO()
        progress = _progress.PhaseProgress("seed 1, distilled", interval=5.0,
                                           stream=out, clock=clock)
        # 10 epochs of 4 steps of 0.5 s: 2 s per epoch, 20 s in all.
        drive(progress, clock, epochs=10, steps=4, seconds_per_step=0.5)
        lines = out.getvalue().splitlines()
        self.assertEqual(lines, [
            "  seed 1, distilled: epoch 3/10 (50 %), 5 s, about 15 s left",
            "  seed 1, distilled: epoch 5/10, 10 s, about 10 s left",
            "  seed 1, distilled: epoch 8/10 (50 %), 15 s, about 5 s left",
            "  seed 1, distilled: epoch 10/10 done in 20 s",
        ])
        # No two lines more than the interval apart (plus one step).
        self.assertEqual(progress.lines, 4)

    def test_long_epochs_report_inside_the_epoch(self):
        clock, out = FakeClock(), io.StringIO()
        progress = _progress.PhaseProgress("teacher", interval=5.0,
                                           stream=out, clock=clock)
        # 2 epochs of 10 steps of 1 s: a line in the middle of each.
        drive(progress, clock, epochs=2, steps=10, seconds_per_step=1.0)
        lines = out.getvalue().splitlines()
        self.assertEqual(lines, [
            "  teacher: epoch 1/2 (50 %), 5 s, about 15 s left",
            "  teacher: epoch 1/2, 10 s, about 10 s left",
            "  teacher: epoch 2/2 (50 %), 15 s, about 5 s left",
            "  teacher: epoch 2/2 done in 20 s",
        ])

    def test_format_seconds(self):
        self.assertEqual(_progress.format_seconds(4.4), "4 s")
        self.assertEqual(_progress.format_seconds(185), "3 min 05 s")
        self.assertEqual(_progress.format_seconds(3720), "1 h 02 min")
        self.assertEqual(_progress.format_seconds(-1), "0 s")

    def test_in_a_real_fit(self):
        out = io.StringIO()
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss="mse")
        progress = _progress.PhaseProgress("fit", interval=0.0, stream=out)
        model.fit(np.zeros((8, 3)), np.zeros((8, 2)), epochs=3, batch_size=4,
                  verbose=0, callbacks=[progress])
        lines = out.getvalue().splitlines()
        self.assertRegex(lines[-1], r"^  fit: epoch 3/3 done in \d+ s$")
        self.assertTrue(any("epoch 1/3" in line for line in lines), lines)

    def test_quiet_gives_no_callback(self):
        self.assertEqual(_progress.callbacks("x", quiet=True), [])
        self.assertIsInstance(_progress.callbacks("x", quiet=False)[0],
                              _progress.PhaseProgress)
