"""Exported SavedModels, called in a fresh process that does not import svae."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tiny
from tensorflow.core.protobuf import saved_model_pb2

from svae import color, data, evaluation, export, files, likelihoods, models

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 16  # conftest's tiny_run.
# More samples than `log_prob` decodes at once, and not a multiple.
CHUNKED_SAMPLES = 2 * export.SERVED_SAMPLE_CHUNK + export.SERVED_SAMPLE_CHUNK // 2

# Runs in a fresh interpreter: only TensorFlow and numpy, as a serving stack.
CLIENT = """
import json, sys
import numpy as np
import tensorflow as tf
assert "svae" not in sys.modules
loaded = tf.saved_model.load(sys.argv[1])
inputs = np.load(sys.argv[2])
max_samples, chunked_samples = int(sys.argv[4]), int(sys.argv[5])
max_latent = np.float32(sys.argv[6])
out = {"signatures": sorted(loaded.signatures)}
for batch in (1, 3):
    images = tf.constant(inputs["images"][:batch])
    encoded = loaded.signatures["encode"](images=images)
    decoded = loaded.signatures["decode"](z=encoded["z_mean"])
    seed = tf.constant([7, 8])
    sampled = loaded.signatures["sample"](z=encoded["z_mean"], seed=seed)
    again = loaded.signatures["sample"](z=encoded["z_mean"], seed=seed)
    served = loaded.signatures["serving_default"](images=images)
    as_uint8 = tf.cast(tf.round(images * 255.0), tf.uint8)
    served_uint8 = loaded.signatures["reconstruct_uint8"](images=as_uint8)
    bound = loaded.signatures["log_prob"](images=images, num_samples=tf.constant(5))
    arrays = {"z_mean": encoded["z_mean"], "z_log_scale": encoded["z_log_scale"]}
    arrays.update({"decoded_" + k: v for k, v in decoded.items()})
    arrays.update({"sample_" + k: v for k, v in sampled.items()})
    arrays.update({"served_" + k: v for k, v in served.items()})
    arrays["iw_bound"] = bound["iw_bound"]
    arrays["served_uint8_mean_rgb"] = served_uint8["mean_rgb"]
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez(sys.argv[3] + f"_{batch}.npz", **arrays)
    out[f"reproducible_{batch}"] = bool(
        np.array_equal(sampled["sample_rgb"], again["sample_rgb"])
    )
images = tf.constant(inputs["images"])
chunked = loaded.signatures["log_prob"](
    images=images[:2], num_samples=tf.constant(chunked_samples)
)
np.save(sys.argv[3] + "_chunked.npy", chunked["iw_bound"].numpy())
z = tf.zeros([2, 4])
with_nan, with_inf = inputs["images"].copy(), inputs["images"].copy()
with_nan[1, 2, 3, 0] = np.nan
with_inf[0, 5, 5, 2] = np.inf
z_nan = np.zeros([2, 4], np.float32)
z_nan[1, 1] = np.nan
log_prob = loaded.signatures["log_prob"]
# Edges that must pass: pixels exactly 0 and 1, K = 1 and K = the maximum.
accepted = {
    "zeros": lambda: loaded.signatures["encode"](images=tf.zeros([1, 16, 16, 3])),
    "ones": lambda: loaded.signatures["reconstruct"](images=tf.ones([1, 16, 16, 3])),
    "one_sample": lambda: log_prob(images=images[:1], num_samples=tf.constant(1)),
    "max_samples": lambda: log_prob(
        images=images[:1], num_samples=tf.constant(max_samples)
    ),
}
out["accepted"] = {
    name: bool(np.all([np.all(np.isfinite(v)) for v in call().values()]))
    for name, call in accepted.items()
}
# Latents at the bound, of both signs and mixed: finite answers.
signs = np.where(np.arange(8).reshape(2, 4) % 3 == 0, 1.0, -1.0).astype(np.float32)
out["at_bound"] = []
edge = np.full([2, 4], max_latent)
for z_edge in (signs * max_latent, edge, -edge):
    decoded = loaded.signatures["decode"](z=z_edge)
    sampled = loaded.signatures["sample"](z=z_edge, seed=tf.constant([3, 4]))
    values = list(decoded.values()) + list(sampled.values())
    out["at_bound"].append({
        "finite": bool(all(np.all(np.isfinite(v)) for v in values)),
        "sample_rgb": [float(tf.reduce_min(sampled["sample_rgb"])),
                       float(tf.reduce_max(sampled["sample_rgb"]))],
    })
beyond = signs * np.nextafter(max_latent, np.float32(np.inf))
errors = {}
for name, call in {
    "size": lambda: loaded.signatures["encode"](images=tf.zeros([2, 8, 8, 3])),
    "rank": lambda: loaded.signatures["encode"](images=tf.zeros([2, 16, 16])),
    "channels": lambda: loaded.signatures["encode"](images=tf.zeros([2, 16, 16, 1])),
    "dtype": lambda: loaded.signatures["encode"](
        images=tf.zeros([2, 16, 16, 3], tf.uint8)
    ),
    "latent": lambda: loaded.signatures["decode"](z=tf.zeros([2, 5])),
    "nan_image": lambda: loaded.signatures["reconstruct"](images=with_nan),
    "nan_image_encode": lambda: loaded.signatures["encode"](images=with_nan),
    "nan_image_log_prob": lambda: log_prob(images=with_nan, num_samples=3),
    "inf_image": lambda: loaded.signatures["encode"](images=with_inf),
    "image_in_255": lambda: log_prob(images=images * 255.0, num_samples=3),
    "negative_image": lambda: loaded.signatures["encode"](images=images - 0.5),
    "nan_z_decode": lambda: loaded.signatures["decode"](z=z_nan),
    "nan_z_sample": lambda: loaded.signatures["sample"](z=z_nan, seed=[1, 2]),
    "inf_z": lambda: loaded.signatures["decode"](z=z + np.inf),
    "z_beyond_bound": lambda: loaded.signatures["decode"](z=beyond),
    "z_beyond_bound_sample": lambda: loaded.signatures["sample"](
        z=beyond, seed=[1, 2]
    ),
    "z_1e6_sample": lambda: loaded.signatures["sample"](z=z + 1e6, seed=[1, 2]),
    "z_minus_1e30": lambda: loaded.signatures["decode"](z=z - 1e30),
    "empty_batch": lambda: loaded.signatures["encode"](images=images[:0]),
    "empty_batch_uint8": lambda: loaded.signatures["reconstruct_uint8"](
        images=tf.zeros([0, 16, 16, 3], tf.uint8)
    ),
    "empty_batch_log_prob": lambda: log_prob(images=images[:0], num_samples=3),
    "empty_z": lambda: loaded.signatures["decode"](z=z[:0]),
    "empty_z_sample": lambda: loaded.signatures["sample"](z=z[:0], seed=[1, 2]),
    "zero_samples": lambda: log_prob(images=images, num_samples=0),
    "negative_samples": lambda: log_prob(images=images, num_samples=-1),
    "too_many_samples": lambda: log_prob(images=images, num_samples=max_samples + 1),
    "vector_samples": lambda: log_prob(
        images=images, num_samples=tf.constant([3, 3])
    ),
    "seed_shape": lambda: loaded.signatures["sample"](
        z=z, seed=tf.constant([1, 2, 3])
    ),
}.items():
    try:
        call()
        errors[name] = None
    except Exception as e:
        errors[name] = str(e)
out["errors"] = errors
print(json.dumps(out))
"""

# Every test here exports or loads a SavedModel: seconds each.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run exported once, and what a fresh process read from it."""
    base = tmp_path_factory.mktemp("export")
    path = export.export(str(tiny_run), str(base))
    rng = np.random.default_rng(0)
    images = rng.random((3, SIZE, SIZE, 3)).astype(np.float32)
    np.savez(base / "inputs.npz", images=images)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, str(path), str(base / "inputs.npz")]
        + [str(base / "out"), str(export.MAX_SERVED_SAMPLES), str(CHUNKED_SAMPLES)]
        + [repr(export.MAX_LATENT)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=str(base),
    )
    assert done.returncode == 0, done.stderr
    return path, images, base, json.loads(done.stdout.strip().splitlines()[-1])


def test_versions_follow_tf_serving_layout(exported, tiny_run):
    path, _, base, _ = exported
    assert path == base / "1" and (path / "saved_model.pb").exists()
    assert export.next_version(base) == 2
    with pytest.raises(ValueError, match="exists"):
        export.export(str(tiny_run), str(base), version=1)


def test_fresh_process_matches_the_in_memory_model(exported, tiny_run):
    path, images, base, result = exported
    assert result["signatures"] == [
        "decode",
        "encode",
        "log_prob",
        "reconstruct",
        "reconstruct_uint8",
        "sample",
        "serving_default",
    ]
    config, model, _ = evaluation.load_run(str(tiny_run))
    structure = config.structure
    for batch_size in (1, 3):
        served = np.load(f"{base / 'out'}_{batch_size}.npz")
        assert result[f"reproducible_{batch_size}"]
        batch = data.to_model_inputs(tf.constant(images[:batch_size]))
        z_mean, z_log_scale = model.encode(batch["y"], batch["cbcr"])
        np.testing.assert_allclose(served["z_mean"], z_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(served["z_log_scale"], z_log_scale, atol=1e-5)
        outputs = model.decode(z_mean)
        names = ("y_mean", "log_diag", "off_diag", "cbcr_mean")
        # The structured chroma's factors whole; no factor of L is served.
        names += ("cbcr_log_diag", "cbcr_off_diag")
        assert not [k for k in served if "factor_" in k]
        for name in names:
            np.testing.assert_allclose(
                served["decoded_" + name], outputs[name], rtol=1e-4, atol=1e-5
            )
        drawn = likelihoods.sample(outputs, tf.constant([7, 8]), structure)
        np.testing.assert_allclose(
            served["sample_sample_y"], drawn["y"], rtol=1e-3, atol=1e-4
        )
        # The RGB outputs upsample the chroma bilinearly (svae.color's
        # function), as the figures do; repeated chroma would differ by the
        # colour steps between 4x4 blocks.
        mean_rgb = color.merge_to_rgb(
            outputs["y_mean"], outputs["cbcr_mean"], 4, "bilinear", clip=True
        )
        repeated = color.merge_to_rgb(
            outputs["y_mean"], outputs["cbcr_mean"], 4, "nearest", clip=True
        )
        for key in ("served_mean_rgb", "decoded_mean_rgb", "sample_mean_rgb"):
            np.testing.assert_allclose(served[key], mean_rgb, atol=1e-5)
            assert np.abs(served[key] - repeated).max() > 1e-3
        drawn_rgb = color.merge_to_rgb(
            drawn["y"], drawn["cbcr"], 4, "bilinear", clip=True
        )
        np.testing.assert_allclose(served["sample_sample_rgb"], drawn_rgb, atol=2e-3)
        repeated = color.merge_to_rgb(drawn["y"], drawn["cbcr"], 4, "nearest")
        assert np.abs(served["sample_sample_rgb"] - repeated).max() > 0.02
        for key in ("served_mean_rgb", "sample_sample_rgb"):
            assert served[key].min() >= 0.0 and served[key].max() <= 1.0
        # The likelihood keeps its chroma at the modelled size.
        assert served["decoded_cbcr_mean"].shape == (
            batch_size,
            SIZE // 4,
            SIZE // 4,
            2,
        )
        # uint8 images (rounded to 1/255) reconstruct almost like floats.
        np.testing.assert_allclose(
            served["served_uint8_mean_rgb"], served["served_mean_rgb"], atol=0.05
        )
        assert served["iw_bound"].shape == (batch_size,)
        assert np.all(np.isfinite(served["iw_bound"]))


def test_saved_model_cli_lists_every_signature(exported):
    path = exported[0]
    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    shown = subprocess.run(
        [str(cli), "show", "--dir", str(path), "--all"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("serving_default", "encode", "decode", "sample", "log_prob"):
        assert f"signature_def['{name}']" in shown
    assert "images" in shown and "num_samples" in shown and "seed" in shown


def _functions(saved_model_dir):
    """`{name: FunctionDef}` of the graph functions of a SavedModel."""
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(
        (pathlib.Path(saved_model_dir) / "saved_model.pb").read_bytes()
    )
    return {
        function.signature.name: function
        for graph in proto.meta_graphs
        for function in graph.graph_def.library.function
    }


def _xla_functions(saved_model_dir):
    """Names of the functions of a SavedModel that must be XLA-compiled."""
    return [
        name
        for name, function in _functions(saved_model_dir).items()
        if function.attr["_XlaMustCompile"].b
    ]


def _ops(functions, name, seen):
    """The op types that function `name` runs, with the functions it calls."""
    if name in seen or name not in functions:
        return set()
    seen.add(name)
    found = set()
    for node in functions[name].node_def:
        found |= {node.op} | _ops(functions, node.op, seen)
        for attr in node.attr.values():
            called = list(attr.list.func)
            if attr.HasField("func"):
                called.append(attr.func)
            for function in called:
                found |= _ops(functions, function.name, seen)
    return found


def test_log_prob_decodes_in_a_loop(exported):
    # K is known at run time only: the chunks are a while loop whose body
    # decodes (transposed convolutions), not one decoder call on all samples.
    functions = _functions(exported[0])
    bodies = [
        node.attr["body"].func.name
        for name, function in functions.items()
        if name.startswith("__inference_log_prob_")
        for node in function.node_def
        if node.op in ("While", "StatelessWhile")
    ]
    assert bodies
    assert all("Conv2DBackpropInput" in _ops(functions, b, set()) for b in bodies)


def test_exported_graph_runs_without_xla(exported, tmp_path):
    # TF Serving's model server does not compile XLA by default.
    assert _xla_functions(exported[0]) == []
    # The check finds a jit-compiled function where there is one.
    module = tf.Module()
    module.f = tf.function(
        lambda x: x * 2.0,
        jit_compile=True,
        input_signature=[tf.TensorSpec([2], tf.float32)],
    )
    tf.saved_model.save(module, str(tmp_path / "jit"))
    assert _xla_functions(tmp_path / "jit")


def test_bad_inputs_get_errors_from_the_signature(exported):
    errors = exported[3]["errors"]
    images = "images (float32 RGB in [0, 1])"
    for name in ("size", "rank", "channels"):
        assert f"{images} must have shape" in errors[name], name
    assert "z (float32 latents) must have shape" in errors["latent"]
    assert errors["dtype"] and "float" in errors["dtype"]
    expected = {
        "nan_image": f"{images} must be finite (no NaN or inf)",
        "nan_image_encode": f"{images} must be finite",
        "nan_image_log_prob": f"{images} must be finite",
        "inf_image": f"{images} must be finite",
        "image_in_255": f"{images} must be in [0, 1] (divide pixels in [0, 255]",
        "negative_image": f"{images} must be in [0, 1]",
        "nan_z_decode": "z (float32 latents) must be finite (no NaN or inf)",
        "nan_z_sample": "z (float32 latents) must be finite",
        "inf_z": "z (float32 latents) must be finite",
        "empty_batch": f"{images} must hold at least one item (batch size >= 1)",
        "empty_batch_uint8": "images (uint8 RGB in [0, 255]) must hold at least one",
        "empty_batch_log_prob": f"{images} must hold at least one item",
        "empty_z": "z (float32 latents) must hold at least one item",
        "empty_z_sample": "z (float32 latents) must hold at least one item",
        "zero_samples": "num_samples (int32 scalar) must be in [1, 5000]] [got] [0]",
        "negative_samples": "num_samples (int32 scalar) must be in [1, 5000]",
        "too_many_samples": "num_samples (int32 scalar) must be in [1, 5000]",
        "vector_samples": "num_samples (int32 scalar) must have shape []",
        "seed_shape": "seed (int32 [2]) must have shape [2]",
    }
    assert export.MAX_SERVED_SAMPLES == 5000
    for name, message in expected.items():
        assert errors[name] and message in errors[name], (name, errors[name])


def test_latents_at_the_bound_are_finite_and_beyond_it_an_error(exported):
    # Issue 25: z = 1e6 gave a NaN sample_rgb. |z| <= MAX_LATENT, 100 prior
    # standard deviations, gives finite outputs and clipped RGB; beyond it
    # (by one float step, or far) the signature fails with a message.
    result = exported[3]
    assert export.MAX_LATENT == 100.0
    assert len(result["at_bound"]) == 3
    for edge in result["at_bound"]:
        assert edge["finite"], edge
        low, high = edge["sample_rgb"]
        assert 0.0 <= low <= high <= 1.0, edge
    message = "z (float32 latents) must be in [-100, 100] (the prior is N(0, I))"
    for name in ("z_beyond_bound", "z_beyond_bound_sample", "z_1e6_sample"):
        assert message in (result["errors"][name] or ""), name
    assert "[got min] [-1e+30]" in result["errors"]["z_minus_1e30"]


def test_an_output_that_overflows_is_an_error_not_nan():
    # A model whose scales overflow for latents inside the bound (log L_pp of
    # 200: exp overflows float32) fails the call, naming the output, instead
    # of answering NaN. The signatures' functions run eagerly here.
    config = tiny.config(None, model="structured", latent_dim=4)
    model = models.build_model(config)
    model.decode(tf.zeros([1, 4]))
    bias = model.precision_head.weights_conv.bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[0]], [200.0]))
    endpoints = export._endpoints(model, config)
    hint = "(its scales overflow: pass latents nearer the prior N(0, I))"
    z = tf.zeros([2, 4])
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        endpoints["decode"][0](z)
    assert (
        f"the model's off_diag is not finite (NaN or inf) for these inputs {hint}"
        in (str(error.value))
    )
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="sample_rgb is not finite"
    ):
        endpoints["sample"][0](z, tf.constant([1, 2]))
    # The weights as built: the same calls answer.
    bias.assign(tf.zeros_like(bias))
    assert np.all(
        np.isfinite(endpoints["sample"][0](z, tf.constant([1, 2]))["sample_rgb"])
    )


def test_good_inputs_at_the_edges_are_accepted(exported):
    # Pixels exactly 0 and 1, and K = 1 and the maximum, pass the checks.
    assert exported[3]["accepted"] == {
        "zeros": True,
        "ones": True,
        "one_sample": True,
        "max_samples": True,
    }


def test_log_prob_chunks_k_as_evaluate_does(exported, tiny_run):
    # The signature's K is known at run time only; its bound, decoded
    # SERVED_SAMPLE_CHUNK samples at a time, equals the static-K code of
    # evaluate.py (chunked and whole) for the same samples.
    _, images, base, _ = exported
    served = np.load(f"{base / 'out'}_chunked.npy")
    assert CHUNKED_SAMPLES > export.SERVED_SAMPLE_CHUNK
    config, model, _ = evaluation.load_run(str(tiny_run))
    batch = data.to_model_inputs(tf.constant(images[:2]))
    z_mean, z_log_scale = model.encode(batch["y"], batch["cbcr"])
    posterior = likelihoods.posterior(z_mean, z_log_scale)
    z = posterior.sample(CHUNKED_SAMPLES, seed=tf.constant([0, 0]))
    for chunk in (export.SERVED_SAMPLE_CHUNK, None):
        bound = evaluation.importance_weighted_bound(
            lambda z: evaluation.latent_log_likelihood(model, z, batch),
            posterior,
            likelihoods.prior(config.latent_dim),
            z,
            chunk,
        )["bound"]
        np.testing.assert_allclose(served, bound, rtol=1e-5)


def test_export_describes_its_signatures(exported):
    path = exported[0]
    # TF Serving's layout, with the description in its folder for extras.
    assert sorted(p.name for p in path.iterdir()) == [
        "assets",
        "assets.extra",
        "fingerprint.pb",
        "saved_model.pb",
        "variables",
    ]
    # Written aside and renamed: no scratch folder is left for TF Serving.
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    readme = (path / export.README_PATH).read_text()
    for name in ("serving_default", "reconstruct_uint8", "encode", "decode"):
        assert f"`{name}`" in readme
    for text in (
        "- `images` float32 `[B, 16, 16, 3]`: finite (no NaN or inf), in [0, 1]",
        "- `images` uint8 `[B, 16, 16, 3]`",
        "- `z` float32 `[B, 4]`: finite (no NaN or inf), in [-100, 100]",
        "- `z (float32 latents) must be in [-100, 100] (the prior is N(0, I))`",
        "- `the model's <output> is not finite (NaN or inf) for these inputs`",
        "- `num_samples` int32 `[]`: in [1, 5000]",
        "- `iw_bound` float32 `[B]`",
        "- `off_diag` float32 `[B, 16, 16, 12]`",
        "- `num_samples (int32 scalar) must be in [1, 5000]`",
        "- `z (float32 latents) must be finite (no NaN or inf)`",
        "decoded 100 at a time",
        "- `mean_rgb` float32 `[B, 16, 16, 3]`: the likelihood's mean in RGB, Cb "
        "and Cr upsampled bilinearly, clipped to [0, 1]",
        "- `sample_rgb` float32 `[B, 16, 16, 3]`: the drawn images in RGB, Cb and "
        "Cr upsampled bilinearly",
    ):
        assert text in readme, text


@pytest.mark.parametrize("version", [0, -3, "-3", 1.5, True, "next"], ids=repr)
def test_version_must_be_a_positive_integer(version, tmp_path):
    # Checked before anything is loaded: the run need not exist.
    with pytest.raises(ValueError, match="version must be a positive integer"):
        export.export(str(tmp_path / "no-run"), str(tmp_path / "out"), version)
    assert not (tmp_path / "out").exists()


def test_export_dir_that_cannot_be_made_is_an_error(tmp_path):
    (tmp_path / "file").write_text("")
    for export_dir, problem in (
        (tmp_path / "file" / "svae", "lies under .*which is a file"),
        ("/proc/svae-export", "cannot be written"),
    ):
        # Checked before anything is loaded: the run need not exist.
        with pytest.raises(ValueError, match=f"--export_dir=.*{problem}"):
            export.export(str(tmp_path / "no-run"), str(export_dir))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.slow
@pytest.mark.parametrize("color", ["ycbcr", "gray"])
@pytest.mark.parametrize(
    "model", ["vae_sph", "vae_diag", "beta_vae_diag", "supn", "structured"]
)
def test_every_variant_exports_at_the_end_of_training(model, color, tmp_path):
    from svae import config as config_lib
    from svae import training

    config = config_lib.Config(
        model=model,
        color=color,
        model_dir=str(tmp_path / "run"),
        image_size=SIZE,
        latent_dim=3,
        batch_size=4,
        crops_per_photo=2,
        steps=2,
        pretrain_epochs=0,
        structured_warmup_epochs=0,
        progress=False,
        export=True,
    )
    result = training.train(config)
    assert pathlib.Path(result["export"]) == tmp_path / "run" / "export" / "1"
    loaded = tf.saved_model.load(result["export"])
    images = tf.random.stateless_uniform([2, SIZE, SIZE, 3], seed=[1, 2])
    decoded = loaded.signatures["decode"](
        z=loaded.signatures["encode"](images=images)["z_mean"]
    )
    assert decoded["mean_rgb"].shape == (2, SIZE, SIZE, 3)
    assert ("cbcr_mean" in decoded) == (color == "ycbcr")
    assert ("off_diag" in decoded) == (model in ("supn", "structured"))
    bound = loaded.signatures["log_prob"](images=images, num_samples=tf.constant(3))
    assert np.all(np.isfinite(bound["iw_bound"]))
    sampled = loaded.signatures["sample"](z=tf.zeros([2, 3]), seed=tf.constant([1, 1]))
    assert sampled["sample_rgb"].shape == (2, SIZE, SIZE, 3)
    # Latents at the bound give finite outputs, beyond it an error.
    for z in (tf.fill([2, 3], export.MAX_LATENT), tf.fill([2, 3], -export.MAX_LATENT)):
        decoded = loaded.signatures["decode"](z=z)
        sampled = loaded.signatures["sample"](z=z, seed=tf.constant([1, 1]))
        for value in [*decoded.values(), *sampled.values()]:
            assert np.all(np.isfinite(value))
        rgb = sampled["sample_rgb"].numpy()
        assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"in \[-100, 100\]"):
        loaded.signatures["sample"](z=tf.fill([2, 3], 1e6), seed=tf.constant([1, 1]))


@pytest.mark.slow
def test_export_command_line(tiny_run, tmp_path):
    env = tiny.script_env()
    script = [sys.executable, str(ROOT / "export.py")]
    done = subprocess.run(
        script + [f"--model_dir={tiny_run}", f"--export_dir={tmp_path}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"exported {tiny_run} to {tmp_path / '1'}" in done.stdout
    # One line, not Keras' listing of every endpoint and captured handle.
    assert done.stdout.count("\n") == 1, done.stdout
    assert (tmp_path / "1" / "saved_model.pb").exists()
    missing = subprocess.run(
        script + [f"--model_dir={tmp_path / 'nope'}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1 and "svae: error:" in missing.stderr


def test_two_exports_started_together_take_two_versions(
    tiny_run, tmp_path, monkeypatch
):
    # Both choose version 1; the other renames its folder into place while
    # this one writes. This one takes the next free version, and leaves no
    # scratch folder.
    base = tmp_path / "export"
    readme = export._readme  # Runs once the SavedModel is written aside.

    def raced(config, endpoints, saved_model_dir):
        shutil.copytree(saved_model_dir, base / "1")  # The other, done first.
        return readme(config, endpoints, saved_model_dir)

    monkeypatch.setattr(export, "_readme", raced)
    assert export.export(str(tiny_run), str(base)) == base / "2"
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    assert export.exported_step(base / "2") == 36  # conftest's tiny_run.
    # A --version taken meanwhile is an error: the rename that puts a written
    # version in place, where the other export's folder now is.
    scratch = files.scratch_dir(base, ".3-")
    (scratch / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ValueError, match="2 exists .*pick another --version"):
        export._publish(scratch, base, 2, fixed=True)
    assert export._publish(scratch, base, 2, fixed=False) == base / "3"


def test_export_is_readable_by_a_server_of_another_user(exported):
    # TF Serving may run as another user: the version folder and its files
    # have the modes of mkdir and open (0755 and 0644 under umask 022), not
    # tempfile's 0700 and 0600.
    umask = os.umask(0)
    os.umask(umask)
    path = exported[0]
    assert path.stat().st_mode & 0o777 == 0o777 & ~umask
    for name in (export.README_PATH, export.EXPORT_INFO, "saved_model.pb"):
        assert (path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


_FULL_DISK = """
import os, sys
import keras
import tensorflow as tf

def full(self, filepath, **kwargs):
    # Half a SavedModel, then what TensorFlow raises on a full disk.
    os.makedirs(os.path.join(filepath, "variables"))
    data = os.path.join(filepath, "variables", "variables.data-00000-of-00001")
    with open(data, "wb") as file:
        file.write(bytes(1000))
    raise tf.errors.ResourceExhaustedError(
        None, None, data + ".tempstate1; No space left on device"
    )

# The class of the archive svae.export makes (Keras' backend's).
type(keras.export.ExportArchive()).write_out = full
from svae.cli import export
sys.argv[0] = "export.py"
export.run()
"""


def test_full_disk_is_one_error_line_and_exports_nothing(tiny_run, tmp_path):
    base = tmp_path / "export"
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, f"--model_dir={tiny_run}"]
        + [f"--export_dir={base}"],
        env=tiny.script_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "svae: error:" in line]
    assert errors == [
        f"svae: error: No space left on device writing a SavedModel in {base}. "
        "Nothing was exported (the partial version was removed). Free space "
        "and run the command again."
    ]
    assert list(base.iterdir()) == []
