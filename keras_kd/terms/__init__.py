"""Distillation terms: the public base class and the built-in terms.

A Distiller's loss is a weighted sum of terms. Each built-in method is one
file here (its loss function and its term); a method of your own is one
subclass of `Term`.
"""

from keras_kd.terms.base import LogitTerm
from keras_kd.terms.base import Term
from keras_kd.terms.hard import HardLoss
from keras_kd.terms.kd import SoftTargets

__all__ = ["HardLoss", "LogitTerm", "SoftTargets", "Term"]
