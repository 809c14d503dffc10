"""Sample health: whether a trained run's samples look right, in numbers.

A model can have a good NLL and still draw useless samples: a structured
factor `L(z)` whose transpose is not diagonally dominant makes `L^-T eps`
grow along the solve (issue 12). `sample_health` measures it on held-out
images and on latents from the prior:

- `prior_diverged`: the share of prior samples (`z ~ N(0, I)`) whose residual
  of Y (sample minus mean) leaves [-1, 1] at more than 0.1% of its pixels;
  Y lives in [0, 1], so such a sample is saturated, not noisy. Non-finite
  values count as outside.
- `recon_diverged`: the same for one residual sample per reconstruction
  (latent: the posterior mean of a held-out image).
- `calibration_y`: per held-out image, the standard deviation of a sampled
  residual of Y over its pixels over the RMS of the actual residual
  `y - mu(z_mean)`; median and 95th percentile over the images. About 1
  for a calibrated model.
- `calibration_cbcr`: the same for Cb and Cr together, at their downsampled
  size (colour runs).
- `prior_cbcr_spread`: the RMS of the sampled Cb/Cr residual of the prior
  samples over the RMS of the actual Cb/Cr residual of the reconstructions.

Every draw uses a stateless seed: the same seed gives the same numbers. The
result is plain JSON (non-finite numbers become `"inf"` or None).
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from svae import config as config_lib
from svae import data, likelihoods, runs
from svae.distributions import SparsePrecisionGaussian

__all__ = [
    "DIVERGED_LIMIT",
    "DIVERGED_SHARE",
    "NUM_IMAGES",
    "NUM_PRIOR",
    "calibration",
    "divergence",
    "divergence_warning",
    "format_health",
    "format_number",
    "is_diverged",
    "run_health",
    "sample_health",
    "spread",
]

# Y lives in [0, 1]: a residual beyond +-1 takes the sample out of range
# whatever the mean, so it is a diverged solve, not noise.
DIVERGED_LIMIT = 1.0
# A sample diverges when more than this share of its pixels is beyond the
# limit: 4 of 4,096 pixels at 64x64 are tolerated as tails, 5 are not.
DIVERGED_SHARE = 0.001
# Prior samples and held-out images measured by default.
NUM_PRIOR = config_lib.HEALTH_PRIOR
NUM_IMAGES = config_lib.HEALTH_IMAGES


def _number(value):
    """Returns a strict-JSON number: a float, `"inf"`/`"-inf"`, or None for NaN."""
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _flat(values):
    """Returns `[n, -1]` float64 numpy values of a `[n, ...]` tensor or array."""
    values = np.asarray(values, np.float64)
    return values.reshape(values.shape[0], -1)


def is_diverged(residual):
    """Returns `[n]` booleans: whether each residual of Y has diverged.

    Args:
      residual: `[n, ...]` residuals (sample minus mean) of Y.

    Returns:
      A numpy boolean array, True where more than `DIVERGED_SHARE` of the
      sample's values are outside `[-DIVERGED_LIMIT, DIVERGED_LIMIT]` (NaN
      and infinities are outside).
    """
    values = _flat(residual)
    outside = np.sum(~(np.abs(values) <= DIVERGED_LIMIT), axis=1)
    return outside > DIVERGED_SHARE * values.shape[1]


def divergence(residual):
    """Returns how many residuals of Y diverged, and the largest one.

    Args:
      residual: `[n, ...]` residuals (sample minus mean) of Y.

    Returns:
      `{"share", "count", "num", "max_abs_residual"}`: the share and count of
      `is_diverged` samples out of `num`, and the largest `|residual|` over
      all values ignoring NaN (`"inf"` if infinite, None if all are NaN).
    """
    diverged = is_diverged(residual)
    magnitude = np.abs(_flat(residual))
    largest = np.nan
    if not np.isnan(magnitude).all():
        largest = np.nanmax(magnitude)
    return {
        "share": float(np.mean(diverged)),
        "count": int(np.sum(diverged)),
        "num": int(diverged.size),
        "max_abs_residual": _number(largest),
    }


def _percentile(values, q):
    """Returns numpy's linear-rule percentile; infinities sort last, no NaN."""
    values = np.sort(values)
    position = q / 100.0 * (values.size - 1)
    low, high = math.floor(position), math.ceil(position)
    if values[low] == values[high]:
        return values[low]
    return values[low] + (values[high] - values[low]) * (position - low)


def calibration(sampled, actual):
    """Returns the calibration of sampled residuals against actual ones.

    Per image: the standard deviation of the sampled residual over its
    values (pixels and channels) over the RMS of the actual residual. A
    non-finite ratio (a diverged sample, or a zero actual residual) counts
    as infinite.

    Args:
      sampled: `[n, ...]` one sampled residual (sample minus mean) per image.
      actual: `[n, ...]` actual residuals (image minus mean).

    Returns:
      `{"median", "p95"}` over the images.
    """
    with np.errstate(all="ignore"):
        ratio = np.std(_flat(sampled), axis=1) / np.sqrt(
            np.mean(np.square(_flat(actual)), axis=1)
        )
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    return {
        "median": _number(_percentile(ratio, 50.0)),
        "p95": _number(_percentile(ratio, 95.0)),
    }


def spread(sampled, actual):
    """Returns the RMS of sampled residuals over the RMS of actual ones.

    Both RMS are over all images and values; a non-finite ratio is
    returned as `"inf"`.

    Args:
      sampled: `[n, ...]` sampled residuals.
      actual: `[m, ...]` actual residuals.

    Returns:
      A float, or `"inf"`.
    """
    with np.errstate(all="ignore"):
        ratio = np.sqrt(np.mean(np.square(_flat(sampled)))) / np.sqrt(
            np.mean(np.square(_flat(actual)))
        )
    return _number(np.inf if np.isnan(ratio) else ratio)


def _residuals(outputs, seed, structure):
    """Returns `(means, sampled residuals)` of one draw of `p(x|z)`, numpy dicts."""
    mean = likelihoods.means(outputs)
    drawn = likelihoods.sample(outputs, seed, structure)
    residual = {name: (drawn[name] - mean[name]).numpy() for name in mean}
    return {name: value.numpy() for name, value in mean.items()}, residual


def _off_diagonal_share(outputs, structure):
    """Returns the share of pixels where `L` is not diagonally dominant, or None."""
    y = likelihoods.likelihood(outputs, structure)["y"]
    if not isinstance(y, SparsePrecisionGaussian):
        return None
    return float(np.mean(y.off_diagonal_ratio().numpy() > 1.0))


def sample_health(model, config, batch, num_prior=NUM_PRIOR, seed=0):
    """Returns the sample health of a model on a batch of held-out images.

    Args:
      model: a `VAE` (anything with `encode(y, cbcr)` and `decode(z)`).
      config: its `Config`.
      batch: a model-input batch dict (`y`, `cbcr` with colour) of held-out
        images.
      num_prior: number of prior samples.
      seed: int seed; the same seed gives the same numbers.

    Returns:
      A JSON-serialisable dict: `num_prior`, `num_images`, `seed`,
      `diverged_limit`, `diverged_share` (the criterion), `prior_diverged`
      and `recon_diverged` (see `divergence`), `calibration_y` and
      `calibration_cbcr` (see `calibration`; the latter None for gray runs),
      `prior_cbcr_spread` (see `spread`; None for gray runs) and
      `prior_off_diagonal` (the share of the prior samples' pixels at which
      `SparsePrecisionGaussian.off_diagonal_ratio()` exceeds 1; None for
      factorised Y).
    """
    structure = config.structure
    z_seed, prior_seed, recon_seed = tfp.random.split_seed(
        tf.constant([seed, 0], tf.int32), n=3
    )
    z = tf.random.stateless_normal(
        [num_prior, config.latent_dim], seed=z_seed, alg="philox"
    )
    prior_outputs = model.decode(z)
    _, prior = _residuals(prior_outputs, prior_seed, structure)

    z_mean, _ = model.encode(batch["y"], batch.get("cbcr"))
    recon_mean, recon = _residuals(model.decode(z_mean), recon_seed, structure)
    actual = {name: np.asarray(batch[name]) - recon_mean[name] for name in recon}

    colour = "cbcr" in recon
    return {
        "num_prior": int(num_prior),
        "num_images": int(recon["y"].shape[0]),
        "seed": int(seed),
        "diverged_limit": DIVERGED_LIMIT,
        "diverged_share": DIVERGED_SHARE,
        "prior_diverged": divergence(prior["y"]),
        "recon_diverged": divergence(recon["y"]),
        "calibration_y": calibration(recon["y"], actual["y"]),
        "calibration_cbcr": (
            calibration(recon["cbcr"], actual["cbcr"]) if colour else None
        ),
        "prior_cbcr_spread": spread(prior["cbcr"], actual["cbcr"]) if colour else None,
        "prior_off_diagonal": _off_diagonal_share(prior_outputs, structure),
    }


def run_health(run, split="test", num_images=NUM_IMAGES, num_prior=NUM_PRIOR, seed=0):
    """Returns the sample health of a run on the first images of a split.

    Args:
      run: a run directory of `train.py`, or a `(config, model)` pair.
      split: the split whose images are reconstructed.
      num_images: how many of its first images.
      num_prior: number of prior samples.
      seed: int seed; the same seed gives the same numbers.

    Returns:
      `sample_health`'s dict, with `split`.

    Raises:
      svae.runs.RunError: see `svae.runs.load_run`.
      svae.data.DatasetError: an unknown data set or split.
    """
    if isinstance(run, tuple):
        config, model = run
    else:
        config, model, _ = runs.load_run(run)
    batch = data.load_batch(config, split, num_images)
    return {"split": split} | sample_health(model, config, batch, num_prior, seed)


def format_number(value, spec=".3g"):
    """Formats a health number: `-` for None, strings (`"inf"`) as they are."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def _diverged(part):
    """Formats a `divergence` dict as `count/num (max m)`."""
    largest = format_number(part["max_abs_residual"])
    return f"{part['count']}/{part['num']} (max {largest})"


def format_health(health):
    """Returns two printed lines summarising a `sample_health` dict."""
    y = health["calibration_y"]
    lines = [
        f"  health: diverged samples (|residual of Y| > {health['diverged_limit']:g} "
        f"at > {health['diverged_share']:.1%} of pixels): prior "
        f"{_diverged(health['prior_diverged'])}, reconstructions "
        f"{_diverged(health['recon_diverged'])}",
        "  health: calibration (sampled std / actual RMS): "
        f"Y median {format_number(y['median'])}, p95 {format_number(y['p95'])}",
    ]
    cbcr = health["calibration_cbcr"]
    if cbcr is not None:
        lines[-1] += (
            f"; CbCr median {format_number(cbcr['median'])}, p95 "
            f"{format_number(cbcr['p95'])}; prior CbCr spread "
            f"{format_number(health['prior_cbcr_spread'])}"
        )
    return "\n".join(lines)


def divergence_warning(health):
    """Returns a message when samples of a `sample_health` dict diverge, else None."""
    parts = [
        f"{part['count']} of {part['num']} {what} (|residual of Y| up to "
        f"{format_number(part['max_abs_residual'])})"
        for what, part in (
            ("prior samples", health["prior_diverged"]),
            ("residual samples of reconstructions", health["recon_diverged"]),
        )
        if part["count"]
    ]
    if not parts:
        return None
    limit = health["diverged_limit"]
    message = (
        f"{' and '.join(parts)} diverge: their residual of Y leaves "
        f"[-{limit:g}, {limit:g}] at more than {health['diverged_share']:.1%} "
        "of the pixels, and Y is in [0, 1]."
    )
    share = health["prior_off_diagonal"]
    if share:
        message += (
            " For the prior's latents L(z) has more off-diagonal than diagonal "
            f"mass at {share:.0%} of the pixels "
            "(SparsePrecisionGaussian.off_diagonal_ratio() > 1), so L^-T eps "
            "grows along the solve. The paper's --factor=free allows it; "
            "--factor=product (the default) or bounded bound the solve "
            "(docs/training.md, 'The likelihood')."
        )
    return message
