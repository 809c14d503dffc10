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
- `structure_y`: whether the sampled residuals of Y of the reconstructions
  have the spatial structure of the actual ones (the paper's Figure 1 as
  numbers, see `residual_structure`): the distance of their power spectra
  in dB (`spectral_distance`), the power on the frequency axes against the
  power off them (`axis_ratio`), and the lag-1 correlations (`lag1`).
- `structure_cbcr`: the same for Cb and Cr at their downsampled size (colour
  runs): a factorised chroma draws white noise there, where the actual
  residuals are smooth, which shows as confetti of colour.

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
    "LAG_KEYS",
    "NUM_IMAGES",
    "NUM_PRIOR",
    "axis_ratio",
    "calibration",
    "divergence",
    "divergence_warning",
    "format_health",
    "format_number",
    "format_structure",
    "is_diverged",
    "lag1",
    "power_spectrum",
    "radial_bands",
    "residual_structure",
    "run_health",
    "sample_health",
    "spectral_distance",
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
# The lag-1 correlations of `lag1`, in the order they are shown.
LAG_KEYS = ("x", "y", "diagonal")


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


def _fields(residual):
    """Returns the usable `[m, H, W]` float64 fields of `[n, H, W]` residuals.

    Each loses its mean (an offset is a bias, not structure, and the window
    would leak it into the lowest frequencies); fields with a non-finite
    value (diverged samples, counted by `divergence`) or no variation are
    left out.
    """
    values = np.asarray(residual, np.float64)
    with np.errstate(all="ignore"):
        values = values - np.mean(values, axis=(1, 2), keepdims=True)
        finite = np.all(np.isfinite(values), axis=(1, 2))
        varied = np.any(values != 0.0, axis=(1, 2))
    return values[finite & varied]


def radial_bands(height, width):
    """Returns `[H, W]` integer radii of the frequency bins, in `np.fft` order.

    The radius of bin `(ky, kx)` (signed integer frequencies, in cycles per
    image) is `round(sqrt(kx^2 + ky^2))`; band `b` holds the bins of radius
    `b`; the DC bin is band 0.
    """
    ky = np.fft.fftfreq(height) * height
    kx = np.fft.fftfreq(width) * width
    return np.rint(np.hypot(ky[:, None], kx[None, :])).astype(int)


def power_spectrum(residual):
    """Returns the mean normalised power spectrum of residual fields.

    Per field `r` (mean removed, see `_fields`): `P = |FFT2(w * r)|^2` with
    the 2D Hann window `w = outer(hanning(H), hanning(W))` (which keeps the
    image edges from leaking power onto the frequency axes), the DC bin set
    to 0 and `P` divided by its sum; then the mean over the fields.

    Args:
      residual: `[n, H, W]` residual fields.

    Returns:
      `[H, W]` float64 powers in `np.fft.fft2` order summing to 1, or None
      when no field is usable (all non-finite or constant).
    """
    fields = _fields(residual)
    if not fields.shape[0]:
        return None
    height, width = fields.shape[1:]
    window = np.outer(np.hanning(height), np.hanning(width))
    power = np.square(np.abs(np.fft.fft2(fields * window)))
    power[:, 0, 0] = 0.0
    power /= np.sum(power, axis=(1, 2), keepdims=True)
    return np.mean(power, axis=0)


def _band_means(power):
    """Returns `[min(H, W) // 2]` mean powers per bin of bands 1 .. H/2."""
    bands = radial_bands(*power.shape)
    count = min(power.shape) // 2
    sums = np.bincount(bands.ravel(), power.ravel(), minlength=count + 1)
    bins = np.bincount(bands.ravel(), minlength=count + 1)
    return sums[1 : count + 1] / bins[1 : count + 1]


def spectral_distance(sampled, actual):
    """Returns the distance of two residuals' power spectra, in dB.

    With `P_s` and `P_a` the `power_spectrum` of the sampled and the actual
    residuals, each averaged per radial band `b = 1 .. min(H, W) / 2`
    (`radial_bands`):

        distance = sqrt(mean_b (10 log10(P_s(b) / P_a(b)))^2)

    0 when the sampled residuals have the actual ones' spectrum; swapping
    the two gives the same distance. White noise against a correlated
    residual gives several dB: the correlated one has its power at low
    frequencies, white noise everywhere.

    Args:
      sampled: `[n, H, W]` sampled residuals.
      actual: `[m, H, W]` actual residuals.

    Returns:
      A float, `"inf"` where a band of either has no power, or None when
      either has no usable field.
    """
    sampled, actual = power_spectrum(sampled), power_spectrum(actual)
    if sampled is None or actual is None:
        return None
    with np.errstate(all="ignore"):
        decibels = 10.0 * np.log10(_band_means(sampled) / _band_means(actual))
        distance = np.sqrt(np.mean(np.square(decibels)))
    return _number(np.inf if np.isnan(distance) else distance)


def axis_ratio(residual):
    """Returns the mean power on the frequency axes over the power off them.

    On the `power_spectrum` `P`, within each radial band `b = 2 .. min(H,
    W) / 2` (`radial_bands`): `on(b)`, the mean of `P` over the band's bins
    with `kx == 0` or `ky == 0`, and `off(b)`, the mean over its other bins;
    then

        ratio = sum_b on(b) / sum_b off(b).

    Comparing bins of the same band keeps a spectrum that falls with the
    frequency from counting as axis structure (over the whole plane the
    off-axis bins lie at higher frequencies: an isotropic smooth field
    would score 3 to 15); band 1 is left out, its off-axis bins `(+-1, +-1)`
    being at radius sqrt(2). About 1 for white or isotropic fields, above 1
    for a separable one, a row process times a column process ("plaid"):
    about 2 for two AR(1) processes of coefficient 0.9 at 64x64.

    Args:
      residual: `[n, H, W]` residual fields.

    Returns:
      A float (`"inf"` if the off-axis bins have no power), or None when no
      field is usable.
    """
    power = power_spectrum(residual)
    if power is None:
        return None
    bands = radial_bands(*power.shape)
    ky = np.fft.fftfreq(power.shape[0]) == 0
    kx = np.fft.fftfreq(power.shape[1]) == 0
    on_axis = ky[:, None] | kx[None, :]
    on = off = 0.0
    for band in range(2, min(power.shape) // 2 + 1):
        inside = bands == band
        on += np.mean(power[inside & on_axis])
        off += np.mean(power[inside & ~on_axis])
    with np.errstate(all="ignore"):
        ratio = on / off
    return _number(np.inf if np.isnan(ratio) else ratio)


def _correlation(first, second):
    """Returns the correlation of zero-mean values pooled over all fields."""
    with np.errstate(all="ignore"):
        return np.sum(first * second) / np.sqrt(
            np.sum(np.square(first)) * np.sum(np.square(second))
        )


def lag1(residual):
    """Returns the lag-1 correlations of residual fields along x, y, diagonals.

    With `r` a field with its mean removed (see `_fields`), the correlation
    at lag `(dy, dx)` pools the pixel pairs of all fields:

        rho(dy, dx) = sum r[i, j] r[i+dy, j+dx]
                      / sqrt(sum r[i, j]^2 * sum r[i+dy, j+dx]^2)

    over the pairs inside the image. `x` is `rho(0, 1)` (neighbours in a
    row), `y` is `rho(1, 0)` (in a column), `diagonal` the mean of
    `rho(1, 1)` and `rho(1, -1)`. 0 for white noise; `a`, `b` and `a b` for
    a separable AR(1) field with coefficients `a` along rows and `b` along
    columns.

    Args:
      residual: `[n, H, W]` residual fields.

    Returns:
      `{"x", "y", "diagonal"}` floats, each None when no field is usable.
    """
    fields = _fields(residual)
    if not fields.shape[0]:
        return {"x": None, "y": None, "diagonal": None}
    diagonal = _correlation(fields[:, :-1, :-1], fields[:, 1:, 1:])
    anti_diagonal = _correlation(fields[:, :-1, 1:], fields[:, 1:, :-1])
    return {
        "x": _number(_correlation(fields[:, :, :-1], fields[:, :, 1:])),
        "y": _number(_correlation(fields[:, :-1], fields[:, 1:])),
        "diagonal": _number((diagonal + anti_diagonal) / 2.0),
    }


def residual_structure(sampled, actual):
    """Returns how the spatial structure of sampled residuals matches actual ones.

    Args:
      sampled: `[n, H, W]` sampled residuals (one per image).
      actual: `[n, H, W]` actual residuals of the same images.

    Returns:
      `{"spectral_distance_db": spectral_distance(sampled, actual),
      "axis_ratio": {"sampled", "actual"}, "lag1": {"sampled", "actual"}}`
      (see `axis_ratio` and `lag1`). A structured model whose samples look
      like its errors has a small distance and the actual residuals' axis
      ratio and lags.
    """
    return {
        "spectral_distance_db": spectral_distance(sampled, actual),
        "axis_ratio": {"sampled": axis_ratio(sampled), "actual": axis_ratio(actual)},
        "lag1": {"sampled": lag1(sampled), "actual": lag1(actual)},
    }


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
      factorised Y), `structure_y` (`residual_structure` of the sampled
      against the actual residuals of Y of the reconstructions) and
      `structure_cbcr` (the same of Cb and Cr, each channel a field; None
      for gray runs).
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
        "structure_y": residual_structure(recon["y"], actual["y"]),
        "structure_cbcr": (
            residual_structure(
                _channel_fields(recon["cbcr"]), _channel_fields(actual["cbcr"])
            )
            if colour
            else None
        ),
    }


def _channel_fields(values):
    """`[n, H, W, C]` -> `[n * C, H, W]`: each channel of each image a field."""
    return np.moveaxis(values, -1, 1).reshape((-1,) + values.shape[1:3])


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


def format_structure(structure):
    """Returns the three cells of a `residual_structure` dict, `-` if None.

    `(distance, axis ratios, lags)`: the spectral distance in dB, the axis
    ratios as `sampled / actual`, the lags as `x / y / diagonal` of the
    sampled residuals, `;`, those of the actual ones.
    """
    if structure is None:
        return ("-", "-", "-")
    ratio, lags = structure["axis_ratio"], structure["lag1"]
    return (
        format_number(structure["spectral_distance_db"], ".2f"),
        f"{format_number(ratio['sampled'])} / {format_number(ratio['actual'])}",
        "; ".join(
            " / ".join(format_number(lags[part][k], ".2f") for k in LAG_KEYS)
            for part in ("sampled", "actual")
        ),
    )


def format_health(health):
    """Returns the printed lines summarising a `sample_health` dict."""
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
    for group in ("Y", "CbCr"):
        structure = health.get(f"structure_{group.lower()}")
        if structure is None:
            continue
        distance, ratios, lags = format_structure(structure)
        lines.append(
            f"  health: structure of {group}'s residuals (sampled vs actual): "
            f"spectral distance {distance} dB, axis ratio {ratios}, lag-1 x / y "
            f"/ diagonal {lags}"
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
