"""XLA-compiled kernels, and a switch to trace them without XLA.

svae's full-resolution work after the decoder's convolutions (the heads, the
structured log-likelihood and its custom gradient, the loss terms) is a chain
of cheap elementwise passes over `[batch, H, W, K]` tensors; XLA fuses each
chain into one loop (measured in benchmarks/RESULTS.md, bench_train).
Functions decorated with `kernel` are XLA-compiled, unless traced inside
`portable()`: graphs that must run where no XLA compiler is linked in, such as
TF Serving's model server (XLA is off there by default), use it
(`svae.export`). Results agree to float rounding.
"""

import contextlib
import functools

import tensorflow as tf

__all__ = ["kernel", "portable", "enabled"]

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
    return _PORTABLE_DEPTH[0] == 0


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
