"""Students made from the teacher: depth and width pruning with inherited
weights (`shrink`), for a student that starts from what the teacher knows.
"""

__all__ = []
