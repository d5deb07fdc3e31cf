"""keras_kd: knowledge distillation for Keras 3."""

from keras_kd import losses
from keras_kd.version import __version__

__all__ = ["__version__", "losses"]
