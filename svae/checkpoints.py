"""A run's checkpoint files, and the variables a checkpoint holds.

- `checkpoint_steps`, `read_checkpoint`: the checkpoints in a folder, found
  from their files, and whether one can be read (`svae.runs.good_checkpoint`
  picks the newest that can); `repair_index` rewrites the
  `tf.train.CheckpointManager` index from the files; `remove_partial`
  removes what a failed save left.
- `model_variables`, `saved_model_variables`: which variables a model has,
  and which a checkpoint holds for it. `svae.runs.restore` compares the two
  before reading a checkpoint, so that a variable the checkpoint holds and
  the model lacks (a `config.json` edited to drop a part of the likelihood)
  is an error instead of being ignored.
"""

import collections
import pathlib
import re
import shutil

import keras
import tensorflow as tf
from google.protobuf import message
from tensorflow.core.protobuf import trackable_object_graph_pb2

from svae import files

__all__ = [
    "checkpoint_steps",
    "model_variables",
    "read_checkpoint",
    "remove_partial",
    "repair_index",
    "saved_model_variables",
]

_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
_CKPT = re.compile(r"^ckpt-(\d+)\.index$")


def checkpoint_steps(directory) -> list[int]:
    """Returns the steps of `directory`'s `ckpt-<step>.index` files, newest first."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    steps = [int(m.group(1)) for p in directory.iterdir() if (m := _CKPT.match(p.name))]
    return sorted(steps, reverse=True)


def read_checkpoint(prefix) -> str | None:
    """Reads every tensor of a checkpoint; returns why it is unreadable, or None."""
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as e:  # noqa: BLE001 - any failure makes it unreadable.
        text = str(e).strip().splitlines()
        return f"{type(e).__name__}: {text[0] if text else 'unreadable'}"
    return None


def repair_index(directory) -> None:
    """Rewrites `directory/checkpoint` from the readable checkpoint files.

    `tf.train.CheckpointManager` trusts that index: a stale or garbage one
    makes it forget the checkpoints on disk. Only checkpoints that can be read
    are listed.
    """
    directory = pathlib.Path(directory)
    good = [
        f"ckpt-{s}"
        for s in sorted(checkpoint_steps(directory))
        if read_checkpoint(directory / f"ckpt-{s}") is None
    ]
    if not good:
        return
    # The text format of tf.train.CheckpointState, with relative paths as
    # CheckpointManager writes them. With their files' times and an earlier
    # last_preserved_timestamp, the manager counts them against max_to_keep
    # (without times it would keep them all forever).
    times = [(directory / f"{name}.index").stat().st_mtime for name in good]
    lines = [f'model_checkpoint_path: "{good[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name in good]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in times]
    lines += [f"last_preserved_timestamp: {min(times) - 1.0!r}"]
    text = "\n".join(lines) + "\n"
    index = directory / "checkpoint"
    try:
        if index.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    files.write_atomically(index, text)


def remove_partial(directory, step) -> None:
    """Removes the files of checkpoint `step` that a failed save left.

    A save writes `ckpt-<step>_temp/` and then merges it into
    `ckpt-<step>.index` and `.data-*`; the manager's index lists the
    checkpoint only after that, so a failed save leaves files no index
    names, which `checkpoint_steps` would find.
    """
    directory = pathlib.Path(directory)
    shutil.rmtree(directory / f"ckpt-{step}_temp", ignore_errors=True)
    for path in directory.glob(f"ckpt-{step}.*"):
        path.unlink(missing_ok=True)


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
