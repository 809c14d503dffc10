"""Tests of svae.models: shapes, the basis, and that every variant learns."""

import dataclasses
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny
from absl.testing import parameterized
from keras.src import testing as keras_testing

from svae import data, heads, likelihoods, models, recipes, training
from svae.distributions import SparsePrecisionGaussian, Structure

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


@pytest.mark.parametrize("dilation", [1, 2])
def test_border_offsets_move_only_the_pixels_within_reach_of_each_border(dilation):
    size, reach = 7, dilation  # kernel_size 3: one neighbour, `dilation` away.
    planes = heads.border_planes(size, size, reach).numpy()
    assert planes.shape == (size, size, 4 * reach)
    rows, cols = np.mgrid[:size, :size]
    for depth in range(reach):
        top, bottom, left, right = np.moveaxis(planes[..., 4 * depth :][..., :4], -1, 0)
        np.testing.assert_array_equal(top, rows == depth)
        np.testing.assert_array_equal(bottom, rows == size - 1 - depth)
        np.testing.assert_array_equal(left, cols == depth)
        np.testing.assert_array_equal(right, cols == size - 1 - depth)
    # The free factor passes the head's output through: the offsets show as
    # they are, one per plane and output channel, summed at the corners.
    head = heads.PrecisionHead(3, 0, factor="free", dilation=dilation)
    features = tf.random.stateless_normal([2, size, size, 6], seed=[1, 2])
    head(features)
    head.weights_conv.kernel.assign(tf.random.stateless_normal([1, 1, 6, 5], [3, 4]))

    def entries():
        """`[log_diag, off_diag]` along the last axis, as the head outputs them."""
        log_diag, off_diag = head(features)
        return np.concatenate([np.asarray(log_diag)[..., None], off_diag], -1)

    before = entries()
    border = tf.random.stateless_normal(head.border.shape, seed=[5, 6])
    head.border.assign(border)
    after = entries()
    offsets = planes @ (heads.BORDER_GAIN * border.numpy())
    np.testing.assert_allclose(
        after - before, np.broadcast_to(offsets, after.shape), atol=1e-4
    )
    inside = planes.sum(-1) == 0
    np.testing.assert_array_equal(after[:, inside], before[:, inside])


def _stationary_fields(num, size, seed=0):
    """Crops of a smooth stationary field: white noise blurred, cut from its middle."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((num, size + 24, size + 24))
    taps = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    taps /= np.sqrt(np.sum(taps**2))
    for axis in (1, 2):
        noise = np.apply_along_axis(np.convolve, axis, noise, taps, "same")
    return tf.constant(0.1 * noise[:, 12 : 12 + size, 12 : 12 + size], tf.float32)


def _fit_constant_head(fields, borders, steps=300):
    """A head on constant features fitted to `fields`: `(nats/pixel, w^2)`."""
    size = fields.shape[-1]
    head = heads.PrecisionHead(3, 0, borders=borders)
    features = tf.ones([1, size, size, 1])
    head(features)
    optimizer = keras.optimizers.Adam(0.05)

    def distribution():
        log_diag, off_diag, (a, b) = head(features, with_factors=True)
        return SparsePrecisionGaussian(
            tf.zeros_like(log_diag), log_diag, off_diag, 5, factor_a=a, factor_b=b
        )

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(distribution().log_prob(fields)) / size**2
        variables = head.trainable_variables
        optimizer.apply_gradients(
            zip(tape.gradient(loss, variables), variables, strict=True)
        )
        return loss

    for _ in range(steps):
        loss = step()
    return float(loss), distribution().whiten(fields).numpy() ** 2


def test_border_offsets_fit_a_stationary_fields_borders():
    # Without the offsets a head that cannot tell where it is (constant
    # features; a trunk's features nearly so) fits the interior and the
    # borders with one factor: L's rows at the last two rows and columns
    # lack neighbours, so their whitened residual is far from white there.
    # With them every border row and column is white too.
    fields = _stationary_fields(256, 16)
    without, w2_without = _fit_constant_head(fields, borders=False)
    with_, w2 = _fit_constant_head(fields, borders=True)
    bottom, right = w2_without[:, -1].mean(), w2_without[:, :, -1].mean()
    assert bottom > 3 and right > 3, (bottom, right)
    for depth in (0, 1):
        for part in (
            w2[:, depth],
            w2[:, -1 - depth],
            w2[:, :, depth],
            w2[:, :, -1 - depth],
        ):
            assert 0.85 < part.mean() < 1.15, (depth, part.mean())
    assert 0.85 < w2[:, 2:-2, 2:-2].mean() < 1.15
    assert with_ < without - 0.3, (with_, without)


def test_heads_saved_without_border_offsets_load_without_them():
    saved = heads.PrecisionHead(3, 0, borders=False).get_config()
    del saved["borders"]  # As an older build wrote it.
    head = heads.PrecisionHead.from_config(saved)
    assert not head.borders and head.border is None
    head(tf.zeros([1, 8, 8, 4]))
    assert len(head.trainable_weights) == 2
    with pytest.raises(ValueError, match="borders must be True or False, got 1"):
        heads.PrecisionHead(3, 0, borders=1)


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


# The harness's models: 16x16 images, 2 filters, 4 latents (two stride-2
# convolutions each way); `Encoder` and `Trunk` have 6 variables each.
TINY = dict(latent_dim=4, image_size=16, filters=2)
BATCH = 2


@keras.saving.register_keras_serializable(package="svae_tests")
class _VAEOnTensors(models.VAE):
    """`VAE` taking `y` and `cbcr` as two arguments, for Keras' layer harness.

    The harness calls a layer on a dict input as `layer(**inputs)`, so it
    cannot pass `VAE` its one batch dict; this class only re-spells the
    input, every other method is `VAE`'s.
    """

    def build(self, y_shape, cbcr_shape=None):
        super().build({"y": y_shape, "cbcr": cbcr_shape})

    def call(self, y, cbcr=None):
        return super().call({"y": y, "cbcr": cbcr})


def _keyword_inputs(count=4):
    """Random `y` and `cbcr` of `count` images."""
    return {
        "y": tf.random.uniform([count, SIZE, SIZE], seed=1),
        "cbcr": tf.random.uniform([count, 4, 4, 2], seed=2),
    }


def _input_shape(color):
    """The harness's `input_shape`: Y's alone, or Y's and CbCr's by argument."""
    y = (BATCH, SIZE, SIZE)
    return y if color == "gray" else {"y_shape": y, "cbcr_shape": (BATCH, 4, 4, 2)}


def _vae_output_shapes(model, color, paper=False):
    """`VAE.decode`'s docstring's shapes for `TINY` (the 3x3 neighbourhood).

    The default recipe's structured models have the "full_product" factor
    (L's neighbourhood 5x5, its two factors' 3x3) and structured chroma; the
    paper's the free factor (3x3) and factorised chroma.
    """
    image, low = (BATCH, SIZE, SIZE), (BATCH, 4, 4)
    shapes = {"y_mean": image, "z_mean": (BATCH, 4), "z_log_scale": (BATCH, 4)}
    structured = model in ("structured", "supn")
    if structured:
        shapes.update(log_diag=image, off_diag=(*image, 4 if paper else 12))
        if not paper:
            shapes.update(factor_a=(*image, 4), factor_b=(*image, 4))
    else:
        shapes["y_log_scale"] = image
    if color == "ycbcr":
        shapes["cbcr_mean"] = (*low, 2)
        if structured and not paper:
            shapes.update(cbcr_log_diag=(BATCH, 2, 4, 4))
            shapes.update(cbcr_off_diag=(BATCH, 2, 4, 4, 12))
            shapes.update(cbcr_factor_a=(BATCH, 2, 4, 4, 4))
            shapes.update(cbcr_factor_b=(BATCH, 2, 4, 4, 4))
        else:
            shapes["cbcr_log_scale"] = (*low, 2)
    return shapes


class _SumLoss(keras.losses.Loss):
    """The harness's training loss: the sum of the outputs."""

    def __call__(self, y_true, y_pred, sample_weight=None):
        return keras.ops.sum(y_pred)


def _fit_a_step_on_keyword_inputs(layer, inputs, outputs):
    """The harness's training check, calling `layer(**inputs)` as its others do.

    The harness's own step calls `layer(inputs)` with a dict input, which no
    layer of keyword inputs takes (Keras' `MultiHeadAttention` test turns it
    off too).
    """

    class Model(keras.Model):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def call(self, x):
            return self.layer(**x)

    model = Model()
    model.compile(optimizer="sgd", loss=_SumLoss(), jit_compile="auto")
    before = [w.numpy() for w in layer.trainable_weights]
    model.fit(inputs, outputs, batch_size=BATCH, verbose=0)
    changed = [
        not np.array_equal(w.numpy(), b)
        for w, b in zip(layer.trainable_weights, before, strict=True)
    ]
    assert any(changed)


class KerasLayerHarnessTest(keras_testing.TestCase):
    """Keras' own layer tests (`run_layer_test`) on `Encoder`, `Trunk`, `VAE`.

    Serialization, `build` from shapes alone (the variables' count checked),
    symbolic and eager calls, a `fit` step, and the mixed-precision check:
    built with `dtype="mixed_float16"`, each output has the dtype
    `compute_output_spec` declares and every float variable is float32.
    With colour the inputs are two arguments: the harness's own `fit` step
    passes them as one dict, so `_fit_a_step_on_keyword_inputs` runs it.
    `VAE` runs as `_VAEOnTensors`, which only re-spells its input.
    """

    @parameterized.named_parameters(("gray", "gray"), ("ycbcr", "ycbcr"))
    def test_encoder(self, color):
        arguments = dict(TINY, chroma_factor=4)
        self.run_layer_test(
            models.Encoder,
            arguments,
            input_shape=_input_shape(color),
            expected_output_shape=((BATCH, 4), (BATCH, 4)),
            expected_output_dtype=("float32", "float32"),
            expected_num_trainable_weights=6,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=0,
            run_training_check=color == "gray",
        )
        if color == "ycbcr":
            inputs = _keyword_inputs()
            encoder = models.Encoder(**arguments)
            _fit_a_step_on_keyword_inputs(encoder, inputs, encoder(**inputs))

    def test_trunk(self):
        self.run_layer_test(
            models.Trunk,
            {"image_size": SIZE, "filters": 2},
            input_shape=(BATCH, 4),
            # Side 4 after the dense layer, then each transposed convolution.
            expected_output_shape={
                4: (BATCH, 4, 4, 4),
                8: (BATCH, 8, 8, 2),
                16: (BATCH, 16, 16, 2),
            },
            expected_output_dtype={4: "float32", 8: "float32", 16: "float32"},
            expected_num_trainable_weights=6,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=0,
        )

    @parameterized.named_parameters(
        # Encoder and trunk 12, y_mean 2, y_log_scale 1, with colour cbcr_mean
        # 2 and cbcr_log_scale 1; vae_diag's y_scale 2; the structured heads
        # 2 each, Y's 1 more (its border offsets; none with the paper's
        # recipe); contrast_scale 1; supn's covariance trunk 6; a basis 1 more.
        ("vae_sph_gray", "vae_sph", "gray", {}, 15),
        ("vae_sph_ycbcr", "vae_sph", "ycbcr", {}, 18),
        ("vae_diag_gray", "vae_diag", "gray", {}, 18),
        ("vae_diag_ycbcr", "vae_diag", "ycbcr", {}, 21),
        ("structured_gray", "structured", "gray", {}, 19),
        ("structured_ycbcr", "structured", "ycbcr", {}, 26),
        ("structured_basis", "structured", "gray", {"num_basis": 3}, 20),
        ("structured_paper", "structured", "ycbcr", {"likelihood": "paper"}, 22),
        ("supn_gray", "supn", "gray", {}, 25),
        ("supn_ycbcr", "supn", "ycbcr", {}, 32),
    )
    def test_vae(self, model, color, extra, variables):
        arguments = dict(TINY, model=model, color=color, **extra)
        shapes = _vae_output_shapes(model, color, extra.get("likelihood") == "paper")
        self.run_layer_test(
            _VAEOnTensors,
            arguments,
            input_shape=_input_shape(color),
            expected_output_shape=shapes,
            expected_output_dtype={name: "float32" for name in shapes},
            expected_num_trainable_weights=variables,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=0,
            run_training_check=color == "gray",
        )
        if color == "ycbcr":
            inputs = _keyword_inputs()
            vae = _VAEOnTensors(**arguments)
            _fit_a_step_on_keyword_inputs(vae, inputs, vae(**inputs))


def _shapes(inputs):
    """The shapes of a batch dict, as `VAE.build` takes them."""
    return {name: tuple(value.shape) for name, value in inputs.items()}


def test_build_model_builds_every_layer_without_a_warning():
    config = _config(model="supn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vae = models.build_model(config)
    assert not [w for w in caught if "build()" in str(w.message)]
    assert all(layer.built for layer in vae._flatten_layers())
    # `build` alone creates the same variables as a call.
    built = models.VAE(**{name: getattr(config, name) for name in models._VAE_FIELDS})
    built.build(_shapes(_batch(n=1)))
    assert [w.shape for w in built.weights] == [w.shape for w in vae.weights]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_under_a_mixed_policy_the_convolutions_compute_in_16_bits(policy):
    vae = models.build_model(_config(model="supn", precision=policy))
    batch = _batch(n=2)
    z = tf.zeros([2, 8])

    def dtypes(tensors):
        return {keras.backend.standardize_dtype(t.dtype) for t in tensors}

    half = policy.removeprefix("mixed_")
    # The encoder's convolutions compute in 16 bits; the trunks too, but in
    # float32 under bfloat16 (`trunk_policy`).
    convs = [getattr(vae.encoder, f"conv{i}") for i in range(vae.encoder.num_convs)]
    assert {conv.compute_dtype for conv in convs} == {half}
    trunk_dtype = "float32" if half == "bfloat16" else half
    for trunk in (vae.trunk, vae.covariance_trunk):
        assert dtypes(trunk(z).values()) == {trunk_dtype}
    assert dtypes(vae.encode(batch["y"], batch["cbcr"])) == {"float32"}
    assert dtypes(vae(batch).values()) == {"float32"}
    assert dtypes(vae.weights) == {"float32"}


@pytest.mark.parametrize(
    "arguments",
    [
        dict(model="vae_sph", color="gray"),
        dict(
            model="structured",
            num_basis=3,
            dilation=2,
            likelihood=recipes.Likelihood(factor="bounded", dominance=0.9),
            dtype="mixed_bfloat16",
        ),
        dict(model="supn", likelihood="paper", chroma_factor=2, dtype="float64"),
    ],
    ids=["vae_sph_gray", "structured_bounded_bfloat16", "supn_paper_float64"],
)
def test_config_round_trips(arguments):
    vae = models.VAE(**TINY, **arguments)
    config = vae.get_config()
    likelihood = recipes.Likelihood.of(arguments.get("likelihood", recipes.DEFAULT))
    assert config["likelihood"] == likelihood.to_dict()
    for name in ("model", "color", "num_basis", "dilation", "chroma_factor"):
        assert config[name] == arguments.get(name, config[name]), name
    assert {name: config[name] for name in TINY} == TINY
    revived = [
        models.VAE.from_config(config),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vae)),
        keras.models.model_from_json(vae.to_json()),
    ]
    size, low = SIZE, SIZE // vae.chroma_factor
    shapes = {"y": (1, size, size)}
    if vae.use_chroma:
        shapes["cbcr"] = (1, low, low, 2)
    vae.build(shapes)
    for again in revived:
        assert type(again) is models.VAE
        assert again.get_config() == config
        assert again.likelihood == likelihood
        assert again.dtype_policy.name == arguments.get("dtype", "float32")
        again.build(shapes)
        assert [(w.name, w.shape) for w in again.weights] == [
            (w.name, w.shape) for w in vae.weights
        ]
    for layer in (vae.encoder, vae.trunk):
        again = type(layer).from_config(layer.get_config())
        assert again.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "overrides",
    [
        dict(model="structured"),
        dict(model="supn", color="gray", precision="mixed_bfloat16"),
    ],
    ids=["structured", "supn_gray_bfloat16"],
)
def test_a_keras_file_loads_to_the_same_outputs(overrides, tmp_path):
    config = _config(**overrides)
    vae = models.build_model(config)
    for variable in vae.weights:  # Some heads start at zero.
        variable.assign(variable + tf.random.normal(variable.shape, stddev=0.1))
    path = tmp_path / "vae.keras"
    keras.saving.save_model(vae, path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is models.VAE and loaded.built
    assert loaded.get_config() == vae.get_config()
    batch = _batch(config.color, 2)
    batch = {name: batch[name] for name in ("y", "cbcr") if name in batch}
    outputs, again = vae(batch), loaded(batch)
    assert again.keys() == outputs.keys()
    for name, value in outputs.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)
