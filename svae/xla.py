"""XLA-compiled kernels, and a switch to trace them without XLA.

`L^T x` (`svae.linalg.factor_transpose_matvec`) and its gradient are chains
of K pad, slice and multiply passes over full-size images; XLA fuses each
chain into one loop (2.0 ms against 4.8 ms forward and backward at 64x64,
batch 64, benchmarks/RESULTS.md). Elsewhere XLA does not pay on CPU: it runs
each fusion on one thread and its small matrix products slowly, so only such
chains are kernels. Functions decorated with `kernel` are XLA-compiled unless
traced inside `portable()`, for graphs that must run where XLA is off, such as
TF Serving's model server (`svae.export`), or when the environment variable
`SVAE_XLA=0` is set, for machines whose XLA cannot compile (a GPU setup
without `ptxas`, say). Results agree to float rounding.
"""

import contextlib
import functools
import os

import tensorflow as tf

__all__ = ["kernel", "portable", "enabled", "ENV_VAR"]

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
