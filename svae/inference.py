"""What the figures show, computed from a model: samples, reconstructions, std.

Prior samples (Figures 4 and 6): for `z ~ N(0, T^2 I)` the mean `mu(z)` and a
full sample `mu + T * epsilon`. Reconstructions (Figures 1, 3 and 5): the
input, the mean at the posterior mean `z`, the actual residual `y - mu` of Y,
a residual sample `epsilon` and the full sample `mu + T * epsilon`.
Inpainting: the likelihood conditioned on the observed pixels. The
per-pixel standard deviation of Y: exact for the structured models
(`SparsePrecisionGaussian.marginal_variance`), `exp(y_log_scale)` for the
factorised ones. Every random draw uses a stateless seed. `svae.drawing`
turns the arrays into pictures.
"""

import numpy as np
import tensorflow as tf
from PIL import Image

from svae import likelihoods
from svae.distributions import SparsePrecisionGaussian

__all__ = [
    "inpaint",
    "inpainting_mask",
    "prior_samples",
    "reconstructions",
    "y_std",
]


def y_std(outputs, config, method="exact", seed=(0, 0)):
    """Returns the per-pixel standard deviation of Y under `p(x|z)`.

    Args:
      outputs: a model's output dict.
      config: the run's `Config` (kernel size and dilation of `L`).
      method: for the structured models, "exact" (`diag(Lambda^{-1})` by
        wavefront solves, about a second per 64x64 image on a CPU) or
        "sample" (1000 samples, about 4% relative error); factorised models
        are always exact.
      seed: stateless seed for `method="sample"`.

    Returns:
      `[n, H, W]` numpy standard deviations.
    """
    if not likelihoods.is_structured(outputs):
        return np.exp(outputs["y_log_scale"].numpy())
    dist = SparsePrecisionGaussian(
        outputs["y_mean"],
        outputs["log_diag"],
        outputs["off_diag"],
        **config.structure.kwargs,
    )
    variance = dist.marginal_variance(method=method, seed=seed)
    return np.sqrt(variance.numpy())


def _tempered(mean, drawn, temperature):
    """Returns `mean + temperature * (drawn - mean)` per channel group."""
    return {
        name: mean[name] + temperature * (drawn[name] - mean[name]) for name in mean
    }


def _draw(model, config, z, seed, temperature):
    """Decodes `z`; returns the outputs, RGB mean, RGB sample and Y residual."""
    outputs = model.decode(z)
    structure = config.structure
    drawn = likelihoods.sample(outputs, tf.constant(seed, tf.int32), structure)
    mean = likelihoods.means(outputs)
    full = _tempered(mean, drawn, temperature)
    factor = config.chroma_factor
    return (
        outputs,
        likelihoods.to_rgb(mean, factor).numpy(),
        likelihoods.to_rgb(full, factor).numpy(),
        (full["y"] - mean["y"]).numpy(),
    )


def prior_samples(model, config, num, seed=0, temperature=1.0):
    """Returns samples of the generative model (Figures 4 and 6).

    Args:
      model: a restored `VAE`.
      config: its `Config`.
      num: number of samples.
      seed: int seed; the same seed gives the same samples.
      temperature: scales the latent prior's and the residual's standard
        deviations.

    Returns:
      A dict of numpy arrays: `mean`, `sample` `[num, H, W, 3]` RGB in [0, 1],
      `residual` `[num, H, W]` (Y, unscaled) and `outputs` (the decoder's).
    """
    z = temperature * tf.random.stateless_normal(
        [num, config.latent_dim], seed=[seed, 0], alg="philox"
    )
    outputs, mean, sample, residual = _draw(model, config, z, [seed, 1], temperature)
    return {"mean": mean, "sample": sample, "residual": residual, "outputs": outputs}


def reconstructions(model, config, batch, seed=0, temperature=1.0):
    """Returns reconstructions of input images (Figures 1, 3 and 5).

    Args:
      model: a restored `VAE`.
      config: its `Config`.
      batch: an input batch dict (`y`, `rgb`, `cbcr` with colour).
      seed: int seed of the residual noise.
      temperature: scales the residual's standard deviation.

    Returns:
      A dict of numpy arrays: `input`, `mean`, `sample` `[n, H, W, 3]` RGB,
      `residual` `[n, H, W]` (the sampled residual of Y, unscaled),
      `actual` `[n, H, W]` (the actual residual of Y, `y - mu`: what
      `residual` models) and `outputs`.
    """
    z_mean, _ = model.encode(batch["y"], batch.get("cbcr"))
    outputs, mean, sample, residual = _draw(
        model, config, z_mean, [seed, 2], temperature
    )
    actual = np.asarray(batch["y"]) - likelihoods.means(outputs)["y"].numpy()
    if config.color == "ycbcr":
        shown = np.clip(np.asarray(batch["rgb"]), 0.0, 1.0)
    else:
        shown = likelihoods.to_rgb({"y": batch["y"]}, config.chroma_factor).numpy()
    return {
        "input": shown,
        "mean": mean,
        "sample": sample,
        "residual": residual,
        "actual": actual,
        "outputs": outputs,
    }


def inpainting_mask(kind, num, size, seed=0):
    """Returns a boolean `[num, size, size]` mask, True where a pixel is observed.

    Args:
      kind: `"center"` (a centred square of half the side is missing),
        `"random"` (each pixel missing with probability 1/2, seeded), or the
        path of an image whose light pixels (>= 128 in gray) mark what is
        missing, resized to `size` (nearest).
      num: number of images.
      size: image side.
      seed: seed of the random mask.

    Returns:
      A numpy boolean array.

    Raises:
      ValueError: a path that is not a readable image (`sample.py` checks
        `--mask` before any work: `svae.config.mask_image`).
    """
    if kind == "center":
        mask = np.ones((size, size), bool)
        low, high = size // 4, size - size // 4
        mask[low:high, low:high] = False
        return np.broadcast_to(mask, (num, size, size)).copy()
    if kind == "random":
        rng = np.random.default_rng(seed)
        return rng.random((num, size, size)) >= 0.5
    try:
        with Image.open(kind) as image:
            gray = image.convert("L").resize((size, size), Image.Resampling.NEAREST)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"--mask must be center, random or an image file; cannot read {kind!r}: {e}"
        ) from e
    return np.broadcast_to(np.asarray(gray) < 128, (num, size, size)).copy()


def inpaint(model, config, batch, mask, seed=0, temperature=1.0):
    """Fills the missing pixels of images from the model (issue 7).

    The latent is the encoder's mean for the image with its missing pixels
    replaced by the mean of its observed ones (a neutral fill: the encoder
    never saw holes), then `p(x|z)` is conditioned on the observed pixels
    (`svae.likelihoods.conditional`). A chroma pixel counts as observed only
    if all the Y pixels it covers are.

    Args:
      model: a restored `VAE`.
      config: its `Config`.
      batch: an input batch dict (`y`, `rgb`, `cbcr` with colour) of `n`
        images.
      mask: boolean `[m, H, W]`, True where observed, `m >= n`: the first
        `n` are used (`load_batch` gives fewer images than asked when a
        split has fewer, or its bad files are skipped).
      seed: int seed of the residual noise.
      temperature: scales the conditional residual.

    Returns:
      A dict of numpy arrays: `input`, `masked` (missing pixels gray),
      `reconstruction` (the unconditional mean), `mean` (the conditional
      mean) and `sample`, `[n, H, W, 3]` RGB; and `masks`, the dict of masks.

    Raises:
      ValueError: fewer masks than images.
    """
    num = int(batch["y"].shape[0])
    if len(mask) < num:
        raise ValueError(f"{len(mask)} masks for {num} images: one per image.")
    mask = tf.constant(np.asarray(mask)[:num])
    factor = config.chroma_factor
    weights = tf.cast(mask, tf.float32)
    fill = tf.reduce_sum(batch["y"] * weights, [1, 2]) / tf.maximum(
        tf.reduce_sum(weights, [1, 2]), 1.0
    )
    masks = {"y": mask}
    filled = {"y": tf.where(mask, batch["y"], fill[:, None, None])}
    if "cbcr" in batch:
        size = mask.shape[1] // factor
        blocks = tf.reshape(mask, [-1, size, factor, size, factor])
        chroma_mask = tf.reduce_all(blocks, axis=[2, 4])[..., None]
        masks["cbcr"] = tf.broadcast_to(chroma_mask, tf.shape(batch["cbcr"]))
        chroma_fill = tf.reduce_mean(batch["cbcr"], [1, 2], keepdims=True)
        filled["cbcr"] = tf.where(masks["cbcr"], batch["cbcr"], chroma_fill)
    z_mean, _ = model.encode(filled["y"], filled.get("cbcr"))
    outputs = model.decode(z_mean)
    structure = config.structure
    observed = {name: batch[name] for name in masks}
    mean, drawn = likelihoods.conditional(
        outputs, observed, masks, tf.constant([seed, 4], tf.int32), structure
    )
    full = _tempered(mean, drawn, temperature)
    recon = likelihoods.means(outputs)
    gray = {"y": tf.where(mask, batch["y"], 0.5)}
    if "cbcr" in batch:
        gray["cbcr"] = tf.where(masks["cbcr"], batch["cbcr"], 0.5)
    if config.color == "ycbcr":
        shown = np.clip(np.asarray(batch["rgb"]), 0.0, 1.0)
    else:
        shown = likelihoods.to_rgb({"y": batch["y"]}, factor).numpy()
    return {
        "input": shown,
        "masked": likelihoods.to_rgb(gray, factor).numpy(),
        "reconstruction": likelihoods.to_rgb(recon, factor).numpy(),
        "mean": likelihoods.to_rgb(mean, factor).numpy(),
        "sample": likelihoods.to_rgb(full, factor).numpy(),
        "y_mean": mean["y"].numpy(),
        "y_sample": full["y"].numpy(),
        "masks": {name: value.numpy() for name, value in masks.items()},
    }
