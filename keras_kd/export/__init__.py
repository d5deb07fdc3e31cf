"""Export of distilled students to LiteRT (`.tflite`) and parity reports.

`export_student` writes only the student (never the teacher or the
projection heads) in one of four quantization modes; `LiteRTModel` runs the
file in the LiteRT interpreter; `parity_report` compares it with the Keras
student. TensorFlow and `ai_edge_litert` are imported when these run, not
when `keras_kd` is imported.
"""

from keras_kd.export.litert import QUANTIZATION_MODES
from keras_kd.export.litert import export_student
from keras_kd.export.litert_model import LiteRTModel
from keras_kd.export.parity import ParityReport
from keras_kd.export.parity import parity_report

__all__ = [
    "LiteRTModel",
    "ParityReport",
    "QUANTIZATION_MODES",
    "export_student",
    "parity_report",
]
