"""FeatureMatch and RelationMatch: loss terms on hidden layers."""

import keras
from keras import ops

from keras_kd import losses as kd_losses
from keras_kd.losses._ops import mean_over_inner_axes as _mean_over_inner_axes
from keras_kd.projection import build_projection
from keras_kd.terms.base import Term
from keras_kd.terms.base import _layer_name

def _loss_name(loss):
    return loss if isinstance(loss, str) else type(loss).__name__


def _describe(shape):
    return "(None, " + ", ".join(str(d) for d in shape[1:]) + ")"


class _Match(Term):
    """Shared part of FeatureMatch and RelationMatch: a term that compares
    two hidden layers with a `keras_kd.losses` loss."""

    def __init__(self, teacher_layer, student_layer, loss, weight, name,
                 teacher=None, **kwargs):
        super().__init__(weight=weight, teacher_layer=teacher_layer,
                         student_layer=student_layer, teacher=teacher,
                         name=name, **kwargs)
        self.loss_id = loss if isinstance(loss, str) else None
        self.loss_fn = kd_losses.get(loss)

    @property
    def relational(self):
        """True if the loss compares samples of the batch with each other.

        Read from the loss's own declaration (`relational = True` on the
        relation losses), never from its class name.
        """
        return bool(getattr(self.loss_fn, "relational", False))

    @property
    def _shape_free(self):
        return bool(getattr(self.loss_fn, "shape_free", False))

    def per_sample(self, teacher_features, student_features):
        axes = self.position_axes
        if axes > 1 and not self.relational and not self._shape_free and \
                len(teacher_features.shape) > axes:
            # Per token: each position's features are one sample of the
            # loss, so padded tokens can be masked out by the Distiller.
            positions = ops.shape(teacher_features)[:axes]
            values = self._per_row(
                ops.reshape(teacher_features,
                            (-1,) + tuple(teacher_features.shape[axes:])),
                ops.reshape(student_features,
                            (-1,) + tuple(student_features.shape[axes:])),
            )
            return ops.reshape(values, positions)
        return self._per_row(teacher_features, student_features)

    def _per_row(self, teacher_features, student_features):
        values = self.loss_fn.call(
            ops.cast(teacher_features, "float32"),
            ops.cast(student_features, "float32"),
        )
        return _mean_over_inner_axes(ops.cast(values, "float32"))

    def _config(self):
        loss = self.loss_id or keras.saving.serialize_keras_object(
            self.loss_fn
        )
        config = super().get_config()
        config["loss"] = loss
        return config

    @classmethod
    def from_config(cls, config):
        config = config.copy()
        for key in ("loss", "projection"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(
                    config[key]
                )
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_kd")
class FeatureMatch(_Match):
    """Makes a student hidden layer resemble a teacher hidden layer.

    The student's feature goes through a projection head onto the teacher's
    shape, then a feature loss compares the two. The head is trained with the
    student but is not part of `distiller.student`, so the saved and exported
    student keeps its own architecture. Both features come from the single
    forward pass of each model that also gives the logits.

    Args:
        teacher_layer: String name (or the layer object) of a teacher layer.
        student_layer: String name (or the layer object) of a student layer.
        loss: String id or `keras.losses.Loss` comparing the two features:
            `"mse"`, `"l1"`, `"smooth_l1"`, `"cosine"` or `"attention"`
            (attention transfer, which needs no head). Defaults to `"mse"`.
        weight: Non-negative float, the weight of this term in the total loss
            (added on top of the response loss). Defaults to `1.0`.
        projection: `"auto"` builds a head from the two shapes when they
            differ (see `keras_kd.projection.build_projection`); `None` means
            identity (the shapes must then match); a layer is used as given.
            Defaults to `"auto"`.
        batch_norm: Boolean, add BatchNormalization after a 1x1 conv head.
            Defaults to `True`.
        name: Name of the term, also its key in the `fit` history. Defaults to
            `"feature_loss/<teacher_layer>"`.

    Call arguments:
        teacher_features: Tensor from the teacher layer.
        student_features: Tensor from the student layer.

    Returns:
        Float32 tensor of shape `(batch_size,)`: the loss of each sample.

    Example:

    ```python
    match = keras_kd.FeatureMatch("teacher_block3", "student_block2",
                                  loss="mse", weight=1.0)
    distiller = keras_kd.Distiller(teacher, student, features=[match])
    ```

    Reference:
    - [Romero et al., 2015 (FitNets)](https://arxiv.org/abs/1412.6550)
    """

    def __init__(
        self,
        teacher_layer,
        student_layer,
        loss="mse",
        weight=1.0,
        projection="auto",
        batch_norm=True,
        name=None,
        **kwargs,
    ):
        name = name or f"feature_loss/{_layer_name(teacher_layer)}"
        super().__init__(teacher_layer, student_layer, loss, weight,
                         name=name, **kwargs)
        if not (
            projection is None
            or projection == "auto"
            or isinstance(projection, keras.layers.Layer)
        ):
            raise ValueError(
                "Argument `projection` must be 'auto', None or a Keras layer. "
                f"Received: projection={projection!r}"
            )
        self.projection = projection
        self.batch_norm = bool(batch_norm)
        self.head = projection if isinstance(projection, keras.layers.Layer) \
            else None

    def build_for(self, teacher_shape, student_shape):
        """Creates the projection head for the two feature shapes."""
        shape_free = self._shape_free
        same = tuple(teacher_shape[1:]) == tuple(student_shape[1:])
        if self.projection == "auto" and not same and not shape_free:
            self.head = build_projection(
                student_shape, teacher_shape, self.batch_norm,
                name=f"{self.name}_head",
            )
        elif self.projection is None and not same and not shape_free:
            raise ValueError(
                f"Teacher layer {self.teacher_layer!r} and student layer "
                f"{self.student_layer!r} differ in shape and "
                f"`projection=None`. Received: teacher "
                f"{_describe(teacher_shape)}, student "
                f"{_describe(student_shape)}. Pass `projection='auto'` or a "
                "layer."
            )
        elif isinstance(self.head, keras.layers.Layer) and not self.head.built:
            self.head.build(tuple(student_shape))
        if self.head is not None:
            out = self.head.compute_output_shape(tuple(student_shape))
            if tuple(out[1:]) != tuple(teacher_shape[1:]) and not shape_free:
                raise ValueError(
                    f"The projection of student layer {self.student_layer!r} "
                    f"outputs {_describe(out)}, but teacher layer "
                    f"{self.teacher_layer!r} is {_describe(teacher_shape)}. "
                    "Make the projection output the teacher's shape."
                )
        self.built = True

    def call(self, teacher_features, student_features, labels=None):
        if self.head is not None:
            student_features = self.head(student_features)
        return self.per_sample(teacher_features, student_features)

    def get_config(self):
        config = self._config()
        projection = self.projection
        if isinstance(projection, keras.layers.Layer):
            projection = keras.saving.serialize_keras_object(projection)
        config.update({"projection": projection,
                       "batch_norm": self.batch_norm})
        return config


@keras.saving.register_keras_serializable(package="keras_kd")
class RelationMatch(_Match):
    """Matches how samples relate to each other inside a batch.

    Relation losses compare the structure of a batch (pairwise distances,
    angles, similarities), so teacher and student features may have any
    widths and need no projection head.

    Args:
        loss: String id or loss object: `"rkd_distance"`, `"rkd_angle"`,
            `"similarity_preserving"` (or `"sp"`) or `"pkt"`.
        teacher_layer: String name or layer of the teacher; `None` uses the
            logits. Defaults to `None`.
        student_layer: String name or layer of the student; `None` uses the
            logits. Defaults to `None`.
        weight: Non-negative float. Defaults to the published weight of the
            loss (`keras_kd.losses.relation.DEFAULT_WEIGHTS`).
        name: Name of the term and its history key. Defaults to the loss id.

    Call arguments:
        teacher_features: Tensor from the teacher layer.
        student_features: Tensor from the student layer.

    Returns:
        Float32 tensor `(batch_size,)` whose mean is the batch loss.

    Example:

    ```python
    distiller = keras_kd.Distiller(
        teacher, student,
        features=[keras_kd.RelationMatch("rkd_distance", "t_pool", "s_pool")])
    ```
    """

    def __init__(self, loss, teacher_layer=None, student_layer=None,
                 weight=None, name=None, **kwargs):
        if weight is None:
            weight = _default_weight(loss)
        if name is None:
            name = loss if isinstance(loss, str) else type(loss).__name__
            name = name.lower()
        super().__init__(teacher_layer, student_layer, loss, weight,
                         name=name, **kwargs)

    def build_for(self, teacher_shape, student_shape):
        if teacher_shape[0] == 1 or student_shape[0] == 1:
            raise ValueError(
                f"The relation loss {self.name!r} compares samples inside a "
                "batch and needs at least 2 samples per batch. Received: "
                "batch_size=1"
            )
        self.built = True

    def call(self, teacher_features, student_features, labels=None):
        batch = teacher_features.shape[0]
        if batch == 1:
            # A last batch of one sample (e.g. 449 samples in batches of 64)
            # has no pairs to compare: it adds nothing. `Distiller.fit`
            # refuses `batch_size=1` itself.
            return ops.zeros((1,), "float32")
        return self.per_sample(teacher_features, student_features)

    def get_config(self):
        return self._config()


def _default_weight(loss):
    try:
        from keras_kd.losses.relation import DEFAULT_WEIGHTS
    except ImportError:  # pragma: no cover - relation losses not installed
        DEFAULT_WEIGHTS = {}
    key = loss if isinstance(loss, str) else getattr(loss, "name", None)
    aliases = {"sp": "similarity_preserving"}
    key = aliases.get(key, key)
    return float(DEFAULT_WEIGHTS.get(key, 1.0))
