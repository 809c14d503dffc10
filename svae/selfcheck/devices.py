"""What the machine offers, and where the solve's ops run.

`environment()` lists the versions, the devices TensorFlow sees and whether
XLA compiles on the default device. `placement(checks)` runs the
distribution's `log_prob` and `sample` in a `tf.function` with TensorFlow's
run metadata on, and reads the graphs TensorFlow partitioned and placed for
that call (`RunMetadata.function_graphs[].partition_graphs`): each node
there carries the device it ran on: the XLA kernels' launches (by default
the wavefront solve is one) and, with `SVAE_XLA=0`, the nodes of the
solve's lowered while loop. Placement
logging (`tf.debugging.set_log_device_placement`) says the same in C++ log
lines, harder to read back.

With a GPU visible, a node that handles floating-point tensors and ran on a
CPU is a failure: the solve then crosses between devices and runs at CPU
speed (a TF op without a GPU kernel, such as `banded_triangular_solve`,
does that silently). Integer and boolean bookkeeping (loop counters,
shapes) is kept on the host by TensorFlow by design and only counted.
"""

import collections
import os
import platform
import sys

import keras
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow.core.framework import types_pb2
from tensorflow.python.eager import context

from svae import xla
from svae.selfcheck.numerics import SAMPLE_SEED, distribution
from svae.selfcheck.report import Outcome, device_name

__all__ = ["Node", "environment", "misplaced", "placed_nodes", "placement"]

_FLOATING = frozenset(
    {types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16}
)

# The function's boundary and the copies between partitions: their device is
# that of the tensors passed in and out, not a choice of the solve's.
_TRANSFERS = frozenset({"_Arg", "_Retval", "_Send", "_Recv", "_HostSend", "_HostRecv"})

Node = collections.namedtuple("Node", "name op device floating")


def _gpu_description(device) -> str:
    """`GPU:0 (NVIDIA A100, compute capability 8.0)`, as far as known."""
    details = tf.config.experimental.get_device_details(device)
    name = details.get("device_name", "unknown GPU")
    capability = details.get("compute_capability")
    if capability:
        name += f", compute capability {capability[0]}.{capability[1]}"
    return f"{device.name.removeprefix('/physical_device:')} ({name})"


def _xla_status() -> str:
    """Whether a small function compiles with XLA on the default device."""
    try:
        value = tf.function(lambda x: 2.0 * x + 1.0, jit_compile=True)(tf.ones([2]))
        float(value[0])
    except Exception as e:  # Any failure to compile means no XLA here.
        first = (str(e).strip().splitlines() or [""])[0]
        return f"not available ({type(e).__name__}: {first[:200]})"
    where = device_name(value.device)
    kernels = "on" if xla.enabled() else f"off ({xla.ENV_VAR}=0)"
    return f"available (compiled on {where}); svae's XLA kernels {kernels}"


def environment() -> dict:
    """The versions, devices and XLA status, as `{label: text}`."""
    gpus = tf.config.list_physical_devices("GPU")
    cpus = tf.config.list_physical_devices("CPU")
    devices = [d.name.removeprefix("/physical_device:") for d in cpus]
    devices += [_gpu_description(gpu) for gpu in gpus]
    if not gpus:
        cuda = "a CUDA build" if tf.test.is_built_with_cuda() else "a CPU-only build"
        devices.append(f"no GPU visible ({cuda} of TensorFlow)")
    default = device_name(tf.constant(0.0).device)
    return {
        "python": f"{platform.python_version()} ({sys.platform})",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tensorflow_probability": tfp.__version__,
        "devices": ", ".join(devices),
        "default device": default,
        "xla": _xla_status(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"),
    }


def _floating(node) -> bool:
    """Whether a `NodeDef` handles floating-point tensors (by its type attrs)."""
    for value in node.attr.values():
        if value.type in _FLOATING or _FLOATING.intersection(value.list.type):
            return True
    return False


def placed_nodes(function, *args) -> list:
    """Runs `function` (a fresh `tf.function`) once; the nodes of its placed
    partition graphs, as `Node`s, from TensorFlow's run metadata."""
    context.enable_run_metadata()
    try:
        function(*args)
        metadata = context.export_run_metadata()
    finally:
        context.disable_run_metadata()
    return [
        Node(node.name, node.op, device_name(node.device), _floating(node))
        for graph in metadata.function_graphs
        for partition in graph.partition_graphs
        for node in partition.node
    ]


def misplaced(nodes, gpu_visible) -> list:
    """The floating-point ops that ran on a CPU while a GPU was visible
    (the function's arguments, results and copies aside)."""
    if not gpu_visible:
        return []
    return [
        n
        for n in nodes
        if n.floating and n.device.startswith("CPU") and n.op not in _TRANSFERS
    ]


def placement(checks) -> Outcome:
    """Where the ops of `log_prob` and `sample` ran; see the module docstring.

    Args:
      checks: the `svae.selfcheck.numerics.Checks` whose inputs to use.
    """

    def solve(params):
        dist = distribution(params, checks.config)
        return dist.log_prob(params.x), dist.sample(seed=SAMPLE_SEED)

    nodes = placed_nodes(tf.function(solve, autograph=False), checks.params)
    if not nodes:
        raise RuntimeError("TensorFlow's run metadata holds no placed graph.")
    gpu_visible = bool(tf.config.list_logical_devices("GPU"))
    wrong = misplaced(nodes, gpu_visible)
    counts = collections.Counter(n.device for n in nodes)
    where = ", ".join(f"{count} on {device}" for device, count in counts.items())
    detail = f"float ops on a CPU while a GPU is visible; {len(nodes)} ops: {where}"
    if not gpu_visible:
        detail += ", no GPU visible"
    if wrong:
        kinds = collections.Counter(n.op for n in wrong)
        detail += "; on the CPU: " + ", ".join(f"{op} x{c}" for op, c in kinds.items())
    devices = "+".join(sorted(counts))
    return Outcome(
        float(len(wrong)),
        0.0,
        devices,
        detail,
        data={"misplaced": [n._asdict() for n in wrong], "devices": dict(counts)},
    )
