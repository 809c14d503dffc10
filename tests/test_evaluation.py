"""Tests of svae.evaluation and evaluate.py: the IW bound, metrics, reports."""

import csv
import json
import pathlib
import re
import shutil
import subprocess
import sys

import dense_reference
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tiny
from scipy import stats

from svae import config as config_lib
from svae import data, evaluation, figures, flops, training

tfd = tfp.distributions
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _linear_gaussian(seed=0, latent_dim=2, data_dim=3, noise_scale=0.5):
    """`z ~ N(0, I)`, `x|z ~ N(W z + b, s^2 I)`: weights, x and exact log p(x)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(data_dim, latent_dim))
    bias = rng.normal(size=data_dim)
    x = rng.normal(size=(4, data_dim)) * 2.0
    covariance = weights @ weights.T + noise_scale**2 * np.eye(data_dim)
    log_px = stats.multivariate_normal(bias, covariance).logpdf(x)

    def log_likelihood_fn(z):
        """`log p(x|z)` `[S, B]` for `z` `[S, B, D]`."""
        mean = tf.einsum("dl,sbl->sbd", weights, z) + bias
        return tfd.MultivariateNormalDiag(
            mean, tf.fill(tf.shape(mean), np.float64(noise_scale))
        ).log_prob(x)

    # The exact posterior, N(m, P^-1) with P = I + W^T W / s^2.
    precision = np.eye(latent_dim) + weights.T @ weights / noise_scale**2
    post_cov = np.linalg.inv(precision)
    post_mean = (x - bias) @ weights @ post_cov.T / noise_scale**2
    return log_likelihood_fn, x, log_px, post_mean, post_cov


def test_iw_bound_is_exact_with_the_true_posterior():
    log_lik, _, log_px, post_mean, post_cov = _linear_gaussian()
    posterior = tfd.MultivariateNormalTriL(
        post_mean, np.broadcast_to(np.linalg.cholesky(post_cov), (4, 2, 2))
    )
    prior = tfd.MultivariateNormalDiag(tf.zeros([2], tf.float64))
    z = posterior.sample(3, seed=[1, 2])
    result = evaluation.importance_weighted_bound(log_lik, posterior, prior, z)
    # Every weight is p(x, z) / p(z|x) = p(x): the bound is exact for any K.
    np.testing.assert_allclose(result["bound"], log_px, rtol=1e-9)
    np.testing.assert_allclose(result["log_weights"], np.tile(log_px, (3, 1)))


def test_iw_bound_converges_to_log_px_and_grows_with_k():
    log_lik, _, log_px, post_mean, post_cov = _linear_gaussian()
    # A diagonal, shifted, too-wide posterior: the ELBO is well below log p(x).
    posterior = tfd.MultivariateNormalDiag(
        post_mean + 0.3, np.broadcast_to(2.0 * np.sqrt(np.diag(post_cov)), (4, 2))
    )
    prior = tfd.MultivariateNormalDiag(tf.zeros([2], tf.float64))
    z = posterior.sample(40_000, seed=[3, 4])
    gaps = {}
    for k in (1, 10, 100, 40_000):
        # Independent groups of k samples: the mean bound estimates E[IW_k].
        groups = tf.reshape(z, [-1, k, 4, 2])[:20]
        bounds = [
            evaluation.importance_weighted_bound(log_lik, posterior, prior, g)["bound"]
            for g in groups
        ]
        gaps[k] = np.mean(log_px - np.mean(bounds, axis=0))
    assert gaps[1] > gaps[10] > gaps[100] > gaps[40_000] >= 0.0
    assert gaps[1] > 0.5
    assert gaps[40_000] < 0.01


def test_chunking_does_not_change_the_bound():
    log_lik, _, _, post_mean, post_cov = _linear_gaussian()
    posterior = tfd.MultivariateNormalDiag(post_mean, np.ones((4, 2)))
    prior = tfd.MultivariateNormalDiag(tf.zeros([2], tf.float64))
    z = posterior.sample(50, seed=[5, 6])
    whole = evaluation.importance_weighted_bound(log_lik, posterior, prior, z)
    calls = []

    def counted(chunk):
        calls.append(chunk.shape[0])
        return log_lik(chunk)

    chunked = evaluation.importance_weighted_bound(counted, posterior, prior, z, 7)
    assert calls == [7] * 7 + [1]
    np.testing.assert_allclose(chunked["bound"], whole["bound"], rtol=1e-12)


def test_chunking_a_k_known_at_run_time_does_not_change_the_bound():
    # As in a served model: z is [None, B, D] when traced.
    log_lik, _, _, post_mean, _ = _linear_gaussian()
    posterior = tfd.MultivariateNormalDiag(post_mean, np.ones((4, 2)))
    prior = tfd.MultivariateNormalDiag(tf.zeros([2], tf.float64))
    z = posterior.sample(50, seed=[5, 6])
    whole = evaluation.importance_weighted_bound(log_lik, posterior, prior, z)
    sizes = tf.Variable(tf.zeros([0], tf.int32), shape=[None])

    def counted(chunk):
        sizes.assign(tf.concat([sizes, tf.shape(chunk)[:1]], 0))
        return log_lik(chunk)

    @tf.function(input_signature=[tf.TensorSpec([None, 4, 2], tf.float64)])
    def bound(z):
        return evaluation.importance_weighted_bound(counted, posterior, prior, z, 7)

    chunked = bound(z)
    assert sizes.numpy().tolist() == [7] * 7 + [1]
    for name in ("bound", "log_weights", "log_likelihood"):
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-12)


def test_bound_survives_weights_of_thousands_of_nats():
    posterior = tfd.MultivariateNormalDiag(tf.zeros([1, 1], tf.float64))
    z = posterior.sample(4, seed=[0, 1])
    offsets = tf.constant([[-9000.0], [-9001.0], [-9002.0], [-9003.0]], tf.float64)
    # With the prior as proposal, each log weight is its log-likelihood.
    result = evaluation.importance_weighted_bound(
        lambda chunk: offsets, posterior, posterior, z
    )
    expected = -9000.0 + np.log(np.mean(np.exp(-np.arange(4.0))))
    np.testing.assert_allclose(result["bound"], [expected], rtol=1e-12)


@pytest.mark.parametrize("factor", [1, 4])
def test_rgb_mse_matches_numpy(factor):
    rng = np.random.default_rng(0)
    size = 8
    low = size // factor
    y_mean = rng.uniform(0.0, 1.0, (2, size, size)).astype(np.float32)
    if factor == 1:
        cbcr = rng.uniform(0.2, 0.8, (2, size, size, 2)).astype(np.float32)
    else:
        # Constant chroma: any upsampling keeps it, so numpy needs none.
        cbcr = np.broadcast_to(
            rng.uniform(0.2, 0.8, (2, 1, 1, 2)), (2, low, low, 2)
        ).astype(np.float32)
    rgb = rng.uniform(0.0, 1.0, (2, size, size, 3)).astype(np.float32)
    outputs = {"y_mean": tf.constant(y_mean), "cbcr_mean": tf.constant(cbcr)}
    mse = evaluation.rgb_mse(outputs, {"rgb": rgb}, factor)

    full = (
        cbcr if factor == 1 else np.broadcast_to(cbcr[:, :1, :1], rgb.shape[:3] + (2,))
    )
    cb, cr = full[..., 0] - 0.5, full[..., 1] - 0.5
    # The JPEG (JFIF) inverse with its published coefficients.
    predicted = np.stack(
        [
            y_mean + 1.402 * cr,
            y_mean - 0.344136 * cb - 0.714136 * cr,
            y_mean + 1.772 * cb,
        ],
        axis=-1,
    )
    predicted = np.clip(predicted, 0.0, 1.0)
    expected = np.mean((255.0 * (rgb - predicted)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(mse, expected, rtol=2e-4)


def test_flops_of_dense_and_conv_match_the_hand_count():
    dense = keras.layers.Dense(5, use_bias=False)
    conv = keras.layers.Conv2D(4, 3, use_bias=False)
    dense_flops = flops.count_flops(dense, tf.TensorSpec([1, 7], tf.float32))
    conv_flops = flops.count_flops(conv, tf.TensorSpec([1, 8, 8, 2], tf.float32))
    assert dense_flops == 2 * 7 * 5
    # 6x6 outputs, each 3x3x2 multiply-adds per output channel.
    assert conv_flops == 2 * 6 * 6 * 4 * 3 * 3 * 2


def _evaluate(model_dir, **kwargs):
    """Runs `evaluate` on a tiny run with quiet defaults."""
    defaults = dict(model_dir=str(model_dir), num_samples=8, progress=False)
    return evaluation.evaluate(evaluation.EvalConfig(**(defaults | kwargs)))


def _csv(path):
    """Reads a per-image CSV as `{column: array}`."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


@pytest.mark.slow
def test_iw_bound_beats_the_elbo_and_grows_with_k(tiny_run, tmp_path):
    nll = {}
    for k in (1, 16, 256):
        report = _evaluate(
            tiny_run, num_samples=k, sample_chunk=64, output_dir=str(tmp_path / str(k))
        )
        per_image = _csv(report["csv"])
        # For K = 1 both estimate the ELBO; beyond, the bound must be above it.
        if k > 1:
            assert np.mean(-per_image["nll"]) > np.mean(per_image["elbo"])
        nll[k] = report["nll"]["mean"]
    assert report["kl"]["mean"] > 1.0
    assert nll[1] > nll[16] > nll[256]


@pytest.mark.slow
def test_chunks_and_batches_do_not_change_per_image_values(tiny_run, tmp_path):
    first = _evaluate(
        tiny_run, sample_chunk=3, batch_size=5, output_dir=str(tmp_path / "a")
    )
    second = _evaluate(
        tiny_run, sample_chunk=8, batch_size=16, output_dir=str(tmp_path / "b")
    )
    a, b = _csv(first["csv"]), _csv(second["csv"])
    assert len(a["nll"]) == first["num_images"] == 16
    for name in evaluation.METRICS:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_report_summarises_the_csv_and_counts_dims(tiny_run, tmp_path):
    report = _evaluate(tiny_run, max_images=6, output_dir=str(tmp_path))
    saved = json.loads(pathlib.Path(report["json"]).read_text())
    per_image = _csv(report["csv"])
    assert saved["num_images"] == 6 and len(per_image["nll"]) == 6
    for name in evaluation.METRICS:
        assert saved[name]["mean"] == pytest.approx(np.mean(per_image[name]), 1e-6)
        assert saved[name]["std"] == pytest.approx(np.std(per_image[name]), 1e-5)
    # Y 16x16 plus Cb and Cr at 4x4.
    assert saved["dims"] == {"y": 256, "cbcr": 32, "total": 288}
    np.testing.assert_allclose(
        per_image["nll_bpd"], per_image["nll"] / (288 * np.log(2.0)), rtol=1e-6
    )
    assert saved["flops_per_image"] > 0 and saved["images_per_second"] > 0
    assert saved["kl"]["mean"] > 0


@pytest.mark.slow
def test_recon_terms_split_the_elbo_and_match_scipy(tiny_run, tmp_path):
    report = _evaluate(
        tiny_run, max_images=5, num_samples=6, output_dir=str(tmp_path), seed=3
    )
    per_image = _csv(report["csv"])
    assert evaluation.recon_metrics(report["dims"]) == (
        "recon_y_bpd",
        "recon_cbcr_bpd",
    )
    for name in ("recon_y_bpd", "recon_cbcr_bpd"):
        assert report[name]["mean"] == pytest.approx(np.mean(per_image[name]), 1e-6)
    nats = {
        group: per_image[f"recon_{group}_bpd"] * report["dims"][group] * np.log(2.0)
        for group in ("y", "cbcr")
    }
    # The ELBO is minus the groups' reconstruction terms minus the KL.
    np.testing.assert_allclose(
        per_image["elbo"], -nats["y"] - nats["cbcr"] - per_image["kl"], rtol=1e-5
    )
    # CbCr's term from scratch: the same posterior samples, scipy's Gaussian
    # of each channel (the structured chroma: its precision L L^T built by
    # the dense reference).
    config, model, _ = evaluation.load_run(tiny_run)
    batch = next(iter(evaluation._images(config, "test", 5, 5)[0]))
    z_mean, z_log_scale = model.encode(batch["y"], batch["cbcr"])
    noise = evaluation._latent_noise(3, 0, 5, 6, config.latent_dim)
    outputs = evaluation._decode_samples(model, z_mean + tf.exp(z_log_scale) * noise)
    factor = dense_reference.dense_factor(
        tf.cast(outputs["cbcr_log_diag"], tf.float64),
        tf.cast(outputs["cbcr_off_diag"], tf.float64),
        **config.structure.kwargs,
    ).numpy()
    # [K, images, channel, pixels], as the factor's rows.
    mean = np.moveaxis(outputs["cbcr_mean"].numpy(), -1, 2).reshape(6, 5, 2, -1)
    values = np.moveaxis(batch["cbcr"].numpy(), -1, 1).reshape(5, 2, -1)
    log_p = np.zeros((6, 5))
    for k, i, c in np.ndindex(6, 5, 2):
        precision = factor[k, i, c] @ factor[k, i, c].T
        log_p[k, i] += stats.multivariate_normal(
            mean[k, i, c], np.linalg.inv(precision)
        ).logpdf(values[i, c])
    np.testing.assert_allclose(nats["cbcr"], -log_p.mean(axis=0), rtol=1e-4)


@pytest.mark.slow
def test_same_seed_same_numbers_other_seed_other_numbers(tiny_run, tmp_path):
    runs = [
        _evaluate(tiny_run, seed=s, max_images=4, output_dir=str(tmp_path / str(i)))
        for i, s in enumerate((1, 1, 2))
    ]
    values = [_csv(r["csv"])["nll"] for r in runs]
    np.testing.assert_array_equal(values[0], values[1])
    assert not np.allclose(values[0], values[2])


def test_bad_inputs_raise_errors_that_say_what_to_do(tiny_run, tmp_path):
    with pytest.raises(evaluation.EvaluationError, match="config.json"):
        _evaluate(tmp_path)
    with pytest.raises(evaluation.EvaluationError, match="does not exist"):
        _evaluate(tmp_path / "missing")
    no_checkpoint = tmp_path / "fresh"
    no_checkpoint.mkdir()
    (no_checkpoint / "config.json").write_text((tiny_run / "config.json").read_text())
    with pytest.raises(evaluation.EvaluationError, match="no checkpoint"):
        _evaluate(no_checkpoint)
    (no_checkpoint / "config.json").write_text('{"no_such_field": 1}')
    with pytest.raises(evaluation.EvaluationError, match="config.json.*no_such_field"):
        _evaluate(no_checkpoint)
    with pytest.raises(data.DatasetError, match="split"):
        _evaluate(tiny_run, split="validation")
    with pytest.raises(evaluation.EvaluationError, match="evaluate.py"):
        evaluation.compare([str(no_checkpoint)])
    with pytest.raises(ValueError, match="num_samples"):
        evaluation.EvalConfig(model_dir=str(tiny_run), num_samples=0)


def test_evaluate_takes_the_k_a_served_model_takes():
    from svae import export

    assert config_lib.MAX_NUM_SAMPLES == export.MAX_SERVED_SAMPLES
    most = export.MAX_SERVED_SAMPLES
    assert evaluation.EvalConfig(model_dir="run", num_samples=most).num_samples == most
    with pytest.raises(ValueError, match=rf"num_samples must be in \[1, {most}\]"):
        evaluation.EvalConfig(model_dir="run", num_samples=most + 1)
    with pytest.raises(ValueError, match="num_samples must be in"):
        evaluation.EvalConfig(model_dir="run", num_samples=2_000_000_000)


# A saved report with only what `compare` prints.
REPORT = {
    "model": "vae_diag",
    "model_dir": "run",
    "nll": {"mean": -100.0, "std": 5.0},
    "nll_bpd": {"mean": -0.5},
    "kl": {"mean": 3.0},
    "flops_per_image": 1e6,
    "mse": {"mean": 30.0, "std": 4.0},
    "num_images": 3,
    "num_samples": 4,
}


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{}", "it has no model"),
        ("null", "it holds null, not a JSON object"),
        ("[1, 2]", "it holds \\[1, 2\\], not a JSON object"),
        ("not json {", "cannot be read as JSON: Expecting value"),
        ("", "cannot be read as JSON"),
        (json.dumps(REPORT | {"nll": {"mean": None, "std": 1}}), "nll.mean is null"),
        (json.dumps(REPORT | {"kl": 3.0}), "it has no kl.mean"),
        (json.dumps(REPORT | {"num_images": "3"}), 'num_images is "3", not a number'),
        (json.dumps(REPORT | {"model": None}), "its model is null, not a string"),
        (json.dumps(REPORT | {"recon_y_bpd": None}), "reconstruction terms or health"),
        (json.dumps(REPORT | {"health": {"x": 1}}), "reconstruction terms or health"),
    ],
)
def test_compare_names_the_report_it_cannot_read(tmp_path, text, problem):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for run, content in ((good, json.dumps(REPORT)), (bad, text)):
        (run / evaluation.EVAL_DIR).mkdir(parents=True)
        (run / evaluation.EVAL_DIR / "test.json").write_text(content)
    assert "| vae_diag (`run`) | -100 ± 5 |" in evaluation.compare([str(good)])
    path = bad / evaluation.EVAL_DIR / "test.json"
    with pytest.raises(evaluation.EvaluationError) as error:
        evaluation.compare([str(good), str(bad)])
    message = str(error.value)
    assert message.startswith(f"{path} is not an evaluation written by evaluate.py")
    assert re.search(problem, message), message
    assert "\n" not in message and "evaluate.py --model_dir=" in message


@pytest.mark.parametrize("where", ["under_file", "proc"])
def test_unwritable_output_dir_fails_before_the_run_is_read(tmp_path, where):
    regular = tmp_path / "regular"
    regular.write_text("x")
    output_dir = {"under_file": regular / "eval", "proc": "/proc/svae-eval"}[where]
    message = {"under_file": "lies under .*regular, which is a file"}
    message = message.get(where, "cannot be written")
    # The run does not exist: the output folder is checked before it is read.
    missing = tmp_path / "missing"
    with pytest.raises(evaluation.EvaluationError, match="--output_dir=.*" + message):
        _evaluate(missing, output_dir=str(output_dir))
    sample_config = figures.SampleConfig(
        model_dir=str(missing), output_dir=str(output_dir)
    )
    with pytest.raises(evaluation.EvaluationError, match="--output_dir=.*" + message):
        figures.write_figures(sample_config)


@pytest.mark.slow
def test_unwritable_default_output_dir_is_an_error_before_any_work(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval", "samples"))
    (run / evaluation.EVAL_DIR).write_text("x")
    (run / "samples").write_text("x")
    with pytest.raises(evaluation.EvaluationError, match="eval is a file"):
        _evaluate(run)
    with pytest.raises(evaluation.EvaluationError, match="samples is a file"):
        figures.write_figures(figures.SampleConfig(model_dir=str(run)))


@pytest.mark.slow
def test_cli_evaluates_and_compares(tiny_run, tmp_path):
    env = tiny.script_env()
    script = [sys.executable, str(ROOT / "evaluate.py")]
    done = subprocess.run(
        script
        + [f"--model_dir={tiny_run}", "--num_samples=4", "--max_images=3"]
        + ["--noprogress"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "NLL (nats/image, IW bound)" in done.stdout
    assert json.loads((tiny_run / "eval" / "test.json").read_text())["num_images"] == 3
    table = evaluation.compare([str(tiny_run), str(tiny_run)], names=["a", "b"])
    rows = table.splitlines()
    assert len(rows) == 4 and rows[2].startswith("| a |") and " ± " in rows[2]
    bad = subprocess.run(
        script + [f"--model_dir={tmp_path}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "config.json" in bad.stderr


@pytest.mark.slow
def test_gray_beta_vae_is_scored_without_beta(tmp_path):
    config = tiny.config(
        tmp_path / "run", model="beta_vae_diag", color="gray", latent_dim=4, steps=6
    )
    training.train(config)
    first = _evaluate(tmp_path / "run", max_images=4, output_dir=str(tmp_path / "a"))
    assert first["dims"] == {"y": 256, "cbcr": 0, "total": 256}
    gray = _csv(first["csv"])
    assert "recon_cbcr_bpd" not in first and "recon_cbcr_bpd" not in gray
    np.testing.assert_allclose(
        gray["elbo"], -gray["recon_y_bpd"] * 256 * np.log(2.0) - gray["kl"], rtol=1e-5
    )
    assert np.isfinite(first["mse"]["mean"]) and first["mse"]["mean"] > 0
    # The same weights read as vae_diag (the same heads, KL weight 1): a
    # beta anywhere in the bound or the ELBO would change them.
    path = tmp_path / "run" / "config.json"
    path.write_text(path.read_text().replace('"beta_vae_diag"', '"vae_diag"'))
    assert config_lib.load(tmp_path / "run").resolved_beta == 1.0
    second = _evaluate(tmp_path / "run", max_images=4, output_dir=str(tmp_path / "b"))
    for name in ("nll", "elbo", "kl"):
        np.testing.assert_array_equal(
            _csv(first["csv"])[name], _csv(second["csv"])[name]
        )


def test_progress_bar_has_a_target_for_a_folder_of_images(
    tiny_run, tmp_path, monkeypatch
):
    """File-based sets have no tf.data cardinality: the bar counts the files."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(5):
        pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    targets = []
    real_progress = evaluation.Progress

    def recording_progress(target, *args, **kwargs):
        targets.append(target)
        return real_progress(target, *args, **kwargs)

    monkeypatch.setattr(evaluation, "Progress", recording_progress)
    report = _evaluate(
        tiny_run,
        dataset=f"folder:{folder}",
        split="train",
        progress=True,
        output_dir=str(tmp_path / "eval"),
    )
    assert 1 <= report["num_images"] <= 5
    assert targets and targets[0] is not None and targets[0] >= report["num_images"]


@pytest.mark.slow
def test_cache_dir_overrides_the_runs_and_empty_turns_it_off(tiny_run, tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        for index in range(3):
            pixels = np.full((20, 24, 3), 40 * index, np.uint8)
            Image.fromarray(pixels).save(folder / split / f"{index}.png")
    common = dict(dataset=f"folder:{folder}", split="test", progress=False)
    cache = tmp_path / "cache"
    first = _evaluate(
        tiny_run, cache_dir=str(cache), output_dir=str(tmp_path / "a"), **common
    )
    prepared = sorted(p.name for p in cache.iterdir())
    assert len(prepared) == 2 and prepared[0].startswith("folder-photos-test-")
    off = _evaluate(tiny_run, cache_dir="", output_dir=str(tmp_path / "b"), **common)
    assert sorted(p.name for p in cache.iterdir()) == prepared
    assert first["num_images"] == off["num_images"] == 3
    assert first["nll"] == off["nll"]
