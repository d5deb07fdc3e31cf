"""Every private Keras API keras_kd relies on, in one place.

Keras offers no public way to do these few things. Each accessor names the
attribute it reads, and `tests/utils/keras_compat_test.py` fails as soon as a
Keras release renames or changes one of them, instead of a distant failure
in training.
"""


def flatten_layers(model):
    """Every layer inside `model`, nested ones included (`_flatten_layers`)."""
    return list(model._flatten_layers(include_self=False))


def producing_operation(tensor):
    """The layer that produced a symbolic tensor (`_keras_history`)."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def loss_tracker(model):
    """The `Mean` metric behind the `loss` log of `fit` (`_loss_tracker`)."""
    return model._loss_tracker


def compile_metrics(model):
    """Keras' `CompileMetrics` of `compile(metrics=...)` (`_compile_metrics`),
    or None before `compile` or without metrics."""
    return getattr(model, "_compile_metrics", None)


def flat_metrics(container):
    """`(unweighted, weighted)` lists of a built `CompileMetrics`.

    Keras keeps `metrics` and `weighted_metrics` in `_flat_metrics` and
    `_flat_weighted_metrics`; keras_kd updates each with its own weights.
    """
    return container._flat_metrics, container._flat_weighted_metrics


def in_multi_worker_mode(strategy):
    """Whether a `tf.distribute` strategy spans several workers."""
    return strategy.extended._in_multi_worker_mode()


def distribute_strategy(model):
    """The strategy a model was created under, or None (TensorFlow)."""
    return getattr(model, "_distribute_strategy", None)


# `TensorFlowSteps._maybe_symbolic_build` overrides the Keras trainer method
# of that name (keras-team/keras#20585); the test checks it still exists and
# still takes `iterator` and `data_batch`.
OVERRIDDEN_TRAINER_METHODS = ("_maybe_symbolic_build",)


def keras_mask(tensor):
    """The Keras mask attached to a tensor (`Embedding(mask_zero=True)`
    and the layers that propagate it), or None."""
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(tensor)


def sequential_graph(model):
    """The Functional graph a built Sequential model keeps in `_functional`,
    or None while it is not built."""
    return getattr(model, "_functional", None)


def nodes_by_depth(model):
    """`{depth: [Node, ...]}` of a Functional model's graph
    (`_nodes_by_depth`; depth 0 holds the output nodes), or None for a model
    without a layer graph (a subclassed model)."""
    return getattr(model, "_nodes_by_depth", None)


def input_structure(graph):
    """The nested structure of a Functional graph's input tensors, as the
    model was built with (`_inputs_struct`: a tensor, list or dict)."""
    return graph._inputs_struct


def output_structure(graph):
    """The nested structure of a Functional graph's outputs
    (`_outputs_struct`)."""
    return graph._outputs_struct


def replay_arguments(node, tensors):
    """`(args, kwargs)` of a graph node's call, its symbolic input tensors
    replaced by `tensors[id(tensor)]` (`Node.arguments.fill_in`, how
    Functional itself replays its graph)."""
    return node.arguments.fill_in(tensors)


def user_metrics(container):
    """`(metrics, weighted_metrics)` as passed to `compile`, nested as the
    user wrote them (`CompileMetrics._user_metrics` and
    `_user_weighted_metrics`), each None where not given."""
    return (getattr(container, "_user_metrics", None),
            getattr(container, "_user_weighted_metrics", None))


def producing_node(tensor):
    """The graph node whose call produced a symbolic tensor (`_keras_history`
    and the layer's `_inbound_nodes`), or None for a tensor outside a
    graph."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    return history.operation._inbound_nodes[history.node_index]
