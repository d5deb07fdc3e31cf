"""Tests of keras_kd/callbacks/schedules.py."""

import math

from keras_kd import callbacks
from tests.test_case import TestCase


class SchedulesTest(TestCase):
    def test_linear(self):
        schedule = callbacks.linear(8.0, 2.0, steps=4)
        self.assertEqual([schedule(i, None) for i in range(6)],
                         [8.0, 6.0, 4.0, 2.0, 2.0, 2.0])

    def test_cosine(self):
        schedule = callbacks.cosine(4.0, 1.0, steps=3)
        self.assertAlmostEqual(schedule(0, None), 4.0)
        self.assertAlmostEqual(schedule(1, None),
                               1.0 + 3.0 * 0.5 * (1 + math.cos(math.pi / 2)))
        self.assertAlmostEqual(schedule(2, None), 1.0)
        self.assertAlmostEqual(schedule(9, None), 1.0)

    def test_step_decay(self):
        schedule = callbacks.step_decay(8.0, 0.5, every=2)
        self.assertEqual([schedule(i, None) for i in range(5)],
                         [8.0, 8.0, 4.0, 4.0, 2.0])

    def test_single_step(self):
        self.assertEqual(callbacks.linear(3.0, 1.0, steps=1)(0, None), 3.0)

    def test_bad_steps(self):
        with self.assertRaisesRegex(ValueError, "Received: steps=0"):
            callbacks.linear(1.0, 2.0, steps=0)
