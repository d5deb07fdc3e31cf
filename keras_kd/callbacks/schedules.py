"""Schedule functions `(step, current) -> value` for the scheduler callbacks."""

import math

from keras_kd.utils import validation


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"Argument `steps` must be a positive integer. Received: "
            f"steps={steps!r}"
        )


def linear(start, end, steps):
    """Goes linearly from `start` (step 0) to `end` (step `steps - 1`).

    Args:
        start: Float, the value at step 0.
        end: Float, the value from step `steps - 1` on.
        steps: Positive integer, the number of steps of the ramp.

    Returns:
        A function `(step, current) -> value`.

    Example:

    >>> schedule = keras_kd.callbacks.linear(8.0, 2.0, steps=4)
    >>> [schedule(i, None) for i in range(5)]
    [8.0, 6.0, 4.0, 2.0, 2.0]
    """
    _check_steps(steps)
    start, end = float(start), float(end)

    def schedule(step, current=None):
        fraction = min(step, steps - 1) / max(steps - 1, 1)
        return start + (end - start) * fraction

    return schedule


def cosine(start, end, steps):
    """Cosine annealing from `start` (step 0) to `end` (step `steps - 1`).

    Args:
        start: Float, the value at step 0.
        end: Float, the value from step `steps - 1` on.
        steps: Positive integer, the length of the annealing.

    Returns:
        A function `(step, current) -> value`.
    """
    _check_steps(steps)
    start, end = float(start), float(end)

    def schedule(step, current=None):
        fraction = min(step, steps - 1) / max(steps - 1, 1)
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction))

    return schedule


def step_decay(start, factor, every):
    """Multiplies `start` by `factor` every `every` steps.

    Args:
        start: Float, the value at step 0.
        factor: Positive float, the multiplier applied every `every` steps.
        every: Positive integer.

    Returns:
        A function `(step, current) -> value`.
    """
    _check_steps(every)
    validation.check_positive_number("factor", factor)
    start, factor = float(start), float(factor)

    def schedule(step, current=None):
        return start * factor ** (step // every)

    return schedule
