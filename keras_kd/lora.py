"""LoRA students: keep their adapters through saving, and merge them.

A student with LoRA adapters (`backbone.enable_lora(rank)` on a KerasHub
model, `layer.enable_lora(rank)` or `Dense(..., lora_rank=r)` on a Keras one)
trains only its adapters (and what else its owner left trainable) through
the Distiller, like any other student: the Distiller trains the student's
`trainable_weights`.

Keras writes a LoRA layer to a `.keras` file with its adapters folded into
the kernel and, when it reloads a layer with LoRA enabled, sets both factors
to zero, whose gradients are then zero too. A KerasHub model's config
does not record LoRA at all, nor the layers `enable_lora` froze. A
Distiller therefore records the LoRA layout of its student in its config
(rank, `lora_alpha`, which layers and variables train) and keeps the
unmerged kernels and the factors in its own entry of the file, so
`keras_kd.load_distiller` gives back the same student, still training only
its adapters, and `fit` resumes with the same optimizer state.

`merge_lora(model)` returns the deployable model: a copy without LoRA whose
kernels hold `kernel + (lora_alpha / rank) * lora_kernel_a @ lora_kernel_b`
(Keras' own merge, the one its `save` applies; a quantized kernel is
quantized again). For a KerasHub task it is a plain KerasHub model of the
same class.
"""

import keras

from keras_kd.utils import keras_compat


def lora_layers(model):
    """The layers of `model` (nested ones included) with LoRA enabled."""
    return [layer for layer in _layers(model)
            if getattr(layer, "lora_enabled", False)]


def merge_lora(model):
    """Returns a copy of `model` with its LoRA adapters merged, without LoRA.

    Each LoRA layer's kernel becomes
    `kernel + (lora_alpha / rank) * lora_kernel_a @ lora_kernel_b`, computed
    by the layer itself, as Keras does when it saves the model (an int8 or
    int4 kernel is merged in float and quantized again). Every other weight
    is copied. The copy is built from `model`'s config with LoRA left out,
    so a KerasHub task gives a plain KerasHub model of the same class (its
    preprocessor included), with every layer trainable as a freshly built
    one. `model` is not changed.

    Args:
        model: A built `keras.Model`, with or without LoRA layers (e.g.
            `distiller.student`).

    Returns:
        A new `keras.Model` of the same class computing the same outputs.

    Example:

    ```python
    student.backbone.enable_lora(4)
    keras_kd.Distiller(teacher, student).fit(...)
    deployable = keras_kd.merge_lora(student)  # no LoRA layers
    ```
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise TypeError(
            "Argument `model` must be a built `keras.Model`. Received: "
            f"model={model!r}"
        )
    config = _without_lora(keras.saving.serialize_keras_object(model))
    config.pop("compile_config", None)
    clone = keras.saving.deserialize_keras_object(config)
    source, target = _layers(model, True), _layers(clone, True)
    if [type(a) for a in source] != [type(b) for b in target]:
        raise ValueError(
            f"The model {model.name!r} could not be rebuilt layer by layer "
            "from its config, so its weights cannot be copied into a merged "
            f"model. Received: {len(source)} layers, rebuilt "
            f"{len(target)}."
        )
    for src, dst in zip(source, target):
        # A LoRA layer writes its kernel merged (Keras' `save_own_variables`),
        # and the rebuilt layer without LoRA reads it as a plain kernel.
        store = {}
        src.save_own_variables(store)
        if store:
            dst.load_own_variables(store)
    return clone


def lora_config(model):
    """The LoRA layout of `model`, for its Distiller's config; or None.

    Layer indices follow `_flatten_layers`; `trainable` holds every layer's
    flag (from the model down) and `variables` every weight's, in
    `model.weights` order once LoRA is enabled again.
    """
    layers = _layers(model, True)
    adapted = [(i, layer) for i, layer in enumerate(layers)
               if getattr(layer, "lora_enabled", False)]
    if not adapted:
        return None
    return {
        "layers": [[i, int(layer.lora_rank), float(layer.lora_alpha)]
                   for i, layer in adapted],
        "trainable": [bool(layer.trainable) for layer in layers],
        "variables": [bool(v.trainable) for v in model.weights],
        # KerasHub backbones remember their LoRA layers for
        # `save_lora_weights`.
        "backbones": [
            [i, getattr(layer, "_lora_rank", None),
             list(getattr(layer, "_lora_enabled_layers", []))]
            for i, layer in enumerate(layers)
            if getattr(layer, "_lora_enabled_layers", None)
        ],
    }


def restore_lora(model, config):
    """Enables LoRA on a rebuilt `model` as `lora_config` recorded it."""
    if not config:
        return
    layers = _layers(model, True)
    if len(config["trainable"]) != len(layers):
        raise ValueError(
            "The saved student's LoRA layout does not fit the student "
            f"rebuilt from the file: {len(config['trainable'])} layers were "
            f"recorded, {len(layers)} rebuilt."
        )
    # Pre-order: a parent's flag first, then its own layers' (as
    # `enable_lora` sets them).
    for layer, trainable in zip(layers, config["trainable"]):
        layer.trainable = trainable
    for i, rank, alpha in config["layers"]:
        layer = layers[i]
        if not getattr(layer, "lora_enabled", False):
            layer.enable_lora(rank, lora_alpha=alpha)
    for i, rank, enabled in config.get("backbones", []):
        layers[i]._lora_rank = rank
        layers[i]._lora_enabled_layers = list(enabled)
    weights = model.weights
    if len(weights) == len(config["variables"]):
        for variable, trainable in zip(weights, config["variables"]):
            variable.trainable = trainable


class LoraState(keras.layers.Layer):
    """The unmerged kernels and LoRA factors of a model, in a `.keras` file.

    Not a layer of any model: a Distiller exposes one for Keras' saving walk,
    which visits it after the student, so the values it writes back are the
    last ones loaded (Keras loads the merged kernel and zero factors).
    """

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_model", model)
        self.built = True

    def _variables(self):
        return [v for layer in lora_layers(self._model)
                for v in layer.weights]

    def save_own_variables(self, store):
        for i, variable in enumerate(self._variables()):
            store[str(i)] = variable

    def load_own_variables(self, store):
        if not len(store):
            return  # A file without LoRA state.
        variables = self._variables()
        if len(store) != len(variables):
            raise ValueError(
                f"The file holds {len(store)} LoRA variables of the student, "
                f"the rebuilt student has {len(variables)}. Was it saved "
                "from another student?"
            )
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])


def _layers(model, include_self=False):
    layers = keras_compat.flatten_layers(model)
    return [model] + layers if include_self else layers


def _without_lora(config):
    """`config` (nested) without the `lora_rank` / `lora_alpha` entries."""
    if isinstance(config, dict):
        return {k: _without_lora(v) for k, v in config.items()
                if k not in ("lora_rank", "lora_alpha")}
    if isinstance(config, list):
        return [_without_lora(v) for v in config]
    return config


__all__ = [
    "lora_layers",
    "merge_lora",
]
