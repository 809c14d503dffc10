"""svae.recipes and what the likelihood's fields set: factor maps, calibrated scales."""

import json
import pathlib
import subprocess
import sys

import dense_reference
import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny
from scipy import optimize

from svae import config as config_lib
from svae import factors, heads, health, likelihoods, recipes, training
from svae.distributions import SparsePrecisionGaussian, Structure
from svae.recipes import Likelihood

# The 3x3, undilated pattern of the small tests below.
STRUCTURE = Structure(3, 1)


def _bounded_params(seed, shape, kernel_size, scale=3.0, dominance=0.99):
    """Random `log_diag` and bounded `off_diag` of `shape = [..., H, W]`."""
    rng = np.random.default_rng(seed)
    num_off = (kernel_size**2 - 1) // 2
    log_diag = rng.normal(size=shape)
    raw = scale * rng.normal(size=shape + [num_off])
    off_diag = factors.bounded_off_diag(log_diag, raw, dominance)
    return log_diag, off_diag.numpy()


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (5, 1), (3, 2)])
def test_bounded_factor_obeys_varah_bound_against_the_dense_inverse(
    kernel_size, dilation
):
    dominance = 0.9
    log_diag, off_diag = _bounded_params(0, [3, 7, 6], kernel_size, 30.0, dominance)
    dense = dense_reference.dense_factor(log_diag, off_diag, kernel_size, dilation)
    dense = dense.numpy()
    diag = np.exp(log_diag).reshape(3, -1)
    for b in range(3):
        factor = dense[b]
        off_mass = np.abs(factor).sum(axis=0) - np.abs(np.diag(factor))
        # Each column's off-diagonal mass is below dominance times the diagonal.
        assert np.all(off_mass < dominance * diag[b] * (1 + 1e-9))
        inverse_t = np.linalg.inv(factor.T)
        bound = 1.0 / np.min(diag[b] * (1.0 - dominance))
        # Varah: ||A^-1||_inf <= 1 / min_i (|a_ii| - sum_j |a_ij|) for rows of
        # A = L^T; the infinity norm is the largest absolute row sum.
        assert np.abs(inverse_t).sum(axis=1).max() <= bound * (1 + 1e-9)


def _numpy_ball(x, radius):
    """`radius * x / (1 + |x|_1)` over the last axis, in numpy."""
    return radius * x / (1.0 + np.abs(x).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (5, 1), (3, 2), (7, 1)])
def test_product_factor_is_the_product_of_two_dominant_factors(kernel_size, dilation):
    # L^T = D (I + R)(I + V) assembled densely in numpy, entry by entry, from
    # the two factors' definitions; against the factor product_off_diag's
    # entries make (through the independent dense reference).
    dominance = 0.95
    height, width = 6, 7
    rng = np.random.default_rng(kernel_size + dilation)
    offsets = dense_reference.offsets_from_definition(kernel_size, dilation)
    log_diag = rng.normal(size=[height, width])
    raw = 3.0 * rng.normal(size=[height, width, len(offsets)])
    off = factors.product_off_diag(log_diag, raw, dominance, kernel_size, dilation)
    dense = dense_reference.dense_factor(log_diag, off, kernel_size, dilation).numpy()
    rows = [m for m, (dy, _) in enumerate(offsets) if dy == 0]
    below = [m for m, (dy, dx) in enumerate(offsets) if dy > 0 and dx <= 0]
    right = _numpy_ball(raw[..., rows], dominance)
    lower = _numpy_ball(raw[..., below], dominance)
    n = height * width
    first, second = np.eye(n), np.eye(n)
    for i in range(height):
        for j in range(width):
            p = i * width + j
            for factor, values, picked in (
                (first, right, rows),
                (second, lower, below),
            ):
                for k, m in enumerate(picked):
                    dy, dx = offsets[m]
                    if i + dy < height and 0 <= j + dx < width:
                        factor[p, (i + dy) * width + j + dx] = values[i, j, k]
    want = np.diag(np.exp(log_diag).ravel()) @ first @ second
    np.testing.assert_allclose(dense.T, want, atol=1e-12)
    bound = 1.0 / (np.exp(log_diag).min() * (1.0 - dominance) ** 2)
    assert np.abs(np.linalg.inv(dense.T)).sum(axis=1).max() <= bound


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (3, 2), (5, 1)])
def test_full_product_factor_is_the_product_of_two_dominant_factors(
    kernel_size, dilation
):
    # L^T = D (I + A)(I + B), A and B full half-plane factors of kernel_size,
    # assembled densely in numpy from their definitions; against the entries
    # full_product_off_diag makes for L of 2 kernel_size - 1.
    dominance = 0.95
    height, width = 6, 7
    rng = np.random.default_rng(10 * kernel_size + dilation)
    inner = dense_reference.offsets_from_definition(kernel_size, dilation)
    outer = 2 * kernel_size - 1
    log_diag = rng.normal(size=[height, width])
    raw = 3.0 * rng.normal(size=[height, width, 2 * len(inner)])
    off = factors.full_product_off_diag(log_diag, raw, dominance, kernel_size, dilation)
    assert off.shape[-1] == len(dense_reference.offsets_from_definition(outer, 1))
    dense = dense_reference.dense_factor(log_diag, off, outer, dilation).numpy()
    n = height * width
    parts = []
    for values in (raw[..., : len(inner)], raw[..., len(inner) :]):
        values = _numpy_ball(values, dominance)
        factor = np.eye(n)
        for i in range(height):
            for j in range(width):
                for k, (dy, dx) in enumerate(inner):
                    if i + dy < height and 0 <= j + dx < width:
                        factor[i * width + j, (i + dy) * width + j + dx] = values[
                            i, j, k
                        ]
        parts.append(factor)
    want = np.diag(np.exp(log_diag).ravel()) @ parts[0] @ parts[1]
    np.testing.assert_allclose(dense.T, want, atol=1e-12)
    bound = 1.0 / (np.exp(log_diag).min() * (1.0 - dominance) ** 2)
    assert np.abs(np.linalg.inv(dense.T)).sum(axis=1).max() <= bound


def test_full_product_holds_the_product_factor():
    # A a row, B a column autoregression: the product factor's L.
    height, width, dominance = 5, 6, 0.9
    rng = np.random.default_rng(3)
    log_diag = rng.normal(size=[height, width])
    raw = 2.0 * rng.normal(size=[height, width, 4])
    offsets = dense_reference.offsets_from_definition(3, 1)
    rows = [m for m, (dy, _) in enumerate(offsets) if dy == 0]
    below = [m for m, (dy, dx) in enumerate(offsets) if dy > 0 and dx <= 0]
    full = np.zeros([height, width, 8])
    full[..., rows] = raw[..., rows]
    full[..., [4 + m for m in below]] = raw[..., below]
    # The row factor's ball holds one entry, the column's two: as product's.
    got = factors.full_product_off_diag(log_diag, full, dominance)
    want = factors.product_off_diag(log_diag, raw, dominance)
    dense_got = dense_reference.dense_factor(log_diag, got, 5, 1).numpy()
    dense_want = dense_reference.dense_factor(log_diag, want, 3, 1).numpy()
    np.testing.assert_allclose(dense_got, dense_want, atol=1e-12)


def test_bounded_factor_reaches_the_edge_of_the_ball():
    # One neighbour may take (almost) all the mass: raw = [t, 0, 0, 0].
    log_diag = np.zeros([1, 1])
    raw = np.zeros([1, 1, 4])
    raw[..., 0] = 1e6
    off = factors.bounded_off_diag(log_diag, raw, 0.99).numpy()
    np.testing.assert_allclose(off[0, 0], [0.99, 0, 0, 0], rtol=1e-5)


@pytest.mark.parametrize(
    "num_basis, kernel_size, dilation", [(0, 3, 1), (3, 3, 1), (4, 5, 2)]
)
def test_precision_head_bounds_the_factor_with_and_without_basis(
    num_basis, kernel_size, dilation
):
    keras.utils.set_random_seed(1)
    head = heads.PrecisionHead(kernel_size, num_basis, "bounded", 0.95, dilation)
    features = tf.random.normal([2, 8, 8, 5]) * 3.0
    head(features)
    for weight in head.weights:  # Large weights: far from the init's zeros.
        weight.assign(tf.random.normal(weight.shape))
    log_diag, off_diag = head(features, log_scale=-1.0)
    dist = SparsePrecisionGaussian(
        tf.zeros_like(log_diag), log_diag, off_diag, kernel_size, dilation
    )
    assert float(tf.reduce_max(dist.off_diagonal_ratio())) < 0.95
    free = heads.PrecisionHead(kernel_size, num_basis, "free", dilation=dilation)
    free(features)
    for mine, other in zip(free.weights, head.weights, strict=True):
        mine.assign(other)
    free_log_diag, free_off = free(features, log_scale=-1.0)
    # The same raw parameters, mapped into the ball (and not, when free).
    np.testing.assert_allclose(free_log_diag, log_diag, rtol=1e-6)
    np.testing.assert_allclose(
        factors.bounded_off_diag(free_log_diag, free_off, 0.95), off_diag, rtol=1e-5
    )


def test_whitened_square_sums_match_the_definition():
    log_diag, off_diag = _bounded_params(7, [2, 5, 5], 3)
    rng = np.random.default_rng(8)
    x, mean = rng.normal(size=[2, 5, 5]), rng.normal(size=[2, 5, 5])
    cbcr, cbcr_mean = rng.normal(size=[2, 2, 2, 2]), rng.normal(size=[2, 2, 2, 2])
    outputs = {
        "y_mean": mean,
        "log_diag": log_diag,
        "off_diag": off_diag,
        "cbcr_mean": cbcr_mean,
        "cbcr_log_scale": np.full([2, 2, 2, 2], -1.0),
    }
    sums = likelihoods.whitened_square_sums(outputs, {"y": x, "cbcr": cbcr}, STRUCTURE)
    dense = dense_reference.dense_factor(log_diag, off_diag, 3, 1).numpy()
    r = (x - mean).reshape(2, -1)
    want_y = [np.sum((f.T @ v) ** 2) for f, v in zip(dense, r, strict=True)]
    np.testing.assert_allclose(sums["y"], want_y, rtol=1e-8)
    want_c = np.sum(((cbcr - cbcr_mean) / np.exp(-1.0)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(sums["cbcr"], want_c, rtol=1e-8)


def _tiny(tmp_path, **kwargs):
    """A tiny run's config."""
    defaults = dict(
        batch_size=16,
        crops_per_photo=16,
        pretrain_epochs=1,
        structured_warmup_epochs=1,
        learning_rate=2e-3,
    )
    return tiny.config(tmp_path, **(defaults | kwargs))


def test_calibration_sets_each_scale_to_its_batch_optimum(tmp_path):
    # vae_sph: after one step, sigma^2 is the mean squared residual of the
    # outputs that step computed its loss with, for Y and for CbCr.
    config = _tiny(tmp_path, model="vae_sph")
    strategy = tf.distribute.get_strategy()
    trainer = training._Trainer(config, strategy, tmp_path, True, 0)
    model = trainer.model
    model.y_log_scale.assign(0.7)  # Anything: the optimum does not depend on it.
    rng = np.random.default_rng(0)
    batch = {
        "y": tf.constant(rng.uniform(size=[16, 16, 16]), tf.float32),
        "cbcr": tf.constant(rng.uniform(size=[16, 4, 4, 2]), tf.float32),
    }
    noise = tf.random.stateless_normal([16, 8], seed=tf.constant([0, 0], tf.int64))
    z_mean, z_log_scale = model.encode(batch["y"], batch["cbcr"])
    before = model.decode(z_mean + tf.exp(z_log_scale) * noise)
    iterator = iter(
        strategy.distribute_datasets_from_function(
            lambda _: tf.data.Dataset.from_tensors(batch).repeat()
        )
    )
    phase = training.schedule(config, 1, 10)[0]
    trainer.step_fn(phase)(iterator, tf.constant(0, tf.int64))
    for name, variable in (("y", model.y_log_scale), ("cbcr", model.cbcr_log_scale)):
        want = 0.5 * np.log(np.mean((batch[name] - before[f"{name}_mean"]) ** 2))
        np.testing.assert_allclose(float(variable), want, rtol=1e-4)


@pytest.mark.parametrize("penalty", [0.0, 3.0, 5e4])
def test_calibration_shift_minimises_the_scaled_loss(penalty):
    # -count log t + 0.5 t^2 square + penalty t, minimised by scipy over
    # delta = -log t, against the closed form.
    square, count = 813.0, 256

    def loss(delta):
        t = np.exp(-delta)
        return -count * np.log(t) + 0.5 * t**2 * square + penalty * t

    want = optimize.minimize_scalar(loss, bounds=(-20, 20), method="bounded").x
    got = float(training.calibration_shift(tf.constant(square), count, penalty))
    np.testing.assert_allclose(got, want, atol=1e-4)
    if not penalty:
        np.testing.assert_allclose(got, 0.5 * np.log(square / count), rtol=1e-5)


@pytest.mark.slow
def test_calibrated_structured_scale_does_not_drift_under_the_l1_term(tmp_path):
    # The L1 term pulls L down; were the offset calibrated without it, the
    # head and the offset would drift together without end (SUPN's
    # covariance decoder reached y_log_scale -132 and NaN in 800 steps).
    config = _tiny(
        tmp_path,
        model="supn",
        steps=150,
        pretrain_epochs=1,
        gamma=0.05,
        learning_rate=3e-3,
    )
    scales = []
    training.train(
        config, callback=lambda step, model: scales.append(float(model.y_log_scale))
    )
    later = np.array(scales[-60:])
    assert np.all(np.isfinite(later))
    assert abs(later[-1] - later[0]) < 0.5


@pytest.mark.parametrize(
    "model, factor, groups",
    [
        ("vae_sph", "free", ("y", "cbcr")),
        ("vae_diag", "free", ("y", "cbcr")),
        ("structured", "bounded", ("y", "cbcr")),
        ("structured", "free", ()),
    ],
)
def test_which_scales_are_calibrated(model, factor, groups):
    config = config_lib.Config(model=model, likelihood=Likelihood(factor=factor))
    joint = training.Phase("joint" if model == "structured" else "train", 0, 1)
    assert training.calibrated_scales(config, joint) == groups
    # A free factor's structured chroma is no scale family either; the
    # factorised chroma always is.
    factorised = Likelihood(factor=factor, chroma="factorised")
    config = config_lib.Config(model=model, likelihood=factorised)
    assert training.calibrated_scales(config, joint) == tuple(
        dict.fromkeys(groups + ("cbcr",))
    )
    pretrain = training.Phase("pretrain", 0, 1)
    assert training.calibrated_scales(config, pretrain) == ("y", "cbcr")
    learned = config_lib.Config(model=model, likelihood="paper")
    assert training.calibrated_scales(learned, joint) == ()


@pytest.mark.slow
def test_vae_sph_does_not_collapse_with_calibrated_scales(tmp_path):
    # With the paper's learned scales sigma stays near 1 for this long and
    # the KL goes to zero; calibrated, the posterior carries information.
    results = {}
    for scales in ("calibrated", "learned"):
        config = _tiny(
            tmp_path / scales,
            model="vae_sph",
            likelihood=Likelihood(scales=scales),
            steps=120,
            learning_rate=5e-4,
        )
        results[scales] = training.train(config)
    assert results["calibrated"]["kl"] > 5.0
    assert results["calibrated"]["kl"] > 5 * results["learned"]["kl"]
    assert results["calibrated"]["mse"] < results["learned"]["mse"]


@pytest.mark.slow
def test_short_structured_training_keeps_samples_bounded(tmp_path):
    config = _tiny(tmp_path, model="structured", steps=60)
    training.train(config)
    report = health.run_health(str(tmp_path), num_images=16, num_prior=32)
    assert report["prior_diverged"]["count"] == 0
    assert report["recon_diverged"]["count"] == 0
    json.dumps(report, allow_nan=False)


def test_bounded_samples_stay_bounded_where_free_ones_explode():
    # The same large off-diagonal parameters: free, L^-T eps explodes along
    # the solve; bounded, it cannot.
    log_diag = tf.fill([1, 32, 32], 2.0)
    raw = tf.fill([1, 32, 32, 4], 5.0)
    free = SparsePrecisionGaussian(tf.zeros([1, 32, 32]), log_diag, raw)
    bounded = SparsePrecisionGaussian(
        tf.zeros([1, 32, 32]), log_diag, factors.bounded_off_diag(log_diag, raw, 0.99)
    )
    free_sample = free.sample(seed=[0, 1]).numpy()
    bounded_sample = bounded.sample(seed=[0, 1]).numpy()
    assert health.is_diverged(free_sample).all()
    assert not health.is_diverged(bounded_sample).any()


def test_the_recipes_are_the_default_and_the_paper_taken_literally():
    assert list(recipes.RECIPES) == ["default", "paper"]
    assert recipes.DEFAULT == Likelihood() == config_lib.Config().likelihood
    paper = recipes.RECIPES["paper"]
    assert (paper.factor, paper.contrast_scale, paper.scales) == (
        "free",
        False,
        "learned",
    )
    assert Likelihood.of("paper") is paper and paper.name == "paper"
    assert Likelihood(factor="bounded").name is None
    assert config_lib.Config(likelihood="paper").likelihood == paper
    config = config_lib.Config(likelihood=Likelihood(factor="bounded"))
    assert config_lib.Config.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    "field, value",
    [("factor", "tight"), ("scales", "x"), ("dominance", 1.0), ("contrast_scale", 1)],
)
def test_bad_likelihood_fields_are_clear_errors(field, value):
    with pytest.raises(ValueError, match=field):
        Likelihood(**{field: value})
    with pytest.raises(ValueError, match=field):
        config_lib.Config.from_json(
            json.dumps({"likelihood": {field: value}}), source="config.json"
        )


def test_an_unknown_recipe_or_likelihood_field_names_the_choices():
    with pytest.raises(ValueError, match="default, paper"):
        config_lib.Config(likelihood="papr")
    with pytest.raises(ValueError, match="did you mean 'factor'"):
        Likelihood.from_dict({"facter": "free"})


@pytest.mark.slow
def test_train_py_likelihood_flag_writes_the_recipes_fields(tmp_path):
    root = pathlib.Path(__file__).resolve().parents[1]
    env = tiny.script_env()
    flags = ["--image_size=16", "--latent_dim=4", "--batch_size=8"]
    flags += ["--crops_per_photo=2", "--steps=1", "--noprogress", "--noexport"]
    result = subprocess.run(
        [sys.executable, str(root / "train.py"), *flags, "--likelihood=paper"]
        + [f"--model_dir={tmp_path}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    written = json.loads((tmp_path / config_lib.CONFIG_FILE).read_text())
    assert written["likelihood"] == recipes.RECIPES["paper"].to_dict()
    assert config_lib.load(tmp_path).likelihood.name == "paper"


def test_fields_a_model_does_not_read_do_not_block_resuming():
    def config(model, likelihood=recipes.DEFAULT, **fields):
        return config_lib.Config(model=model, likelihood=likelihood, **fields)

    free = Likelihood(factor="free")
    old = config("vae_sph", free, kernel_size=5)
    assert old.incompatible_fields(config("vae_sph")) == {}
    assert config("structured", free).incompatible_fields(config("structured")) == {
        "likelihood.factor": (recipes.DEFAULT.factor, "free")
    }
    # The free factor reads no dominance.
    loose = Likelihood(factor="free", dominance=0.5)
    assert (
        config("structured", loose).incompatible_fields(config("structured", free))
        == {}
    )
    # vae_sph has one scale: it reads no contrast scale; vae_diag does.
    flat = Likelihood(contrast_scale=False)
    assert config("vae_sph", flat).incompatible_fields(config("vae_sph")) == {}
    assert config("vae_diag", flat).incompatible_fields(config("vae_diag")) == {
        "likelihood.contrast_scale": (True, False)
    }
