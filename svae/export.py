"""SavedModels for TF Serving: signatures that need neither svae nor Python.

Every signature takes and returns named tensors; the distributions are built
inside them from the model's tensors with `svae.likelihoods`, the one place
the formulas live. Layout: `export_dir/<version>/saved_model.pb`, numeric
versions, as TF Serving expects.
"""

import pathlib

import keras
import tensorflow as tf

from svae import data, evaluation, likelihoods, xla

__all__ = ["export", "next_version"]


def next_version(export_dir):
    """Returns 1 + the largest numeric version folder in `export_dir` (or 1)."""
    path = pathlib.Path(export_dir)
    versions = [int(p.name) for p in path.glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def _endpoints(model, config):
    """Returns `{name: (function, input_signature)}` of the served model."""
    size, factor = config.image_size, config.chroma_factor
    structure = config.structure
    images = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")
    latents = tf.TensorSpec([None, config.latent_dim], tf.float32, name="z")
    seed = tf.TensorSpec([2], tf.int32, name="seed")
    num_samples = tf.TensorSpec([], tf.int32, name="num_samples")

    def checked(tensor, shape, what):
        # Signatures called through TF Serving do not check static shapes.
        message = f"{what} must have shape {shape}"
        dims = tf.shape(tensor)
        # Padded to a fixed length, so that a wrong rank compares unequal
        # instead of failing on incompatible shapes.
        padded = tf.concat([dims, tf.zeros([len(shape)], tf.int32)], 0)
        fits = tf.logical_and(
            tf.equal(tf.size(dims), len(shape)),
            tf.reduce_all(tf.equal(padded[1 : len(shape)], shape[1:])),
        )
        check = tf.debugging.Assert(fits, [message, "got", dims])
        with tf.control_dependencies([check]):
            return tf.identity(tensor)

    def inputs(rgb):
        rgb = checked(rgb, [None, size, size, 3], "images (float32 RGB in [0, 1])")
        return data.to_model_inputs(rgb, config.color, factor)

    def latent(z):
        return checked(z, [None, config.latent_dim], "z (float32 latents)")

    def mean_rgb(outputs):
        return likelihoods.to_rgb(likelihoods.means(outputs), factor)

    def encode(images):
        batch = inputs(images)
        z_mean, z_log_scale = model.encode(batch["y"], batch.get("cbcr"))
        return {"z_mean": z_mean, "z_log_scale": z_log_scale}

    def decode(z):
        outputs = dict(model.decode(latent(z)))
        outputs["mean_rgb"] = mean_rgb(outputs)
        return outputs

    def sample(z, seed):
        outputs = model.decode(latent(z))
        drawn = likelihoods.sample(outputs, seed, **structure)
        return {
            "sample_rgb": likelihoods.to_rgb(drawn, factor),
            "sample_y": drawn["y"],
            "mean_rgb": mean_rgb(outputs),
        }

    def reconstruct(images):
        batch = inputs(images)
        z_mean, _ = model.encode(batch["y"], batch.get("cbcr"))
        outputs = model.decode(z_mean)
        drawn = likelihoods.sample(outputs, tf.constant([0, 0]), **structure)
        return {
            "mean_rgb": mean_rgb(outputs),
            "z_mean": z_mean,
            "residual_y": drawn["y"] - outputs["y_mean"],
        }

    def reconstruct_uint8(images):
        return reconstruct(tf.cast(images, tf.float32) / 255.0)

    def log_prob(images, num_samples):
        batch = inputs(images)
        z_mean, z_log_scale = model.encode(batch["y"], batch.get("cbcr"))
        posterior = likelihoods.posterior(z_mean, z_log_scale)
        z = posterior.sample(num_samples, seed=tf.constant([0, 0]))
        result = evaluation.importance_weighted_bound(
            lambda z: evaluation.latent_log_likelihood(model, z, batch, **structure),
            posterior,
            likelihoods.prior(config.latent_dim),
            z,
        )
        return {"iw_bound": result["bound"]}

    return {
        "reconstruct": (reconstruct, [images]),
        "reconstruct_uint8": (
            reconstruct_uint8,
            [tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")],
        ),
        "encode": (encode, [images]),
        "decode": (decode, [latents]),
        "sample": (sample, [latents, seed]),
        "log_prob": (log_prob, [images, num_samples]),
    }


def export(model_dir, export_dir=None, version=None):
    """Writes a run's latest checkpoint as a SavedModel for TF Serving.

    Signatures (`reconstruct` is also `serving_default`):

    - `reconstruct(images)`: float32 RGB `[B, H, W, 3]` in [0, 1] ->
      `mean_rgb`, `z_mean` and a residual sample `residual_y` (seed 0);
      `reconstruct_uint8` the same for uint8 images in [0, 255].
    - `encode(images)` -> `z_mean`, `z_log_scale` `[B, latent_dim]`.
    - `decode(z)` -> the likelihood's parameters (`y_mean`, then `log_diag`
      and `off_diag` or `y_log_scale`; `cbcr_mean`, `cbcr_log_scale` with
      colour) and `mean_rgb`.
    - `sample(z, seed)`: int32 `[2]` seed -> `sample_rgb`, `sample_y`,
      `mean_rgb`; the same seed gives the same output.
    - `log_prob(images, num_samples)` -> `iw_bound` `[B]`, the
      importance-weighted bound with `num_samples` samples (seed 0).

    Args:
      model_dir: a run directory of `train.py`.
      export_dir: base directory; default `model_dir/export`.
      version: numeric version; default one above the largest present.

    Returns:
      The `pathlib.Path` of the written version folder.
    """
    config, model, _ = evaluation.load_run(model_dir)
    base = pathlib.Path(export_dir or pathlib.Path(model_dir) / "export")
    version = next_version(base) if version is None else int(version)
    target = base / str(version)
    if target.exists():
        raise ValueError(f"{target} exists: pick another --version.")
    archive = keras.export.ExportArchive()
    archive.track(model)
    # TF Serving's model server runs no XLA by default: trace the kernels
    # without it, and leave out the (training-only) gradient functions.
    with xla.portable():
        for name, (function, signature) in _endpoints(model, config).items():
            archive.add_endpoint(name, tf.function(function), input_signature=signature)
        options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
        # Not verbose: Keras would list every endpoint and every captured
        # variable handle, ~30 lines per signature, at the end of each run.
        archive.write_out(str(target), options=options, verbose=False)
    return target
