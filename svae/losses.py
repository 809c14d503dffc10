"""Keras 3 losses for `svae.layers.SparsePrecisionGaussianHead`'s output."""

import keras
import numpy as np
import tensorflow as tf

from svae import layers

__all__ = ["SparsePrecisionNLL"]


@keras.saving.register_keras_serializable(package="svae")
class SparsePrecisionNLL(keras.losses.Loss):
    """Negative log-likelihood of images under the head's sparse-precision Gaussian.

    `call(y_true, y_pred)` builds `svae.layers.to_distribution(y_pred,
    kernel_size, dilation)` (`kernel_size=None`: the neighbourhood of `L` read
    from `y_pred`'s channels) and returns `-log_prob(y_true)` per example, in
    nats; `keras.losses.Loss` then reduces it over the batch (by default its
    mean, `reduction="sum_over_batch_size"`).

    With `per_pixel=True` each example's value is divided by its number of
    pixels `H * W` (nats per pixel): the same optimum, a loss whose size does
    not grow with the image, so learning rates carry over between sizes.

    The likelihood runs in float32 or float64, never in 16 bits (its solves
    and log-determinant would be off by more than the differences between
    models): by default in float64 if the head's output or
    `keras.config.floatx()` is float64, else in float32 (under the mixed
    policies the head's output is float32).
    """

    def __init__(
        self,
        kernel_size=None,
        dilation=1,
        per_pixel=False,
        name="sparse_precision_nll",
        dtype=None,
        **kwargs,
    ):
        """Creates the loss.

        Args:
          kernel_size: the neighbourhood of `L` (the head's
            `structure.kernel_size`), an odd integer >= 3; None reads it
            from the head's output.
          dilation: the head's `dilation`, an integer >= 1.
          per_pixel: divide each example's loss by `H * W` (a bool).
          name: the loss's name.
          dtype: the dtype the likelihood is computed in, "float32" or
            "float64"; None (default): float64 if the head's output or
            `keras.config.floatx()` is, else float32.
          **kwargs: `keras.losses.Loss`'s (`reduction`).

        Raises:
          ValueError: for an argument outside its allowed values; the
            message names it, its value and what is allowed.
        """
        super().__init__(name=name, dtype=dtype, **kwargs)
        if dtype is not None and self.dtype not in layers.LIKELIHOOD_DTYPES:
            raise ValueError(
                f"dtype must be 'float32' or 'float64' (the likelihood's "
                f"solves and log-determinant need at least float32; under a "
                f"mixed policy the head's output is float32), got {dtype!r}."
            )
        self._dtype_given = dtype is not None
        if kernel_size is not None:
            layers.params_size(kernel_size)  # Validates it.
            kernel_size = int(kernel_size)
        layers.check_structure(dilation=dilation)
        if not isinstance(per_pixel, bool | np.bool_):
            raise ValueError(f"per_pixel must be True or False, got {per_pixel!r}.")
        self.kernel_size = kernel_size
        self.dilation = int(dilation)
        self.per_pixel = bool(per_pixel)

    def __call__(self, y_true, y_pred, sample_weight=None):
        """`keras.losses.Loss.__call__`, in the dtype the class docstring says."""
        if not self._dtype_given:
            wide = {
                keras.backend.standardize_dtype(getattr(y_pred, "dtype", "float32")),
                keras.config.floatx(),
            }
            self._dtype = "float64" if "float64" in wide else "float32"
        return super().__call__(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        """Returns `-log_prob(y_true)`, `[batch]`.

        Args:
          y_true: `[batch, H, W]` or `[batch, H, W, 1]` images.
          y_pred: `[batch, H, W, 2 + K]`, the head's output.

        Returns:
          `[batch]` negative log-likelihoods (per pixel with `per_pixel`).
        """
        dist = layers.to_distribution(y_pred, self.kernel_size, self.dilation)
        y_true = layers.as_images(y_true, dist.dtype)
        nll = -dist.log_prob(y_true)
        if self.per_pixel:
            height, width = dist.event_shape.as_list()
            nll /= tf.cast(height * width, nll.dtype)
        return nll

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            dilation=self.dilation,
            per_pixel=self.per_pixel,
            dtype=self.dtype if self._dtype_given else None,
        )
        return config
