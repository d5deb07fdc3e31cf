"""Search-space helpers of `DistillerHyperModel`: hp declarations, names."""

import inspect
import math
import numbers

from keras_kd.utils import keras_compat

# Distiller defaults, used as the first value of a range when they lie in it.
_DEFAULTS = {"temperature": 4.0, "alpha": 0.5}


def declare(hp, name, spec):
    """Registers one search argument on `hp` and returns its value."""
    kind = spec[0]
    if kind == "fixed":
        return hp.Fixed(name, spec[1])
    if kind == "choice":
        return hp.Choice(name, spec[1])
    low, high = spec[1], spec[2]
    log = name in ("temperature", "learning_rate") or (
        name.endswith("_weight") and low > 0)
    default = _DEFAULTS.get(name, low)
    default = default if low <= default <= high else low
    return hp.Float(name, low, high, sampling="log" if log else "linear",
                    default=default)


def takes_hp(fn):
    """Whether a student builder takes `hp` (a required or `hp` argument)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    for p in parameters:
        if p.kind == p.VAR_POSITIONAL or p.name == "hp":
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and \
                p.default is p.empty:
            return True
    return False


def logged_metric_names(model):
    """The history keys of the metrics compiled into `model`."""
    compiled = keras_compat.compile_metrics(model)
    if compiled is None:
        return []
    names = []
    for group in keras_compat.user_metrics(compiled):
        for metric in _flatten(group):
            names.append(_metric_name(metric))
    return names


def _flatten(metrics):
    if metrics is None:
        return []
    if isinstance(metrics, dict):
        metrics = list(metrics.values())
    if not isinstance(metrics, (list, tuple)):
        return [metrics]
    out = []
    for metric in metrics:
        out.extend(_flatten(metric) if isinstance(metric, (list, tuple, dict))
                   else [metric])
    return out


def _metric_name(metric):
    """The history key Keras gives a compiled metric (`get_metric`)."""
    if isinstance(metric, str):
        return metric
    name = getattr(metric, "name", None) or getattr(metric, "__name__", None)
    return str(name)


_RANGE_DOMAINS = {
    "positive": "positive finite numbers",
    "unit": "numbers in [0, 1]",
    "non_negative": "finite numbers >= 0",
}


def _in_domain(value, domain):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if not math.isfinite(value):
        return False
    if domain == "positive":
        return value > 0
    if domain == "unit":
        return 0.0 <= value <= 1.0
    return value >= 0


def check_search_space(name, value, domain):
    """Reads a search-space argument: a fixed value, a range or choices.

    Args:
        name: The argument name (also the hyperparameter name).
        value: A number (fixed), a `(min, max)` tuple (a range) or a list of
            numbers (choices).
        domain: `"positive"`, `"unit"` or `"non_negative"`.

    Returns:
        `("fixed", value)`, `("range", min, max)` or `("choice", values)`,
        with floats; choices keep their order (the first is the default).
    """
    expected = (
        f"Argument `{name}` must be a number (a fixed value), a "
        "`(min, max)` tuple (a range to search) or a list of numbers (the "
        "values to choose from)"
    )
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(
                f"{expected}; a tuple must hold exactly `(min, max)`. "
                f"Received: {name}={value!r}"
            )
        items = list(value)
    elif isinstance(value, list):
        if not value:
            raise ValueError(
                f"{expected}; the list of choices is empty. "
                f"Received: {name}={value!r}"
            )
        items = list(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        items = [value]
    else:
        raise TypeError(
            f"{expected}. Received: {name}={value!r} of type "
            f"{type(value).__name__}"
        )
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Real):
            raise TypeError(
                f"{expected}. Received: {name}={value!r}, which holds "
                f"{item!r} of type {type(item).__name__}"
            )
    if not all(_in_domain(item, domain) for item in items):
        raise ValueError(
            f"Argument `{name}` must hold {_RANGE_DOMAINS[domain]}. "
            f"Received: {name}={value!r}"
        )
    items = [float(item) for item in items]
    if isinstance(value, tuple):
        low, high = items
        if low > high:
            raise ValueError(
                f"Argument `{name}` is a range `(min, max)` whose min is "
                f"larger than its max. Received: {name}={value!r}. Pass "
                f"`{name}=({high!r}, {low!r})`."
            )
        if low == high:
            return ("fixed", low)
        return ("range", low, high)
    if isinstance(value, list):
        return ("choice", list(dict.fromkeys(items)))
    return ("fixed", items[0])
