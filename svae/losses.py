"""Keras 3 losses for `svae.layers.SparsePrecisionGaussianHead`'s output."""

import keras
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
    """

    def __init__(
        self,
        kernel_size=None,
        dilation=1,
        per_pixel=False,
        name="sparse_precision_nll",
        **kwargs,
    ):
        """Creates the loss.

        Args:
          kernel_size: the neighbourhood of `L` (the head's
            `structure.kernel_size`); None reads it from the head's output.
          dilation: the head's `dilation`.
          per_pixel: divide each example's loss by `H * W`.
          name: the loss's name.
          **kwargs: `keras.losses.Loss`'s (`reduction`, `dtype`).
        """
        super().__init__(name=name, **kwargs)
        if kernel_size is not None:
            layers.params_size(kernel_size)  # Validates it.
            kernel_size = int(kernel_size)
        self.kernel_size = kernel_size
        self.dilation = int(dilation)
        self.per_pixel = bool(per_pixel)

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
        )
        return config
