"""XLA-compiled kernels, and a switch to trace them without XLA.

`L^T x` (`svae.linalg.factor_transpose_matvec`) and its gradient are chains
of K pad, slice and multiply passes over full-size images; XLA fuses each
chain into one loop, forward and backward. So are `split` of channel-last
tensors and its gradient, which TF's SplitV and ConcatV2 copy element by
element, and the gradient of the L1 term (`svae.likelihoods.off_diag_l1`).
Elsewhere XLA does not pay on CPU (its small matrix products are slow), so
only such chains are kernels. XLA's CPU compiler cuts a large fusion's loop
across the cores, but not the small ones of a solve's wavefront levels: a
kernel over a batch of independent images can instead be cut into parts
that run side by side (`kernel(batch_axes=...)`, used by the solves). Functions
decorated with `kernel` are XLA-compiled unless traced inside `portable()`,
for graphs that must run where XLA is off, such as TF Serving's model server
(`svae.export`), or when the environment variable `SVAE_XLA=0` is set, for
machines whose XLA cannot compile (a GPU setup without `ptxas`, say).
Results agree to float rounding.
"""

import contextlib
import functools
import os

import tensorflow as tf

__all__ = [
    "ENV_VAR",
    "PARTS_ENV_VAR",
    "cpu_parts",
    "enabled",
    "kernel",
    "portable",
    "split",
]

# Set to 0 to trace every kernel as ordinary TF ops.
ENV_VAR = "SVAE_XLA"
# The number of parts a batched kernel is cut into on CPU (`cpu_parts`).
PARTS_ENV_VAR = "SVAE_XLA_PARTS"
# Parts per CPU core: more than one keeps the cores busy while TensorFlow
# runs the ops between the launches (benchmarks/bench_distribution.py).
PARTS_PER_CORE = 4

_PORTABLE_DEPTH = [0]


@contextlib.contextmanager
def portable():
    """Traces `kernel` functions as ordinary TF ops inside the block."""
    _PORTABLE_DEPTH[0] += 1
    try:
        yield
    finally:
        _PORTABLE_DEPTH[0] -= 1


def enabled():
    """Whether `kernel` functions traced now are XLA-compiled."""
    return _PORTABLE_DEPTH[0] == 0 and os.environ.get(ENV_VAR, "1") != "0"


def kernel(function=None, *, batch_axes=None, output_axis=None):
    """Decorates a function of tensors as one XLA computation.

    Its gradient (autodiff, or a `tf.custom_gradient` inside) is compiled
    too. Inside `portable()`, `function` runs as it is.

    XLA splits a large fusion's loop across the CPU's cores, not a loop of
    small steps such as a solve's wavefront levels, which then run on one
    thread. A kernel whose images are
    independent along a batch axis can say so (`batch_axes`): on a machine
    without a GPU or TPU, a call is then cut along that axis into parts
    (`cpu_parts`), each its own XLA launch, which TensorFlow runs side by
    side on the cores, and the parts' outputs are joined again. The values
    are the same as one launch's.

    Args:
      function: a function of tensors (and static Python values).
      batch_axes: per positional argument, the axis along which its images
        lie (negative, counted from the end), or None for an argument that
        every part receives whole; the named axes must have the same static
        size. None: never cut.
      output_axis: that axis in the output (one tensor).
    """
    if function is None:
        return functools.partial(kernel, batch_axes=batch_axes, output_axis=output_axis)
    compiled = tf.function(function, jit_compile=True, autograph=False)
    # A kernel is traced once for each of its static arguments and shapes
    # (Y's head and the chroma's, each batch size): called eagerly, as in a
    # notebook, a few such traces would make TensorFlow warn about "excessive"
    # retracing. TensorFlow's own SavedModel loader sets this flag likewise.
    compiled._omit_frequent_tracing_warning = True

    @functools.wraps(function)
    def call(*args, **kwargs):
        if not enabled():
            return function(*args, **kwargs)
        if batch_axes is None:
            return compiled(*args, **kwargs)
        return _in_parts(compiled, args, kwargs, batch_axes, output_axis)

    return call


def cpu_parts(size):
    """Parts a batch of `size` independent images is cut into for XLA on CPU.

    `PARTS_PER_CORE` per CPU core this process may use, at most `size`; 1
    where a GPU or TPU is visible (the ops run there, where XLA's kernels
    are parallel). The environment variable `SVAE_XLA_PARTS` sets the number
    instead (1: one launch), for a container whose CPU quota is smaller than
    the cores it sees.
    """
    setting = os.environ.get(PARTS_ENV_VAR)
    if setting:
        return max(1, min(int(setting), size))
    if _accelerated():
        return 1
    return max(1, min(PARTS_PER_CORE * len(os.sched_getaffinity(0)), size))


@functools.cache
def _accelerated():
    """Whether a GPU or TPU is visible to TensorFlow (without starting it)."""
    return bool(
        tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU")
    )


def _in_parts(compiled, args, kwargs, batch_axes, output_axis):
    """`compiled(*args, **kwargs)` as `cpu_parts` launches along `batch_axes`."""
    named = [i for i, axis in enumerate(batch_axes) if axis is not None]
    # An argument without the axis (it broadcasts along it), or sizes that
    # differ or are unknown when traced: one launch.
    if any(-batch_axes[i] > len(args[i].shape) for i in named):
        return compiled(*args, **kwargs)
    sizes = {args[i].shape[batch_axes[i]] for i in named}
    size = sizes.pop() if len(sizes) == 1 else None
    parts = 1 if size is None else cpu_parts(size)
    if parts == 1:
        return compiled(*args, **kwargs)
    lengths = [size // parts + (k < size % parts) for k in range(parts)]
    pieces = {i: tf.split(args[i], lengths, axis=batch_axes[i]) for i in named}
    outputs = [
        compiled(
            *[pieces[i][k] if i in pieces else arg for i, arg in enumerate(args)],
            **kwargs,
        )
        for k in range(parts)
    ]
    return tf.concat(outputs, output_axis)


@kernel
def _split(value, sizes, axis):
    return tf.split(value, sizes, axis)


@kernel
def _concat(parts, axis):
    # Concatenating along the last axis interleaves the parts element by
    # element; XLA's loops do it faster as a concatenation of the parts moved
    # to the front, moved back.
    rank = len(parts[0].shape)
    axis %= rank
    if axis == 0:
        return tf.concat(parts, 0)
    front = [axis] + [i for i in range(rank) if i != axis]
    back = [front.index(i) for i in range(rank)]
    moved = tf.concat([tf.transpose(part, front) for part in parts], 0)
    return tf.transpose(moved, back)


def split(value, sizes, axis=-1):
    """`tf.split(value, sizes, axis)`; an XLA kernel, and so is its gradient.

    On the CPU, TF's SplitV of a `[batch, H, W, channels]` tensor along the
    channels, and the ConcatV2 that is its gradient, copy element by element;
    XLA's loops copy whole parts. Inside `portable()` it is `tf.split`.

    Args:
      value: a tensor.
      sizes: Python ints, the sizes of the parts along `axis`.
      axis: a Python int.

    Returns:
      A list of `len(sizes)` tensors.
    """
    sizes = tuple(int(size) for size in sizes)
    if len(sizes) == 1:
        return [value]
    if not enabled():
        return tf.split(value, sizes, axis)

    @tf.custom_gradient
    def run(value):
        parts = _split(value, sizes, axis)

        def grad(*upstream):
            upstream = [
                tf.zeros_like(part) if g is None else g
                for g, part in zip(upstream, parts, strict=True)
            ]
            return _concat(upstream, axis)

        return parts, grad

    return list(run(value))
