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
`marginal_variance()`. The precision factor comes from
`svae.heads.PrecisionHead`, which the paper's VAEs (`svae.models`) use too:
one implementation for them and for any image model.

The output is float32 under every policy but float64 (float64 then):
under `mixed_float16` or `mixed_bfloat16` the head's convolutions run in 16
bits and the likelihood in float32 (`svae.heads.likelihood_dtype`).
"""

import math
import numbers

import keras
import tensorflow as tf

from svae.distributions import SparsePrecisionGaussian, Structure
from svae.heads import (
    LIKELIHOOD_DTYPES,
    PrecisionHead,
    check_policy,
    likelihood_dtype,
    pointwise,
)
from svae.linalg import neighbour_offsets, num_off_diagonals
from svae.recipes import DEFAULT

__all__ = [
    "LIKELIHOOD_DTYPES",
    "SparsePrecisionGaussianHead",
    "as_images",
    "check_structure",
    "kernel_size_of",
    "params_size",
    "serving_outputs",
    "to_distribution",
    "unpack",
]


def _structure(kernel_size, dilation):
    """`(kernel_size, dilation)` from ints or a `Structure`."""
    if isinstance(kernel_size, Structure):
        return kernel_size.kernel_size, kernel_size.dilation
    return kernel_size, dilation


def check_structure(kernel_size=3, dilation=1):
    """Raises ValueError unless `kernel_size` is odd >= 3 and `dilation` >= 1.

    Both must be integers (Python or numpy; 3.5 is not truncated); the
    message names the argument, its value and what is allowed.
    """
    neighbour_offsets(kernel_size, dilation)


def params_size(kernel_size=3):
    """Channels of the head's output: `2 + K` (loc, log_diag, K off-diagonals).

    Args:
      kernel_size: odd neighbourhood size, >= 3, or a `Structure`.

    Returns:
      A Python int.
    """
    kernel_size, _ = _structure(kernel_size, 1)
    neighbour_offsets(kernel_size, 1)  # Validates it.
    return 2 + num_off_diagonals(kernel_size)


def kernel_size_of(channels):
    """The neighbourhood of `L` whose head output has `channels` channels.

    `channels = 2 + (k**2 - 1) // 2` for an odd `k >= 3`, so the count names
    `k` (not the dilation).

    Raises:
      ValueError: no odd `k >= 3` has that many channels.
    """
    twice = 2 * (int(channels) - 2) + 1
    kernel_size = math.isqrt(max(twice, 0))
    if kernel_size < 3 or kernel_size % 2 == 0 or kernel_size**2 != twice:
        raise ValueError(
            f"params must have 2 + (k**2 - 1) // 2 channels (loc, log_diag and "
            f"the off-diagonals of L for an odd k >= 3: 6, 14, 26, ...); got "
            f"{channels}."
        )
    return kernel_size


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


def to_distribution(params, kernel_size=None, dilation=1, validate_args=False):
    """Returns the `SparsePrecisionGaussian` that the head's output describes.

    Args:
      params: `[..., H, W, 2 + K]`, `SparsePrecisionGaussianHead`'s output.
      kernel_size: the neighbourhood of `L` (`head.structure.kernel_size`),
        or the head's `structure` (then `dilation` is ignored); None reads
        it from the channel count (`kernel_size_of`).
      dilation: the head's `dilation`.
      validate_args: passed to the distribution.

    Returns:
      A `SparsePrecisionGaussian` with batch shape `[...]`, event `[H, W]`.

    Raises:
      ValueError: if the channel count is not `params_size(kernel_size)`.
    """
    kernel_size, dilation = _structure(kernel_size, dilation)
    params = tf.convert_to_tensor(params)
    if kernel_size is None:
        kernel_size = kernel_size_of(params.shape[-1])
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


def serving_outputs(params, images, seed, kernel_size=None, dilation=1):
    """The tensors an exported signature returns, from the head's output.

    Args:
      params: `[batch, H, W, 2 + K]`, the head's output.
      images: `[batch, H, W]` (or `[batch, H, W, 1]`) images to score.
      seed: int32 `[2]` stateless seed of the sample (same seed, same sample).
      kernel_size: as for `to_distribution`: the neighbourhood of `L`, the
        head's `structure`, or None (read from the channel count).
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
    "bounded": one dominant factor; "free": unconstrained, the paper's;
    `svae.factors`), the default recipe's by default. The
    precision branch starts at zero, i.e. as the spherical Gaussian of scale
    `exp(log_scale)`.

    The output is one tensor, `[batch, H, W, params_size(kernel_size)]`,
    packed as `unpack` reads it: give it to `svae.losses.SparsePrecisionNLL`
    in `compile(loss=...)`, and to `to_distribution` (or `self.distribution`)
    for `sample`, `log_prob`, `conditional` and `marginal_variance`. It is
    float32 under the float32 and the mixed policies (whose 16-bit compute
    dtype runs the 1x1 convolutions only: the triangular solves and the
    log-determinant need float32), float64 under float64; policies with
    16-bit variables are refused.

    Example:

    ```none
    inputs = keras.Input([32, 32, 3])
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    params = SparsePrecisionGaussianHead(kernel_size=3)(h)   # [b, 32, 32, 14]
    model = keras.Model(inputs, params)
    model.compile("adam", loss=svae.losses.SparsePrecisionNLL())
    ```
    """

    def __init__(
        self,
        kernel_size=3,
        dilation=1,
        num_basis=0,
        factor=DEFAULT.factor,
        dominance=DEFAULT.dominance,
        log_scale=0.0,
        borders=DEFAULT.borders,
        **kwargs,
    ):
        """Creates the head.

        Args:
          kernel_size: odd neighbourhood size of `L`, >= 3.
          dilation: spacing of the neighbourhood, >= 1.
          num_basis: 0 predicts `L`'s `K + 1` entries per pixel directly;
            `> 0` predicts `num_basis` weights per pixel, mapped to them by a
            learned basis (section 4.3).
          factor: "full_product", "product", "bounded" or "free"
            (`svae.factors`); the default recipe's by default.
          dominance: bound of the off-diagonal mass relative to the
            diagonal for all but "free", in (0, 1).
          log_scale: log of the standard deviation the head starts from
            (`log_diag` starts at `-log_scale`), a finite number.
          borders: learn offsets of `L`'s entries on the rows and columns
            at the image's borders (`svae.heads.PrecisionHead`); needs H
            and W known when the head is called.
          **kwargs: `keras.layers.Layer`'s (`name`, `dtype`, ...); `dtype`
            (None: the global policy) "float32", "float64", "mixed_float16"
            or "mixed_bfloat16" (or a `keras.DTypePolicy`), passed on to the
            inner layers.

        Raises:
          ValueError: for an argument outside its allowed values (the message
            names it, its value and what is allowed), or a dtype policy with
            float16 or bfloat16 variables (pass its mixed policy instead).
        """
        super().__init__(**kwargs)
        check_policy(self, kwargs.get("dtype"))
        if (
            not isinstance(log_scale, numbers.Real)
            or isinstance(log_scale, bool)
            or not math.isfinite(log_scale)
        ):
            raise ValueError(
                f"log_scale must be a finite number (the log of the standard "
                f"deviation the head starts from), got {log_scale!r}."
            )
        self.log_scale = float(log_scale)
        self.loc_conv = keras.layers.Conv2D(1, 1, name="loc", dtype=self.dtype_policy)
        # Holds (and checks) the structure and the factor's options.
        self.precision = PrecisionHead(
            kernel_size,
            num_basis,
            factor,
            dominance,
            dilation,
            borders,
            name="precision",
            dtype=self.dtype_policy,
        )

    @classmethod
    def from_config(cls, config):
        """Builds the head from `get_config`'s output, or an older build's.

        Older builds had a `max_scale` option, always None unless set; a
        head saved with one set cannot be rebuilt by this build. Older
        builds had no border offsets (`borders` missing: False).
        """
        config = {"borders": False, **config}
        max_scale = config.pop("max_scale", None)
        if max_scale is not None:
            raise ValueError(
                f"This head was saved with max_scale={max_scale!r}, an option "
                "svae no longer has (measurements rejected it); rebuild it "
                "without, or load it with the svae release that saved it."
            )
        return super().from_config(config)

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
        """The `svae.distributions.Structure` of `L`."""
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
          `[batch, H, W, 2 + K]`: loc, log_diag, off_diag (see `unpack`), in
          `svae.heads.likelihood_dtype(self.dtype_policy)`.
        """
        head = self.precision
        # One convolution for both heads, as svae.models.VAE does, in the
        # compute dtype; the precision head returns the likelihood's dtype.
        loc, *parts = pointwise(
            features,
            [self.loc_conv, head.weights_conv],
            [1, *head.splits],
            [0.0, *head.shift(self.log_scale)],
        )
        log_diag, off_diag = head(features, parts, log_scale=self.log_scale)
        loc = tf.cast(loc, log_diag.dtype)
        return tf.concat([loc, log_diag[..., None], off_diag], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], params_size(self.structure))

    def compute_output_spec(self, features):
        """The output's `keras.KerasTensor`: float32 also under the mixed policies."""
        return keras.KerasTensor(
            self.compute_output_shape(features.shape),
            dtype=likelihood_dtype(self.dtype_policy),
        )

    def get_config(self):
        return {
            **super().get_config(),
            **self.precision.arguments(),
            "log_scale": self.log_scale,
        }
