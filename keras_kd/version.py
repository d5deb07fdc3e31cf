"""The single source of the keras_kd version."""

__version__ = "0.1.0"
