"""Tests of svae.likelihoods against scipy and dense references."""

import contextlib

import dense_reference
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from svae import likelihoods, xla
from svae.distributions import Structure


def _outputs(rng, batch, size, low, kernel_size, structured=True, chroma=True):
    """Random model outputs in float64."""
    k = (kernel_size**2 - 1) // 2
    outputs = {"y_mean": rng.uniform(0, 1, (batch, size, size))}
    if structured:
        outputs["log_diag"] = rng.uniform(0.5, 1.5, (batch, size, size))
        outputs["off_diag"] = rng.normal(0, 0.7, (batch, size, size, k))
    else:
        outputs["y_log_scale"] = rng.uniform(-2, 0, (batch, size, size))
    if chroma:
        outputs["cbcr_mean"] = rng.uniform(0, 1, (batch, low, low, 2))
        outputs["cbcr_log_scale"] = rng.uniform(-2, 0, (batch, low, low, 2))
    return {name: tf.constant(value) for name, value in outputs.items()}


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (5, 1), (3, 2)])
def test_ycbcr_log_likelihood_matches_dense_gaussian_and_scipy(kernel_size, dilation):
    rng = np.random.default_rng(0)
    outputs = _outputs(rng, 2, 5, 2, kernel_size)
    batch = {
        "y": tf.constant(rng.uniform(0, 1, (2, 5, 5))),
        "cbcr": tf.constant(rng.uniform(0, 1, (2, 2, 2, 2))),
    }
    got = likelihoods.log_likelihood(
        outputs, batch, Structure(kernel_size, dilation)
    ).numpy()
    factor = dense_reference.dense_factor(
        outputs["log_diag"], outputs["off_diag"], kernel_size, dilation
    ).numpy()
    for b in range(2):
        covariance = np.linalg.inv(factor[b] @ factor[b].T)
        y = scipy.stats.multivariate_normal(
            outputs["y_mean"][b].numpy().ravel(), covariance
        ).logpdf(batch["y"][b].numpy().ravel())
        cbcr = (
            scipy.stats.norm(
                outputs["cbcr_mean"][b], np.exp(outputs["cbcr_log_scale"][b])
            )
            .logpdf(batch["cbcr"][b])
            .sum()
        )
        np.testing.assert_allclose(got[b], y + cbcr, rtol=1e-8)


def test_factorised_gray_log_likelihood_matches_scipy():
    rng = np.random.default_rng(1)
    outputs = _outputs(rng, 3, 4, 1, 3, structured=False, chroma=False)
    y = rng.uniform(0, 1, (3, 4, 4))
    got = likelihoods.log_likelihood(outputs, {"y": tf.constant(y)}).numpy()
    want = scipy.stats.norm(outputs["y_mean"], np.exp(outputs["y_log_scale"])).logpdf(y)
    np.testing.assert_allclose(got, want.sum(axis=(1, 2)), rtol=1e-10)


def test_kl_matches_closed_form():
    rng = np.random.default_rng(2)
    mean, log_scale = rng.normal(size=(4, 6)), rng.normal(0, 0.5, (4, 6))
    got = likelihoods.kl_divergence(tf.constant(mean), tf.constant(log_scale))
    want = 0.5 * np.sum(mean**2 + np.exp(2 * log_scale) - 1 - 2 * log_scale, axis=1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (5, 2)])
def test_off_diag_l1_counts_only_entries_inside_the_image(kernel_size, dilation):
    rng = np.random.default_rng(3)
    outputs = _outputs(rng, 2, 6, 2, kernel_size)
    entries = dense_reference.factor_entries(6, 6, kernel_size, dilation)
    off = np.abs(outputs["off_diag"].numpy())
    want = [sum(off[b, i, j, m] for _, _, i, j, m in entries) for b in range(2)]
    got = likelihoods.off_diag_l1(outputs, Structure(kernel_size, dilation)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert len(entries) < 6 * 6 * off.shape[-1]


@pytest.mark.parametrize("compiled", [True, False], ids=["xla", "portable"])
@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (5, 2)])
def test_off_diag_l1_gradient_is_the_sign_on_entries_inside_the_image(
    kernel_size, dilation, compiled
):
    rng = np.random.default_rng(13)
    outputs = _outputs(rng, 2, 6, 2, kernel_size)
    weights = tf.constant([0.5, -2.0], tf.float64)
    off_diag = outputs["off_diag"]
    mode = contextlib.nullcontext() if compiled else xla.portable()
    with mode, tf.GradientTape() as tape:
        tape.watch(off_diag)
        l1 = likelihoods.off_diag_l1(outputs, Structure(kernel_size, dilation))
        total = tf.reduce_sum(weights * l1)
    want = np.zeros(off_diag.shape)
    for _, _, i, j, m in dense_reference.factor_entries(6, 6, kernel_size, dilation):
        want[:, i, j, m] = weights.numpy() * np.sign(off_diag.numpy()[:, i, j, m])
    np.testing.assert_allclose(tape.gradient(total, off_diag), want, rtol=1e-12)


def test_squared_error_sums_y_and_chroma():
    rng = np.random.default_rng(4)
    outputs = _outputs(rng, 2, 4, 2, 3)
    y, cbcr = rng.uniform(size=(2, 4, 4)), rng.uniform(size=(2, 2, 2, 2))
    got = likelihoods.squared_error(outputs, {"y": y, "cbcr": cbcr}).numpy()
    want = ((y - outputs["y_mean"]) ** 2).numpy().sum((1, 2)) + (
        (cbcr - outputs["cbcr_mean"]) ** 2
    ).numpy().sum((1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_sample_is_seeded_and_has_the_batch_structure():
    rng = np.random.default_rng(5)
    outputs = _outputs(rng, 2, 8, 2, 3)
    structure = Structure()
    first = likelihoods.sample(outputs, tf.constant([1, 2]), structure)
    second = likelihoods.sample(outputs, tf.constant([1, 2]), structure)
    assert first["y"].shape == (2, 8, 8) and first["cbcr"].shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(first["y"], second["y"])
    rgb = likelihoods.to_rgb(first, chroma_factor=4)
    assert rgb.shape == (2, 8, 8, 3)


def test_structured_outputs_without_their_structure_are_an_error():
    outputs = _outputs(np.random.default_rng(6), 2, 8, 2, 3)
    with pytest.raises(ValueError, match="structure"):
        likelihoods.sample(outputs, tf.constant([1, 2]))


def _structured_chroma(rng, outputs, kernel_size):
    """`outputs` with Cb and Cr given random factors (channel first)."""
    low = outputs["cbcr_mean"].shape[1]
    k = (kernel_size**2 - 1) // 2
    outputs = dict(outputs)
    del outputs["cbcr_log_scale"]
    outputs["cbcr_log_diag"] = tf.constant(rng.uniform(0.5, 1.5, (2, 2, low, low)))
    outputs["cbcr_off_diag"] = tf.constant(rng.normal(0, 0.7, (2, 2, low, low, k)))
    return outputs


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (5, 1)])
def test_structured_chroma_is_each_channel_a_dense_gaussian(kernel_size, dilation):
    # The dense reference assembles each channel's factor from the documented
    # convention; scipy gives each channel's density.
    rng = np.random.default_rng(7)
    outputs = _structured_chroma(rng, _outputs(rng, 2, 4, 3, kernel_size), kernel_size)
    batch = {
        "y": tf.constant(rng.uniform(0, 1, (2, 4, 4))),
        "cbcr": tf.constant(rng.uniform(0, 1, (2, 3, 3, 2))),
    }
    got = likelihoods.log_likelihood_parts(
        outputs, batch, Structure(kernel_size, dilation)
    )["cbcr"].numpy()
    factor = dense_reference.dense_factor(
        outputs["cbcr_log_diag"], outputs["cbcr_off_diag"], kernel_size, dilation
    ).numpy()
    for b in range(2):
        expected = 0.0
        for c in range(2):
            expected += scipy.stats.multivariate_normal(
                outputs["cbcr_mean"][b, ..., c].numpy().ravel(),
                np.linalg.inv(factor[b, c] @ factor[b, c].T),
            ).logpdf(batch["cbcr"][b, ..., c].numpy().ravel())
        np.testing.assert_allclose(got[b], expected, rtol=1e-8)


def test_structured_chroma_samples_and_conditionals_are_channel_last():
    rng = np.random.default_rng(8)
    structure = Structure()
    outputs = _structured_chroma(rng, _outputs(rng, 2, 8, 4, 3), 3)
    drawn = likelihoods.sample(outputs, tf.constant([1, 2]), structure)
    assert drawn["cbcr"].shape == (2, 4, 4, 2)
    # The sample's covariance: each channel's, the channels independent.
    chroma = likelihoods.likelihood(outputs, structure)["cbcr"]
    many = chroma.sample(400, seed=[5, 6]).numpy()
    residual = many - outputs["cbcr_mean"].numpy()
    assert abs(np.mean(residual[..., 0] * residual[..., 1])) < 0.1 * np.mean(
        residual**2
    )
    # Conditioned on Cr and half of Cb, Cr is kept and Cb's mean is the dense
    # conditional mean of Cb's field alone.
    observed = {"y": tf.constant(rng.uniform(0, 1, (2, 8, 8)))}
    observed["cbcr"] = tf.constant(rng.uniform(0, 1, (2, 4, 4, 2)))
    cb_mask = np.zeros((2, 4, 4), bool)
    cb_mask[:, :2] = True
    masks = {
        "y": tf.ones([2, 8, 8], tf.bool),
        "cbcr": tf.constant(np.stack([cb_mask, np.ones_like(cb_mask)], -1)),
    }
    mean, sample = likelihoods.conditional(
        outputs, observed, masks, tf.constant([3, 4]), structure
    )
    np.testing.assert_array_equal(mean["cbcr"][..., 1], observed["cbcr"][..., 1])
    np.testing.assert_array_equal(sample["cbcr"][..., 1], observed["cbcr"][..., 1])
    factor = dense_reference.dense_factor(
        outputs["cbcr_log_diag"][:, 0], outputs["cbcr_off_diag"][:, 0], 3, 1
    ).numpy()
    for b in range(2):
        precision = factor[b] @ factor[b].T
        free, known = ~cb_mask[b].ravel(), cb_mask[b].ravel()
        loc = outputs["cbcr_mean"][b, ..., 0].numpy().ravel()
        gap = observed["cbcr"][b, ..., 0].numpy().ravel()[known] - loc[known]
        expected = loc[free] - np.linalg.solve(
            precision[np.ix_(free, free)], precision[np.ix_(free, known)] @ gap
        )
        np.testing.assert_allclose(
            mean["cbcr"][b, ..., 0].numpy().ravel()[free], expected, rtol=1e-6
        )
