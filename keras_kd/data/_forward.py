"""The teacher's forward pass for the caches: logits and taps as NumPy.

Shared by the dense cache (`keras_kd.data.cache`), the top-k cache
(`keras_kd.data.topk`) and the view cache (`keras_kd.data.views`).
"""

import keras
import numpy as np


def teacher_forward(model):
    from keras_kd.distiller import Distiller

    if isinstance(model, Distiller):
        wrapper = TeacherOutputs(model)
        names = model._cache_keys()
    elif isinstance(model, keras.Model):
        wrapper = model
        names = ["logits"]
    else:
        raise TypeError(
            "Argument `model` must be a keras_kd.Distiller or a teacher "
            f"keras.Model. Received: model={model!r}"
        )

    def forward(batch):
        outputs = wrapper.predict_on_batch(batch)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [np.asarray(o) for o in outputs]

    return forward, names


class TeacherOutputs(keras.Model):
    """Runs a Distiller's teacher path: preprocessing, teacher, taps."""

    def __init__(self, distiller):
        super().__init__(name="teacher_outputs")
        self.distiller = distiller

    def call(self, x):
        # Every teacher's logits and taps, named by `_cache_keys`.
        return self.distiller._flat_teacher_outputs(x)
