"""Projection heads that map a student feature onto the teacher's shape."""

import keras


def _describe(shape):
    return "(None, " + ", ".join(str(d) for d in shape[1:]) + ")"


def _resize_layers(student_hw, teacher_hw):
    """Layers that bring a student map of size `student_hw` to `teacher_hw`."""
    (sh, sw), (th, tw) = student_hw, teacher_hw
    if (sh, sw) == (th, tw):
        return []
    if sh % th == 0 and sw % tw == 0:
        return [keras.layers.AveragePooling2D((sh // th, sw // tw))]
    return [keras.layers.Resizing(th, tw, interpolation="bilinear")]


def build_projection(student_shape, teacher_shape, batch_norm=True,
                     name=None):
    """Builds the head that maps student features to the teacher's shape.

    - Vectors `(batch, d_s)` -> `Dense(d_t)`.
    - Tokens `(batch, n, d_s)` -> `Dense(d_t)` on each token (`n` must match,
      or be `None`: sequences of any length).
    - Maps `(batch, h_s, w_s, c_s)` -> average pooling (when `h_s, w_s` are
      multiples of `h_t, w_t`) or bilinear resizing to `(h_t, w_t)`, then a
      1x1 `Conv2D(c_t)` and, if `batch_norm`, `BatchNormalization`.

    Args:
        student_shape: Tuple, the student feature shape with a batch axis.
        teacher_shape: Tuple, the teacher feature shape with a batch axis.
        batch_norm: Boolean, add BatchNormalization after a 1x1 conv.
            Defaults to `True`.
        name: Optional name of the head.

    Returns:
        A built `keras.Sequential` head.

    Raises:
        ValueError: if no head is defined for the two shapes.

    Example:

    >>> head = build_projection((None, 16, 16, 8), (None, 8, 8, 32))
    >>> head.output_shape
    (None, 8, 8, 32)
    """
    student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
    rank = len(student_shape)
    if rank != len(teacher_shape):
        raise ValueError(
            "No projection head maps features of different ranks. Match "
            "layers of the same kind (two vectors, two token sequences or two "
            f"feature maps). Received: teacher {_describe(teacher_shape)}, "
            f"student {_describe(student_shape)}"
        )
    # Token sequences may have any length: a Dense on each token needs only
    # the widths.
    static = slice(-1, None) if rank == 3 else slice(1, None)
    if None in student_shape[static] or None in teacher_shape[static]:
        raise ValueError(
            "A projection head needs static feature shapes. Received: "
            f"teacher {_describe(teacher_shape)}, student "
            f"{_describe(student_shape)}. Give the models fixed input shapes "
            "or pass your own layer as `projection=`."
        )
    if rank == 2:
        layers = [keras.layers.Dense(teacher_shape[-1])]
    elif rank == 3:
        if None not in (student_shape[1], teacher_shape[1]) and \
                student_shape[1] != teacher_shape[1]:
            raise ValueError(
                "Token features must have the same number of tokens. "
                f"Received: teacher {_describe(teacher_shape)}, student "
                f"{_describe(student_shape)}. Pass your own layer as "
                "`projection=`."
            )
        layers = [keras.layers.Dense(teacher_shape[-1])]
    elif rank == 4:
        layers = _resize_layers(student_shape[1:3], teacher_shape[1:3])
        layers.append(keras.layers.Conv2D(teacher_shape[-1], 1,
                                          use_bias=not batch_norm))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization())
    else:
        raise ValueError(
            "Automatic projection heads support features of rank 2, 3 or 4. "
            f"Received: teacher {_describe(teacher_shape)}, student "
            f"{_describe(student_shape)}. Pass your own layer as "
            "`projection=`."
        )
    head = keras.Sequential(layers, name=name)
    head.build((None,) + student_shape[1:])
    return head
