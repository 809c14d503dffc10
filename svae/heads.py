"""The heads of the paper's decoders: 1x1 convolutions on the trunk's features.

`conv` makes a 1x1 head and `pointwise` runs several heads on the same
features as one convolution. `PrecisionHead` predicts the precision factor
`L` of Y (sections 4 and 4.3), through the likelihood's `factor` map
(`svae.factors`); `ContrastScale` offsets Y's scales per image by the
contrast of its predicted mean (the likelihood's `contrast_scale`). The
paper's VAEs (`svae.models`) and the Keras head for any image model
(`svae.layers.SparsePrecisionGaussianHead`) share them.
"""

import keras
import tensorflow as tf

from svae import xla
from svae.distributions import Structure
from svae.factors import (
    bounded_off_diag,
    compose_full_product,
    full_product_factors,
    product_off_diag,
    raw_size,
    structure_kernel,
)
from svae.linalg import neighbour_offsets
from svae.recipes import DEFAULT, FACTORS

__all__ = [
    "ContrastScale",
    "PrecisionHead",
    "conv",
    "pointwise",
]


def conv(channels, name, initializer="glorot_uniform"):
    """Returns a 1x1 convolution head."""
    return keras.layers.Conv2D(channels, 1, kernel_initializer=initializer, name=name)


def pointwise(features, heads, splits=None, shift=None):
    """Applies 1x1 convolution heads to the same features as one convolution.

    One convolution over the features for all heads and one split of its
    output, instead of a convolution per head and a split of the precision
    head's output: one pass over the features forward and backward. Each
    head keeps its own variables.

    Args:
      features: `[batch, height, width, C]`.
      heads: 1x1 `keras.layers.Conv2D` layers (built here if needed).
      splits: channel counts to split the heads' concatenated outputs into;
        default: one part per head.
      shift: None, or one scalar per output channel (Python numbers or scalar
        tensors) added with the bias, where an output channel is offset
        anyway: free, where adding it to the output is a pass over it and its
        gradient another.

    Returns:
      A list of `[batch, height, width, n]` tensors, one per split.
    """
    for head in heads:
        if not head.built:
            head.build(features.shape)
    kernel = tf.concat([head.kernel for head in heads], axis=-1)
    bias = tf.concat([head.bias for head in heads], axis=0)
    if shift is not None:
        bias += tf.stack([tf.cast(value, bias.dtype) for value in shift])
    outputs = tf.nn.bias_add(tf.nn.conv2d(features, kernel, 1, "VALID"), bias)
    splits = splits or [head.filters for head in heads]
    return xla.split(outputs, splits)


class PrecisionHead(keras.layers.Layer):
    """The `W(z)` head: the precision factor `L` of Y (sections 4 and 4.3).

    Without a basis, a 1x1 convolution predicts `[log_diag, raw]` directly.
    With `num_basis > 0` it predicts weights `W(z)` and the shared basis `B`
    (`[K + 1, num_basis]`) maps them to the `K + 1` entries of each column of
    `L`: `L = s(B W(z))`. Entry 0 is the log of the diagonal (so it stays
    positive), entries 1..K the off-diagonals' parameters, which `factor`
    maps to the off-diagonals (`svae.factors`): "product" and "bounded" keep
    `L^T` diagonally dominant, so a sample `L^{-T} eps` cannot grow along the
    solve whatever `z`; "free" is the paper's, unconstrained. The defaults
    are the default recipe's (`svae.recipes.DEFAULT`).
    """

    def __init__(
        self,
        kernel_size,
        num_basis,
        factor=DEFAULT.factor,
        dominance=DEFAULT.dominance,
        dilation=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        neighbour_offsets(kernel_size, dilation)  # Validates both.
        if factor not in FACTORS:
            raise ValueError(f"factor must be one of {FACTORS}, got {factor!r}.")
        if not 0 < dominance < 1:
            raise ValueError(f"dominance must be in (0, 1), got {dominance!r}.")
        if (
            isinstance(num_basis, bool)
            or not isinstance(num_basis, int)
            or num_basis < 0
        ):
            raise ValueError(f"num_basis must be an integer >= 0, got {num_basis!r}.")
        self.kernel_size = int(kernel_size)
        self.dilation = int(dilation)
        self.num_basis = num_basis
        self.factor = factor
        self.dominance = float(dominance)
        # Unconstrained parameters per pixel that the factor maps to L's.
        self.num_raw = raw_size(factor, kernel_size)
        # Zeros: the branch starts as the spherical likelihood it is offset by.
        self.weights_conv = conv(num_basis or self.num_raw + 1, "weights", "zeros")
        if num_basis:
            self.basis = self.add_weight(
                shape=(self.num_raw + 1, num_basis),
                initializer=keras.initializers.RandomNormal(stddev=0.3),
                name="basis",
            )

    def build(self, input_shape):
        """Builds `weights_conv` on features of `input_shape`, once.

        The VAE's `pointwise` may have built it with the other heads already.
        """
        if not self.weights_conv.built:
            self.weights_conv.build(input_shape)

    def arguments(self):
        """The constructor's arguments (but `name`, ...), as `get_config` has them."""
        return {
            "kernel_size": self.kernel_size,
            "num_basis": self.num_basis,
            "factor": self.factor,
            "dominance": self.dominance,
            "dilation": self.dilation,
        }

    @property
    def structure(self):
        """The `svae.distributions.Structure` of `L` (`structure_kernel`)."""
        return Structure(structure_kernel(self.factor, self.kernel_size), self.dilation)

    def get_config(self):
        return {**super().get_config(), **self.arguments()}

    @property
    def splits(self):
        """Channel counts of `weights_conv`'s output parts, see `call`."""
        return [self.num_basis] if self.num_basis else [1, self.num_raw]

    def shift(self, log_scale):
        """Offsets of `weights_conv`'s output channels, for `pointwise`.

        `-log_scale` on `log_diag`: the convolution starts at zero, so the
        branch starts as the spherical likelihood of scale `exp(log_scale)`
        (log L_pp = -log sigma) and the warm-up from the pretrained one. With
        a basis `log_diag` is a product, offset in `call` instead.
        """
        if self.num_basis:
            return [0.0] * self.num_basis
        return [-log_scale] + [0.0] * self.num_raw

    def call(
        self, features, parts=None, log_scale=0.0, offset=None, with_factors=False
    ):
        """Returns `(log_diag, off_diag)`, and the factors of `L` if asked.

        Args:
          features: `[batch, height, width, C]` trunk features.
          parts: `pointwise` output for `weights_conv` with `self.splits`
            and `self.shift(log_scale)` when the caller has computed it (with
            other heads), else None.
          log_scale: log of the spherical scale `L` starts from.
          offset: None, or a per-image log scale `[batch]` taken off
            `log_diag` before the factor is formed (with the bounded and
            product factors, `L` times `exp(-offset)`).
          with_factors: also return the factors `(A, B)` of "full_product"'s
            `L^T = D (I + A)(I + B)` (None for the other factors), which the
            likelihood whitens with (`svae.distributions`).

        Returns:
          `log_diag` `[batch, height, width]`, `off_diag`
          `[batch, height, width, K]`, `K` the off-diagonals of
          `self.structure`; with `with_factors`, a third element.
        """
        if parts is None:
            parts = pointwise(
                features, [self.weights_conv], self.splits, self.shift(log_scale)
            )
        if self.num_basis:
            entries = tf.einsum("...b,kb->...k", parts[0], self.basis)
            # A split, not slices: its gradient is one concat, a slice's a
            # scatter.
            parts = xla.split(entries, [1, self.num_raw])
        log_diag, off_diag = parts
        log_diag = tf.squeeze(log_diag, -1)
        if self.num_basis:
            log_diag -= log_scale
        if offset is not None:
            log_diag -= offset[:, None, None]
        if self.factor == "bounded":
            off_diag = bounded_off_diag(log_diag, off_diag, self.dominance)
        elif self.factor == "product":
            off_diag = product_off_diag(
                log_diag, off_diag, self.dominance, self.kernel_size, self.dilation
            )
        factors = None
        if self.factor == "full_product":
            factors = full_product_factors(off_diag, self.dominance)
            off_diag = compose_full_product(
                log_diag, *factors, self.kernel_size, self.dilation
            )
        if with_factors:
            return log_diag, off_diag, factors
        return log_diag, off_diag


# Gradient magnitudes below this (a quarter of one 8-bit level) count as flat.
CONTRAST_FLOOR = 1e-3
# A typical log gradient magnitude of a decoded mean: the offset is zero there.
CONTRAST_CENTRE = -3.5
# The slope's bound, and the multiplier of its variable: Adam moves a variable
# by about the learning rate a step, too slow for a slope near 1.
CONTRAST_SLOPE_BOUND = 3.0
CONTRAST_GAIN = 10.0


class ContrastScale(keras.layers.Layer):
    """A per-image offset of Y's log scales from the mean image's contrast.

    `s = a (log(g + floor) - centre)`, `g` the mean absolute difference of
    horizontally and vertically adjacent pixels of the predicted mean of Y
    (its gradient held: the scale does not shape the mean), `a` one learned
    slope (`b tanh(gain v / b)`, `v` starting at zero, so the likelihood does
    not change at the start). `VAE` adds `s` to Y's log scales (`L` times
    `exp(-s)`). A residual is larger where the mean has more edges, while
    the heads predict nearly the same scale for every image; one slope
    cannot drift against the calibrated global scale (its optimum is a
    regression slope) nor extrapolate to prior latents beyond what their
    means show.
    """

    def build(self, input_shape):
        self.slope_variable = self.add_weight(
            shape=(), initializer="zeros", name="slope"
        )

    @property
    def slope(self):
        bound = CONTRAST_SLOPE_BOUND
        return bound * tf.tanh(CONTRAST_GAIN * self.slope_variable / bound)

    def call(self, y_mean):
        y = tf.stop_gradient(y_mean)
        gradient = tf.reduce_mean(
            tf.abs(y[:, 1:, :] - y[:, :-1, :]), axis=[1, 2]
        ) + tf.reduce_mean(tf.abs(y[:, :, 1:] - y[:, :, :-1]), axis=[1, 2])
        floor = tf.cast(CONTRAST_FLOOR, y.dtype)
        contrast = tf.math.log(gradient + floor) - CONTRAST_CENTRE
        return tf.cast(self.slope, y.dtype) * contrast
