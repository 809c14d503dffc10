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

from svae import color
from svae.distributions import Structure
from svae.factors import structure_kernel
from svae.heads import (
    ContrastScale,
    PrecisionHead,
    check_policy,
    conv,
    likelihood_dtype,
    pointwise,
)
from svae.recipes import DEFAULT, Likelihood
from svae.variants import VARIANTS

__all__ = [
    "Encoder",
    "Trunk",
    "VAE",
    "build_model",
    "trunk_policy",
]


def _widths(image_size, filters):
    """Returns the encoder's channel counts, one per stride-2 convolution."""
    num_layers = int(math.log2(image_size)) - 2
    return [filters * 2**i for i in range(num_layers)]


def _chain(layers, shape, build=False):
    """Returns the output shapes of `layers` applied in turn to `shape`.

    With `build`, builds each on its input's shape first: Keras builds a
    layer (and loads a `.keras` file) from shapes alone, without a call.
    """
    shapes = []
    for layer in layers:
        if build:
            layer.build(shape)
        shape = layer.compute_output_shape(shape)
        shapes.append(shape)
    return shapes


@keras.saving.register_keras_serializable(package="svae")
class Encoder(keras.layers.Layer):
    """`q(z|x)`: a diagonal Gaussian over the latents (eq. 3)."""

    def __init__(self, latent_dim, image_size, filters, chroma_factor, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.filters = filters
        self.chroma_factor = chroma_factor
        widths = _widths(image_size, filters)
        policy = self.dtype_policy
        # Attributes, not a list: Keras' tracked lists are invisible to
        # tf.train.Checkpoint, which --init_from reads the model with.
        for i, width in enumerate(widths):
            conv = keras.layers.Conv2D(
                width,
                4,
                strides=2,
                padding="same",
                activation="leaky_relu",
                dtype=policy,
            )
            setattr(self, f"conv{i}", conv)
        self.num_convs = len(widths)
        self.flatten = keras.layers.Flatten(dtype=policy)
        # The posterior's parameters in the likelihood's dtype: z, its KL and
        # the importance weights are sums over latents (`svae.heads`).
        self.dense = keras.layers.Dense(2 * latent_dim, dtype=likelihood_dtype(policy))

    def _in_order(self):
        """The sub-layers `call` applies, in order."""
        convs = [getattr(self, f"conv{i}") for i in range(self.num_convs)]
        return [*convs, self.flatten, self.dense]

    def build(self, y_shape, cbcr_shape=None):
        """Builds the layers for `call`'s inputs' shapes (colour if `cbcr_shape`)."""
        channels = 1 if cbcr_shape is None else 3
        _chain(self._in_order(), (*y_shape, channels), build=True)

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "image_size": self.image_size,
            "filters": self.filters,
            "chroma_factor": self.chroma_factor,
        }

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
            h = tf.concat([h, tf.cast(chroma, h.dtype) - 0.5], axis=-1)
        for layer in self._in_order():
            h = layer(h)
        mean, log_scale = tf.split(h, 2, axis=-1)
        return mean, log_scale


def trunk_policy(policy):
    """The dtype policy of the decoder's trunks in a `VAE` of `policy`.

    The model's own, but float32 (`likelihood_dtype`) under
    `mixed_bfloat16`: trained with a bfloat16 trunk (8 significant bits),
    `vae_diag` fit its training images less well and its held-out NLL was
    worse than float32's in each of five seeds (by 0.004-0.18 bits/dim,
    0.045 in the median), also with the trunk's first or last two layers
    alone in float32; with the whole trunk in float32 it is within the
    spread of float32's own runs. The encoder in bfloat16 costs nothing
    measurable, and float16's 11 bits need no exception (measurements:
    benchmarks/log/likelihood.md).

    Args:
      policy: a `keras.DTypePolicy`.

    Returns:
      A `keras.DTypePolicy` or `policy` itself.
    """
    if policy.compute_dtype == "bfloat16":
        return keras.DTypePolicy(likelihood_dtype(policy))
    return policy


@keras.saving.register_keras_serializable(package="svae")
class Trunk(keras.layers.Layer):
    """The decoder's shared trunk: `z` to feature maps at each resolution.

    Every layer computes in the layer's compute dtype; the `VAE` chooses it
    (`trunk_policy`).
    """

    def __init__(self, image_size, filters, **kwargs):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.filters = filters
        widths = _widths(image_size, filters)
        policy = self.dtype_policy
        self.dense = keras.layers.Dense(
            16 * widths[-1], activation="relu", dtype=policy
        )
        self.reshape = keras.layers.Reshape((4, 4, widths[-1]), dtype=policy)
        self.num_deconvs = len(widths)
        for i, width in enumerate(reversed([filters] + widths[:-1])):
            deconv = keras.layers.Conv2DTranspose(
                width, 4, strides=2, padding="same", activation="relu", dtype=policy
            )
            setattr(self, f"deconv{i}", deconv)

    def _in_order(self):
        """The sub-layers `call` applies, in order."""
        deconvs = [getattr(self, f"deconv{i}") for i in range(self.num_deconvs)]
        return [self.dense, self.reshape, *deconvs]

    def build(self, z_shape):
        _chain(self._in_order(), z_shape, build=True)

    def compute_output_shape(self, z_shape):
        """Returns `call`'s output shapes: a dict from side to shape."""
        shapes = _chain(self._in_order(), z_shape)[1:]
        return {shape[1]: shape for shape in shapes}

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "filters": self.filters,
        }

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


@keras.saving.register_keras_serializable(package="svae")
class VAE(keras.Model):
    """Every model of the paper: the encoder, the decoder trunk and its heads.

    All variants share the same encoder, trunk, mean heads and spherical
    scales (`y_log_scale`, `cbcr_log_scale`), so a `vae_sph` checkpoint
    initialises the others. Model-specific heads:

    - `vae_diag`, `beta_vae_diag`: `y_scale_head`, per-pixel log scale of Y.
    - `structured`: `precision_head` (`L` of Y) and `cbcr_scale_head`
      (per-pixel Cb, Cr scales, eq. 10-11) on the shared trunk.
    - `supn`: a separate `covariance_trunk` with the same two heads.

    The likelihood's options (`likelihood`, an `svae.recipes.Likelihood` or
    a recipe's name) decide the factor of `L` and whether Y's scales get a
    per-image `contrast_scale`; the default recipe's by default.

    `build` creates every variable from the batch's shapes, without a call;
    `get_config` holds the arguments (the likelihood as its fields), so
    `keras.saving` round-trips the model.
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
        dilation=1,
        likelihood=DEFAULT,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_policy(self, kwargs.get("dtype"))
        # The encoder runs in the policy's compute dtype (16 bits under the
        # mixed policies), the trunks in `trunk_policy`'s; the heads, whose
        # outputs parameterise the likelihood, in float32 (float64 under
        # float64), see `svae.heads`.
        policy = self.dtype_policy
        exact = likelihood_dtype(policy)
        self.model_name = model
        likelihood = Likelihood.of(likelihood)
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.filters = filters
        self.color = color
        self.chroma_factor = chroma_factor
        self.kernel_size = kernel_size
        self.num_basis = num_basis
        self.dilation = dilation
        self.variant = VARIANTS[model]
        self.structure = Structure(
            structure_kernel(likelihood.factor, kernel_size), dilation
        )
        self.use_chroma = color == "ycbcr"
        self.image_size = image_size
        self.chroma_size = image_size // chroma_factor
        self.encoder = Encoder(
            latent_dim, image_size, filters, chroma_factor, dtype=policy
        )
        self.trunk = Trunk(image_size, filters, dtype=trunk_policy(policy))
        self.y_mean_head = conv(1, "y_mean", dtype=exact)
        self.y_log_scale = self.add_weight(
            shape=(), initializer="zeros", name="y_log_scale", autocast=False
        )
        if self.use_chroma:
            self.cbcr_mean_head = conv(2, "cbcr_mean", dtype=exact)
            self.cbcr_log_scale = self.add_weight(
                shape=(), initializer="zeros", name="cbcr_log_scale", autocast=False
            )
        self.uncertainty_layers = []
        if self.variant.y_likelihood == "diagonal":
            # Zeros, offset by y_log_scale: starts as the spherical likelihood.
            self.y_scale_head = conv(1, "y_scale", "zeros", dtype=exact)
        if self.variant.covariance_trunk:
            self.covariance_trunk = Trunk(
                image_size, filters, dtype=trunk_policy(policy)
            )
            self.uncertainty_layers.append(self.covariance_trunk)
        if self.variant.structured:
            self.precision_head = PrecisionHead(
                kernel_size,
                num_basis,
                likelihood.factor,
                likelihood.dominance,
                dilation,
                likelihood.borders,
                dtype=exact,
            )
            self.uncertainty_layers.append(self.precision_head)
            if self.use_chroma and likelihood.chroma == "structured":
                # One factor for each of Cb and Cr, on the chroma-size features.
                self.cb_precision_head = PrecisionHead(
                    kernel_size,
                    num_basis,
                    likelihood.factor,
                    likelihood.dominance,
                    dilation,
                    # Y's only: at the chroma size the border rows and
                    # columns are nearly half the pixels, and the offsets
                    # cost the chroma means (benchmarks/log/likelihood.md).
                    borders=False,
                    name="cb_precision",
                    dtype=exact,
                )
                self.cr_precision_head = PrecisionHead(
                    **self.cb_precision_head.arguments(),
                    name="cr_precision",
                    dtype=exact,
                )
                self.uncertainty_layers += [
                    self.cb_precision_head,
                    self.cr_precision_head,
                ]
            elif self.use_chroma:
                self.cbcr_scale_head = conv(2, "cbcr_scale", "zeros", dtype=exact)
                self.uncertainty_layers.append(self.cbcr_scale_head)
        self.contrast_scale = None
        if likelihood.contrast_scale and self.variant.y_likelihood != "spherical":
            self.contrast_scale = ContrastScale(name="contrast_scale", dtype=exact)
            if self.variant.structured:
                self.uncertainty_layers.append(self.contrast_scale)

    def build(self, input_shape):
        """Builds every sub-layer for batches of `input_shape`.

        Args:
          input_shape: the batch dict's shapes: `y`'s and, with colour,
            `cbcr`'s (see `call`).
        """
        self.encoder.build(input_shape["y"], input_shape.get("cbcr"))
        z_shape = (input_shape["y"][0], self.latent_dim)
        features = self.trunk.compute_output_shape(z_shape)
        self.trunk.build(z_shape)
        if self.variant.covariance_trunk:
            self.covariance_trunk.build(z_shape)
        # The heads this model has, on the features of Y's or the chroma's size.
        for side, names in (
            (self.image_size, ("y_mean_head", "y_scale_head", "precision_head")),
            (
                self.chroma_size,
                (
                    "cbcr_mean_head",
                    "cbcr_scale_head",
                    "cb_precision_head",
                    "cr_precision_head",
                ),
            ),
        ):
            for name in names:
                if hasattr(self, name):
                    getattr(self, name).build(features[side])
        if self.contrast_scale is not None:
            self.contrast_scale.build(input_shape["y"])

    def get_config(self):
        arguments = {
            name: getattr(self, name)
            for name in _VAE_FIELDS
            if name not in ("model", "likelihood")
        }
        return {
            **super().get_config(),
            **arguments,
            "model": self.model_name,
            "likelihood": self.likelihood.to_dict(),
        }

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
          `off_diag` `[batch, H, W, K]` (with the "full_product" factor also
          its factors `factor_a`, `factor_b` `[batch, H, W, k]`); with colour,
          `cbcr_mean` `[batch, H/f, W/f, 2]` and either `cbcr_log_scale`
          `[batch, H/f, W/f, 2]` or, with the structured chroma, Cb's and
          Cr's factors channel first: `cbcr_log_diag` `[batch, 2, H/f, W/f]`,
          `cbcr_off_diag` `[batch, 2, H/f, W/f, K]` (and `cbcr_factor_a`,
          `cbcr_factor_b` with "full_product").
        """
        features = self.trunk(z)
        variant = VARIANTS["vae_sph"] if spherical else self.variant
        kind, separate = variant.y_likelihood, variant.covariance_trunk
        size, low = self.image_size, self.chroma_size
        chroma = None
        if self.use_chroma:
            chroma = "spherical" if kind == "spherical" else "scales"
            if kind == "structured" and self.likelihood.chroma == "structured":
                chroma = "structured"
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
            if chroma == "scales":
                cbcr_heads.append(self.cbcr_scale_head)
                cbcr_shift += [self.cbcr_log_scale] * 2
        y_mean, *y_scale = pointwise(features[size], y_heads, splits, y_shift)
        outputs = {"y_mean": tf.squeeze(y_mean, -1)}
        offset = None
        if self.contrast_scale is not None and kind != "spherical":
            offset = self.contrast_scale(outputs["y_mean"])
        cbcr_scale = []
        if self.use_chroma:
            outputs["cbcr_mean"], *cbcr_scale = pointwise(
                features[low], cbcr_heads, None, cbcr_shift
            )
        if separate:
            features = self.covariance_trunk(z)
            y_scale = None  # The precision head applies its own convolution.
            if chroma == "scales":
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
            if offset is not None:
                outputs["y_log_scale"] += offset[:, None, None]
        else:
            log_diag, off_diag, factors = self.precision_head(
                features[size],
                y_scale,
                log_scale=self.y_log_scale,
                offset=offset,
                with_factors=True,
            )
            outputs.update(log_diag=log_diag, off_diag=off_diag)
            if factors is not None:
                outputs["factor_a"], outputs["factor_b"] = factors
        if chroma == "structured":
            outputs.update(self._chroma_factors(features[low]))
        elif chroma is not None:
            if cbcr_scale:
                scale = cbcr_scale[0]
            else:
                scale = tf.broadcast_to(
                    self.cbcr_log_scale, tf.shape(outputs["cbcr_mean"])
                )
            outputs["cbcr_log_scale"] = scale
        return outputs

    def _chroma_factors(self, features):
        """Returns the structured chroma's outputs (see `decode`).

        Without a basis the two heads' maps from their convolution to `L`
        have no variables: one convolution for both, then one map over Cb's
        and Cr's parts stacked along the batch (a step pays for the map's
        ops once, which at the chroma size is most of their cost).
        """
        cb, cr = self.cb_precision_head, self.cr_precision_head
        log_scale = self.cbcr_log_scale
        if cb.num_basis:
            parts = [
                head(features, log_scale=log_scale, with_factors=True)
                for head in (cb, cr)
            ]
            log_diag, off_diag = (tf.stack([p[i] for p in parts], 1) for i in (0, 1))
            factors = parts[0][2] and [
                tf.stack([p[2][i] for p in parts], 1) for i in (0, 1)
            ]
        else:
            split = pointwise(
                features,
                [cb.weights_conv, cr.weights_conv],
                cb.splits + cr.splits,
                cb.shift(log_scale) + cr.shift(log_scale),
            )
            stacked = [tf.concat([split[i], split[i + 2]], axis=0) for i in (0, 1)]
            log_diag, off_diag, factors = cb(
                features, stacked, log_scale=log_scale, with_factors=True
            )

            def by_channel(values):
                """`[2 batch, ...]` (Cb's, then Cr's) -> `[batch, 2, ...]`."""
                return tf.stack(tf.split(values, 2, axis=0), axis=1)

            log_diag, off_diag = by_channel(log_diag), by_channel(off_diag)
            factors = factors and [by_channel(f) for f in factors]
        outputs = {"cbcr_log_diag": log_diag, "cbcr_off_diag": off_diag}
        if factors:
            outputs["cbcr_factor_a"], outputs["cbcr_factor_b"] = factors
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
    "dilation",
    "likelihood",
)


def build_model(config):
    """Builds and initialises the model a config describes.

    Args:
      config: an `svae.config.Config`.

    Returns:
      A built `VAE`.
    """
    model = VAE(
        **{name: getattr(config, name) for name in _VAE_FIELDS},
        dtype=config.precision,
    )
    size, low = config.image_size, config.image_size // config.chroma_factor
    inputs = {"y": tf.zeros([1, size, size])}
    if config.color == "ycbcr":
        inputs["cbcr"] = tf.zeros([1, low, low, 2])
    model(inputs)
    model(inputs, spherical=True)
    return model
