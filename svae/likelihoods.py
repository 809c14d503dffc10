"""The distributions of the paper, built from the models' output tensors.

One implementation of each formula, shared by training, evaluation, sampling
and export: the posterior and its KL to the prior (eq. 2-3), the joint YCbCr
likelihood (eq. 7-11; Y alone for gray images), the reconstruction error and
the L1 prior on the off-diagonal of `L` (eq. 12).
"""

import tensorflow as tf
import tensorflow_probability as tfp

from svae import color, xla
from svae.distributions import SparsePrecisionGaussian
from svae.linalg import off_diag_mask

tfd = tfp.distributions

__all__ = [
    "posterior",
    "prior",
    "kl_divergence",
    "likelihood",
    "log_likelihood",
    "log_likelihood_parts",
    "modelled_dims",
    "squared_error",
    "whitened_square_sums",
    "off_diag_l1",
    "sample",
    "conditional",
    "means",
    "to_rgb",
]


def posterior(z_mean, z_log_scale):
    """Returns `q(z|x)`, a diagonal Gaussian with event `[latent_dim]`.

    Args:
      z_mean: `[batch, latent_dim]`.
      z_log_scale: `[batch, latent_dim]`.

    Returns:
      A `tfd.MultivariateNormalDiag` with batch shape `[batch]`.
    """
    return tfd.MultivariateNormalDiag(z_mean, tf.exp(z_log_scale))


def prior(latent_dim, dtype=tf.float32):
    """Returns `p(z) = N(0, I)` over `[latent_dim]`."""
    return tfd.MultivariateNormalDiag(tf.zeros([latent_dim], dtype))


def kl_divergence(z_mean, z_log_scale):
    """Returns `KL[q(z|x) || p(z)]` in nats, analytically.

    Args:
      z_mean: `[batch, latent_dim]`.
      z_log_scale: `[batch, latent_dim]`.

    Returns:
      `[batch]` KL divergences.
    """
    q = posterior(z_mean, z_log_scale)
    return tfd.kl_divergence(q, prior(z_mean.shape[-1], z_mean.dtype))


def is_structured(outputs):
    """Whether a model's outputs give Y the structured likelihood (eq. 9).

    The one test of the likelihood's kind: `log_diag` and `off_diag` (the
    structured models after pretraining) or `y_log_scale` (factorised).
    """
    return "off_diag" in outputs


def _required(structure):
    """Returns `structure`, which a structured likelihood cannot do without."""
    if structure is None:
        raise ValueError(
            "The outputs hold a structured Y (off_diag): pass the factor's "
            "structure (config.structure or model.structure)."
        )
    return structure


def likelihood(outputs, structure=None):
    """Returns `p(x|z)` as a dict of distributions, one per channel group.

    Y has the structured likelihood (eq. 9) when `outputs` hold `log_diag`
    and `off_diag` (and, for the "full_product" factor, `factor_a` and
    `factor_b`, with which `log_prob` whitens), else a factorised Gaussian
    with `y_log_scale`; Cb and Cr (downsampled) are factorised Gaussians
    (eq. 10-11) with `cbcr_log_scale`, or, with the structured chroma
    (`cbcr_log_diag`, `cbcr_off_diag`), two independent
    `SparsePrecisionGaussian`s of the same structure, one per channel
    (`_channels_last`).

    Args:
      outputs: a model's output dict, see `svae.models.VAE.decode`.
      structure: the `svae.distributions.Structure` of `L` (`config.structure`,
        `model.structure`); required when Y is structured.

    Returns:
      `{"y": distribution over [H, W]}`, plus `"cbcr"` over `[H/f, W/f, 2]`
      with colour; batch shape `[batch]`.
    """
    if is_structured(outputs):
        y = SparsePrecisionGaussian(
            outputs["y_mean"],
            outputs["log_diag"],
            outputs["off_diag"],
            **_required(structure).kwargs,
            factor_a=outputs.get("factor_a"),
            factor_b=outputs.get("factor_b"),
        )
    else:
        y = tfd.Independent(
            tfd.Normal(outputs["y_mean"], tf.exp(outputs["y_log_scale"])), 2
        )
    parts = {"y": y}
    if "cbcr_log_diag" in outputs:
        parts["cbcr"] = _channels_last(
            SparsePrecisionGaussian(
                _channels_first(outputs["cbcr_mean"]),
                outputs["cbcr_log_diag"],
                outputs["cbcr_off_diag"],
                **_required(structure).kwargs,
                factor_a=outputs.get("cbcr_factor_a"),
                factor_b=outputs.get("cbcr_factor_b"),
            )
        )
    elif "cbcr_mean" in outputs:
        parts["cbcr"] = tfd.Independent(
            tfd.Normal(outputs["cbcr_mean"], tf.exp(outputs["cbcr_log_scale"])), 3
        )
    return parts


def _channels_first(images):
    """`[..., H, W, C]` -> `[..., C, H, W]`."""
    rank = len(images.shape)
    return tf.transpose(images, [*range(rank - 3), rank - 1, rank - 3, rank - 2])


def _channels_last(fields):
    """A distribution over `[H, W, C]` from one over `C` fields `[H, W]`.

    `fields` has batch shape `[batch, C]`: the channels are independent,
    and moved last as the batch holds them (a transpose: no volume change).
    """
    return tfd.TransformedDistribution(
        tfd.Independent(fields, reinterpreted_batch_ndims=1),
        tfp.bijectors.Transpose(perm=[1, 2, 0]),
    )


def log_likelihood(outputs, batch, structure=None):
    """Returns `log p(x|z)` of eq. 8, `[batch]` in nats: the sum over the groups.

    The arguments are `log_likelihood_parts`'.
    """
    parts = log_likelihood_parts(outputs, batch, structure)
    return tf.add_n(list(parts.values()))


def log_likelihood_parts(outputs, batch, structure=None):
    """Returns eq. 8's factors: `{group: log p(x_group|z)}`, `[batch]` each.

    Args:
      outputs: a model's output dict.
      batch: a dict with `y` `[batch, H, W]` and, with colour, `cbcr`.
      structure: the `svae.distributions.Structure` of `L` (`config.structure`,
        `model.structure`); required when Y is structured.

    Returns:
      `{"y": [batch]}`, plus `"cbcr"` with colour, in nats.
    """
    parts = likelihood(outputs, structure)
    return {name: dist.log_prob(batch[name]) for name, dist in parts.items()}


def modelled_dims(config):
    """Returns `{"y", "cbcr", "total"}`: how many values the likelihood models."""
    size = config.image_size
    dims = {"y": size * size, "cbcr": 0}
    if config.color == "ycbcr":
        dims["cbcr"] = 2 * (size // config.chroma_factor) ** 2
    dims["total"] = dims["y"] + dims["cbcr"]
    return dims


def squared_error(outputs, batch):
    """Returns `||x - mu||^2` over Y and (downsampled) CbCr, eq. 12's variance term.

    Args:
      outputs: a model's output dict.
      batch: the input batch dict.

    Returns:
      `[batch]` sums of squared errors.
    """
    error = tf.reduce_sum(tf.square(batch["y"] - outputs["y_mean"]), axis=[1, 2])
    if "cbcr_mean" in outputs:
        error += tf.reduce_sum(
            tf.square(batch["cbcr"] - outputs["cbcr_mean"]), axis=[1, 2, 3]
        )
    return error


def whitened_square_sums(outputs, batch, structure=None, log_probs=None):
    """Returns `||w||^2` per image and channel group, `w` the whitened residual.

    `w = L^T (x - mu)` for the structured Y, `(x - mu) / sigma` for a
    factorised group: `N(0, I)` when the model is calibrated, so
    `mean(w^2) = 1` at the likelihood's optimum over a global scale of the
    group (`svae.training` calibrates the scales with it). Read off each
    group's log-density and entropy, `||w||^2 = n - 2 (log p(x) + H)` for a
    Gaussian of `n` values, so a caller that has the log-densities (the
    training step) pays no second pass of `L^T (x - mu)`.

    Args:
      outputs: a model's output dict.
      batch: the input batch dict.
      structure: the `svae.distributions.Structure` of `L` (`config.structure`,
        `model.structure`); required when Y is structured.
      log_probs: `log_likelihood_parts(outputs, batch, ...)` when the caller
        has it; None computes it.

    Returns:
      `{"y": [batch]}`, plus `"cbcr"` with colour.
    """
    parts = likelihood(outputs, structure)
    if log_probs is None:
        log_probs = {name: dist.log_prob(batch[name]) for name, dist in parts.items()}
    return {
        name: dist.event_shape.num_elements() - 2.0 * (log_probs[name] + dist.entropy())
        for name, dist in parts.items()
    }


def off_diag_l1(outputs, structure=None):
    """Returns `sum |L_ij|, i != j` over the entries inside the image (eq. 12).

    With `L^T = D (I + A)(I + B)` in factors (`factor_a`, `factor_b`), the
    sum over the factors' off-diagonals, `sum |D A| + |D B|`: the same
    sparsity prior on what the head predicts, and it scales with `D` as
    `L`'s does, without forming `L`.

    Args:
      outputs: a model's output dict with `off_diag` `[batch, H, W, K]`.
      structure: the `svae.distributions.Structure` of `L` (`config.structure`,
        `model.structure`); required when Y is structured.

    Returns:
      `[batch]` L1 norms; zeros when the model has no off-diagonals.
    """
    if not is_structured(outputs):
        return tf.zeros_like(outputs["y_mean"][:, 0, 0])
    structure = _required(structure)
    if "factor_a" in outputs:
        kernel_size = (structure.kernel_size + 1) // 2
        height, width = outputs["factor_a"].shape[1:3]
        mask = off_diag_mask(
            height, width, kernel_size, structure.dilation, outputs["log_diag"].dtype
        )
        return _factors_l1(
            outputs["log_diag"], outputs["factor_a"], outputs["factor_b"], mask
        )
    off_diag = outputs["off_diag"]
    height, width = off_diag.shape[1], off_diag.shape[2]
    mask = off_diag_mask(height, width, **structure.kwargs, dtype=off_diag.dtype)
    return _masked_l1(off_diag, mask)


@xla.kernel
def _factors_l1(log_diag, first, second, mask):
    """`sum |D A| + |D B|` over the entries inside the image, per image."""
    mass = tf.reduce_sum((tf.abs(first) + tf.abs(second)) * mask, axis=-1)
    return tf.reduce_sum(tf.exp(log_diag) * mass, axis=[1, 2])


@tf.custom_gradient
def _masked_l1(off_diag, mask):
    """`sum |off_diag| * mask` per image, with its gradient one XLA kernel.

    Autodiff's gradient is four passes over `[batch, H, W, K]` (broadcast the
    upstream, multiply by the mask, take the sign, multiply); the kernel's is
    one.
    """

    def grad(upstream):
        return _masked_l1_grad(upstream, off_diag, mask), None

    return tf.reduce_sum(tf.abs(off_diag) * mask, axis=[1, 2, 3]), grad


@xla.kernel
def _masked_l1_grad(upstream, off_diag, mask):
    """The gradient of `_masked_l1`: `upstream * sign(off_diag) * mask`."""
    return upstream[:, None, None, None] * tf.sign(off_diag) * mask


def sample(outputs, seed, structure=None):
    """Draws one image per batch element from `p(x|z)` with a stateless seed.

    Args:
      outputs: a model's output dict.
      seed: int32 `[2]` stateless seed.
      structure: the `svae.distributions.Structure` of `L` (`config.structure`,
        `model.structure`); required when Y is structured.

    Returns:
      A dict like the input batch: `y` `[batch, H, W]`, `cbcr` with colour.
    """
    parts = likelihood(outputs, structure)
    seeds = tfp.random.split_seed(seed, n=len(parts))
    return {
        name: dist.sample(seed=part_seed)
        for (name, dist), part_seed in zip(parts.items(), seeds, strict=True)
    }


def conditional(outputs, observed, masks, seed, structure=None):
    """Mean and one sample of `p(x|z)` given the observed pixels of `x`.

    Structured parts (Y of the structured models, and their Cb and Cr with
    the structured chroma) are conditioned exactly
    (`SparsePrecisionGaussian.conditional`: the unobserved pixels follow the
    Gaussian given the observed ones); factorised parts keep their observed
    pixels and draw the others independently.

    Args:
      outputs: a model's output dict.
      observed: a batch dict (`y`, `cbcr` with colour) holding the observed
        values.
      masks: a dict like `observed` of booleans, True where observed.
      seed: int32 `[2]` stateless seed.
      structure: the `svae.distributions.Structure` of `L` (`config.structure`,
        `model.structure`); required when Y is structured.

    Returns:
      `(mean, sample)`: dicts like `observed`, full images in which observed
      pixels keep their values.
    """
    parts = likelihood(outputs, structure)
    seeds = tfp.random.split_seed(seed, n=len(parts))
    mean, drawn = {}, {}
    for (name, dist), part_seed in zip(parts.items(), seeds, strict=True):
        known, mask = observed[name], masks[name]
        if isinstance(dist, SparsePrecisionGaussian):
            given = dist.conditional(known, mask)
            mean[name], drawn[name] = given.mean(), given.sample(seed=part_seed)
        elif isinstance(dist, tfd.TransformedDistribution):
            # The structured chroma: each channel's field conditioned alone.
            given = dist.distribution.distribution.conditional(
                _channels_first(known), _channels_first(mask)
            )
            mean[name] = dist.bijector.forward(given.mean())
            drawn[name] = dist.bijector.forward(given.sample(seed=part_seed))
        else:
            mean[name] = tf.where(mask, known, dist.mean())
            drawn[name] = tf.where(mask, known, dist.sample(seed=part_seed))
    return mean, drawn


def means(outputs):
    """Returns the likelihood's mean images as a batch-like dict (`y`, `cbcr`)."""
    parts = {"y": outputs["y_mean"]}
    if "cbcr_mean" in outputs:
        parts["cbcr"] = outputs["cbcr_mean"]
    return parts


def to_rgb(images, chroma_factor=4, clip=True):
    """Returns RGB `[batch, H, W, 3]` for a dict with `y` (and `cbcr`).

    The chroma is upsampled bilinearly (`svae.color.upsample_chroma`): what
    the figures, TensorBoard, the exported `*_rgb` outputs and the RGB MSE
    show, with no 4x4 colour blocks.
    """
    return color.merge_to_rgb(
        images["y"],
        images.get("cbcr"),
        chroma_factor=chroma_factor,
        method="bilinear",
        clip=clip,
    )
