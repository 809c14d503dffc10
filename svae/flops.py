"""Floating-point operations per image, counted by TensorFlow's profiler."""

import tensorflow as tf
from tensorflow.python.framework import convert_to_constants
from tensorflow.python.util import deprecation

from svae import likelihoods, models, xla

__all__ = ["count_flops", "model_flops"]


def count_flops(function, *specs):
    """Returns the FLOPs the profiler counts in one call of a function.

    Args:
      function: a Python callable of tensors.
      *specs: `tf.TensorSpec`s of its arguments.

    Returns:
      The profiler's `float_ops` total (an int) of the frozen graph, traced
      without XLA kernels (`svae.xla.portable`), whose ops it cannot see.
    """
    with xla.portable():
        concrete = tf.function(function).get_concrete_function(*specs)
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    # The v1 profiler calls a deprecated TF function and would print its
    # deprecation warning into evaluate.py's output.
    with deprecation.silence():
        profile = tf.compat.v1.profiler.profile(
            graph=frozen.graph,
            run_meta=tf.compat.v1.RunMetadata(),
            cmd="op",
            options=options,
        )
    return int(profile.total_float_ops)


def model_flops(config, with_likelihood=False):
    """Returns the FLOPs per image of the model a config describes.

    Counts encoder and decoder at `z = E[q(z|x)]` (and with
    `with_likelihood`, `log p(x|z)` too); the profiler counts convolutions,
    matrix products and elementwise ops, not the triangular solve of sampling.

    Args:
      config: an `svae.config.Config`.
      with_likelihood: also count the log-likelihood.

    Returns:
      FLOPs per image (an int).
    """
    model = models.build_model(config)
    size, low = config.image_size, config.image_size // config.chroma_factor
    specs = {"y": tf.TensorSpec([1, size, size], tf.float32)}
    if config.color == "ycbcr":
        specs["cbcr"] = tf.TensorSpec([1, low, low, 2], tf.float32)

    def forward(batch):
        """The network, and optionally the likelihood."""
        outputs = model(batch)
        if not with_likelihood:
            return outputs
        return likelihoods.log_likelihood(outputs, batch, config.structure)

    return count_flops(forward, specs)
