"""Tests of svae.health: divergence, calibration, spread, and their reports."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from svae import config as config_lib
from svae import evaluation, health

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
    return config_lib.Config(
        image_size=size, color=color, chroma_factor=2, latent_dim=1, kernel_size=3
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
    assert len(lines) == 2 and "CbCr" not in lines[1]


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
    # The same images (the first 5 of the split, over two batches) and seed.
    config, model, _ = evaluation.load_run(tiny_run)
    again = health.run_health((config, model), "test", 5, 8, seed=0)
    assert again["prior_diverged"] == result["prior_diverged"]
    for key in ("median", "p95"):
        assert again["calibration_y"][key] == pytest.approx(
            result["calibration_y"][key], rel=1e-5
        )
    # compare(): the new columns (the reconstruction terms, then the health),
    # and dashes for a report written before them.
    old = tmp_path / "old" / "eval"
    old.mkdir(parents=True)
    recon_bits = [saved.pop(name)["mean"] for name in ("recon_y_bpd", "recon_cbcr_bpd")]
    del saved["health"]
    (old / "test.json").write_text(json.dumps(saved))
    table = evaluation.compare(
        [str(tmp_path / "new"), str(tmp_path / "old")], names=["new", "old"]
    )
    header, _, new, old_row = table.splitlines()
    assert (
        "| prior diverged | recon. diverged | calibration Y (median / p95) |" in header
    )
    cells = [cell.strip() for cell in new.split("|")[1:-1]]
    assert len(cells) == len(header.split("|")) - 2
    prior, recon = result["prior_diverged"], result["recon_diverged"]
    assert cells[-5:-3] == [f"{prior['count']}/8", f"{recon['count']}/5"]
    y, cbcr = result["calibration_y"], result["calibration_cbcr"]
    number = health.format_number
    assert cells[-3] == f"{number(y['median'])} / {number(y['p95'])}"
    assert cells[-2:] == [number(cbcr["median"]), number(result["prior_cbcr_spread"])]
    assert cells[-6] == f"{recon_bits[0]:.3f} / {recon_bits[1]:.3f}"
    assert old_row.endswith("| - / - | - | - | - | - | - |")
