"""Tests of svae.models: shapes, the basis, and that every variant learns."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny

from svae import data, heads, likelihoods, models, training
from svae.distributions import Structure

SIZE = 16


def _config(**kwargs):
    """A tiny config: 16x16 images, 8 latents."""
    return tiny.config(image_size=SIZE, **kwargs)


def _batch(color="ycbcr", n=8):
    """A fixed batch of real photograph crops."""
    images = data.load("sample_photos", "train", image_size=SIZE, crops_per_photo=1)
    rgb = tf.stack(list(images.take(n)))
    return data.to_model_inputs(rgb, color)


@pytest.mark.parametrize(
    "model, kernel_size, num_basis",
    [("vae_sph", 3, 0), ("vae_diag", 3, 0), ("structured", 5, 0), ("supn", 3, 4)],
)
def test_output_shapes(model, kernel_size, num_basis):
    config = _config(model=model, kernel_size=kernel_size, num_basis=num_basis)
    vae = models.build_model(config)
    outputs = vae(_batch(n=2))
    assert outputs["y_mean"].shape == (2, SIZE, SIZE)
    assert outputs["cbcr_mean"].shape == (2, 4, 4, 2)
    assert outputs["z_mean"].shape == (2, 8)
    if model in ("structured", "supn"):
        # The structured chroma: Cb's and Cr's factors, channel first.
        k_chroma = config.structure.kernel_size**2 // 2
        assert outputs["cbcr_log_diag"].shape == (2, 2, 4, 4)
        assert outputs["cbcr_off_diag"].shape == (2, 2, 4, 4, k_chroma)
        assert "cbcr_log_scale" not in outputs
    else:
        assert outputs["cbcr_log_scale"].shape == (2, 4, 4, 2)
    if model in ("structured", "supn"):
        # The default factor multiplies two factors of kernel_size: L's is
        # 2 kernel_size - 1, the factors' own rows are kernel_size's.
        big, k = 2 * kernel_size - 1, (kernel_size**2 - 1) // 2
        assert vae.structure == config.structure == Structure(big, 1)
        assert outputs["off_diag"].shape == (2, SIZE, SIZE, (big**2 - 1) // 2)
        assert outputs["factor_a"].shape == outputs["factor_b"].shape
        assert outputs["factor_a"].shape == (2, SIZE, SIZE, k)
        assert outputs["log_diag"].shape == (2, SIZE, SIZE)
        assert vae.uncertainty_variables()
    else:
        assert outputs["y_log_scale"].shape == (2, SIZE, SIZE)
        assert not vae.uncertainty_variables()
    spherical = vae(_batch(n=2), spherical=True)
    assert "off_diag" not in spherical


def test_gray_model_has_no_chroma():
    vae = models.build_model(_config(color="gray"))
    outputs = vae(_batch("gray", 2))
    assert "cbcr_mean" not in outputs and outputs["off_diag"].shape[-1] == 12


def test_pointwise_heads_match_each_convolution():
    features = tf.random.normal([2, 5, 5, 6], seed=3)
    convs = [
        keras.layers.Conv2D(n, 1, bias_initializer="glorot_uniform") for n in (1, 4)
    ]
    fused = heads.pointwise(features, convs)
    for head, output in zip(convs, fused, strict=True):
        np.testing.assert_allclose(output, head(features), rtol=1e-5, atol=1e-6)


def test_basis_maps_weights_to_the_columns_of_l():
    head = heads.PrecisionHead(kernel_size=5, num_basis=3, factor="free")
    features = tf.random.normal([2, 4, 4, 6], seed=1)
    head(features)
    head.weights_conv.kernel.assign(tf.random.normal([1, 1, 6, 3], seed=2))
    log_diag, off_diag = head(features)
    weights = head.weights_conv(features).numpy()
    entries = weights @ head.basis.numpy().T
    assert head.basis.shape == (13, 3)
    np.testing.assert_allclose(log_diag, entries[..., 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(off_diag, entries[..., 1:], rtol=1e-5, atol=1e-6)


def test_structured_branch_starts_at_the_spherical_likelihood():
    vae = models.build_model(_config())
    vae.y_log_scale.assign(-2.0)
    outputs = vae(_batch(n=2))
    np.testing.assert_allclose(outputs["log_diag"], 2.0)
    np.testing.assert_allclose(outputs["off_diag"], 0.0)


def _with_contrast_scale(model, slope_variable):
    """A model with contrast_scale; its outputs at slope zero and at a given one."""
    vae = models.build_model(_config(model=model))
    z = tf.random.stateless_normal([4, 8], seed=[1, 2])
    zero = vae.decode(z)
    vae.contrast_scale.slope_variable.assign(slope_variable)
    return vae, zero, vae.decode(z)


def _contrast_offset(slope, y_mean):
    """`ContrastScale`'s offset, in NumPy: slope times the centred log contrast."""
    y = np.asarray(y_mean, np.float64)
    gradient = np.abs(np.diff(y, axis=1)).mean((1, 2))
    gradient += np.abs(np.diff(y, axis=2)).mean((1, 2))
    contrast = np.log(gradient + heads.CONTRAST_FLOOR) - heads.CONTRAST_CENTRE
    return slope * contrast


def test_contrast_scale_starts_at_zero_and_vae_sph_has_none():
    z = tf.random.stateless_normal([3, 8], seed=[0, 1])
    for model in ("vae_diag", "structured", "supn"):
        keras.utils.set_random_seed(0)
        vae = models.build_model(_config(model=model))
        keras.utils.set_random_seed(0)
        plain = models.build_model(_config(model=model))
        for name, value in plain.decode(z).items():
            np.testing.assert_array_equal(vae.decode(z)[name], value, err_msg=name)
    vae_sph = models.build_model(_config(model="vae_sph"))
    assert vae_sph.contrast_scale is None


@pytest.mark.parametrize("model", ["structured", "supn"])
def test_contrast_scale_multiplies_each_images_covariance_of_y(model):
    """`L exp(-s)`: log p_s(y) = log p_0(mu + (y - mu) e^-s) - n s, per image."""
    vae, zero, shifted = _with_contrast_scale(model, 0.05)
    slope = float(vae.contrast_scale.slope)
    np.testing.assert_allclose(slope, 3 * np.tanh(10 * 0.05 / 3), rtol=1e-6)
    np.testing.assert_array_equal(shifted["y_mean"], zero["y_mean"])
    s = _contrast_offset(slope, zero["y_mean"])
    assert np.ptp(s) > 0.01
    batch = _batch(n=4)
    y, mean = batch["y"].numpy(), zero["y_mean"].numpy()
    moved = dict(batch, y=mean + (y - mean) * np.exp(-s)[:, None, None])
    p_s = likelihoods.log_likelihood_parts(shifted, batch, vae.structure)
    p_0 = likelihoods.log_likelihood_parts(zero, moved, vae.structure)
    np.testing.assert_allclose(
        p_s["y"], p_0["y"] - SIZE * SIZE * s, rtol=1e-4, atol=1e-2
    )
    # Cb and Cr keep their factors.
    for name in ("cbcr_log_diag", "cbcr_off_diag"):
        np.testing.assert_array_equal(shifted[name], zero[name])
    np.testing.assert_allclose(p_s["cbcr"], p_0["cbcr"], rtol=1e-6)


def test_contrast_scale_of_vae_diag_shifts_y_and_its_slope_is_bounded():
    vae, zero, shifted = _with_contrast_scale("vae_diag", 1e3)
    slope = float(vae.contrast_scale.slope)
    assert 2.99 < slope <= 3.0
    s = (shifted["y_log_scale"] - zero["y_log_scale"]).numpy()
    np.testing.assert_allclose(
        s[:, 0, 0], _contrast_offset(slope, zero["y_mean"]), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(s, np.broadcast_to(s[:, :1, :1], s.shape), atol=1e-4)
    np.testing.assert_array_equal(shifted["cbcr_log_scale"], zero["cbcr_log_scale"])


def test_contrast_scale_does_not_shape_the_mean():
    """The offset reads the mean with its gradient stopped."""
    vae = models.build_model(_config(model="structured"))
    vae.contrast_scale.slope_variable.assign(0.1)
    z = tf.random.stateless_normal([2, 8], seed=[5, 6])
    with tf.GradientTape() as tape:
        offset = vae.contrast_scale(vae.decode(z)["y_mean"])
    gradients = tape.gradient(offset, vae.y_mean_head.trainable_weights)
    assert all(g is None for g in gradients)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, phase, extra",
    [
        ("vae_sph", "train", {}),
        ("vae_diag", "train", {}),
        ("beta_vae_diag", "train", {}),
        ("structured", "pretrain", {}),
        ("structured", "joint", {}),
        ("structured", "joint", {"num_basis": 3}),
        ("structured", "joint", {"kernel_size": 5, "dilation": 2}),
        ("supn", "covariance", {"color": "gray"}),
        ("structured", "joint", {"likelihood": "paper"}),
        ("vae_diag", "train", {"likelihood": "paper"}),
    ],
)
def test_every_variant_learns_a_fixed_batch(model, phase, extra):
    config = _config(model=model, **extra)
    keras.utils.set_random_seed(0)
    vae = models.build_model(config)
    batch = _batch(config.color)
    variables = training.phase_variables(vae, training.Phase(phase, 0, 1), config)
    optimizer = keras.optimizers.Adam(2e-3)
    noise = tf.random.stateless_normal([8, 8], seed=[0, 0])
    step = tf.function(
        lambda: training.train_step(
            vae,
            optimizer,
            variables,
            batch,
            config,
            training.Phase(phase, 0, 1),
            noise,
        )
    )

    first = step()
    for _ in range(40):
        last = step()
    assert np.mean(last["loss"]) < np.mean(first["loss"]) - 1.0
    for name in training.TERMS:
        assert np.all(np.isfinite(last[name]))
    if phase == "joint":
        assert np.mean(last["l1"]) > 0.0
    if vae.contrast_scale is not None and phase in ("train", "joint"):
        assert any(v is vae.contrast_scale.slope_variable for v in variables)
        assert abs(float(vae.contrast_scale.slope)) > 1e-3


def _gradient_trained_means(model):
    """The mean VAE's variables but the calibrated global scales."""
    scales = {id(model.y_log_scale), id(model.cbcr_log_scale)}
    return [v for v in model.mean_variables() if id(v) not in scales]


@pytest.mark.slow
def test_warmup_trains_only_the_structured_branch(tmp_path):
    config = _config(
        model_dir=str(tmp_path),
        epochs=3,
        pretrain_epochs=1,
        structured_warmup_epochs=1,
        progress=False,
    )
    snapshots = {}

    def snapshot(step, model):
        if step in (1, 6, 12, 13):
            snapshots[step] = {
                "mean": [v.numpy().copy() for v in _gradient_trained_means(model)],
                "branch": [v.numpy().copy() for v in model.uncertainty_variables()],
            }

    result = training.train(dataclasses.replace(config), callback=snapshot)
    assert result["step"] == 18
    pretrain_end, warmup_end, joint = snapshots[6], snapshots[12], snapshots[13]
    for before, after in zip(pretrain_end["mean"], warmup_end["mean"], strict=True):
        np.testing.assert_array_equal(before, after)
    changed = [
        not np.array_equal(before, after)
        for before, after in zip(
            pretrain_end["branch"], warmup_end["branch"], strict=True
        )
    ]
    assert all(changed)
    for before, after in zip(
        snapshots[1]["branch"], pretrain_end["branch"], strict=True
    ):
        np.testing.assert_array_equal(before, after)
    assert any(
        not np.array_equal(before, after)
        for before, after in zip(warmup_end["mean"], joint["mean"], strict=True)
    )


@pytest.mark.slow
def test_supn_freezes_the_mean_vae_and_trains_its_covariance_decoder(tmp_path):
    config = _config(model="supn", model_dir=str(tmp_path), epochs=2, pretrain_epochs=1)
    snapshots = {}

    def snapshot(step, model):
        if step in (1, 6, 12):
            snapshots[step] = (
                [v.numpy().copy() for v in _gradient_trained_means(model)],
                [v.numpy().copy() for v in model.uncertainty_variables()],
            )

    training.train(config, callback=snapshot)
    (mean_1, branch_1), (mean_6, branch_6), (mean_12, branch_12) = (
        snapshots[1],
        snapshots[6],
        snapshots[12],
    )
    assert any(not np.array_equal(a, b) for a, b in zip(mean_1, mean_6, strict=True))
    for a, b in zip(branch_1, branch_6, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(mean_6, mean_12, strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(
        not np.array_equal(a, b) for a, b in zip(branch_6, branch_12, strict=True)
    )


@pytest.mark.parametrize("num_basis", [0, 3])
def test_the_chroma_factors_are_each_heads_own(num_basis):
    # Without a basis the two heads run as one convolution and one map over
    # Cb's and Cr's parts stacked: the same numbers as each head on its own.
    vae = models.build_model(_config(model="structured", num_basis=num_basis))
    heads = (vae.cb_precision_head, vae.cr_precision_head)
    for variable in heads[0].weights + heads[1].weights:
        variable.assign(variable + tf.random.normal(variable.shape, stddev=0.1))
    z = tf.random.normal([3, 8], seed=2)
    outputs = vae.decode(z)
    features = vae.trunk(z)[vae.chroma_size]
    for channel, head in enumerate(heads):
        log_diag, off_diag, factors = head(
            features, log_scale=vae.cbcr_log_scale, with_factors=True
        )
        np.testing.assert_allclose(outputs["cbcr_log_diag"][:, channel], log_diag)
        np.testing.assert_allclose(outputs["cbcr_off_diag"][:, channel], off_diag)
        for name, factor in zip(
            ("cbcr_factor_a", "cbcr_factor_b"), factors, strict=True
        ):
            np.testing.assert_allclose(outputs[name][:, channel], factor)
    assert not np.allclose(
        outputs["cbcr_log_diag"][:, 0], outputs["cbcr_log_diag"][:, 1]
    )
