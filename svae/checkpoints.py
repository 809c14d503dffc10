"""Which variables a model has, and which a checkpoint holds for it.

`svae.runs.restore` compares the two before reading a checkpoint, so that a
variable the checkpoint holds and the model lacks (a `config.json` edited to
drop a part of the likelihood) is an error instead of being ignored.
"""

import collections

import keras
import tensorflow as tf
from google.protobuf import message
from tensorflow.core.protobuf import trackable_object_graph_pb2

__all__ = ["model_variables", "saved_model_variables"]

_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


def _variable_paths(root, children, is_variable, key=id) -> set[str]:
    """Paths (`encoder/conv0/bias`) from `root` to each variable, breadth first."""
    paths = {key(root): ""}
    queue = collections.deque([root])
    found = set()
    while queue:
        node = queue.popleft()
        if is_variable(node):
            found.add(paths[key(node)])
        for name, child in children(node):
            if key(child) not in paths:
                paths[key(child)] = f"{paths[key(node)]}/{name}".lstrip("/")
                queue.append(child)
    return found


def model_variables(model) -> set[str]:
    """The paths of a model's variables, as a checkpoint names their objects."""
    return _variable_paths(
        model,
        lambda node: tf.train.TrackableView.children(node).items(),
        lambda node: isinstance(node, keras.Variable | tf.Variable),
    )


def saved_model_variables(prefix) -> set[str] | None:
    """The paths of the variables a checkpoint holds under `model`, or None.

    Read from the checkpoint's object graph (its variable names do not tell:
    a variable is named by its shortest path, which may run through the
    optimizer). None: the checkpoint has no object graph to compare.
    """
    try:
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(
            tf.train.load_checkpoint(str(prefix)).get_tensor(_OBJECT_GRAPH)
        )
    except (ValueError, tf.errors.OpError, message.DecodeError):
        return None
    nodes = graph.nodes
    model = [c.node_id for c in nodes[0].children if c.local_name == "model"]
    if not model:
        return set()
    return _variable_paths(
        model[0],
        lambda n: [(c.local_name, c.node_id) for c in nodes[n].children],
        lambda n: any(a.name == "VARIABLE_VALUE" for a in nodes[n].attributes),
        key=int,
    )
