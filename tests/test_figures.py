"""Tests of svae.figures and sample.py: sizes, ranges, seeds, temperature."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tiny
from PIL import Image
from tensorflow.core.util import event_pb2

from svae import color, data, evaluation, figures, health

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE, NUM, SCALE = 16, 3, 2


def _write(model_dir, output_dir, **kwargs):
    """Writes the figures of a run with the test's sizes."""
    return figures.write_figures(
        figures.SampleConfig(
            model_dir=str(model_dir),
            output_dir=str(output_dir),
            num=NUM,
            scale=SCALE,
            **kwargs,
        )
    )


def _cells(path, num_rows):
    """Returns `[rows, NUM, H, W, 3]` uint8 cells of a grid PNG."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    cell = SIZE * SCALE
    height, width = pixels.shape[:2]
    top = height - num_rows * (cell + 2)
    left = width - NUM * (cell + 2)
    return np.array(
        [
            [
                pixels[
                    top + i * (cell + 2) : top + i * (cell + 2) + cell,
                    left + j * (cell + 2) : left + j * (cell + 2) + cell,
                ]
                for j in range(NUM)
            ]
            for i in range(num_rows)
        ]
    )


def test_figures_have_the_right_size_range_and_content(tiny_run, tmp_path):
    paths = _write(tiny_run, tmp_path)
    rows = {"prior_samples": 3, "reconstructions": 5, "std_y": 3}
    for name, num_rows in rows.items():
        with Image.open(paths[name]) as image:
            assert image.mode == "RGB"
            width, height = image.size
        assert height == 16 + num_rows * (SIZE * SCALE + 2)
        assert width > NUM * (SIZE * SCALE + 2)
    config, model, _ = evaluation.load_run(tiny_run)
    prior = figures.prior_samples(model, config, NUM, seed=0)
    assert prior["mean"].shape == (NUM, SIZE, SIZE, 3)
    assert prior["mean"].min() >= 0.0 and prior["mean"].max() <= 1.0
    cells = _cells(paths["prior_samples"], 3)
    expected = np.round(prior["mean"] * 255.0).astype(np.uint8)
    expected = expected.repeat(SCALE, axis=1).repeat(SCALE, axis=2)
    np.testing.assert_array_equal(cells[0], expected)
    recon = _cells(paths["reconstructions"], 5)
    # The input row is the test images themselves, which are not constant.
    assert recon[0].std() > 5.0
    # Rows 2 and 3: the actual residual of Y, y - mu(z_mean), and the
    # sampled one, both on the actual residual's scale.
    batch = figures.load_images(config, "test", NUM)
    z_mean, _ = model.encode(batch["y"], batch.get("cbcr"))
    actual = batch["y"] - model.decode(z_mean)["y_mean"].numpy()
    spread = figures.residual_spread(actual)
    drawn = figures.reconstructions(model, config, batch, seed=0)["residual"]
    for row, residual in ((2, actual), (3, drawn)):
        gray = np.round(figures.residual_image(residual, spread) * 255.0)
        gray = gray.astype(np.uint8).repeat(SCALE, axis=1).repeat(SCALE, axis=2)
        np.testing.assert_array_equal(recon[row], np.stack([gray] * 3, -1))


def _chroma_misfit(rgb, method, margin=0.0):
    """Returns how far RGB images' chroma is from chroma upsampled by `method`.

    The worst RMS, over images and channels, of the least-squares residual of
    Cb (Cr) on the images that `color.upsample_chroma(., 4, method)` makes of
    every 4x4-smaller chroma; pixels within `margin` of 0 or 1 in a channel
    (clipped, their chroma lost) are left out. Chroma upsampled bilinearly
    has a bilinear misfit at float rounding, and a nearest misfit as large as
    the colour varies within a block; repeated chroma the other way round.
    """
    rgb = np.asarray(rgb, np.float64)
    num, size = rgb.shape[:2]
    low = size // 4
    unit = np.eye(low * low).reshape(low * low, low, low, 1)
    basis = color.upsample_chroma(unit, 4, method).numpy().reshape(low * low, -1).T
    chroma = color.rgb_to_ycbcr(rgb).numpy()[..., 1:].reshape(num, -1, 2)
    kept = np.all((rgb > margin) & (rgb < 1.0 - margin), -1).reshape(num, -1)
    worst = 0.0
    for image in range(num):
        rows = basis[kept[image]]
        for channel in range(2):
            values = chroma[image, kept[image], channel]
            fit = rows @ np.linalg.lstsq(rows, values, rcond=None)[0]
            worst = max(worst, float(np.sqrt(np.mean((fit - values) ** 2))))
    return worst


def test_figures_show_chroma_upsampled_bilinearly(tiny_run):
    # Every RGB row the figures show (sample.py's and the demo's) has its
    # chroma upsampled bilinearly: smooth colour, no 4x4 blocks. A row drawn
    # with repeated (nearest) chroma would miss the bilinear images by the
    # colour steps between blocks, about 0.02 here.
    config, model, _ = evaluation.load_run(tiny_run)
    batch = figures.load_images(config, "test", NUM)
    prior = figures.prior_samples(model, config, NUM, seed=0)
    recon = figures.reconstructions(model, config, batch, seed=0)
    mask = figures.inpainting_mask("center", NUM, SIZE)
    filled = figures.inpaint(model, config, batch, mask, seed=1)
    shown = {
        "prior mean": prior["mean"],
        "prior sample": prior["sample"],
        "reconstruction mean": recon["mean"],
        "reconstruction sample": recon["sample"],
        **{f"inpainting {row}": filled[row] for row in filled if row != "input"},
    }
    shown = {name: rows for name, rows in shown.items() if np.ndim(rows) == 4}
    assert len(shown) == 8
    for name, rows in shown.items():
        assert _chroma_misfit(rows, "bilinear") < 1e-6, name
        assert _chroma_misfit(rows, "nearest") > 1e-3, name
    outputs = prior["outputs"]
    repeated = color.merge_to_rgb(
        outputs["y_mean"], outputs["cbcr_mean"], 4, "nearest", clip=True
    )
    assert _chroma_misfit(repeated, "bilinear") > 1e-3
    # The mean is the likelihood's, converted by svae.color's function.
    expected = color.merge_to_rgb(
        outputs["y_mean"], outputs["cbcr_mean"], 4, "bilinear", clip=True
    )
    np.testing.assert_array_equal(prior["mean"], expected)


def test_tensorboard_images_show_chroma_upsampled_bilinearly(tiny_run):
    # The training's image summaries (svae.hooks), 8-bit PNGs: the bilinear
    # misfit is their rounding (about 0.001), repeated chroma's 0.02 or more.
    images = {}
    for path in (pathlib.Path(tiny_run) / "train").glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    pngs = tf.make_ndarray(value.tensor)[2:]
                    images[value.tag] = np.stack(
                        [tf.io.decode_png(png).numpy() / 255.0 for png in pngs]
                    )
    for tag in ("reconstruction_means", "sample_means", "samples"):
        assert images[tag].shape[1:] == (SIZE, SIZE, 3), tag
        assert _chroma_misfit(images[tag], "bilinear", 1.5 / 255) < 0.003, tag
        assert _chroma_misfit(images[tag], "nearest", 1.5 / 255) > 0.01, tag


def test_same_seed_same_bytes_other_seed_other_images(tiny_run, tmp_path):
    first = _write(tiny_run, tmp_path / "a", seed=5)
    second = _write(tiny_run, tmp_path / "b", seed=5)
    third = _write(tiny_run, tmp_path / "c", seed=6)
    for name in first:
        assert first[name].read_bytes() == second[name].read_bytes()
    assert first["prior_samples"].read_bytes() != third["prior_samples"].read_bytes()


def test_temperature_zero_gives_the_mean_at_z_zero(tiny_run):
    config, model, _ = evaluation.load_run(tiny_run)
    cold = figures.prior_samples(model, config, NUM, seed=1, temperature=0.0)
    np.testing.assert_array_equal(cold["sample"], cold["mean"])
    np.testing.assert_allclose(
        cold["mean"], np.broadcast_to(cold["mean"][:1], (NUM, SIZE, SIZE, 3))
    )
    warm = figures.prior_samples(model, config, NUM, seed=1, temperature=1.0)
    # The residual is a draw with the model's spread, not float noise.
    std = figures.y_std(warm["outputs"], config, "exact")
    ratio = np.sqrt(np.mean(warm["residual"] ** 2) / np.mean(std**2))
    assert 0.7 < ratio < 1.4, ratio


def test_y_std_of_the_structured_model_is_exact(tiny_run):
    config, model, _ = evaluation.load_run(tiny_run)
    outputs = figures.prior_samples(model, config, 2, seed=0)["outputs"]
    exact = figures.y_std(outputs, config, "exact")
    sampled = figures.y_std(outputs, config, "sample", seed=(1, 2))
    assert exact.shape == (2, SIZE, SIZE)
    # 1000 samples: the std's relative error is about 1 / sqrt(2000).
    np.testing.assert_allclose(sampled, exact, rtol=0.15)


@pytest.mark.slow
def test_cli_writes_the_figures_and_bad_splits_fail(tiny_run, tmp_path):
    env = tiny.script_env()
    script = [sys.executable, str(ROOT / "sample.py")]
    done = subprocess.run(
        script
        + [f"--model_dir={tiny_run}", f"--output_dir={tmp_path}", "--num=2"]
        + ["--temperature=0.5", "--seed=3"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name in ("prior_samples", "reconstructions", "std_y"):
        assert (tmp_path / f"{name}.png").exists() and name in done.stdout
    assert f"health: {tmp_path / 'health.json'}" in done.stdout
    assert "health: diverged samples" in done.stdout
    with pytest.raises(data.DatasetError, match="split"):
        _write(tiny_run, tmp_path, split="nope")


def test_inpainting_keeps_observed_pixels_and_conditions_the_rest(tiny_run):
    config, model, _ = evaluation.load_run(str(tiny_run))
    batch = figures.load_images(config, "test", NUM)
    mask = figures.inpainting_mask("center", NUM, SIZE)
    assert mask.shape == (NUM, SIZE, SIZE) and not mask[:, 8, 8].any()
    assert mask[:, 0, 0].all() and mask.mean() == 0.75
    filled = figures.inpaint(model, config, batch, mask, seed=1)
    y = np.asarray(batch["y"])
    for key in ("y_mean", "y_sample"):
        np.testing.assert_array_equal(filled[key][mask], y[mask])
        assert np.all(np.isfinite(filled[key]))
    chroma_mask = filled["masks"]["cbcr"]
    assert chroma_mask.shape == (NUM, SIZE // 4, SIZE // 4, 2)
    assert not chroma_mask[:, 1:3, 1:3].any() and chroma_mask[:, 0, 0].all()
    # Missing Y pixels follow the structured conditional, not the mean: the
    # conditional mean differs from the unconditional one inside the hole.
    assert np.abs(filled["mean"] - filled["reconstruction"])[~mask].max() > 0
    for row in ("input", "masked", "reconstruction", "mean", "sample"):
        assert filled[row].shape == (NUM, SIZE, SIZE, 3)
        assert filled[row].min() >= 0.0 and filled[row].max() <= 1.0
    again = figures.inpaint(model, config, batch, mask, seed=1)
    np.testing.assert_array_equal(again["sample"], filled["sample"])


def test_inpainting_masks_random_and_from_an_image(tmp_path):
    random = figures.inpainting_mask("random", 2, SIZE, seed=4)
    np.testing.assert_array_equal(random, figures.inpainting_mask("random", 2, SIZE, 4))
    assert 0.3 < random.mean() < 0.7
    picture = np.zeros((32, 32), np.uint8)
    picture[:, 16:] = 255  # Light = missing: the right half.
    Image.fromarray(picture).save(tmp_path / "mask.png")
    mask = figures.inpainting_mask(str(tmp_path / "mask.png"), 1, SIZE)
    assert mask[0, :, : SIZE // 2].all() and not mask[0, :, SIZE // 2 :].any()
    with pytest.raises(ValueError, match="--mask must be center, random"):
        figures.inpainting_mask(str(tmp_path / "missing.png"), 1, SIZE)


@pytest.mark.slow
def test_cli_inpaints_with_the_same_bytes_for_the_same_seed(tiny_run, tmp_path):
    env = tiny.script_env()
    outputs = []
    for run in ("a", "b"):
        done = subprocess.run(
            [sys.executable, str(ROOT / "sample.py"), f"--model_dir={tiny_run}"]
            + [f"--output_dir={tmp_path / run}", "--num=2", "--inpaint"]
            + ["--mask=random", "--std_method=sample"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append((tmp_path / run / "inpainting.png").read_bytes())
    assert outputs[0] == outputs[1]


def test_figures_write_print_and_warn_the_sample_health(
    tiny_run, tmp_path, capsys, monkeypatch
):
    paths = _write(tiny_run, tmp_path / "a", seed=2)
    saved = json.loads(paths["health"].read_text())
    config, model, _ = evaluation.load_run(tiny_run)
    assert saved == health.run_health((config, model), "test", seed=2)
    assert saved["num_prior"] == health.NUM_PRIOR
    printed = capsys.readouterr()
    assert health.format_health(saved) in printed.out
    assert "svae: warning" not in printed.err
    # Diverged samples (the same criterion, svae.health) warn with the cause.
    diverged = dict(saved, prior_off_diagonal=0.5)
    diverged["prior_diverged"] = dict(saved["prior_diverged"], count=3)
    monkeypatch.setattr(health, "run_health", lambda *args, **kwargs: diverged)
    _write(tiny_run, tmp_path / "b")
    warning = capsys.readouterr().err
    assert warning.startswith("svae: warning: 3 of 64 prior samples (|residual of Y|")
    assert (
        "mass at 50% of the pixels (SparsePrecisionGaussian.off_diagonal_ratio()"
        in (warning)
    )


def test_sample_config_cache_dir_overrides_the_runs(tiny_run, tmp_path):
    folder = tmp_path / "photos"
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        for index in range(NUM):
            pixels = np.full((20, 24, 3), 60 * index, np.uint8)
            Image.fromarray(pixels).save(folder / split / f"{index}.png")
    cache = tmp_path / "cache"
    _write(
        tiny_run,
        tmp_path / "out",
        dataset=f"folder:{folder}",
        cache_dir=str(cache),
        std_method="sample",
    )
    assert [p.suffix for p in sorted(cache.iterdir())] == [".json", ".npy"]


def test_residual_spread_is_three_sigma_and_ignores_a_diverging_sample():
    rng = np.random.default_rng(0)
    residual = rng.normal(0.0, 0.1, (6, 32, 32))
    # 3 standard deviations for Gaussian residuals, as scipy's robust scale.
    assert figures.residual_spread(residual) == pytest.approx(
        3.0 * scipy.stats.median_abs_deviation(residual, axis=None, scale="normal")
    )
    assert figures.residual_spread(residual) == pytest.approx(0.3, rel=0.03)
    diverged = residual.copy()
    diverged[2] *= 1e6  # One sample of six diverges; others keep their range.
    diverged[3, 0, 0] = np.inf
    assert figures.residual_spread(diverged) == pytest.approx(0.3, rel=0.3)
    assert 3.0 * np.std(diverged[np.isfinite(diverged)]) > 1e4
    assert figures.residual_spread(np.zeros((2, 4, 4))) == 1.0
