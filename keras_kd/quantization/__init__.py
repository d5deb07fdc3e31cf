"""Quantization-aware distillation: students that train as they run in int8.

`quantize_aware(student, representative_data)` returns a Keras model that
computes what the full-integer int8 `.tflite` computes (fake-quantized
weights and activations, straight-through gradients), to be distilled from a
float teacher and exported with `keras_kd.export.export_student`.
"""

__all__ = []
