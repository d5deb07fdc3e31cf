"""Search-space helpers of `DistillerHyperModel`: hp declarations, names."""

import inspect

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
    compiled = getattr(model, "_compile_metrics", None)
    names = []
    for group in ("_user_metrics", "_user_weighted_metrics"):
        for metric in _flatten(getattr(compiled, group, None)):
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
