"""Quantization-aware distillation: students that train as they run in int8.

`quantize_aware(student, representative_data)` returns a Keras model that
computes what the full-integer int8 `.tflite` computes (fake-quantized
weights and activations, straight-through gradients), to be distilled from a
float teacher and exported with `keras_kd.export.export_student(...,
quantization="int8")`, which then needs no representative data.
"""

from keras_kd.quantization.quantizers import fake_quant
from keras_kd.quantization.quantizers import fake_quant_weights
from keras_kd.quantization.quantizers import nudged_range
from keras_kd.quantization.layers import FakeQuant
from keras_kd.quantization.layers import QuantizeWrapper
from keras_kd.quantization.layers import is_quantize_aware
from keras_kd.quantization.rewrite import SUPPORTED_LAYERS
from keras_kd.quantization.rewrite import calibrate
from keras_kd.quantization.rewrite import quantize_aware

__all__ = [
    "FakeQuant",
    "QuantizeWrapper",
    "SUPPORTED_LAYERS",
    "calibrate",
    "fake_quant",
    "fake_quant_weights",
    "is_quantize_aware",
    "nudged_range",
    "quantize_aware",
]
