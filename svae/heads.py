"""The heads of the paper's decoders: 1x1 convolutions on the trunk's features.

`conv` makes a 1x1 head and `pointwise` runs several heads on the same
features as one convolution. `PrecisionHead` predicts the precision factor
`L` of Y (sections 4 and 4.3), through the likelihood's `factor` map
(`svae.factors`); `ContrastScale` offsets Y's scales per image by the
contrast of its predicted mean (the likelihood's `contrast_scale`). The
paper's VAEs (`svae.models`) and the Keras head for any image model
(`svae.layers.SparsePrecisionGaussianHead`) share them.

Precision (Keras dtype policies): the 1x1 convolutions run in the layer's
compute dtype (float16 or bfloat16 under the mixed policies); everything
after them, and so every output that parameterises the likelihood, is in
`likelihood_dtype(policy)`: float32, or float64 under the float64 policy.
The likelihood's triangular solves accumulate error along their wavefronts
(`svae.wavefront`), and its log-determinant sums `H W` logs: with float16's
11-bit or bfloat16's 8-bit mantissa both would be off by more than the
differences between the models. Policies with float16 or bfloat16
*variables* are refused (`check_policy`).
"""

import numbers

import keras
import numpy as np
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
    "border_planes",
    "check_policy",
    "conv",
    "likelihood_dtype",
    "pointwise",
]

# The dtypes the likelihood can be computed in; the variables' must be one.
LIKELIHOOD_DTYPES = ("float32", "float64")


def likelihood_dtype(policy):
    """The dtype of a head's outputs that parameterise the likelihood.

    Args:
      policy: a `keras.DTypePolicy` (a layer's `dtype_policy`).

    Returns:
      "float64" under a float64 compute dtype, else "float32" (the mixed
      policies' float16 and bfloat16 included).
    """
    return "float64" if policy.compute_dtype == "float64" else "float32"


def check_policy(layer, dtype=None):
    """Raises ValueError unless `layer`'s variables are float32 or float64.

    A float16 or bfloat16 policy would hold the likelihood's parameters and
    compute them in too few bits; its mixed counterpart keeps the variables
    and the likelihood in float32 and runs the convolutions in 16 bits.

    Args:
      layer: a `keras.layers.Layer` after `super().__init__`.
      dtype: the `dtype` argument it was given (None: the global policy).
    """
    policy = layer.dtype_policy
    if policy.variable_dtype in LIKELIHOOD_DTYPES:
        return
    name = policy.variable_dtype
    given = (
        f"dtype={policy.name!r}"
        if dtype is not None
        else f"the global dtype policy {policy.name!r} (keras.config.dtype_policy())"
    )
    if name in ("float16", "bfloat16"):
        instead = (
            f"pass dtype='mixed_{name}' (float32 variables and likelihood, "
            f"{name} convolutions) or 'float32'"
        )
    else:
        instead = "pass 'float32', 'float64', 'mixed_float16' or 'mixed_bfloat16'"
    raise ValueError(
        f"{type(layer).__name__} cannot take {given}: its variables and the "
        f"likelihood they parameterise must be float32 or float64, got "
        f"{name}; {instead}."
    )


def conv(channels, name, initializer="glorot_uniform", dtype=None):
    """Returns a 1x1 convolution head (`dtype`: its policy; None the global)."""
    return keras.layers.Conv2D(
        channels, 1, kernel_initializer=initializer, name=name, dtype=dtype
    )


def pointwise(features, heads, splits=None, shift=None):
    """Applies 1x1 convolution heads to the same features as one convolution.

    One convolution over the features for all heads and one split of its
    output, instead of a convolution per head and a split of the precision
    head's output: one pass over the features forward and backward. Each
    head keeps its own variables.

    The convolution runs in the first head's compute dtype (float16 under
    `mixed_float16`): the features and the variables are cast to it.

    Args:
      features: `[batch, height, width, C]`.
      heads: 1x1 `keras.layers.Conv2D` layers (built here if needed), of one
        dtype policy.
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
    # Inside a mixed layer's call Keras reads the variables in its compute
    # dtype already; outside (a symbolic trace) they are cast here.
    dtype = heads[0].compute_dtype
    features = tf.cast(features, dtype)
    kernel = tf.concat([tf.cast(head.kernel, dtype) for head in heads], axis=-1)
    bias = tf.concat([tf.cast(head.bias, dtype) for head in heads], axis=0)
    if shift is not None:
        bias += tf.stack([tf.cast(value, dtype) for value in shift])
    outputs = tf.nn.bias_add(tf.nn.conv2d(features, kernel, 1, "VALID"), bias)
    splits = splits or [head.filters for head in heads]
    return xla.split(outputs, splits)


# The multiplier of the border offsets' variable: Adam moves a variable by
# about the learning rate a step, too slow for offsets of order 1 in a
# thousand steps.
BORDER_GAIN = 10.0


@keras.saving.register_keras_serializable(package="svae")
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

    With `borders`, each output channel has a learned offset on the pixels
    within `L`'s reach of each of the image's four borders
    (`border_planes`), added to the convolution's output: `BORDER_GAIN`
    times its variable `border`. A 1x1 head on
    convolutional features can hardly tell the first rows and columns from
    the last ones, but `L` treats them differently: the last lack the
    raster-later neighbours the first have, so a likelihood fitted without
    the offsets widens every border alike, too wide on the first and too
    narrow on the last, and a sample's first row and column come out as
    uncorrelated speckle.

    The convolution runs in the compute dtype of the layer's policy, the
    basis and the factor's map in `likelihood_dtype` (float32 under the
    mixed policies), which the outputs have.
    """

    def __init__(
        self,
        kernel_size,
        num_basis,
        factor=DEFAULT.factor,
        dominance=DEFAULT.dominance,
        dilation=1,
        borders=DEFAULT.borders,
        **kwargs,
    ):
        """Creates the head.

        Args:
          kernel_size: odd neighbourhood size of each factor of `L`, >= 3.
          num_basis: 0, or the size of the learned basis, >= 1.
          factor: one of `svae.recipes.FACTORS`.
          dominance: bound of the off-diagonal mass relative to the
            diagonal, in (0, 1).
          dilation: spacing of the neighbourhood, >= 1.
          borders: learn offsets of the outputs at the image's borders (see
            the class).
          **kwargs: `keras.layers.Layer`'s (`name`, `dtype`, ...); `dtype`
            (None: the global policy) float32, float64, mixed_float16 or
            mixed_bfloat16.

        Raises:
          ValueError: for an argument outside its allowed values, or a dtype
            policy with float16 or bfloat16 variables (`check_policy`).
        """
        super().__init__(**kwargs)
        check_policy(self, kwargs.get("dtype"))
        neighbour_offsets(kernel_size, dilation)  # Validates both.
        if factor not in FACTORS:
            raise ValueError(f"factor must be one of {FACTORS}, got {factor!r}.")
        if not _is_real(dominance) or not 0 < dominance < 1:
            raise ValueError(f"dominance must be in (0, 1), got {dominance!r}.")
        if (
            isinstance(num_basis, bool)
            or not isinstance(num_basis, numbers.Integral)
            or num_basis < 0
        ):
            raise ValueError(f"num_basis must be an integer >= 0, got {num_basis!r}.")
        if not isinstance(borders, bool):
            raise ValueError(f"borders must be True or False, got {borders!r}.")
        self.kernel_size = int(kernel_size)
        self.dilation = int(dilation)
        self.num_basis = int(num_basis)
        self.factor = factor
        self.dominance = float(dominance)
        self.borders = borders
        # Unconstrained parameters per pixel that the factor maps to L's.
        self.num_raw = raw_size(factor, self.kernel_size)
        # Zeros: the branch starts as the spherical likelihood it is offset by.
        self.weights_conv = conv(
            self.num_basis or self.num_raw + 1,
            "weights",
            "zeros",
            dtype=self.dtype_policy,
        )
        if self.num_basis:
            # Read as stored (float32 under the mixed policies): the basis
            # maps the weights after they are cast to the likelihood's dtype.
            self.basis = self.add_weight(
                shape=(self.num_raw + 1, self.num_basis),
                initializer=keras.initializers.RandomNormal(stddev=0.3),
                name="basis",
                autocast=False,
            )
        self.border = None
        if self.borders:
            # Zeros: the head starts as it would without the offsets.
            self.border = self.add_weight(
                shape=(4 * self.reach, self.weights_conv.filters),
                initializer="zeros",
                name="border",
                autocast=False,
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
            "borders": self.borders,
        }

    @classmethod
    def from_config(cls, config):
        """Builds the head from `get_config`'s output, or an older build's.

        Older builds had no border offsets (`borders` missing: False).
        """
        return cls(**{"borders": False, **config})

    @property
    def reach(self):
        """How many rows (columns) from each border `L` links past it."""
        return structure_kernel(self.factor, self.kernel_size) // 2 * self.dilation

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
            other heads), else None; its batch is this head's images (the
            border offsets are this head's).
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
          `self.structure`, in `likelihood_dtype`; with `with_factors`, a
          third element.
        """
        if parts is None:
            parts = pointwise(
                features, [self.weights_conv], self.splits, self.shift(log_scale)
            )
        dtype = likelihood_dtype(self.dtype_policy)
        parts = [tf.cast(part, dtype) for part in parts]
        if self.borders:
            # After the convolution, not with its bias: oneDNN fuses a
            # convolution with a bias vector, not with a map.
            size = parts[0].shape[1:3]
            maps = _border_maps(
                BORDER_GAIN * tf.cast(self.border, dtype), *size, self.reach
            )
            maps = tf.split(maps, self.splits, axis=-1)
            parts = [part + offset for part, offset in zip(parts, maps, strict=True)]
        if self.num_basis:
            basis = tf.cast(self.basis, dtype)
            entries = tf.einsum("...b,kb->...k", parts[0], basis)
            # A split, not slices: its gradient is one concat, a slice's a
            # scatter.
            parts = xla.split(entries, [1, self.num_raw])
        log_diag, off_diag = parts
        log_diag = tf.squeeze(log_diag, -1)
        if self.num_basis:
            log_diag -= tf.cast(log_scale, dtype)
        if offset is not None:
            log_diag -= tf.cast(offset, dtype)[:, None, None]
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


@keras.saving.register_keras_serializable(package="svae")
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

    A likelihood parameter: computed and returned in `likelihood_dtype`
    (float32 under the mixed policies), whatever the policy.
    """

    def __init__(self, **kwargs):
        """Creates the layer.

        Args:
          **kwargs: `keras.layers.Layer`'s (`name`, `dtype`, ...).

        Raises:
          ValueError: for a dtype policy with float16 or bfloat16 variables.
        """
        super().__init__(**kwargs)
        check_policy(self, kwargs.get("dtype"))

    def build(self, input_shape):
        self.slope_variable = self.add_weight(
            shape=(), initializer="zeros", name="slope", autocast=False
        )

    @property
    def slope(self):
        bound = CONTRAST_SLOPE_BOUND
        return bound * tf.tanh(CONTRAST_GAIN * self.slope_variable / bound)

    def call(self, y_mean):
        """Returns the offsets `[batch]` of the means `y_mean` `[batch, H, W]`."""
        dtype = likelihood_dtype(self.dtype_policy)
        y = tf.cast(tf.stop_gradient(y_mean), dtype)
        gradient = tf.reduce_mean(
            tf.abs(y[:, 1:, :] - y[:, :-1, :]), axis=[1, 2]
        ) + tf.reduce_mean(tf.abs(y[:, :, 1:] - y[:, :, :-1]), axis=[1, 2])
        floor = tf.cast(CONTRAST_FLOOR, y.dtype)
        contrast = tf.math.log(gradient + floor) - CONTRAST_CENTRE
        return tf.cast(self.slope, y.dtype) * contrast


def border_planes(height, width, reach):
    """Indicators of the pixels within `reach` of each border of an image.

    Args:
      height, width: the image's size.
      reach: rows (columns) from each border, >= 1.

    Returns:
      A float32 `[height, width, 4 reach]` constant: for each depth `d <
      reach`, the planes of the `d`-th row from the top and from the
      bottom, the `d`-th column from the left and from the right.
    """
    rows, cols = _edge_planes(height, reach), _edge_planes(width, reach)
    planes = []
    for first, last in zip(range(0, 2 * reach, 2), range(1, 2 * reach, 2), strict=True):
        planes += [rows[:, None, first], rows[:, None, last]]
        planes += [cols[None, :, first], cols[None, :, last]]
    return tf.constant(np.stack(np.broadcast_arrays(*planes), axis=-1), tf.float32)


def _edge_planes(size, reach):
    """`[size, 2 reach]`: for each depth `d`, the `d`-th index from each end."""
    index = np.arange(size)[:, None]
    depths = np.repeat(np.arange(reach), 2)
    from_end = np.tile([False, True], reach)
    return index == np.where(from_end, size - 1 - depths, depths)


def _border_maps(border, height, width, reach):
    """`border_planes(height, width, reach) @ border`, one row and one column pass.

    A row's planes (top, bottom) and a column's (left, right) are constant
    along the other axis: `[H, C]` plus `[W, C]`, broadcast, instead of a
    product over every pixel and plane.
    """
    by_depth = tf.reshape(border, [reach, 4, -1])
    row_part = tf.matmul(
        tf.constant(_edge_planes(height, reach), border.dtype),
        tf.reshape(by_depth[:, :2], [2 * reach, -1]),
    )
    col_part = tf.matmul(
        tf.constant(_edge_planes(width, reach), border.dtype),
        tf.reshape(by_depth[:, 2:], [2 * reach, -1]),
    )
    return row_part[:, None, :] + col_part[None, :, :]


def _is_real(value):
    """Whether `value` is a real number (a bool is not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
