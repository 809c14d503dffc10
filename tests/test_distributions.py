"""Tests of SparsePrecisionGaussian against TFP's dense Gaussians and scipy."""

import contextlib

import dense_reference
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

from svae import distributions, xla
from svae.distributions import SparsePrecisionGaussian, Structure

tfd = tfp.distributions
tfed = tfp.experimental.distributions

STRUCTURES = [(3, 1), (5, 1), (3, 2), (5, 2)]


def _params(rng, loc_batch, diag_batch, off_batch, height, width, kernel_size, dtype):
    """Random parameters with (possibly different) broadcastable batch shapes."""
    k = distributions.num_off_diagonals(kernel_size)
    loc = rng.standard_normal(loc_batch + (height, width))
    log_diag = 0.3 * rng.standard_normal(diag_batch + (height, width))
    off_diag = 0.3 * rng.standard_normal(off_batch + (height, width, k))
    return [tf.constant(v, dtype) for v in (loc, log_diag, off_diag)]


def _dense_references(loc, log_diag, off_diag, kernel_size, dilation):
    """TFP's precision-factor Gaussian and its MultivariateNormalTriL twin."""
    height, width = loc.shape[-2:]
    factor = dense_reference.dense_factor(log_diag, off_diag, kernel_size, dilation)
    flat_loc = tf.reshape(loc, loc.shape[:-2] + [height * width])
    by_factor = tfed.MultivariateNormalPrecisionFactorLinearOperator(
        loc=flat_loc, precision_factor=tf.linalg.LinearOperatorLowerTriangular(factor)
    )
    covariance = tf.linalg.inv(tf.linalg.matmul(factor, factor, adjoint_b=True))
    by_covariance = tfd.MultivariateNormalTriL(
        loc=flat_loc, scale_tril=tf.linalg.cholesky(covariance)
    )
    return by_factor, by_covariance


BATCHES = [
    ((), (), ()),
    ((2, 3), (2, 3), (2, 3)),
    ((2, 3), (3,), (2, 1)),
    ((), (2, 1), (3,)),
]


@pytest.mark.parametrize("kernel_size,dilation", STRUCTURES)
@pytest.mark.parametrize("batches", BATCHES)
def test_log_prob_matches_dense_references(kernel_size, dilation, batches):
    rng = np.random.default_rng(0)
    height, width = 5, 7
    loc, log_diag, off_diag = _params(
        rng, *batches, height, width, kernel_size, np.float64
    )
    dist = SparsePrecisionGaussian(loc, log_diag, off_diag, kernel_size, dilation)
    batch_shape = np.broadcast_shapes(*batches)
    assert dist.batch_shape == batch_shape
    assert dist.event_shape == (height, width)
    x = tf.constant(rng.standard_normal((4,) + batch_shape + (height, width)))
    by_factor, by_covariance = _dense_references(
        loc, log_diag, off_diag, kernel_size, dilation
    )
    x_flat = tf.reshape(x, x.shape[:-2] + [height * width])
    log_prob = dist.log_prob(x)
    assert log_prob.shape == (4,) + batch_shape
    np.testing.assert_allclose(log_prob, by_factor.log_prob(x_flat), rtol=1e-10)
    np.testing.assert_allclose(log_prob, by_covariance.log_prob(x_flat), rtol=1e-8)


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 2)])
def test_log_prob_in_float32_matches_float64(kernel_size, dilation):
    rng = np.random.default_rng(1)
    params = _params(rng, (2,), (2,), (2,), 6, 6, kernel_size, np.float64)
    x = rng.standard_normal((2, 6, 6))
    exact = SparsePrecisionGaussian(*params, kernel_size, dilation).log_prob(x)
    params32 = [tf.cast(p, tf.float32) for p in params]
    dist32 = SparsePrecisionGaussian(*params32, kernel_size, dilation)
    assert dist32.dtype == tf.float32
    approx = dist32.log_prob(tf.constant(x, tf.float32))
    assert approx.dtype == tf.float32
    np.testing.assert_allclose(approx, exact, rtol=1e-5)


def test_log_prob_of_a_large_diagonal_gaussian_matches_scipy():
    # 256x256 is far beyond a dense reference: with off_diag = 0 the density
    # factorises into independent normals with scale exp(-log_diag).
    rng = np.random.default_rng(2)
    loc = rng.standard_normal((2, 256, 256))
    log_diag = 0.5 * rng.standard_normal((2, 256, 256))
    x = rng.standard_normal((2, 256, 256))
    dist = SparsePrecisionGaussian(loc, log_diag, np.zeros((2, 256, 256, 12)), 5)
    expected = scipy.stats.norm(loc, np.exp(-log_diag)).logpdf(x).sum(axis=(1, 2))
    np.testing.assert_allclose(dist.log_prob(x), expected, rtol=1e-10)


def _kernels(compiled):
    """The XLA kernels (the default) or the portable ones."""
    return contextlib.nullcontext() if compiled else xla.portable()


@pytest.mark.parametrize("compiled", [True, False], ids=["xla", "portable"])
@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 2)])
def test_log_prob_gradients_match_dense_reference(kernel_size, dilation, compiled):
    rng = np.random.default_rng(3)
    loc, log_diag, off_diag = _params(
        rng, (2,), (2,), (2,), 4, 6, kernel_size, np.float64
    )
    x = tf.constant(rng.standard_normal((2, 4, 6)))
    with _kernels(compiled), tf.GradientTape(persistent=True) as tape:
        tape.watch([loc, log_diag, off_diag, x])
        ours = tf.reduce_sum(
            SparsePrecisionGaussian(
                loc, log_diag, off_diag, kernel_size, dilation
            ).log_prob(x)
        )
        by_factor, _ = _dense_references(loc, log_diag, off_diag, kernel_size, dilation)
        theirs = tf.reduce_sum(by_factor.log_prob(tf.reshape(x, [2, 24])))
    for param in (loc, log_diag, off_diag, x):
        np.testing.assert_allclose(
            tape.gradient(ours, param), tape.gradient(theirs, param), atol=1e-9
        )


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 2)])
def test_entropy_matches_dense_reference(kernel_size, dilation):
    rng = np.random.default_rng(4)
    params = _params(rng, (2, 1), (3,), (1, 3), 5, 7, kernel_size, np.float64)
    dist = SparsePrecisionGaussian(*params, kernel_size, dilation)
    _, by_covariance = _dense_references(*params, kernel_size, dilation)
    np.testing.assert_allclose(dist.entropy(), by_covariance.entropy(), rtol=1e-9)
    assert dist.entropy().shape == (2, 3)


def test_dense_accessors_match_dense_reference():
    rng = np.random.default_rng(5)
    params = _params(rng, (2,), (), (2,), 4, 5, 3, np.float64)
    dist = SparsePrecisionGaussian(*params)
    factor = dense_reference.dense_factor(params[1], params[2], 3, 1)
    factor = tf.broadcast_to(factor, [2, 20, 20])
    precision = tf.linalg.matmul(factor, factor, adjoint_b=True)
    np.testing.assert_allclose(dist.precision_factor(), factor, rtol=1e-12)
    np.testing.assert_allclose(dist.precision(), precision, rtol=1e-12)
    np.testing.assert_allclose(
        dist.covariance(), tf.linalg.inv(precision), rtol=1e-8, atol=1e-10
    )
    v = tf.constant(rng.standard_normal((2, 4, 5)))
    np.testing.assert_allclose(
        dist.precision_matvec(v),
        tf.reshape(tf.linalg.matvec(precision, tf.reshape(v, [2, 20])), [2, 4, 5]),
        rtol=1e-10,
    )
    np.testing.assert_allclose(dist.mean(), tf.broadcast_to(params[0], [2, 4, 5]))
    np.testing.assert_allclose(dist.mode(), dist.mean())


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 2)])
def test_sample_moments_match_loc_and_inverse_precision(kernel_size, dilation):
    rng = np.random.default_rng(6)
    height, width, n = 4, 5, 40000
    loc, log_diag, off_diag = _params(
        rng, (), (), (), height, width, kernel_size, np.float64
    )
    dist = SparsePrecisionGaussian(loc, log_diag, off_diag, kernel_size, dilation)
    samples = dist.sample(n, seed=[4, 2]).numpy().reshape(n, -1)
    covariance = dist.covariance().numpy()
    variance = np.diag(covariance)
    mean_error = samples.mean(axis=0) - loc.numpy().ravel()
    assert np.all(np.abs(mean_error) < 5 * np.sqrt(variance / n))
    # Standard deviation of a sample covariance entry: sqrt(S_ii S_jj + S_ij^2)/sqrt(n).
    cov_error = np.cov(samples, rowvar=False) - covariance
    cov_std = np.sqrt((np.outer(variance, variance) + covariance**2) / n)
    assert np.all(np.abs(cov_error) < 5 * cov_std)
    # The whitened samples are standard normal (a check through L^T).
    white = dist.whiten(tf.reshape(samples, [n, height, width])).numpy()
    assert abs(white.std() - 1) < 5 / np.sqrt(white.size)


def test_same_seed_same_sample_and_batch_shape():
    rng = np.random.default_rng(7)
    dist = SparsePrecisionGaussian(*_params(rng, (2,), (3, 1), (), 6, 5, 3, np.float32))
    a = dist.sample(3, seed=[1, 2])
    b = dist.sample(3, seed=[1, 2])
    c = dist.sample(3, seed=[1, 3])
    assert a.shape == (3, 3, 2, 6, 5)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    # The sample is the solve of the dense factor applied to the same noise.
    eps = tf.random.stateless_normal([3, 3, 2, 6, 5], seed=[7, 7], dtype=tf.float64)
    dist64 = dist.copy(
        loc=tf.cast(dist.loc, tf.float64),
        log_diag=tf.cast(dist.log_diag, tf.float64),
        off_diag=tf.cast(dist.off_diag, tf.float64),
    )
    factor = tf.broadcast_to(dist64.precision_factor(), [3, 3, 2, 30, 30])
    dense = tf.linalg.triangular_solve(
        factor, tf.reshape(eps, [3, 3, 2, 30, 1]), lower=True, adjoint=True
    )
    ours = distributions.linalg.factor_transpose_solve(
        dist64.log_diag, dist64.off_diag, eps
    )
    np.testing.assert_allclose(
        ours, tf.reshape(dense, eps.shape), rtol=1e-9, atol=1e-12
    )


def test_sample_is_reparameterized_with_dense_gradients():
    rng = np.random.default_rng(8)
    loc, log_diag, off_diag = _params(rng, (2,), (2,), (2,), 4, 5, 3, np.float64)
    weights = tf.constant(rng.standard_normal((3, 2, 4, 5)))
    eps = tf.random.stateless_normal([3, 2, 4, 5], seed=[3, 1], dtype=tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([loc, log_diag, off_diag])
        dist = SparsePrecisionGaussian(loc, log_diag, off_diag)
        ours = tf.reduce_sum(weights * dist.sample(3, seed=[5, 5]))
        factor = dense_reference.dense_factor(log_diag, off_diag, 3, 1)
        factor = tf.broadcast_to(factor, [3, 2, 20, 20])
        noise = tfp.random.sanitize_seed([5, 5])
        del noise  # The dense twin below uses its own noise: compare gradients of
        # the same function instead, on the same eps.
        theirs = loc + tf.reshape(
            tf.linalg.triangular_solve(
                factor, tf.reshape(eps, [3, 2, 20, 1]), lower=True, adjoint=True
            ),
            [3, 2, 4, 5],
        )
        theirs = tf.reduce_sum(weights * theirs)
        ours_same_eps = loc + distributions.linalg.factor_transpose_solve(
            log_diag, off_diag, eps
        )
        ours_same_eps = tf.reduce_sum(weights * ours_same_eps)
    assert dist.reparameterization_type == tfd.FULLY_REPARAMETERIZED
    for param in (loc, log_diag, off_diag):
        assert tape.gradient(ours, param) is not None
        np.testing.assert_allclose(
            tape.gradient(ours_same_eps, param), tape.gradient(theirs, param), atol=1e-9
        )


def test_sample_and_log_prob_compile_with_xla():
    rng = np.random.default_rng(9)
    params = _params(rng, (2,), (2,), (2,), 8, 8, 3, np.float32)
    dist = SparsePrecisionGaussian(*params)

    @tf.function(jit_compile=True)
    def sample_and_score(dist, seed):
        x = dist.sample(seed=seed)
        return x, dist.log_prob(x)

    x, log_prob = sample_and_score(dist, tf.constant([1, 2]))
    x_again, _ = sample_and_score(dist, tf.constant([1, 2]))
    # Within XLA the same seed gives the same sample (XLA's Philox may order
    # its stream differently from the CPU kernel's, so no cross-mode check).
    np.testing.assert_array_equal(x, x_again)
    np.testing.assert_allclose(log_prob, dist.log_prob(x), rtol=1e-4)
    white = dist.whiten(x)  # The noise XLA drew, recovered through L^T.
    np.testing.assert_allclose(
        x,
        dist.loc
        + distributions.linalg.factor_transpose_solve(
            dist.log_diag, dist.off_diag, white
        ),
        rtol=1e-4,
        atol=1e-4,
    )


def test_composite_tensor_round_trip_through_tf_function():
    rng = np.random.default_rng(10)
    dist = SparsePrecisionGaussian(
        *_params(rng, (2,), (2,), (2,), 5, 6, 5, np.float32), 5, 2
    )

    @tf.function
    def identity(d):
        return d

    out = identity(dist)
    assert isinstance(out, SparsePrecisionGaussian)
    assert (out.kernel_size, out.dilation) == (5, 2)
    x = dist.sample(seed=[3, 4])
    np.testing.assert_allclose(out.log_prob(x), dist.log_prob(x), rtol=1e-6)
    flat = tf.nest.flatten(dist, expand_composites=True)
    assert len(flat) == 3
    rebuilt = tf.nest.pack_sequence_as(dist, flat, expand_composites=True)
    np.testing.assert_allclose(rebuilt.log_prob(x), dist.log_prob(x))


def test_slicing_and_copy():
    rng = np.random.default_rng(11)
    dist = SparsePrecisionGaussian(
        *_params(rng, (2, 3), (3,), (2, 1), 4, 4, 3, np.float64)
    )
    x = rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(dist[1].log_prob(x[1]), dist.log_prob(x)[1])
    np.testing.assert_allclose(dist[:, 2].log_prob(x[:, 2]), dist.log_prob(x)[:, 2])
    assert dist[1].batch_shape == (3,)
    moved = dist.copy(loc=dist.loc + 1.0)
    np.testing.assert_allclose(moved.log_prob(x + 1.0), dist.log_prob(x))


def test_works_with_keras_variables_as_parameters():
    log_diag = tf.Variable(tf.zeros([4, 4], tf.float64))
    dist = SparsePrecisionGaussian(
        tf.zeros([4, 4], tf.float64), log_diag, tf.zeros([4, 4, 4], tf.float64)
    )
    x = tf.ones([4, 4], tf.float64)
    with tf.GradientTape() as tape:
        loss = -dist.log_prob(x)
    # d/d log_diag of -(sum(log_diag) - 0.5 exp(2 log_diag) x^2) = -1 + 1 = 0.
    np.testing.assert_allclose(
        tape.gradient(loss, log_diag), np.zeros([4, 4]), atol=1e-12
    )
    log_diag.assign(tf.fill([4, 4], tf.constant(0.5, tf.float64)))
    expected = scipy.stats.norm(0, np.exp(-0.5)).logpdf(np.ones(16)).sum()
    np.testing.assert_allclose(dist.log_prob(x), expected)


def test_shape_errors_name_the_argument():
    with pytest.raises(
        ValueError, match=r"off_diag must have shape \[\.\.\., H, W, 4\]"
    ):
        SparsePrecisionGaussian(
            tf.zeros([4, 4]), tf.zeros([4, 4]), tf.zeros([4, 4, 12])
        )
    with pytest.raises(
        ValueError, match=r"off_diag must have shape \[\.\.\., H, W, 12\]"
    ):
        SparsePrecisionGaussian(
            tf.zeros([4, 4]), tf.zeros([4, 4]), tf.zeros([4, 4, 4]), kernel_size=5
        )
    with pytest.raises(ValueError, match="broadcastable shapes"):
        SparsePrecisionGaussian(tf.zeros([4, 5]), tf.zeros([4, 4]), tf.zeros([4, 4, 4]))
    with pytest.raises(ValueError, match="broadcastable shapes"):
        SparsePrecisionGaussian(
            tf.zeros([2, 4, 4]), tf.zeros([3, 4, 4]), tf.zeros([4, 4, 4])
        )
    with pytest.raises(ValueError, match=r"loc must have shape \[\.\.\., H, W\]"):
        SparsePrecisionGaussian(tf.zeros([4]), tf.zeros([4, 4]), tf.zeros([4, 4, 4]))
    with pytest.raises(ValueError, match="kernel_size must be an odd integer"):
        SparsePrecisionGaussian(
            tf.zeros([4, 4]), tf.zeros([4, 4]), tf.zeros([4, 4, 4]), kernel_size=4
        )
    with pytest.raises(ValueError, match="dilation must be an integer >= 1"):
        SparsePrecisionGaussian(
            tf.zeros([4, 4]), tf.zeros([4, 4]), tf.zeros([4, 4, 4]), dilation=0
        )


def test_validate_args_catches_non_finite_parameters():
    bad = tf.constant([[0.0, np.nan], [0.0, 0.0]])
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="log_diag"):
        SparsePrecisionGaussian(
            tf.zeros([2, 2]), bad, tf.zeros([2, 2, 4]), validate_args=True
        )
    # Without validate_args the check costs nothing and does not run.
    SparsePrecisionGaussian(tf.zeros([2, 2]), bad, tf.zeros([2, 2, 4]))


def test_validate_args_checks_the_sample_shape():
    dist = SparsePrecisionGaussian(
        tf.zeros([3, 3]), tf.zeros([3, 3]), tf.zeros([3, 3, 4]), validate_args=True
    )
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        dist.log_prob(tf.zeros([3, 4]))


@pytest.mark.parametrize("compiled", [True, False], ids=["xla", "portable"])
@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (3, 2)])
def test_log_prob_gradients_reduce_over_broadcast_batch_dimensions(
    kernel_size, dilation, compiled
):
    rng = np.random.default_rng(12)
    loc, log_diag, off_diag = _params(
        rng, (2, 1), (3,), (1, 3), 4, 5, kernel_size, np.float64
    )
    x = tf.constant(rng.standard_normal((2, 2, 3, 4, 5)))
    with _kernels(compiled), tf.GradientTape(persistent=True) as tape:
        tape.watch([loc, log_diag, off_diag, x])
        dist = SparsePrecisionGaussian(loc, log_diag, off_diag, kernel_size, dilation)
        ours = tf.reduce_sum(dist.log_prob(x) ** 2)
        by_factor, _ = _dense_references(loc, log_diag, off_diag, kernel_size, dilation)
        theirs = tf.reduce_sum(by_factor.log_prob(tf.reshape(x, [2, 2, 3, 20])) ** 2)
    for param in (loc, log_diag, off_diag, x):
        ours_grad = tape.gradient(ours, param)
        assert ours_grad.shape == param.shape
        np.testing.assert_allclose(ours_grad, tape.gradient(theirs, param), rtol=1e-9)


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 2)])
def test_off_diagonal_ratio_matches_the_dense_factor_and_bounds_the_solve(
    kernel_size, dilation
):
    rng = np.random.default_rng(21)
    loc, log_diag, off_diag = _params(
        rng, (2,), (2,), (2,), 5, 6, kernel_size, np.float64
    )
    dist = SparsePrecisionGaussian(loc, log_diag, off_diag, kernel_size, dilation)
    ratio = dist.off_diagonal_ratio().numpy().reshape(2, 30)
    factor = dense_reference.dense_factor(
        log_diag, off_diag, kernel_size, dilation
    ).numpy()
    diagonal = np.diagonal(factor, axis1=-2, axis2=-1)
    column_mass = np.abs(factor).sum(axis=-2) - np.abs(diagonal)
    np.testing.assert_allclose(ratio, column_mass / diagonal, rtol=1e-12)
    # Where every ratio is below 1, Varah's bound holds for ||L^-T||_inf.
    small = SparsePrecisionGaussian(
        loc, log_diag, 0.1 * off_diag, kernel_size, dilation
    )
    ratio = small.off_diagonal_ratio().numpy().reshape(2, 30)
    assert ratio.max() < 1
    factor = dense_reference.dense_factor(
        log_diag, 0.1 * off_diag, kernel_size, dilation
    ).numpy()
    bound = 1 / np.min(np.exp(log_diag.numpy().reshape(2, 30)) * (1 - ratio), -1)
    norms = np.abs(np.linalg.inv(np.swapaxes(factor, -1, -2))).sum(-1).max(-1)
    assert np.all(norms <= bound) and np.all(norms > 0.2 * bound)


def test_the_distribution_carries_its_structure():
    dist = SparsePrecisionGaussian(
        tf.zeros([5, 6]), tf.zeros([5, 6]), tf.zeros([5, 6, 12]), 5, dilation=2
    )
    assert dist.structure == Structure(kernel_size=5, dilation=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_factored_log_prob_equals_the_composed_factor_and_tfps(dtype):
    # L^T = D (I + A)(I + B): log_prob and whiten through the two factors
    # equal those of L composed (svae.factors), and TFP's dense Gaussian.
    from svae import factors

    rng = np.random.default_rng(5)
    log_diag = (0.3 * rng.normal(size=[2, 6, 7])).astype(dtype)
    raw = (2.0 * rng.normal(size=[2, 6, 7, 8])).astype(dtype)
    first, second = factors.full_product_factors(raw, 0.95)
    off = factors.compose_full_product(log_diag, first, second)
    x = rng.normal(size=[2, 6, 7]).astype(dtype)
    loc = np.zeros_like(x)
    whole = SparsePrecisionGaussian(loc, log_diag, off, kernel_size=5)
    split = SparsePrecisionGaussian(
        loc, log_diag, off, kernel_size=5, factor_a=first, factor_b=second
    )
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(split.log_prob(x), whole.log_prob(x), rtol=rtol)
    np.testing.assert_allclose(split.whiten(x), whole.whiten(x), rtol=rtol, atol=rtol)
    dense = dense_reference.dense_factor(log_diag, off, 5, 1)
    reference = (
        tfp.experimental.distributions.MultivariateNormalPrecisionFactorLinearOperator(
            loc=tf.reshape(loc, [2, -1]),
            precision_factor=tf.linalg.LinearOperatorLowerTriangular(dense),
        )
    )
    np.testing.assert_allclose(
        split.log_prob(x), reference.log_prob(tf.reshape(x, [2, -1])), rtol=rtol
    )
    # Slicing keeps the factors (TFP's batch-shape conventions).
    np.testing.assert_allclose(split[1].log_prob(x[1]), whole.log_prob(x)[1], rtol=rtol)
    with pytest.raises(ValueError, match="both"):
        SparsePrecisionGaussian(loc, log_diag, off, kernel_size=5, factor_a=first)
