"""A Keras 3 head that predicts a `SparsePrecisionGaussian` for any image model.

Keras 3 layers pass tensors, not `tfd.Distribution` objects (`tfp.layers` is
not ported to Keras 3), so the head outputs one tensor that packs the
distribution's parameters along the channel axis, `[batch, H, W, 2 + K]`:

```none
params[..., 0]   loc        the mean image
params[..., 1]   log_diag   log of the diagonal of the precision factor L
params[..., 2:]  off_diag   the K = (kernel_size**2 - 1) // 2 off-diagonals of L
```

`svae.losses.SparsePrecisionNLL` builds the distribution from that tensor and
returns `-log_prob`; `to_distribution` turns it into the
`SparsePrecisionGaussian` for sampling, `conditional(...)` and
`marginal_variance()`. The precision factor comes from `PrecisionHead`
(section 4.3's learned basis with `num_basis > 0`, the `factor` maps), which
`svae.models.VAE` uses too: one implementation for the paper's VAEs and for
any image model. `pointwise` runs several 1x1 heads as one convolution.
"""

import math

import keras
import tensorflow as tf

from svae import xla
from svae.config import FACTORS, Structure
from svae.distributions import SparsePrecisionGaussian
from svae.linalg import neighbour_offsets, num_off_diagonals

__all__ = [
    "PrecisionHead",
    "SparsePrecisionGaussianHead",
    "as_images",
    "bounded_off_diag",
    "capped_log_diag",
    "conv",
    "pointwise",
    "product_off_diag",
    "params_size",
    "serving_outputs",
    "to_distribution",
    "unpack",
]


def _structure(kernel_size, dilation):
    """`(kernel_size, dilation)` from ints or an `svae.config.Structure`."""
    if isinstance(kernel_size, Structure):
        return kernel_size.kernel_size, kernel_size.dilation
    return kernel_size, dilation


def conv(channels, name, initializer="glorot_uniform"):
    """Returns a 1x1 convolution head."""
    return keras.layers.Conv2D(channels, 1, kernel_initializer=initializer, name=name)


def pointwise(features, heads, splits=None, shift=None):
    """Applies 1x1 convolution heads to the same features as one convolution.

    One convolution over the features for all heads and one split of its
    output, instead of a convolution per head and a split of the precision
    head's output: forward and backward 4.2 against 5.1 ms for the structured
    model's heads at 64x64, batch 64 (benchmarks/RESULTS.md, bench_train).
    Each head keeps its own variables.

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

    Without a basis, a 1x1 convolution predicts `[log_diag, off_diag]`
    directly. With `num_basis > 0` it predicts weights `W(z)` and the shared
    basis `B` (`[K + 1, num_basis]`) maps them to the `K + 1` entries of each
    column of `L`: `L = s(B W(z))`. Entry 0 is the log of the diagonal (so it
    stays positive), entries 1..K the off-diagonals: as they are with
    `factor="free"` (the paper's), or, with `factor="bounded"`, through

    ```none
    off_diag[p, m] = exp(log_diag[p]) * dominance * a[p, m] / (1 + sum_k |a[p, k]|)
    ```

    so that each column's off-diagonal mass is below `dominance` (< 1) times
    its diagonal: `L^T` is strictly diagonally dominant, `||L^{-T}||_inf <=
    1 / (min_p L_pp (1 - dominance))` (Varah), and a sample `L^{-T} eps`
    cannot grow along the solve, whatever `z`. Any point of that L1 ball is
    reachable, one neighbour may take all the mass; the log-determinant is
    unchanged (`sum log_diag`), and a global scale of `L` is `log_diag`'s
    offset alone.

    With `max_scale`, `log_diag` passes through `capped_log_diag`: each
    pixel's conditional standard deviation `1 / L_pp` stays below
    `max_scale` (Y lives in [0, 1], so a residual scale of a quarter of that
    range is already all but uninformative), whatever `z`: a decoder that
    extrapolates to a latent it never saw cannot draw a sample whose
    residual is several times the image's range.
    """

    def __init__(
        self,
        kernel_size,
        num_basis,
        factor="free",
        dominance=0.99,
        dilation=1,
        max_scale=None,
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
        if max_scale is not None and (
            isinstance(max_scale, bool)
            or not isinstance(max_scale, int | float)
            or not 0 < max_scale < math.inf
        ):
            raise ValueError(
                f"max_scale must be None or a number > 0, got {max_scale!r}."
            )
        self.max_scale = None if max_scale is None else float(max_scale)
        self.kernel_size = int(kernel_size)
        self.dilation = int(dilation)
        self.num_basis = num_basis
        self.factor = factor
        self.dominance = float(dominance)
        num_off = num_off_diagonals(kernel_size)
        self.num_off = num_off
        # Zeros: the branch starts as the spherical likelihood it is offset by.
        self.weights_conv = conv(num_basis or num_off + 1, "weights", "zeros")
        if num_basis:
            self.basis = self.add_weight(
                shape=(num_off + 1, num_basis),
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
            "max_scale": self.max_scale,
        }

    @property
    def structure(self):
        """The `svae.config.Structure` of `L`."""
        return Structure(self.kernel_size, self.dilation)

    def get_config(self):
        return {**super().get_config(), **self.arguments()}

    @property
    def splits(self):
        """Channel counts of `weights_conv`'s output parts, see `call`."""
        return [self.num_basis] if self.num_basis else [1, self.num_off]

    def shift(self, log_scale):
        """Offsets of `weights_conv`'s output channels, for `pointwise`.

        `-log_scale` on `log_diag`: the convolution starts at zero, so the
        branch starts as the spherical likelihood of scale `exp(log_scale)`
        (log L_pp = -log sigma) and the warm-up from the pretrained one. With
        a basis `log_diag` is a product, offset in `call` instead.
        """
        if self.num_basis:
            return [0.0] * self.num_basis
        return [-log_scale] + [0.0] * self.num_off

    def call(self, features, parts=None, log_scale=0.0, offset=None):
        """Returns `(log_diag, off_diag)`.

        Args:
          features: `[batch, height, width, C]` trunk features.
          parts: `pointwise` output for `weights_conv` with `self.splits`
            and `self.shift(log_scale)` when the caller has computed it (with
            other heads), else None.
          log_scale: log of the spherical scale `L` starts from.
          offset: None, or a per-image log scale `[batch]` taken off
            `log_diag` before the factor is formed (with the bounded and
            product factors, `L` times `exp(-offset)`).

        Returns:
          `log_diag` `[batch, height, width]`, `off_diag`
          `[batch, height, width, K]`.
        """
        if parts is None:
            parts = pointwise(
                features, [self.weights_conv], self.splits, self.shift(log_scale)
            )
        if self.num_basis:
            entries = tf.einsum("...b,kb->...k", parts[0], self.basis)
            # A split, not slices: its gradient is one concat, a slice's a
            # scatter.
            parts = xla.split(entries, [1, self.num_off])
        log_diag, off_diag = parts
        log_diag = tf.squeeze(log_diag, -1)
        if self.num_basis:
            log_diag -= log_scale
        if offset is not None:
            log_diag -= offset[:, None, None]
        if self.max_scale is not None:
            log_diag = capped_log_diag(log_diag, self.max_scale)
        if self.factor == "bounded":
            off_diag = bounded_off_diag(log_diag, off_diag, self.dominance)
        elif self.factor == "product":
            off_diag = product_off_diag(
                log_diag, off_diag, self.dominance, self.kernel_size, self.dilation
            )
        return log_diag, off_diag


# How sharply `capped_log_diag` bends: within a few tenths of a nat of the
# floor it is the identity (4: 0.5 nats above it, log_diag moves by 0.03).
CAP_SHARPNESS = 4.0


def capped_log_diag(log_diag, max_scale):
    """`log_diag` held above `-log(max_scale)`, smoothly.

    Returns `f + softplus(s (log_diag - f)) / s` with `f = -log(max_scale)`
    and `s = CAP_SHARPNESS`: strictly above `f`, so `1 / L_pp < max_scale`,
    and within `log(2) / s` of the identity, which it approaches
    exponentially above the floor (gradients pass unchanged there).

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      max_scale: the bound of `1 / L_pp`, > 0.

    Returns:
      A tensor like `log_diag`.
    """
    floor = tf.cast(-math.log(max_scale), log_diag.dtype)
    sharpness = tf.cast(CAP_SHARPNESS, log_diag.dtype)
    return floor + tf.nn.softplus(sharpness * (log_diag - floor)) / sharpness


def bounded_off_diag(log_diag, raw, dominance):
    """Maps unconstrained `raw` `[..., K]` into the dominance ball of `L`'s column.

    Returns `exp(log_diag) * dominance * raw / (1 + sum |raw|)`: the column's
    off-diagonal L1 norm is below `dominance * exp(log_diag)` (see
    `PrecisionHead`).

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      raw: `[..., H, W, K]` unconstrained off-diagonal parameters.
      dominance: bound of the off-diagonal mass relative to the diagonal, < 1.

    Returns:
      `[..., H, W, K]` off-diagonal entries of `L`.
    """
    return _bounded(log_diag, raw, float(dominance))


@xla.kernel
def _bounded(log_diag, raw, dominance):
    """`bounded_off_diag` as one XLA loop, forward and backward."""
    return _ball(raw, dominance) * tf.exp(log_diag)[..., None]


def _ball(raw, radius):
    """Maps `[..., n]` onto the open L1 ball of `radius`: `r raw / (1 + |raw|_1)`."""
    norm = 1.0 + tf.reduce_sum(tf.abs(raw), axis=-1, keepdims=True)
    return raw * (radius / norm)


def product_off_diag(log_diag, raw, dominance, kernel_size=3, dilation=1):
    """Off-diagonals of `L^T = D (I + R)(I + V)`, two dominant factors.

    `R` links each pixel to the pixels right of it in its row (offsets
    `(0, dx)`), `V` to those below it and not right of it (`(dy, dx)`,
    `dy > 0`, `dx <= 0`); each row of each factor has off-diagonal mass
    below `dominance` (`_ball`), so `||L^{-T}||_inf <= 1 / (min_p L_pp (1 -
    dominance)^2)`. The product fills the rest of the neighbourhood
    (`dx > 0` below: `R V`), and it holds the separable fields a single
    dominant factor cannot, like `(1 - a S_right)(1 - b S_down)` with `a, b`
    near 1 (smooth residuals; `bounded_off_diag` caps the sum of the four
    coefficients at 1, about `a + b + ab` here). The raw channels at
    `dx > 0` below are unused.

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      raw: `[..., H, W, K]` unconstrained parameters, `neighbour_offsets`
        order.
      dominance: bound of each factor's off-diagonal row mass, < 1.
      kernel_size: neighbourhood size of `L`.
      dilation: spacing of the neighbourhood.

    Returns:
      `[..., H, W, K]` off-diagonal entries of `L`.
    """
    return _product(log_diag, raw, float(dominance), int(kernel_size), int(dilation))


@xla.kernel
def _product(log_diag, raw, dominance, kernel_size, dilation):
    """`product_off_diag` as one XLA computation, forward and backward.

    As TF ops its slices, pads and stack, and their gradients, are a pass
    over `[batch, H, W, K]` each: a training step at 64x64, batch 64 took
    65 ms against 37 ms with the free factor; fused, see benchmarks/RESULTS.md.
    Inside, the `K` channels are planes `[K, ..., H, W]` (one transpose in,
    one out): XLA's CPU loops over a channel-last tensor's interleaved
    channels made forward and backward 5.5-5.8 ms against 4.1-4.4 ms planar
    at `[64, 64, 64, 4]`.
    """
    offsets = neighbour_offsets(kernel_size, dilation)
    index = {offset: m for m, offset in enumerate(offsets)}
    rank = raw.shape.rank
    planes = tf.transpose(raw, [rank - 1, *range(rank - 1)])
    rows = [m for m, (dy, _) in enumerate(offsets) if dy == 0]
    below = [m for m, (dy, dx) in enumerate(offsets) if dy > 0 and dx <= 0]
    right = _planar_ball([planes[m] for m in rows], dominance)
    lower = _planar_ball([planes[m] for m in below], dominance)
    coeffs = [tf.zeros_like(log_diag)] * len(offsets)
    for i, m in enumerate(rows):
        coeffs[m] = right[i]
    for j, m in enumerate(below):
        coeffs[m] = lower[j]
    width = raw.shape[-2]
    pad = [[0, 0]] * (log_diag.shape.rank - 1)
    for i, m in enumerate(rows):
        shift = offsets[m][1]
        for j, n in enumerate(below):
            dy, dx = offsets[n]
            target = index.get((dy, dx + shift))
            if target is not None:
                # V's entry at the pixel `shift` to the right (zero beyond
                # the edge).
                moved = tf.pad(lower[j][..., shift:], pad + [[0, min(shift, width)]])
                coeffs[target] = coeffs[target] + right[i] * moved
    diag = tf.exp(log_diag)
    stacked = tf.stack([coeff * diag for coeff in coeffs], 0)
    return tf.transpose(stacked, [*range(1, rank), 0])


def _planar_ball(planes, radius):
    """`_ball` of the vectors whose entries are the `planes`, plane by plane.

    A list, not a gather and a reduction over a leading axis: that was 1.3x
    slower forward and backward in `_product` (7.2 against 5.6 ms).
    """
    scale = radius / (1.0 + tf.add_n([tf.abs(plane) for plane in planes]))
    return [plane * scale for plane in planes]


def params_size(kernel_size=3):
    """Channels of the head's output: `2 + K` (loc, log_diag, K off-diagonals).

    Args:
      kernel_size: odd neighbourhood size, >= 3, or an `svae.config.Structure`.

    Returns:
      A Python int.
    """
    kernel_size, _ = _structure(kernel_size, 1)
    neighbour_offsets(kernel_size, 1)  # Validates it.
    return 2 + num_off_diagonals(kernel_size)


def unpack(params):
    """Splits the head's `[..., H, W, 2 + K]` output into its parameters.

    Args:
      params: `[..., H, W, 2 + K]` tensor.

    Returns:
      `(loc, log_diag, off_diag)`: `[..., H, W]`, `[..., H, W]`,
      `[..., H, W, K]`.
    """
    params = tf.convert_to_tensor(params)
    loc = params[..., 0]
    log_diag = params[..., 1]
    off_diag = params[..., 2:]
    return loc, log_diag, off_diag


def to_distribution(params, kernel_size=3, dilation=1, validate_args=False):
    """Returns the `SparsePrecisionGaussian` that the head's output describes.

    Args:
      params: `[..., H, W, 2 + K]`, `SparsePrecisionGaussianHead`'s output.
      kernel_size: the head's `kernel_size`, or an `svae.config.Structure`
        (then `dilation` is ignored).
      dilation: the head's `dilation`.
      validate_args: passed to the distribution.

    Returns:
      A `SparsePrecisionGaussian` with batch shape `[...]`, event `[H, W]`.

    Raises:
      ValueError: if the channel count is not `params_size(kernel_size)`.
    """
    kernel_size, dilation = _structure(kernel_size, dilation)
    params = tf.convert_to_tensor(params)
    expected = params_size(kernel_size)
    channels = params.shape[-1]
    if channels is not None and channels != expected:
        raise ValueError(
            f"params must have {expected} channels (loc, log_diag and "
            f"{expected - 2} off-diagonals) for kernel_size={kernel_size}; got "
            f"shape {params.shape}."
        )
    loc, log_diag, off_diag = unpack(params)
    return SparsePrecisionGaussian(
        loc,
        log_diag,
        off_diag,
        kernel_size=kernel_size,
        dilation=dilation,
        validate_args=validate_args,
    )


def serving_outputs(params, images, seed, kernel_size=3, dilation=1):
    """The tensors an exported signature returns, from the head's output.

    Args:
      params: `[batch, H, W, 2 + K]`, the head's output.
      images: `[batch, H, W]` (or `[batch, H, W, 1]`) images to score.
      seed: int32 `[2]` stateless seed of the sample (same seed, same sample).
      kernel_size: the head's `kernel_size`, or an `svae.config.Structure`.
      dilation: the head's `dilation`.

    Returns:
      A dict: `mean` and `sample` `[batch, H, W]`, `log_prob` `[batch]`
      (nats, of `images`).
    """
    dist = to_distribution(params, kernel_size, dilation)
    return {
        "mean": dist.mean(),
        "sample": dist.sample(seed=seed),
        "log_prob": dist.log_prob(as_images(images, dist.dtype)),
    }


def as_images(images, dtype):
    """`[..., H, W]` from `[..., H, W]` or `[..., H, W, 1]` (static rank 4)."""
    images = tf.convert_to_tensor(images, dtype=dtype)
    if images.shape.rank == 4:
        images = tf.squeeze(images, -1)
    return images


@keras.saving.register_keras_serializable(package="svae")
class SparsePrecisionGaussianHead(keras.layers.Layer):
    """Maps features `[batch, H, W, C]` to a sparse-precision Gaussian's parameters.

    A 1x1 convolution predicts the mean, and `svae.PrecisionHead` the
    precision factor `L` (sections 4 and 4.3): `log_diag` and the `K`
    off-diagonals, directly or, with `num_basis > 0`, through a learned basis
    `B` (`[K + 1, num_basis]`) shared by all pixels; the off-diagonals pass
    through `factor`'s map ("product": `L^T = D (I + R)(I + V)` with both
    factors diagonally dominant, so sampling is stable whatever the input;
    "bounded": one dominant factor; "free": unconstrained, the paper's). The
    precision branch starts at zero, i.e. as the spherical Gaussian of scale
    `exp(log_scale)`.

    The output is one tensor, `[batch, H, W, params_size(kernel_size)]`,
    packed as `unpack` reads it: give it to `svae.losses.SparsePrecisionNLL`
    in `compile(loss=...)`, and to `to_distribution` (or `self.distribution`)
    for `sample`, `log_prob`, `conditional` and `marginal_variance`.

    Example:

    ```none
    inputs = keras.Input([32, 32, 3])
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    params = SparsePrecisionGaussianHead(kernel_size=3)(h)   # [b, 32, 32, 6]
    model = keras.Model(inputs, params)
    model.compile("adam", loss=svae.losses.SparsePrecisionNLL(kernel_size=3))
    ```
    """

    def __init__(
        self,
        kernel_size=3,
        dilation=1,
        num_basis=0,
        factor="product",
        dominance=0.99,
        log_scale=0.0,
        max_scale=None,
        **kwargs,
    ):
        """Creates the head.

        Args:
          kernel_size: odd neighbourhood size of `L`, >= 3.
          dilation: spacing of the neighbourhood, >= 1.
          num_basis: 0 predicts `L`'s `K + 1` entries per pixel directly;
            `> 0` predicts `num_basis` weights per pixel, mapped to them by a
            learned basis (section 4.3).
          factor: "product" (default), "bounded" or "free", see
            `svae.PrecisionHead`.
          dominance: bound of the off-diagonal mass relative to the
            diagonal for "product" and "bounded", in (0, 1).
          log_scale: log of the standard deviation the head starts from
            (`log_diag` starts at `-log_scale`).
          max_scale: None, or the bound of each pixel's conditional standard
            deviation `1 / L_pp` (`svae.layers.capped_log_diag`).
          **kwargs: `keras.layers.Layer`'s (`name`, `dtype`, ...).

        Raises:
          ValueError: for an invalid structure, factor, dominance or
            max_scale.
        """
        super().__init__(**kwargs)
        self.log_scale = float(log_scale)
        self.loc_conv = keras.layers.Conv2D(1, 1, name="loc")
        # Holds (and checks) the structure and the factor's options.
        self.precision = PrecisionHead(
            int(kernel_size),
            num_basis,
            factor,
            float(dominance),
            int(dilation),
            max_scale,
            name="precision",
        )

    @staticmethod
    def params_size(kernel_size=3):
        """Channels of the output for `kernel_size`: `2 + K`."""
        return params_size(kernel_size)

    @staticmethod
    def unpack(params):
        """`(loc, log_diag, off_diag)` from the output; see `svae.layers.unpack`."""
        return unpack(params)

    @property
    def structure(self):
        """The `svae.config.Structure` of `L`."""
        return self.precision.structure

    def distribution(self, params):
        """Returns the `SparsePrecisionGaussian` of this head's output `params`."""
        return to_distribution(params, self.structure)

    def build(self, input_shape):
        """Builds the two 1x1 convolutions (and so every variable)."""
        self.loc_conv.build(input_shape)
        self.precision.build(input_shape)

    def call(self, features):
        """Returns the packed parameters.

        Args:
          features: `[batch, H, W, C]`, H and W known statically.

        Returns:
          `[batch, H, W, 2 + K]`: loc, log_diag, off_diag (see `unpack`).
        """
        head = self.precision
        # One convolution for both heads, as svae.models.VAE does.
        loc, *parts = pointwise(
            features,
            [self.loc_conv, head.weights_conv],
            [1, *head.splits],
            [0.0, *head.shift(self.log_scale)],
        )
        log_diag, off_diag = head(features, parts, log_scale=self.log_scale)
        return tf.concat([loc, log_diag[..., None], off_diag], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], params_size(self.precision.kernel_size))

    def get_config(self):
        return {
            **super().get_config(),
            **self.precision.arguments(),
            "log_scale": self.log_scale,
        }
