"""Students made from the teacher: depth and width pruning with inherited
weights (`shrink`), for a student that starts from what the teacher knows.
"""

from keras_kd.students.shrink import shrink

__all__ = ["shrink"]
