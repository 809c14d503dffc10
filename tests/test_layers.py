"""svae.layers and svae.losses: the Keras 3 head and loss for any image model."""

import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
import tiny
from absl.testing import parameterized
from keras.src import testing as keras_testing
from tensorflow.core.protobuf import saved_model_pb2

from svae import config as config_lib
from svae import heads, layers, linalg, losses, models, recipes, xla
from svae.distributions import SparsePrecisionGaussian, Structure

tfd = tfp.distributions

SIZE = 8


def _model(kernel_size=3, dilation=1, num_basis=0, factor="product", seed=0):
    """A tiny Functional model: two convolutions, then the head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input([SIZE, SIZE, 1])
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    params = layers.SparsePrecisionGaussianHead(
        kernel_size=kernel_size, dilation=dilation, num_basis=num_basis, factor=factor
    )(h)
    return keras.Model(inputs, params)


def _images(count=16, seed=0):
    """Smooth random images `[count, SIZE, SIZE, 1]` in [0, 1]: correlated pixels."""
    rng = np.random.default_rng(seed)
    noise = rng.random((count, SIZE + 2, SIZE + 2)).astype("float32")
    smooth = sum(
        noise[:, i : i + SIZE, j : j + SIZE] for i in range(3) for j in range(3)
    )
    return (smooth / 9.0)[..., None]


@pytest.fixture(scope="module")
def trained():
    """`(model, images, losses per epoch)`: the tiny model after a few fit steps."""
    model = _model()
    model.compile(keras.optimizers.Adam(1e-2), loss=losses.SparsePrecisionNLL())
    x = _images()
    history = model.fit(x, x, batch_size=4, epochs=4, verbose=0, shuffle=False)
    return model, x, history.history["loss"]


def test_params_size_and_unpack():
    assert layers.params_size(3) == 6
    assert layers.params_size(5) == 14
    assert layers.params_size(Structure(7, 2)) == 2 + 24
    assert layers.SparsePrecisionGaussianHead.params_size(5) == 14
    params = tf.reshape(tf.range(2 * 4 * 4 * 6, dtype=tf.float32), [2, 4, 4, 6])
    loc, log_diag, off_diag = layers.SparsePrecisionGaussianHead.unpack(params)
    assert loc.shape == log_diag.shape == (2, 4, 4)
    assert off_diag.shape == (2, 4, 4, 4)
    np.testing.assert_array_equal(
        tf.concat([loc[..., None], log_diag[..., None], off_diag], -1), params
    )
    with pytest.raises(ValueError, match="kernel_size"):
        layers.params_size(4)
    with pytest.raises(ValueError, match="6 channels"):
        layers.to_distribution(tf.zeros([1, 4, 4, 7]), kernel_size=3)
    with pytest.raises(ValueError, match="6, 14, 26, ...\\); got 7"):
        layers.to_distribution(tf.zeros([1, 4, 4, 7]))
    for kernel_size in (3, 5, 7):
        channels = layers.params_size(kernel_size)
        assert layers.kernel_size_of(channels) == kernel_size
    with pytest.raises(ValueError, match="factor"):
        layers.SparsePrecisionGaussianHead(factor="dense")


@pytest.mark.parametrize("num_basis", [0, 3])
@pytest.mark.parametrize("factor", ["full_product", "product", "bounded", "free"])
def test_head_outputs_the_precision_heads_parameters(factor, num_basis):
    features = tf.random.stateless_normal([2, SIZE, SIZE, 5], seed=[1, 2])
    head = layers.SparsePrecisionGaussianHead(
        kernel_size=5, dilation=2, num_basis=num_basis, factor=factor, log_scale=-1.0
    )
    params = head(features)
    kernel = 9 if factor == "full_product" else 5  # L of two 5x5 factors.
    assert head.structure == Structure(kernel, 2)
    assert params.shape == (2, SIZE, SIZE, layers.params_size(kernel))
    # At initialisation the precision branch is the spherical likelihood.
    loc, log_diag, off_diag = layers.unpack(params)
    np.testing.assert_allclose(log_diag, 1.0, atol=1e-6)
    np.testing.assert_allclose(off_diag, 0.0, atol=1e-6)
    # With random weights: svae.heads.PrecisionHead's maps, to the letter.
    for weight in head.precision.weights:
        weight.assign(tf.random.stateless_normal(weight.shape, seed=[3, 4]))
    loc, log_diag, off_diag = layers.unpack(head(features))
    expected = head.precision(features, log_scale=-1.0)
    np.testing.assert_allclose(log_diag, expected[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(off_diag, expected[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loc[..., None], head.loc_conv(features), atol=1e-5)
    dist = head.distribution(head(features))
    assert dist.kernel_size == kernel and dist.dilation == 2
    assert layers.to_distribution(params, dilation=2).kernel_size == kernel
    if factor == "bounded":
        assert np.all(dist.off_diagonal_ratio().numpy() < 0.99 + 1e-6)
    assert isinstance(head.precision, heads.PrecisionHead)


def test_every_head_and_the_models_default_to_the_default_recipe():
    head = layers.SparsePrecisionGaussianHead()
    precision = heads.PrecisionHead(3, 0)
    vae = models.VAE(image_size=16, latent_dim=4)
    config = config_lib.Config()
    for factor, dominance in (
        (head.precision.factor, head.precision.dominance),
        (precision.factor, precision.dominance),
        (vae.precision_head.factor, vae.precision_head.dominance),
        (config.likelihood.factor, config.likelihood.dominance),
    ):
        assert (factor, dominance) == (
            recipes.DEFAULT.factor,
            recipes.DEFAULT.dominance,
        )
    assert vae.likelihood == config.likelihood == recipes.DEFAULT
    assert (vae.contrast_scale is not None) == recipes.DEFAULT.contrast_scale


def test_a_head_saved_by_an_older_build_loads_unless_it_used_max_scale():
    saved = layers.SparsePrecisionGaussianHead(factor="bounded").get_config()
    again = layers.SparsePrecisionGaussianHead.from_config(saved | {"max_scale": None})
    assert again.get_config() == saved
    with pytest.raises(ValueError, match="max_scale=0.2.*no longer has"):
        layers.SparsePrecisionGaussianHead.from_config(saved | {"max_scale": 0.2})
    # Older builds had no border offsets: a config without `borders` has none.
    del saved["borders"]
    older = layers.SparsePrecisionGaussianHead.from_config(saved)
    assert not older.precision.borders and older.get_config()["borders"] is False


def test_loss_is_minus_log_prob_and_matches_tfps_dense_gaussian():
    height = width = 4
    params = tf.random.stateless_normal(
        [3, height, width, 6], seed=[5, 6], dtype=tf.float64
    )
    params *= tf.constant([1.0, 0.3, 0.4, 0.4, 0.4, 0.4], tf.float64)
    x = tf.random.stateless_normal([3, height, width], seed=[7, 8], dtype=tf.float64)
    loss = losses.SparsePrecisionNLL(reduction=None, dtype="float64")
    nll = loss(x, params)
    loc, log_diag, off_diag = layers.unpack(params)
    dist = SparsePrecisionGaussian(loc, log_diag, off_diag)
    np.testing.assert_allclose(nll, -dist.log_prob(x), rtol=1e-12)
    np.testing.assert_allclose(loss(x[..., None], params), nll, rtol=1e-12)
    # TFP's dense Gaussian with the covariance (L L^T)^{-1}.
    factor = linalg.dense_factor(log_diag, off_diag)
    covariance = tf.linalg.inv(tf.matmul(factor, factor, transpose_b=True))
    reference = tfd.MultivariateNormalTriL(
        tf.reshape(loc, [3, -1]), tf.linalg.cholesky(covariance)
    )
    np.testing.assert_allclose(
        nll, -reference.log_prob(tf.reshape(x, [3, -1])), rtol=1e-9
    )
    per_pixel = losses.SparsePrecisionNLL(
        per_pixel=True, reduction=None, dtype="float64"
    )
    np.testing.assert_allclose(per_pixel(x, params), nll / 16, rtol=1e-12)
    # The default reduction: the mean over the batch.
    mean = losses.SparsePrecisionNLL(dtype="float64")(x, params)
    np.testing.assert_allclose(mean, np.mean(nll), rtol=1e-12)


def test_a_functional_model_trains_with_compile_and_fit(trained):
    model, x, history = trained
    assert history[-1] < history[0] - 1.0, history
    dist = layers.to_distribution(model(x[:2]))
    assert dist.sample(seed=[1, 2]).shape == (2, SIZE, SIZE)
    assert dist.marginal_variance().shape == (2, SIZE, SIZE)
    mask = tf.random.stateless_uniform([2, SIZE, SIZE], seed=[3, 4]) < 0.5
    mean = dist.conditional(x[:2, ..., 0], mask).mean()
    np.testing.assert_allclose(tf.boolean_mask(mean, mask), x[:2, ..., 0][mask])


def test_save_and_load_model_round_trip(trained, tmp_path):
    model, x, _ = trained
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    assert isinstance(loaded.loss, losses.SparsePrecisionNLL)
    head = loaded.layers[-1]
    assert isinstance(head, layers.SparsePrecisionGaussianHead)
    assert head.get_config() == model.layers[-1].get_config()
    np.testing.assert_allclose(
        loaded.evaluate(x, x, verbose=0), model.evaluate(x, x, verbose=0), rtol=1e-6
    )


def test_export_archive_returns_mean_sample_and_log_prob(trained, tmp_path):
    model, x, _ = trained
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(features, images, seed):
        return layers.serving_outputs(model(features), images, seed)

    # Traced (at write_out) as plain TF ops, for TF Serving (svae.xla).
    with xla.portable():
        archive.add_endpoint(
            "serve",
            serve,
            input_signature=[
                tf.TensorSpec([None, SIZE, SIZE, 1], tf.float32),
                tf.TensorSpec([None, SIZE, SIZE], tf.float32),
                tf.TensorSpec([2], tf.int32),
            ],
        )
        archive.write_out(str(tmp_path / "export"), verbose=False)
    graph = (tmp_path / "export" / "saved_model.pb").read_bytes()
    saved = saved_model_pb2.SavedModel.FromString(graph).meta_graphs[0].graph_def
    assert not [
        f.signature.name for f in saved.library.function if f.attr["_XlaMustCompile"].b
    ]
    restored = tf.saved_model.load(str(tmp_path / "export"))
    out = restored.serve(x[:3], x[:3, ..., 0], tf.constant([1, 2]))
    dist = layers.to_distribution(model(x[:3]))
    np.testing.assert_allclose(out["mean"], dist.mean(), atol=1e-6)
    np.testing.assert_allclose(out["log_prob"], dist.log_prob(x[:3, ..., 0]), rtol=1e-5)
    assert out["sample"].shape == (3, SIZE, SIZE)
    again = restored.serve(x[:3], x[:3, ..., 0], tf.constant([1, 2]))
    np.testing.assert_array_equal(out["sample"], again["sample"])
    signature = restored.signatures["serving_default"]
    named = signature(
        features=tf.constant(x[:3]),
        images=tf.constant(x[:3, ..., 0]),
        seed=tf.constant([1, 2]),
    )
    assert set(named) == {"mean", "sample", "log_prob"}


FEATURES = (2, SIZE, SIZE, 5)


class KerasLayerHarnessTest(keras_testing.TestCase):
    """Keras' own layer tests (`run_layer_test`) on every public svae layer.

    Besides serialization, build, symbolic and eager calls and a `fit` step,
    its mixed-precision check builds the layer with `dtype="mixed_float16"`,
    calls it on float16 features, and asserts that each output has the dtype
    `compute_output_spec` declares and that every float variable is float32.
    `svae.models`' `Encoder`, `Trunk` and `VAE` run it in
    `tests/test_models.py::KerasLayerHarnessTest`.
    """

    @parameterized.named_parameters(
        # The default factor, "full_product": L of two 3x3 factors is 5x5.
        # Variables: the two convolutions' kernels and biases, the border
        # offsets (the default), a basis.
        ("kernel_size_3", {"kernel_size": 3}, 14, 5),
        ("no_borders", {"borders": False}, 14, 4),
        ("free", {"factor": "free"}, 6, 5),
        (
            "bounded_kernel_size_5_num_basis_3",
            {"kernel_size": 5, "num_basis": 3, "factor": "bounded"},
            14,
            6,
        ),
        ("dilation_2", {"dilation": 2}, 14, 5),
        ("float64", {"dtype": "float64"}, 14, 5),
    )
    def test_sparse_precision_gaussian_head(self, config, channels, variables):
        self.run_layer_test(
            layers.SparsePrecisionGaussianHead,
            config,
            input_shape=FEATURES,
            expected_output_shape=(*FEATURES[:-1], channels),
            expected_output_dtype=config.get("dtype", "float32"),
            expected_num_trainable_weights=variables,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=0,
        )

    def test_sparse_precision_gaussian_head_kernel_size_5_num_basis_3(self):
        # L of two 5x5 factors is 9x9 (K = 40): XLA takes half a minute to
        # compile its fit step on 2 cores, so the harness's fit is left to
        # the 3x3 and the bounded 5x5 cases above; everything else runs.
        self.run_layer_test(
            layers.SparsePrecisionGaussianHead,
            {"kernel_size": 5, "num_basis": 3},
            input_shape=FEATURES,
            expected_output_shape=(*FEATURES[:-1], 42),
            expected_output_dtype="float32",
            expected_num_trainable_weights=6,
            run_training_check=False,
        )

    @parameterized.named_parameters(
        ("full_product", {"kernel_size": 3, "num_basis": 0}, 12, 3),
        ("no_borders", {"kernel_size": 3, "num_basis": 0, "borders": False}, 12, 2),
        ("free_basis", {"kernel_size": 5, "num_basis": 3, "factor": "free"}, 12, 4),
    )
    def test_precision_head(self, config, off_diagonals, variables):
        self.run_layer_test(
            heads.PrecisionHead,
            config,
            input_shape=FEATURES,
            expected_output_shape=(FEATURES[:-1], (*FEATURES[:-1], off_diagonals)),
            expected_output_dtype=("float32", "float32"),
            expected_num_trainable_weights=variables,
            expected_num_non_trainable_weights=0,
        )

    def test_contrast_scale(self):
        self.run_layer_test(
            heads.ContrastScale,
            {},
            input_shape=(2, SIZE, SIZE),
            expected_output_shape=(2,),
            expected_output_dtype="float32",
            expected_num_trainable_weights=1,
            expected_num_non_trainable_weights=0,
        )


@pytest.fixture
def global_policy():
    """Sets Keras' global dtype policy for one test, and restores it after."""
    before = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(before)


@pytest.mark.parametrize(
    ("policy", "output", "variable", "atol"),
    [
        ("float64", "float64", "float64", 1e-5),
        ("mixed_float16", "float32", "float32", 2e-2),
        ("mixed_bfloat16", "float32", "float32", 1e-1),
    ],
)
def test_the_heads_policy_reaches_its_inner_layers(policy, output, variable, atol):
    features = tf.random.stateless_normal(FEATURES, seed=[1, 2])
    reference = layers.SparsePrecisionGaussianHead(num_basis=3, log_scale=-1.0)
    head = layers.SparsePrecisionGaussianHead(num_basis=3, log_scale=-1.0, dtype=policy)
    reference(features), head(features)
    for weight in reference.weights:
        weight.assign(tf.random.stateless_normal(weight.shape, seed=[3, 4]) * 0.3)
    head.set_weights(reference.get_weights())
    for layer in (head.loc_conv, head.precision, head.precision.weights_conv):
        assert layer.dtype_policy.name == policy, layer.name
    assert {w.dtype for w in head.weights} == {variable}
    params = head(features)
    assert params.dtype == output
    assert head.compute_output_spec(keras.KerasTensor(FEATURES)).dtype == output
    # The same numbers as the float32 head, to the policy's precision.
    np.testing.assert_allclose(params, reference(features), rtol=atol, atol=atol)
    dist = head.distribution(params)
    assert dist.dtype == output
    assert dist.log_prob(tf.zeros([2, SIZE, SIZE], output)).dtype == output


@pytest.mark.parametrize("policy", ["float64", "mixed_float16", "mixed_bfloat16"])
def test_a_model_fits_under_float64_and_the_mixed_policies(policy, global_policy):
    # The factor's map runs in the likelihood's dtype under every factor; the
    # harness fits the default one in float64 (`KerasLayerHarnessTest`).
    global_policy(policy)
    model = _model(factor="bounded")
    loss = losses.SparsePrecisionNLL(per_pixel=True)
    model.compile(keras.optimizers.Adam(1e-2), loss=loss)
    x = _images(count=4)
    history = model.fit(x, x, batch_size=2, epochs=3, verbose=0, shuffle=False)
    values = history.history["loss"]
    assert all(math.isfinite(value) for value in values), values
    assert values[-1] < values[0], values
    wide = "float64" if policy == "float64" else "float32"
    assert model(x[:2]).dtype == wide
    assert {w.dtype for w in model.layers[-1].weights} == {wide}
    assert loss.dtype == wide  # The likelihood ran in the head's dtype.


def test_the_loss_keeps_a_float64_output_in_float64():
    params = tf.random.stateless_normal([2, 4, 4, 6], seed=[5, 6], dtype=tf.float64)
    params *= tf.constant([1.0, 0.3, 0.4, 0.4, 0.4, 0.4], tf.float64)
    x = tf.random.stateless_normal([2, 4, 4], seed=[7, 8], dtype=tf.float64)
    nll = losses.SparsePrecisionNLL(reduction=None)(x, params)
    assert nll.dtype == tf.float64
    np.testing.assert_allclose(
        nll, -layers.to_distribution(params).log_prob(x), rtol=1e-13
    )
    # A float16 output (a model of someone else's) is scored in float32.
    half = losses.SparsePrecisionNLL(reduction=None)(x, tf.cast(params, tf.float16))
    assert half.dtype == tf.float32
    saved = losses.SparsePrecisionNLL(dtype="float64").get_config()
    assert saved["dtype"] == "float64"
    assert losses.SparsePrecisionNLL.from_config(saved).dtype == "float64"
    assert losses.SparsePrecisionNLL().get_config()["dtype"] is None


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize(
    "make",
    [
        layers.SparsePrecisionGaussianHead,
        lambda **kwargs: heads.PrecisionHead(3, 0, **kwargs),
        heads.ContrastScale,
    ],
    ids=["SparsePrecisionGaussianHead", "PrecisionHead", "ContrastScale"],
)
def test_16_bit_variables_are_refused_naming_the_mixed_policy(
    make, dtype, global_policy
):
    with pytest.raises(ValueError, match=f"dtype='{dtype}'.*'mixed_{dtype}'"):
        make(dtype=dtype)
    global_policy(dtype)
    with pytest.raises(ValueError, match=f"global dtype policy '{dtype}'"):
        make()
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        losses.SparsePrecisionNLL(dtype=f"mixed_{dtype}")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (dict(kernel_size=3.5), r"kernel_size must be an odd integer >= 3 .*got 3\.5"),
        (dict(kernel_size=4), r"kernel_size must be an odd integer >= 3 .*got 4\."),
        (dict(dilation=2.5), r"dilation must be an integer >= 1, got 2\.5"),
        (dict(dilation=0), r"dilation must be an integer >= 1, got 0"),
        (dict(log_scale=math.nan), r"log_scale must be a finite number.*got nan"),
        (dict(log_scale=-math.inf), r"log_scale must be a finite number.*got -inf"),
        (dict(log_scale="-1"), r"log_scale must be a finite number.*got '-1'"),
        (dict(dominance="0.5"), r"dominance must be in \(0, 1\), got '0\.5'"),
        (dict(dominance=math.nan), r"dominance must be in \(0, 1\), got nan"),
        (dict(num_basis=1.5), r"num_basis must be an integer >= 0, got 1\.5"),
        (dict(factor="dense"), r"factor must be one of .*got 'dense'"),
    ],
)
def test_head_arguments_are_checked_when_it_is_made(make, match):
    with pytest.raises(ValueError, match=match):
        layers.SparsePrecisionGaussianHead(**make)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (dict(kernel_size=3.5), r"kernel_size must be an odd integer >= 3 .*got 3\.5"),
        (dict(kernel_size=2), r"kernel_size must be an odd integer >= 3 .*got 2\."),
        (dict(dilation=0), r"dilation must be an integer >= 1, got 0"),
        (dict(dilation=2.5), r"dilation must be an integer >= 1, got 2\.5"),
        (dict(per_pixel="no"), r"per_pixel must be True or False, got 'no'"),
        (dict(dtype="float16"), r"dtype must be 'float32' or 'float64'.*'float16'"),
    ],
)
def test_loss_arguments_are_checked_when_it_is_made(make, match):
    with pytest.raises(ValueError, match=match):
        losses.SparsePrecisionNLL(**make)


def test_numpy_integers_are_accepted_and_saved_as_ints():
    head = layers.SparsePrecisionGaussianHead(
        kernel_size=np.int64(5), dilation=np.int64(2), num_basis=np.int32(3)
    )
    config = head.get_config()
    for name, value in (("kernel_size", 5), ("dilation", 2), ("num_basis", 3)):
        assert config[name] == value and type(config[name]) is int, name
    loss = losses.SparsePrecisionNLL(kernel_size=np.int64(9), dilation=np.int64(2))
    assert type(loss.get_config()["dilation"]) is int


_MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_layers
from svae import losses
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    model = test_layers._model()
    model.compile(keras.optimizers.Adam(1e-2), loss=losses.SparsePrecisionNLL())
x = test_layers._images()
history = model.fit(x, x, batch_size=4, epochs=4, verbose=0, shuffle=False)
print("RESULT", *history.history["loss"])
"""


@pytest.mark.slow
def test_mirrored_strategy_fit_on_two_cpus_matches_one_device(trained, tmp_path):
    _, _, history = trained
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED, str(tiny.ROOT / "tests")],
        env=tiny.script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    mirrored = [float(value) for value in line.split()[1:]]
    np.testing.assert_allclose(mirrored, history, rtol=1e-3)
