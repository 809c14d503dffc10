"""Tests of conditioning and marginal variances against dense linear algebra."""

import numpy as np
import pytest
import tensorflow as tf

from svae import linalg
from svae.distributions import SparsePrecisionGaussian


def _dist(rng, batch, height, width, kernel_size=3, dilation=1, dtype=np.float64):
    """A random well-conditioned distribution."""
    k = linalg.num_off_diagonals(kernel_size)
    return SparsePrecisionGaussian(
        tf.constant(rng.standard_normal(batch + (height, width)), dtype),
        tf.constant(0.3 * rng.standard_normal(batch + (height, width)), dtype),
        tf.constant(0.3 * rng.standard_normal(batch + (height, width, k)), dtype),
        kernel_size,
        dilation,
    )


def _dense_conditional(dist, observed, mask):
    """Conditional mean and covariance of the unobserved pixels, dense."""
    precision = dist.precision().numpy()
    loc = dist.mean().numpy().reshape(-1)
    a = ~mask.reshape(-1)
    b = mask.reshape(-1)
    precision_aa = precision[np.ix_(a, a)]
    precision_ab = precision[np.ix_(a, b)]
    gap = observed.reshape(-1)[b] - loc[b]
    mean = loc.copy()
    mean[a] = loc[a] - np.linalg.solve(precision_aa, precision_ab @ gap)
    mean[b] = observed.reshape(-1)[b]
    return mean.reshape(mask.shape), np.linalg.inv(precision_aa)


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 2)])
def test_conditional_mean_matches_dense_formula(kernel_size, dilation):
    rng = np.random.default_rng(0)
    dist = _dist(rng, (), 6, 7, kernel_size, dilation)
    observed = rng.standard_normal((6, 7))
    mask = rng.random((6, 7)) < 0.5
    expected, _ = _dense_conditional(dist, observed, mask)
    conditional = dist.conditional(observed, mask)
    np.testing.assert_allclose(conditional.mean(), expected, rtol=1e-7, atol=1e-8)


def test_conditional_mean_in_batch_with_a_centre_hole():
    rng = np.random.default_rng(1)
    dist = _dist(rng, (2,), 8, 8)
    observed = rng.standard_normal((2, 8, 8))
    mask = np.ones((2, 8, 8), bool)
    mask[:, 2:6, 2:6] = False
    mask[1, 0, :] = False  # Each image its own hole.
    mean = dist.conditional(observed, mask).mean()
    for k in range(2):
        expected, _ = _dense_conditional(dist[k], observed[k], mask[k])
        np.testing.assert_allclose(mean[k], expected, rtol=1e-7, atol=1e-8)


def test_conjugate_gradient_honours_its_tolerance():
    rng = np.random.default_rng(2)
    dist = _dist(rng, (3,), 10, 9, dtype=np.float32)
    mask = rng.random((3, 10, 9)) < 0.3
    rhs = tf.constant(rng.standard_normal((3, 10, 9)), tf.float32)
    for tolerance in (1e-2, 1e-5):
        conditional = dist.conditional(tf.zeros([3, 10, 9]), mask, tolerance=tolerance)
        u, reported, iterations = conditional.solve(rhs)
        free = tf.cast(~mask, tf.float32)
        # The true residual, recomputed through the dense precision.
        precision = dist.precision()
        applied = tf.linalg.matvec(precision, tf.reshape(free * u, [3, -1]))
        residual = free * (rhs - tf.reshape(applied, [3, 10, 9]))
        relative = tf.norm(tf.reshape(residual, [3, -1]), axis=-1) / tf.norm(
            tf.reshape(free * rhs, [3, -1]), axis=-1
        )
        assert np.all(relative.numpy() <= 2 * tolerance), (tolerance, relative)
        assert np.all(reported.numpy() <= tolerance)
        assert np.all(u.numpy()[mask] == 0)
    assert 0 < int(iterations) <= 90


def test_conditional_samples_are_exact_kriging_corrections():
    # For a fixed joint sample x*, the conditional sample is
    # x*_A - Lambda_AA^{-1} Lambda_AB (x_B - x*_B): check it densely.
    rng = np.random.default_rng(3)
    dist = _dist(rng, (), 5, 6)
    observed = rng.standard_normal((5, 6))
    mask = rng.random((5, 6)) < 0.4
    joint = dist.sample(2, seed=[5, 6]).numpy()
    samples = dist.conditional(observed, mask).sample(2, seed=[5, 6]).numpy()
    precision = dist.precision().numpy()
    a, b = ~mask.reshape(-1), mask.reshape(-1)
    for x_star, x in zip(joint, samples, strict=True):
        x_star, x = x_star.reshape(-1), x.reshape(-1)
        gap = observed.reshape(-1)[b] - x_star[b]
        expected = x_star[a] - np.linalg.solve(
            precision[np.ix_(a, a)], precision[np.ix_(a, b)] @ gap
        )
        np.testing.assert_allclose(x[a], expected, rtol=1e-7, atol=1e-8)
        np.testing.assert_array_equal(x[b], observed.reshape(-1)[b])


def test_conditional_sample_moments_match_dense_conditional():
    rng = np.random.default_rng(4)
    dist = _dist(rng, (), 4, 5)
    observed = rng.standard_normal((4, 5))
    mask = np.zeros((4, 5), bool)
    mask[:, :2] = True
    mean, covariance = _dense_conditional(dist, observed, mask)
    n = 20000
    samples = dist.conditional(observed, mask).sample(n, seed=[1, 1]).numpy()
    free = samples[:, ~mask]
    variance = np.diag(covariance)
    assert np.all(np.abs(free.mean(0) - mean[~mask]) < 5 * np.sqrt(variance / n))
    cov_std = np.sqrt((np.outer(variance, variance) + covariance**2) / n)
    assert np.all(np.abs(np.cov(free, rowvar=False) - covariance) < 5 * cov_std)


def test_conditioning_on_nothing_or_everything():
    rng = np.random.default_rng(5)
    dist = _dist(rng, (), 4, 4)
    observed = rng.standard_normal((4, 4))
    nothing = dist.conditional(observed, np.zeros((4, 4), bool))
    np.testing.assert_allclose(nothing.mean(), dist.mean())
    np.testing.assert_allclose(
        nothing.sample(seed=[1, 2]), dist.sample(seed=[1, 2]), rtol=1e-12
    )
    everything = dist.conditional(observed, np.ones((4, 4), bool))
    np.testing.assert_array_equal(everything.sample(3, seed=[1, 2])[1], observed)


def test_conditional_shape_errors_name_the_argument():
    dist = _dist(np.random.default_rng(6), (), 4, 4)
    with pytest.raises(ValueError, match=r"mask must have shape \[\.\.\., 4, 4\]"):
        dist.conditional(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match=r"observed must have shape"):
        dist.conditional(np.zeros((4,)), np.zeros((4, 4), bool))


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 2), (3, 3)])
def test_exact_marginal_variance_matches_dense_inverse(kernel_size, dilation):
    rng = np.random.default_rng(7)
    dist = _dist(rng, (2,), 7, 9, kernel_size, dilation)
    expected = np.diagonal(dist.covariance().numpy(), axis1=-2, axis2=-1)
    actual = dist.marginal_variance()
    assert actual.shape == (2, 7, 9)
    np.testing.assert_allclose(actual, expected.reshape(2, 7, 9), rtol=1e-9)
    # Chunks that do not divide the pixel count.
    chunked = linalg.inverse_precision_diag(
        dist.log_diag, dist.off_diag, kernel_size, dilation, chunk_size=10
    )
    np.testing.assert_allclose(chunked, actual, rtol=1e-12)


def test_sampled_marginal_variance_is_within_its_standard_error():
    rng = np.random.default_rng(8)
    dist = _dist(rng, (), 5, 5)
    exact = dist.marginal_variance().numpy()
    n = 4000
    estimate = dist.marginal_variance("sample", num_samples=n, seed=[2, 3]).numpy()
    assert np.all(np.abs(estimate / exact - 1) < 5 * np.sqrt(2 / n))
    with pytest.raises(ValueError, match='method must be "exact" or "sample"'):
        dist.marginal_variance("dense")


def test_precision_diag_matches_dense_precision():
    rng = np.random.default_rng(9)
    dist = _dist(rng, (2,), 6, 5, 5, 1)
    expected = np.diagonal(dist.precision().numpy(), axis1=-2, axis2=-1)
    actual = linalg.precision_diag(dist.log_diag, dist.off_diag, 5, 1)
    np.testing.assert_allclose(actual, expected.reshape(2, 6, 5), rtol=1e-12)
