"""Model inspection: output classes, probability outputs, layer taps."""

import keras
import numpy as np

from keras_kd.utils import keras_compat
from keras_kd.utils import validation


def is_functional(model):
    """True for Functional and Sequential models with symbolic inputs."""
    try:
        inputs = model.inputs
        outputs = model.outputs
    except (AttributeError, ValueError):
        return False
    return bool(inputs) and bool(outputs)


def output_spec(model):
    """The KerasTensor (or spec) of the single output of `model`."""
    if is_functional(model):
        outputs = model.outputs
        if len(outputs) != 1:
            raise ValueError(
                f"The model {model.name!r} has {len(outputs)} outputs; "
                "keras_kd distils models with one logits output. Wrap the "
                "model so it returns the logits only. Received: "
                f"{len(outputs)} outputs"
            )
        return outputs[0]
    return None


def input_shapes(model):
    if not is_functional(model):
        return None
    return [tuple(t.shape) for t in model.inputs]


def num_classes(model):
    """Size of the last axis of the model's logits (classes, or the
    vocabulary of a language model), or None if unknown."""
    spec = output_spec(model)
    if spec is None:
        return None
    if len(spec.shape) < 2:
        raise ValueError(
            f"The model {model.name!r} outputs a tensor of shape "
            f"{tuple(spec.shape)}; keras_kd distils models whose output is "
            "logits of shape `(batch_size, ..., num_classes)`. Give the model "
            "a last axis of logits (e.g. `keras.layers.Dense(1)` for one "
            f"output). Received: output shape {tuple(spec.shape)}"
        )
    return spec.shape[-1]


def output_rank(model):
    """Rank of the model's logits (2 for a classifier, 3 for a sequence
    model), or None if unknown."""
    spec = output_spec(model)
    return None if spec is None else len(spec.shape)


def last_layer(model):
    spec = output_spec(model)
    if spec is None:
        return None
    return keras_compat.producing_operation(spec)


def _layer_applies_softmax(layer):
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    if activation is None:
        return False
    name = getattr(activation, "__name__", str(activation))
    return name == "softmax"


def detect_probabilities(model):
    """Says how `model` is known to output probabilities, or returns None.

    Looks at the activation of the layer that produces the output, then runs
    the model once on a batch of zeros and checks whether every row is
    non-negative and sums to one.
    """
    layer = last_layer(model)
    if layer is not None and _layer_applies_softmax(layer):
        return f"its last layer {layer.name!r} applies a softmax"
    if not is_functional(model):
        return None
    batch = []
    for tensor in model.inputs:
        shape = tuple(tensor.shape)
        if any(d is None for d in shape[1:]):
            return None
        batch.append(np.zeros((2,) + shape[1:], dtype=tensor.dtype))
    try:
        outputs = model(batch if len(batch) > 1 else batch[0], training=False)
    except Exception:  # A probe that fails says nothing; the step will.
        return None
    values = np.asarray(keras.ops.convert_to_numpy(outputs), dtype="float64")
    if values.ndim == 2 and values.shape[-1] > 1:
        sums = values.sum(axis=-1)
        if np.all(values >= 0) and np.allclose(sums, 1.0, atol=1e-3):
            return "its outputs on a probe batch are non-negative and sum to 1"
    return None


def resolve_layer(model, layer, role):
    """Finds `layer` (a name or a layer object) in `model`."""
    if isinstance(layer, keras.layers.Layer):
        for candidate in keras_compat.flatten_layers(model):
            if candidate is layer:
                return candidate
        raise ValueError(
            f"The layer {layer.name!r} passed as `{role}_layer` is not a layer "
            f"of the {role} model {model.name!r}. Pass a layer of that model "
            f"or its name. Received: {role}_layer={layer.name!r}"
        )
    if not isinstance(layer, str):
        raise TypeError(
            f"Argument `{role}_layer` must be a layer name or a layer. "
            f"Received: {role}_layer={layer!r}"
        )
    names = [
        candidate.name
        for candidate in keras_compat.flatten_layers(model)
    ]
    for candidate in keras_compat.flatten_layers(model):
        if candidate.name == layer:
            return candidate
    raise validation.unknown_name_error(
        f"{role} layer", layer, names, where=f"the {role} model {model.name!r}"
    )


def layer_output(model, layer, role):
    """The symbolic output tensor of `layer` inside the functional `model`."""
    if not is_functional(model):
        raise ValueError(
            f"Matching the layer {layer.name!r} needs the {role} model "
            f"{model.name!r} to be Functional or Sequential, so its "
            "intermediate outputs can be read in the same forward pass. "
            "Rebuild it with `keras.Input(...)` and the functional API, or "
            "wrap it: `keras.Model(inputs, model.call(inputs))`."
        )
    try:
        output = layer.output
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"The {role} layer {layer.name!r} has no single symbolic output "
            f"({error}). Pick a layer that is called once in the model."
        ) from None
    if not isinstance(output, keras.KerasTensor):
        raise ValueError(
            f"The {role} layer {layer.name!r} returns "
            f"{type(output).__name__}, not a single tensor. Pick a layer "
            "whose output is one tensor."
        )
    return output


def feature_view(model, extra_outputs, name):
    """A functional view returning `[logits, *extra_outputs]` in one pass.

    The view shares every layer (and so every weight) with `model`.
    """
    inputs = model.inputs
    inputs = inputs[0] if len(inputs) == 1 else inputs
    try:
        # Keeps the inputs' structure: a dict for KerasHub models.
        structure = model.input
    except (AttributeError, ValueError):  # A Sequential model never called.
        structure = None
    if isinstance(structure, dict):
        inputs = structure
    return keras.Model(
        inputs=inputs,
        outputs=[output_spec(model), *extra_outputs],
        name=name,
    )
