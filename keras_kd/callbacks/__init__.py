"""Callbacks that change the Distiller's temperature and alpha during fit."""

from keras_kd.callbacks.alpha_scheduler import AlphaScheduler
from keras_kd.callbacks.schedules import cosine
from keras_kd.callbacks.schedules import linear
from keras_kd.callbacks.schedules import step_decay
from keras_kd.callbacks.temperature_scheduler import TemperatureScheduler

__all__ = [
    "AlphaScheduler",
    "TemperatureScheduler",
    "cosine",
    "linear",
    "step_decay",
]
