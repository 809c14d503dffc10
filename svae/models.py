"""The paper's VAEs and baselines as Keras 3 modules that output tensors.

DCGAN-style: the encoder halves the image with 4x4 stride-2 convolutions down
to 4x4, the decoder's trunk doubles it back with 4x4 stride-2 transposed
convolutions; every head is a 1x1 convolution on the trunk's features (Y at
full size, Cb and Cr at the chroma size, which the trunk passes through).
Distributions are built from these tensors in `svae.likelihoods`.
"""

import math

import keras
import tensorflow as tf

from svae import color, xla
from svae.config import VARIANTS, Structure
from svae.linalg import neighbour_offsets, num_off_diagonals

__all__ = [
    "Encoder",
    "Trunk",
    "PrecisionHead",
    "VAE",
    "bounded_off_diag",
    "build_model",
    "pointwise",
    "product_off_diag",
]


def _widths(image_size, filters):
    """Returns the encoder's channel counts, one per stride-2 convolution."""
    num_layers = int(math.log2(image_size)) - 2
    return [filters * 2**i for i in range(num_layers)]


def _conv(channels, name, initializer="glorot_uniform"):
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


class Encoder(keras.layers.Layer):
    """`q(z|x)`: a diagonal Gaussian over the latents (eq. 3)."""

    def __init__(self, latent_dim, image_size, filters, chroma_factor, **kwargs):
        super().__init__(**kwargs)
        self.chroma_factor = chroma_factor
        widths = _widths(image_size, filters)
        # Attributes, not a list: Keras' tracked lists are invisible to
        # tf.train.Checkpoint, which --init_from reads the model with.
        for i, width in enumerate(widths):
            conv = keras.layers.Conv2D(
                width, 4, strides=2, padding="same", activation="leaky_relu"
            )
            setattr(self, f"conv{i}", conv)
        self.num_convs = len(widths)
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(2 * latent_dim)

    def call(self, y, cbcr=None):
        """Returns the posterior's mean and log scale.

        Args:
          y: `[batch, height, width]` luma.
          cbcr: `[batch, height / f, width / f, 2]` chroma, or None (gray).

        Returns:
          `(mean, log_scale)`, each `[batch, latent_dim]`.
        """
        h = y[..., None] - 0.5
        if cbcr is not None:
            chroma = color.upsample_chroma(cbcr, self.chroma_factor, "nearest")
            h = tf.concat([h, chroma - 0.5], axis=-1)
        for i in range(self.num_convs):
            h = getattr(self, f"conv{i}")(h)
        mean, log_scale = tf.split(self.dense(self.flatten(h)), 2, axis=-1)
        return mean, log_scale


class Trunk(keras.layers.Layer):
    """The decoder's shared trunk: `z` to feature maps at each resolution."""

    def __init__(self, image_size, filters, **kwargs):
        super().__init__(**kwargs)
        widths = _widths(image_size, filters)
        self.dense = keras.layers.Dense(16 * widths[-1], activation="relu")
        self.reshape = keras.layers.Reshape((4, 4, widths[-1]))
        for i, width in enumerate(reversed([filters] + widths[:-1])):
            deconv = keras.layers.Conv2DTranspose(
                width, 4, strides=2, padding="same", activation="relu"
            )
            setattr(self, f"deconv{i}", deconv)
        self.num_deconvs = len(widths)

    def call(self, z):
        """Returns the feature maps after the dense layer and each upsampling.

        Args:
          z: `[batch, latent_dim]` latents.

        Returns:
          A dict from side `s` (4, 8, ..., image_size) to `[batch, s, s, C_s]`.
        """
        h = self.reshape(self.dense(z))
        features = {4: h}
        for i in range(self.num_deconvs):
            h = getattr(self, f"deconv{i}")(h)
            features[h.shape[1]] = h
        return features


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
    """

    def __init__(
        self,
        kernel_size,
        num_basis,
        factor="free",
        dominance=0.99,
        dilation=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.num_basis = num_basis
        self.factor = factor
        self.dominance = dominance
        num_off = num_off_diagonals(kernel_size)
        self.num_off = num_off
        # Zeros: the branch starts as the spherical likelihood it is offset by.
        self.weights_conv = _conv(num_basis or num_off + 1, "weights", "zeros")
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

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "num_basis": self.num_basis,
            "factor": self.factor,
            "dominance": self.dominance,
            "dilation": self.dilation,
        }

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

    def call(self, features, parts=None, log_scale=0.0):
        """Returns `(log_diag, off_diag)`.

        Args:
          features: `[batch, height, width, C]` trunk features.
          parts: `pointwise` output for `weights_conv` with `self.splits`
            and `self.shift(log_scale)` when the caller has computed it (with
            other heads), else None.
          log_scale: log of the spherical scale `L` starts from.

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
        if self.factor == "bounded":
            off_diag = bounded_off_diag(log_diag, off_diag, self.dominance)
        elif self.factor == "product":
            off_diag = product_off_diag(
                log_diag, off_diag, self.dominance, self.kernel_size, self.dilation
            )
        return log_diag, off_diag


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
    """
    offsets = neighbour_offsets(kernel_size, dilation)
    index = {offset: m for m, offset in enumerate(offsets)}
    rows = [m for m, (dy, _) in enumerate(offsets) if dy == 0]
    below = [m for m, (dy, dx) in enumerate(offsets) if dy > 0 and dx <= 0]
    right = _ball(tf.gather(raw, rows, axis=-1), dominance)
    lower = _ball(tf.gather(raw, below, axis=-1), dominance)
    coeffs = [tf.zeros_like(log_diag)] * len(offsets)
    for i, m in enumerate(rows):
        coeffs[m] = right[..., i]
    for j, m in enumerate(below):
        coeffs[m] = lower[..., j]
    width = raw.shape[-2]
    for i, m in enumerate(rows):
        shift = offsets[m][1]
        # V's entries at the pixel `shift` to the right (zero beyond the edge).
        moved = tf.pad(
            lower[..., shift:, :],
            [[0, 0]] * (lower.shape.rank - 2) + [[0, min(shift, width)], [0, 0]],
        )
        for j, n in enumerate(below):
            dy, dx = offsets[n]
            target = index.get((dy, dx + shift))
            if target is not None:
                coeffs[target] = coeffs[target] + right[..., i] * moved[..., j]
    return tf.stack(coeffs, axis=-1) * tf.exp(log_diag)[..., None]


class VAE(keras.Model):
    """Every model of the paper: the encoder, the decoder trunk and its heads.

    All variants share the same encoder, trunk, mean heads and spherical
    scales (`y_log_scale`, `cbcr_log_scale`), so a `vae_sph` checkpoint
    initialises the others. Model-specific heads:

    - `vae_diag`, `beta_vae_diag`: `y_scale_head`, per-pixel log scale of Y.
    - `structured`: `precision_head` (`L` of Y) and `cbcr_scale_head`
      (per-pixel Cb, Cr scales, eq. 10-11) on the shared trunk.
    - `supn`: a separate `covariance_trunk` with the same two heads.
    """

    def __init__(
        self,
        model="structured",
        latent_dim=100,
        image_size=64,
        filters=6,
        color="ycbcr",
        chroma_factor=4,
        kernel_size=3,
        num_basis=0,
        factor="free",
        dominance=0.99,
        dilation=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.model_name = model
        self.variant = VARIANTS[model]
        self.structure = Structure(kernel_size, dilation)
        self.use_chroma = color == "ycbcr"
        self.image_size = image_size
        self.chroma_size = image_size // chroma_factor
        self.encoder = Encoder(latent_dim, image_size, filters, chroma_factor)
        self.trunk = Trunk(image_size, filters)
        self.y_mean_head = _conv(1, "y_mean")
        self.y_log_scale = self.add_weight(
            shape=(), initializer="zeros", name="y_log_scale"
        )
        if self.use_chroma:
            self.cbcr_mean_head = _conv(2, "cbcr_mean")
            self.cbcr_log_scale = self.add_weight(
                shape=(), initializer="zeros", name="cbcr_log_scale"
            )
        self.uncertainty_layers = []
        if self.variant.y_likelihood == "diagonal":
            # Zeros, offset by y_log_scale: starts as the spherical likelihood.
            self.y_scale_head = _conv(1, "y_scale", "zeros")
        if self.variant.covariance_trunk:
            self.covariance_trunk = Trunk(image_size, filters)
            self.uncertainty_layers.append(self.covariance_trunk)
        if self.variant.structured:
            self.precision_head = PrecisionHead(
                kernel_size, num_basis, factor, dominance, dilation
            )
            self.uncertainty_layers.append(self.precision_head)
            if self.use_chroma:
                self.cbcr_scale_head = _conv(2, "cbcr_scale", "zeros")
                self.uncertainty_layers.append(self.cbcr_scale_head)

    def encode(self, y, cbcr=None):
        """Returns `(mean, log_scale)` of `q(z|x)`, each `[batch, latent_dim]`."""
        return self.encoder(y, cbcr)

    def decode(self, z, spherical=False):
        """Returns the likelihood's parameters for latents `z`.

        Args:
          z: `[batch, latent_dim]`.
          spherical: use the spherical scales whatever the model (the `vae_sph`
            pretraining of `structured` and `supn`).

        Returns:
          A dict of tensors: `y_mean` `[batch, H, W]`; then either
          `y_log_scale` `[batch, H, W]` or `log_diag` `[batch, H, W]` and
          `off_diag` `[batch, H, W, K]`; with colour, `cbcr_mean` and
          `cbcr_log_scale` `[batch, H/f, W/f, 2]`.
        """
        features = self.trunk(z)
        variant = VARIANTS["vae_sph"] if spherical else self.variant
        kind, separate = variant.y_likelihood, variant.covariance_trunk
        size, low = self.image_size, self.chroma_size
        # The heads on the same features run as one convolution (`pointwise`),
        # their constant offsets added with its bias.
        y_heads, y_shift = [self.y_mean_head], [0.5]
        cbcr_heads, cbcr_shift = [], []
        if self.use_chroma:
            cbcr_heads, cbcr_shift = [self.cbcr_mean_head], [0.5, 0.5]
        splits = None
        if kind == "diagonal":
            y_heads.append(self.y_scale_head)
            y_shift.append(self.y_log_scale)
        elif kind == "structured" and not separate:
            head = self.precision_head
            y_heads.append(head.weights_conv)
            splits = [1] + head.splits
            y_shift += head.shift(self.y_log_scale)
            if self.use_chroma:
                cbcr_heads.append(self.cbcr_scale_head)
                cbcr_shift += [self.cbcr_log_scale] * 2
        y_mean, *y_scale = pointwise(features[size], y_heads, splits, y_shift)
        outputs = {"y_mean": tf.squeeze(y_mean, -1)}
        cbcr_scale = []
        if self.use_chroma:
            outputs["cbcr_mean"], *cbcr_scale = pointwise(
                features[low], cbcr_heads, None, cbcr_shift
            )
        if separate:
            features = self.covariance_trunk(z)
            y_scale = None  # The precision head applies its own convolution.
            if self.use_chroma:
                cbcr_scale = pointwise(
                    features[low],
                    [self.cbcr_scale_head],
                    None,
                    [self.cbcr_log_scale] * 2,
                )
        if kind == "spherical":
            outputs["y_log_scale"] = tf.broadcast_to(
                self.y_log_scale, tf.shape(outputs["y_mean"])
            )
        elif kind == "diagonal":
            outputs["y_log_scale"] = tf.squeeze(y_scale[0], -1)
        else:
            outputs["log_diag"], outputs["off_diag"] = self.precision_head(
                features[size], y_scale, log_scale=self.y_log_scale
            )
        if self.use_chroma:
            if cbcr_scale:
                scale = cbcr_scale[0]
            else:
                scale = tf.broadcast_to(
                    self.cbcr_log_scale, tf.shape(outputs["cbcr_mean"])
                )
            outputs["cbcr_log_scale"] = scale
        return outputs

    def call(self, inputs, z=None, spherical=False):
        """Encodes, draws (or takes) `z`, decodes.

        Args:
          inputs: a batch dict with `y` `[batch, H, W]` and, with colour,
            `cbcr` `[batch, H/f, W/f, 2]`.
          z: `[batch, latent_dim]` latents; None uses the posterior mean.
          spherical: see `decode`.

        Returns:
          `decode`'s dict plus `z_mean`, `z_log_scale` `[batch, latent_dim]`.
        """
        z_mean, z_log_scale = self.encode(inputs["y"], inputs.get("cbcr"))
        outputs = self.decode(z_mean if z is None else z, spherical)
        outputs.update(z_mean=z_mean, z_log_scale=z_log_scale)
        return outputs

    def uncertainty_variables(self):
        """Returns the structured branch's trainable variables."""
        return [v for layer in self.uncertainty_layers for v in layer.trainable_weights]

    def mean_variables(self):
        """Returns every trainable variable outside the structured branch."""
        branch = {id(v) for v in self.uncertainty_variables()}
        return [v for v in self.trainable_weights if id(v) not in branch]


# The Config fields that are VAE arguments of the same name.
_VAE_FIELDS = (
    "model",
    "latent_dim",
    "image_size",
    "filters",
    "color",
    "chroma_factor",
    "kernel_size",
    "num_basis",
    "factor",
    "dominance",
    "dilation",
)


def build_model(config):
    """Builds and initialises the model a config describes.

    Args:
      config: an `svae.config.Config`.

    Returns:
      A built `VAE`.
    """
    model = VAE(**{name: getattr(config, name) for name in _VAE_FIELDS})
    size, low = config.image_size, config.image_size // config.chroma_factor
    inputs = {"y": tf.zeros([1, size, size])}
    if config.color == "ycbcr":
        inputs["cbcr"] = tf.zeros([1, low, low, 2])
    model(inputs)
    model(inputs, spherical=True)
    return model
