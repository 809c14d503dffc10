"""Tests of svae.health: divergence, calibration, spread, and their reports."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from svae import config as config_lib
from svae import evaluation, health, recipes

NUM_IMAGES = 21
# Image `i` is decoded with scale `UNIT * (0.5 + 0.1 i)` and has an actual
# residual of RMS `UNIT`: its calibration is exactly `0.5 + 0.1 i`.
UNIT = 0.05
# Cb and Cr: scale `CHROMA * UNIT * (...)`, actual residual of RMS `UNIT`.
CHROMA = 0.6


class _FakeModel:
    """A `VAE` stand-in whose likelihood is known in closed form.

    `encode` maps image `i` to `z = i`; `decode(z)` has mean 0.5 and scale
    `UNIT * (0.5 + 0.1 z)` (Y, `CHROMA` times that for Cb and Cr). Y is
    factorised, or structured with `L = diag(1 / scale)` plus `off_diag`.
    """

    def __init__(self, config, structured=False, off_diag=0.0):
        self.config = config
        self.structured = structured
        self.off_diag = off_diag
        self.decoded = []

    def encode(self, y, cbcr=None):
        """Returns `(z_mean, z_log_scale)`: image `i` has `z = i`."""
        z = tf.range(y.shape[0], dtype=tf.float64)[:, None]
        return z, tf.zeros_like(z)

    def decode(self, z):
        """Returns model outputs for `[n, 1]` latents."""
        self.decoded.append(np.asarray(z))
        size, factor = self.config.image_size, self.config.chroma_factor
        scale = UNIT * (0.5 + 0.1 * tf.cast(z[:, 0], tf.float64))
        log_scale = tf.math.log(scale)[:, None, None]
        outputs = {"y_mean": tf.fill([z.shape[0], size, size], np.float64(0.5))}
        if self.structured:
            outputs["log_diag"] = -log_scale + tf.zeros_like(outputs["y_mean"])
            outputs["off_diag"] = tf.fill(
                [z.shape[0], size, size, 4], np.float64(self.off_diag)
            )
        else:
            outputs["y_log_scale"] = log_scale + tf.zeros_like(outputs["y_mean"])
        if self.config.color == "ycbcr":
            low = size // factor
            outputs["cbcr_mean"] = tf.fill([z.shape[0], low, low, 2], np.float64(0.5))
            outputs["cbcr_log_scale"] = (
                math.log(CHROMA)
                + log_scale[..., None]
                + tf.zeros_like(outputs["cbcr_mean"])
            )
        return outputs


def _config(color="ycbcr", size=32):
    """A config of the fake model's size (chroma at half resolution)."""
    # The product factor: the fake model's L is the 3x3 pattern itself.
    return config_lib.Config(
        image_size=size,
        color=color,
        chroma_factor=2,
        latent_dim=1,
        kernel_size=3,
        likelihood=recipes.Likelihood(factor="product"),
    )


def _batch(config, seed=0):
    """Held-out images: mean 0.5 plus residuals of exactly RMS `UNIT` (signs)."""
    rng = np.random.default_rng(seed)
    size, low = config.image_size, config.image_size // config.chroma_factor
    batch = {"y": 0.5 + UNIT * rng.choice([-1.0, 1.0], (NUM_IMAGES, size, size))}
    if config.color == "ycbcr":
        batch["cbcr"] = 0.5 + UNIT * rng.choice([-1.0, 1.0], (NUM_IMAGES, low, low, 2))
    return {name: tf.constant(value) for name, value in batch.items()}


def _tolerance(num_values):
    """Four standard errors of a sample std's relative error, `1 / sqrt(2 n)`."""
    return 4.0 / math.sqrt(2.0 * num_values)


@pytest.mark.parametrize("structured", [False, True])
def test_calibration_is_the_scale_over_the_actual_residual(structured):
    config = _config()
    model = _FakeModel(config, structured=structured)
    result = health.sample_health(model, config, _batch(config), num_prior=16)
    exact = 0.5 + 0.1 * np.arange(NUM_IMAGES)
    pixels = config.image_size**2
    for key, values in (("median", 50), ("p95", 95)):
        expected = np.percentile(exact, values)
        got = result["calibration_y"][key]
        assert got == pytest.approx(expected, rel=_tolerance(pixels))
        got = result["calibration_cbcr"][key]
        assert got == pytest.approx(CHROMA * expected, rel=_tolerance(pixels // 2))
    # The prior's scales are those of the latents it decoded; the actual
    # residuals have RMS UNIT.
    prior_z = model.decoded[0][:, 0]
    expected = CHROMA * np.sqrt(np.mean((0.5 + 0.1 * prior_z) ** 2))
    values = len(prior_z) * pixels // 2
    assert result["prior_cbcr_spread"] == pytest.approx(
        expected, rel=_tolerance(values)
    )
    assert result["num_prior"] == 16 and result["num_images"] == NUM_IMAGES
    # Scales of at most 0.125: 8 standard deviations to leave [-1, 1].
    for part in ("prior_diverged", "recon_diverged"):
        assert result[part]["count"] == 0 and result[part]["share"] == 0.0
        assert 0.0 < result[part]["max_abs_residual"] < 1.0
    # L = diag(1 / scale): every column is diagonally dominant.
    assert result["prior_off_diagonal"] == (0.0 if structured else None)
    assert health.divergence_warning(result) is None


def test_gray_runs_have_no_chroma_numbers():
    config = _config("gray", size=16)
    result = health.sample_health(_FakeModel(config), config, _batch(config), 8)
    assert result["calibration_cbcr"] is None
    assert result["prior_cbcr_spread"] is None
    lines = health.format_health(result).splitlines()
    assert len(lines) == 3 and "CbCr" not in lines[1]
    assert lines[2].startswith("  health: structure of Y's residuals")


def test_a_residual_diverges_above_one_tenth_of_a_percent_of_its_pixels():
    # 64x64: 0.1% is 4.096 pixels, so 4 pixels outside [-1, 1] are tails and
    # 5 a divergence; 1.0 itself is inside.
    residual = np.full((5, 64, 64), 0.5)
    residual[0].flat[:4] = 1.5
    residual[1].flat[:5] = -1.5
    residual[2] = 1.0
    residual[3] = -1.0
    residual[3].flat[:5] = -1.0001
    residual[4].flat[:4] = 1e30
    np.testing.assert_array_equal(
        health.is_diverged(residual), [False, True, False, True, False]
    )
    # 1,000 pixels: 1 outside is exactly 0.1%, not more; 2 are.
    thousand = np.zeros((2, 40, 25))
    thousand[0, 0, 0] = 2.0
    thousand[1, 0, :2] = 2.0
    np.testing.assert_array_equal(health.is_diverged(thousand), [False, True])
    summary = health.divergence(residual)
    assert summary == {"share": 0.4, "count": 2, "num": 5, "max_abs_residual": 1e30}


def test_non_finite_residuals_are_outside_and_stay_strict_json():
    residual = np.zeros((4, 64, 64), np.float32)
    residual[0].flat[:5] = np.nan
    residual[1].flat[:5] = np.inf
    residual[2].flat[:4] = -np.inf  # Four pixels: still within the tolerance.
    np.testing.assert_array_equal(
        health.is_diverged(residual), [True, True, False, False]
    )
    summary = health.divergence(residual)
    assert summary["count"] == 2 and summary["max_abs_residual"] == "inf"
    assert health.divergence(np.full((1, 8, 8), np.nan))["max_abs_residual"] is None
    # Per image: [inf, nan -> inf, 1, 2, 3]; numpy's linear percentiles of the
    # finite ones where they are defined.
    actual = np.ones((5, 64, 64))
    sampled = np.random.default_rng(0).choice([-1.0, 1.0], (5, 64, 64))
    # Offsets do not count: the spread of a sample is its standard deviation.
    sampled[2:] = 0.5 + sampled[2:] * np.array([1.0, 2.0, 3.0])[:, None, None]
    sampled[0, 0, 0] = np.inf
    sampled[1, 0, 0] = np.nan
    calibration = health.calibration(sampled, actual)
    ratios = np.std(sampled[2:], axis=(1, 2))
    assert calibration["median"] == pytest.approx(ratios[2])
    assert calibration["p95"] == "inf"
    finite = health.calibration(sampled[2:], actual[2:])
    assert finite["p95"] == pytest.approx(np.percentile(ratios, 95))
    assert health.spread(sampled, actual) == "inf"
    assert health.calibration(sampled[2:], np.zeros((3, 64, 64)))["median"] == "inf"
    json.dumps([summary, calibration], allow_nan=False)


def test_an_exploding_factor_diverges_and_says_why():
    config = _config("gray", size=16)
    # Diagonal 1 / scale <= 40, off-diagonals 100: L^T is far from dominant.
    model = _FakeModel(config, structured=True, off_diag=-100.0)
    result = health.sample_health(model, config, _batch(config), num_prior=8)
    assert result["prior_diverged"]["count"] == 8
    assert result["recon_diverged"]["count"] == NUM_IMAGES
    largest = result["prior_diverged"]["max_abs_residual"]
    assert largest == "inf" or largest > 1e6
    # Ratio 100 * scale * (number of neighbours inside the image) > 1 at
    # every pixel but the last, which has no neighbours.
    assert result["prior_off_diagonal"] == pytest.approx(255 / 256)
    message = health.divergence_warning(result)
    shown = health.format_number(largest)
    assert message.startswith(f"8 of 8 prior samples (|residual of Y| up to {shown})")
    assert "off_diagonal_ratio() > 1" in message
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result
    assert f"prior 8/8 (max {shown}), reconstructions {NUM_IMAGES}/" in (
        health.format_health(result)
    )


# The structure of residuals (svae.health.residual_structure), on random
# fields whose spectra and correlations are known in closed form.
FIELDS = 64
SIZE = 64
# A periodogram bin has a relative standard deviation of 1. A real field's
# spectrum holds each value twice (P(k) = P(-k)), and the Hann window
# correlates neighbouring bins: a mean along a line of bins has 35/18 times
# the variance of independent ones, over the plane (35/18)^2.
LINE = 2.0 * 35.0 / 18.0
PLANE = 2.0 * (35.0 / 18.0) ** 2


def _white(rng, num=FIELDS, size=SIZE):
    """`[num, size, size]` white noise."""
    return rng.standard_normal((num, size, size))


def _gaussian_field(rng, s, num=FIELDS, size=SIZE):
    """Returns white noise convolved with a Gaussian of std `s`, and its `rho`.

    The convolution is periodic (by FFT), so the fields are stationary on
    the torus; `rho` is their correlation `[size, size]`, `rho[dy, dx]` in
    np.fft order.
    """
    distance = np.fft.fftfreq(size) * size
    line = np.exp(-np.square(distance) / (2.0 * s * s))
    kernel = np.fft.fft2(np.outer(line, line))
    fields = np.real(np.fft.ifft2(np.fft.fft2(_white(rng, num, size)) * kernel))
    covariance = np.real(np.fft.ifft2(np.square(np.abs(kernel))))
    return fields, covariance / covariance[0, 0]


def _ar_field(rng, a, b, num=FIELDS, size=SIZE):
    """Returns `x[i, j] = a x[i, j-1] + b x[i-1, j] - a b x[i-1, j-1] + e`.

    The same as an AR(1) of coefficient `a` along each row, then one of `b`
    along each column, each started from its stationary distribution: the
    correlation at lag `(dy, dx)` is `b^|dy| a^|dx|`.
    """
    x = _white(rng, num, size)
    x[:, :, 0] /= math.sqrt(1.0 - a * a)
    for j in range(1, size):
        x[:, :, j] += a * x[:, :, j - 1]
    x[:, 0, :] /= math.sqrt(1.0 - b * b)
    for i in range(1, size):
        x[:, i, :] += b * x[:, i - 1, :]
    return x


def _ar_correlation(a, b, size=4 * SIZE):
    """`b^|dy| a^|dx|` on a torus large enough for its tails to vanish."""
    distance = np.abs(np.fft.fftfreq(size) * size)
    return np.outer(b**distance, a**distance)


def _expected_spectrum(rho, size=SIZE):
    """The expected `power_spectrum` of fields of correlation `rho`.

    `E |FFT(w x)|^2` of a stationary field is the DFT of the window's
    autocorrelation times the field's correlation, folded onto the `size`
    bins per axis; then without DC and normalised, as measured (which
    ignores the removal of each field's mean and the per-field normalisation).

    Args:
      rho: `[M, M]` correlation `rho[dy, dx]` in np.fft order, `M >= size`
        (periodic: lags are taken modulo M).
    """
    lags = np.arange(1 - size, size)
    window = np.hanning(size)
    line = np.correlate(window, window, "full")
    rows, cols = lags[:, None] % rho.shape[0], lags[None, :] % rho.shape[1]
    folded = np.zeros((size, size))
    np.add.at(
        folded,
        (lags[:, None] % size, lags[None, :] % size),
        np.outer(line, line) * rho[rows, cols],
    )
    power = np.real(np.fft.fft2(folded))
    power[0, 0] = 0.0
    return power / np.sum(power)


def _axis_ratio(power, num_fields):
    """Returns the `axis_ratio` of a spectrum and its standard error.

    Within each band `b = 2 .. size / 2`, the mean power on the axes and off
    them; the ratio of their sums over the bands. The error: each band's
    means have relative variances `LINE` and `PLANE` over `num_fields`
    times their number of bins.
    """
    bands = health.radial_bands(*power.shape)
    on_axis = np.zeros(power.shape, bool)
    on_axis[0, :] = on_axis[:, 0] = True
    sums, variances = np.zeros(2), np.zeros(2)
    for band in range(2, min(power.shape) // 2 + 1):
        inside = bands == band
        for i, (part, factor) in enumerate(
            ((power[inside & on_axis], LINE), (power[inside & ~on_axis], PLANE))
        ):
            sums[i] += np.mean(part)
            variances[i] += np.mean(part) ** 2 * factor / (num_fields * part.size)
    ratio = sums[0] / sums[1]
    return ratio, ratio * math.sqrt(np.sum(variances / sums**2))


def _mean_removed(rho, variance_of_mean):
    """The correlation `rho` after each field loses its mean, of variance `v`.

    `(rho - v) / (1 - v)`, `v` the variance of a field's mean over its
    variance.
    """
    return (rho - variance_of_mean) / (1.0 - variance_of_mean)


def _lag_error(rho, lag, num_values):
    """Bartlett's standard error of a lag correlation of a field.

    `var r(h) = (1 / N) sum_k [rho(k+h) rho(k-h) + rho(k)^2
    + 2 rho(h)^2 rho(k)^2 - 4 rho(h) rho(k) rho(k+h)]` over the lags `k` of
    the correlation `rho` (`[H, W]`, np.fft order), `N` the pixels.
    """
    plus = np.roll(rho, (-lag[0], -lag[1]), axis=(0, 1))
    minus = np.roll(rho, lag, axis=(0, 1))
    at = rho[lag]
    terms = plus * minus + rho**2 + 2.0 * at**2 * rho**2 - 4.0 * at * rho * plus
    return math.sqrt(np.sum(terms) / num_values)


def _assert_lags(fields, rho, variance_of_mean):
    """Asserts the lags of `fields` against their correlation `rho`."""
    got = health.lag1(fields)
    num_values = fields.size
    expected = {
        "x": _mean_removed(rho[0, 1], variance_of_mean),
        "y": _mean_removed(rho[1, 0], variance_of_mean),
        "diagonal": _mean_removed((rho[1, 1] + rho[1, -1]) / 2.0, variance_of_mean),
    }
    error = {
        "x": _lag_error(rho, (0, 1), num_values),
        "y": _lag_error(rho, (1, 0), num_values),
        "diagonal": (
            _lag_error(rho, (1, 1), num_values) + _lag_error(rho, (1, -1), num_values)
        )
        / 2.0,
    }
    for key in health.LAG_KEYS:
        assert got[key] == pytest.approx(expected[key], abs=4.0 * error[key]), key
    return got


def _distance_between_draws(num_fields, size=SIZE):
    """The RMS `spectral_distance` of two draws of `num_fields` white fields.

    Per band `b` of `n_b` bins, each mean power has a relative variance
    about `LINE / (num_fields * n_b)`; the dB of the ratio of two draws has
    `(10 / ln 10)^2` times twice that.
    """
    bins = np.bincount(health.radial_bands(size, size).ravel())[1 : size // 2 + 1]
    variance = (10.0 / math.log(10.0)) ** 2 * 2.0 * LINE / (num_fields * bins)
    return math.sqrt(np.mean(variance))


def _structure_values(structure):
    """The nine numbers of a `residual_structure` dict, in a fixed order."""
    ratios, lags = structure["axis_ratio"], structure["lag1"]
    assert set(ratios) == set(lags) == {"sampled", "actual"}
    values = [structure["spectral_distance_db"]]
    values += [ratios[part] for part in ("sampled", "actual")]
    values += [lags[part][key] for part in ratios for key in health.LAG_KEYS]
    return values


def _assert_finite_structure(structure):
    """Asserts a `residual_structure` dict has every number, finite."""
    values = _structure_values(structure)
    assert all(isinstance(v, float) and math.isfinite(v) for v in values), values


def test_white_noise_has_no_structure():
    rng = np.random.default_rng(0)
    white = _white(rng)
    rho = np.zeros((SIZE, SIZE))
    rho[0, 0] = 1.0
    expected, error = _axis_ratio(_expected_spectrum(rho), FIELDS)
    assert expected == pytest.approx(1.0)
    assert health.axis_ratio(white) == pytest.approx(1.0, abs=4.0 * error)
    _assert_lags(white, rho, 1.0 / SIZE**2)
    # Another draw of the same process; the same fields give exactly 0.
    distance = health.spectral_distance(white, _white(rng))
    assert 0.0 < distance < 2.5 * _distance_between_draws(FIELDS)
    assert health.spectral_distance(white, white) == 0.0


def test_an_isotropic_gaussian_field_has_equal_lags_and_no_axes():
    s = 1.5
    fields, rho = _gaussian_field(np.random.default_rng(1), s)
    # The sampled kernel's lag 1 is the continuous field's exp(-1 / (4 s^2)).
    assert rho[0, 1] == pytest.approx(math.exp(-1.0 / (4.0 * s * s)), abs=1e-6)
    # Periodic fields: the variance of a field's mean is exactly sum(rho) / N.
    lags = _assert_lags(fields, rho, np.sum(rho) / SIZE**2)
    error = _lag_error(rho, (0, 1), fields.size)
    assert lags["x"] == pytest.approx(lags["y"], abs=4.0 * math.sqrt(2.0) * error)
    expected, error = _axis_ratio(_expected_spectrum(rho), FIELDS)
    assert expected == pytest.approx(1.0, abs=0.05)
    assert health.axis_ratio(fields) == pytest.approx(expected, abs=4.0 * error)


@pytest.mark.parametrize("a, b", [(0.9, 0.9), (0.8, 0.3)])
def test_a_separable_ar_field_has_lags_a_b_ab_and_power_on_the_axes(a, b):
    fields = _ar_field(np.random.default_rng(2), a, b)
    rho = _ar_correlation(a, b)

    def mean_variance(coefficient):
        """The variance of the mean of SIZE values of an AR(1) over theirs."""
        lags = np.arange(1, SIZE)
        return (SIZE + 2.0 * np.sum((SIZE - lags) * coefficient**lags)) / SIZE**2

    _assert_lags(fields, rho, mean_variance(a) * mean_variance(b))
    expected, error = _axis_ratio(_expected_spectrum(rho), FIELDS)
    got = health.axis_ratio(fields)
    assert got == pytest.approx(expected, abs=4.0 * error)
    assert got > 1.5


def test_white_noise_is_far_from_a_plaid_field_either_way_round():
    rng = np.random.default_rng(3)
    white, plaid = _white(rng), _ar_field(rng, 0.9, 0.9)
    distance = health.spectral_distance(white, plaid)
    assert distance == pytest.approx(health.spectral_distance(plaid, white), 1e-12)
    # Against the closed-form spectra: removing each field's mean (which they
    # ignore) takes about 1 dB from the lowest band.
    bands = {
        name: np.bincount(
            health.radial_bands(SIZE, SIZE).ravel(), _expected_spectrum(rho).ravel()
        )[1 : SIZE // 2 + 1]
        for name, rho in (
            ("white", _ar_correlation(0.0, 0.0)),
            ("plaid", _ar_correlation(0.9, 0.9)),
        )
    }
    decibels = 10.0 * np.log10(bands["white"] / bands["plaid"])
    expected = math.sqrt(np.mean(np.square(decibels)))
    assert expected > 6.0
    assert distance == pytest.approx(expected, abs=1.0)


def test_the_structure_leaves_out_diverged_fields_and_stays_strict_json():
    rng = np.random.default_rng(4)
    plaid = _ar_field(rng, 0.9, 0.5, num=8, size=16)
    broken = plaid.copy()
    broken[0, 3, 3] = np.inf
    broken[1, 0, 0] = np.nan
    broken[2] = 0.25  # No variation: no spectrum.
    # Fields 0-2 are left out; an offset is not structure.
    assert _structure_values(
        health.residual_structure(broken + 3.0, plaid)
    ) == pytest.approx(_structure_values(health.residual_structure(plaid[3:], plaid)))
    nothing = health.residual_structure(broken[:3], plaid)
    assert nothing["spectral_distance_db"] is None
    assert nothing["axis_ratio"]["sampled"] is None
    assert nothing["lag1"]["sampled"] == {"x": None, "y": None, "diagonal": None}
    assert nothing["lag1"]["actual"] == health.lag1(plaid)
    json.dumps(nothing, allow_nan=False)
    cells = health.format_structure(nothing)
    assert cells[0] == "-" and cells[1].startswith("- / ")
    assert cells[2].startswith("- / - / -; ")
    assert health.format_structure(None) == ("-", "-", "-")


def test_white_residuals_match_and_correlated_samples_show():
    # The fake's actual residuals are white signs and its factorised or
    # diagonal structured samples white Gaussians: no structure in either.
    config = _config("gray", size=SIZE // 2)
    num_values = NUM_IMAGES * (SIZE // 2) ** 2
    for structured in (False, True):
        model = _FakeModel(config, structured=structured)
        result = health.sample_health(model, config, _batch(config), 8)
        structure = result["structure_y"]
        _assert_finite_structure(structure)
        assert structure["spectral_distance_db"] < 2.5 * _distance_between_draws(
            NUM_IMAGES, SIZE // 2
        )
        flat = np.zeros((SIZE // 2, SIZE // 2))
        flat[0, 0] = 1.0
        _, error = _axis_ratio(_expected_spectrum(flat, SIZE // 2), NUM_IMAGES)
        for part in ("sampled", "actual"):
            assert structure["axis_ratio"][part] == pytest.approx(1.0, abs=4 * error)
            for value in structure["lag1"][part].values():
                assert abs(value) < 4.0 / math.sqrt(num_values)
    # Negative off-diagonals of the precision's factor: neighbours of the
    # samples correlate, the actual residuals stay white.
    model = _FakeModel(config, structured=True, off_diag=-2.0)
    correlated = health.sample_health(model, config, _batch(config), 8)
    structure = correlated["structure_y"]
    assert all(value > 0.2 for value in structure["lag1"]["sampled"].values())
    assert structure["lag1"]["actual"] == result["structure_y"]["lag1"]["actual"]
    assert structure["spectral_distance_db"] > 3.0
    line = health.format_health(correlated).splitlines()[-1]
    distance, ratios, lags = health.format_structure(structure)
    assert line == (
        "  health: structure of Y's residuals (sampled vs actual): spectral "
        f"distance {distance} dB, axis ratio {ratios}, lag-1 x / y / diagonal {lags}"
    )


def test_same_seed_same_numbers_other_seed_other_numbers():
    config = _config()
    batch = _batch(config)
    first, second, third = (
        health.sample_health(_FakeModel(config), config, batch, 8, seed)
        for seed in (3, 3, 4)
    )
    assert first == second
    assert first["calibration_y"] != third["calibration_y"]
    assert first["prior_cbcr_spread"] != third["prior_cbcr_spread"]


@pytest.mark.slow
def test_evaluate_reports_the_health_and_compare_shows_it(tiny_run, tmp_path):
    report = evaluation.evaluate(
        evaluation.EvalConfig(
            model_dir=str(tiny_run),
            num_samples=2,
            max_images=6,
            batch_size=4,
            output_dir=str(tmp_path / "new" / "eval"),
            health_images=5,
            num_prior=8,
            progress=False,
        )
    )
    saved = json.loads((tmp_path / "new" / "eval" / "test.json").read_text())
    result = saved["health"]
    assert result == report["health"]
    json.dumps(result, allow_nan=False)
    assert result["num_images"] == 5 and result["num_prior"] == 8
    _assert_finite_structure(result["structure_y"])
    # The same images (the first 5 of the split, over two batches) and seed.
    config, model, _ = evaluation.load_run(tiny_run)
    again = health.run_health((config, model), "test", 5, 8, seed=0)
    assert again["prior_diverged"] == result["prior_diverged"]
    for key in ("median", "p95"):
        assert again["calibration_y"][key] == pytest.approx(
            result["calibration_y"][key], rel=1e-5
        )
    assert again["structure_y"]["spectral_distance_db"] == pytest.approx(
        result["structure_y"]["spectral_distance_db"], rel=1e-4
    )
    # compare(): the new columns (the reconstruction terms, then the health),
    # and dashes for reports written before them: one without the structure
    # of the residuals, one without any health.
    for name in ("earlier", "old"):
        (tmp_path / name / "eval").mkdir(parents=True)
    saved["health"] = {
        k: v for k, v in result.items() if k not in ("structure_y", "structure_cbcr")
    }
    (tmp_path / "earlier" / "eval" / "test.json").write_text(json.dumps(saved))
    recon_bits = [saved.pop(name)["mean"] for name in ("recon_y_bpd", "recon_cbcr_bpd")]
    del saved["health"]
    (tmp_path / "old" / "eval" / "test.json").write_text(json.dumps(saved))
    table = evaluation.compare(
        [str(tmp_path / name) for name in ("new", "earlier", "old")],
        names=["new", "earlier", "old"],
    )
    header, rule, new, earlier, old_row = table.splitlines()
    assert earlier.startswith("| earlier |") and earlier.endswith("| - | - | - | - |")
    assert earlier.split("|")[2:-5] == new.split("|")[2:-5]
    assert (
        "| prior diverged | recon. diverged | calibration Y (median / p95) |" in header
    )
    assert header.endswith(
        "| spectral dist. Y (dB) | axis ratio Y (sampled / actual) "
        "| lag-1 Y x / y / diag (sampled; actual) "
        "| lag-1 CbCr x / y / diag (sampled; actual) |"
    )
    cells = [cell.strip() for cell in new.split("|")[1:-1]]
    assert len(cells) == len(header.split("|")) - 2 == len(rule.split("|")) - 2
    # The last cell: the lags of CbCr's residuals; the others as before it.
    chroma_lags, cells = cells[-1], cells[:-1]
    chroma = result["structure_cbcr"]["lag1"]
    assert chroma_lags == "; ".join(
        " / ".join(f"{chroma[part][key]:.2f}" for key in health.LAG_KEYS)
        for part in ("sampled", "actual")
    )
    prior, recon = result["prior_diverged"], result["recon_diverged"]
    assert cells[-8:-6] == [f"{prior['count']}/8", f"{recon['count']}/5"]
    y, cbcr = result["calibration_y"], result["calibration_cbcr"]
    number = health.format_number
    assert cells[-6] == f"{number(y['median'])} / {number(y['p95'])}"
    assert cells[-5:-3] == [
        number(cbcr["median"]),
        number(result["prior_cbcr_spread"]),
    ]
    assert cells[-9] == f"{recon_bits[0]:.3f} / {recon_bits[1]:.3f}"
    # The structure of Y's residuals: the distance, the two axis ratios and
    # the six lags, all finite.
    structure = result["structure_y"]
    assert cells[-3] == f"{structure['spectral_distance_db']:.2f}"
    ratios = structure["axis_ratio"]
    assert cells[-2] == f"{ratios['sampled']:.3g} / {ratios['actual']:.3g}"
    lags = [
        f"{structure['lag1'][part][key]:.2f}"
        for part in ("sampled", "actual")
        for key in ("x", "y", "diagonal")
    ]
    assert cells[-1] == f"{' / '.join(lags[:3])}; {' / '.join(lags[3:])}"
    assert old_row.endswith("| - / - | - | - | - | - | - | - | - | - | - |")
