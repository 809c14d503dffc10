"""XLA-compiled kernels, and a switch to trace them without XLA.

`L^T x` (`svae.linalg.factor_transpose_matvec`) and its gradient are chains
of K pad, slice and multiply passes over full-size images; XLA fuses each
chain into one loop, forward and backward. So are `split` of channel-last
tensors and its gradient, which TF's SplitV and ConcatV2 copy element by
element, and the gradient of the L1 term (`svae.likelihoods.off_diag_l1`).
Elsewhere XLA does not pay on CPU: it runs each fusion on one thread and its
small matrix products slowly, so only such chains are kernels. Functions
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

__all__ = ["kernel", "portable", "enabled", "split", "ENV_VAR"]

# Set to 0 to trace every kernel as ordinary TF ops.
ENV_VAR = "SVAE_XLA"

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


def kernel(function):
    """Decorates a function of tensors as one XLA computation.

    Its gradient (autodiff, or a `tf.custom_gradient` inside) is compiled
    too. Inside `portable()`, `function` runs as it is.
    """
    compiled = tf.function(function, jit_compile=True, autograph=False)

    @functools.wraps(function)
    def call(*args, **kwargs):
        return (compiled if enabled() else function)(*args, **kwargs)

    return call


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
