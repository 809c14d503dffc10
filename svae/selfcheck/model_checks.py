"""The models' checks: mixed precision, and one training step of each variant.

Both build tiny models (16x16 YCbCr images, `latent_dim` 8, `filters` 4) on
the default device and feed them random data: no data set is read.

- `mixed_precision(policy)`: a `structured` model built under a mixed Keras
  policy, given the weights of the same model built under float32, decodes
  the same latents; its log-likelihood (`svae.likelihoods.log_likelihood`)
  must be float32 and within `MIXED_TOLERANCE` nats per modelled value of
  the float32 model's. Under `mixed_float16` the trunk computes in 16 bits
  (a relative rounding of 2^-11), under `mixed_bfloat16` it computes in
  float32 (`svae.models.trunk_policy`) and only the encoder, which the
  check does not run, in bfloat16; so the likelihood's parameters, and each
  value's term `log L_pp - w_p^2 / 2` (order 1), move by a few roundings at
  most: 1e-2 nats a value allows for several in a row, and is far below
  what a likelihood computed in 16 bits loses. The check also fails when
  the encoder or the trunk does not compute in the dtype the policy gives
  it (the policy did not reach the model).
- `train_step(model)`: one step of the trainer's own
  `svae.training.train_step`, traced as the trainer traces it, in the last
  phase of the variant's schedule, the one that trains the variant's own
  likelihood ("train", `structured`'s "joint", `supn`'s "covariance"); the
  loss terms, every gradient and every updated variable must be finite.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from svae import config as config_lib
from svae import likelihoods, models, training
from svae.selfcheck.report import Outcome, device_name

__all__ = ["MIXED_TOLERANCE", "mixed_precision", "mixed_support", "train_step"]

TINY = dict(image_size=16, latent_dim=8, filters=4, batch_size=4, seed=0)
MIXED_TOLERANCE = 1e-2  # nats per modelled value.


def _config(model) -> config_lib.Config:
    return config_lib.Config(model=model, **TINY)


def _batch(config, seed=0):
    """Random images in [0, 1] and latents shaped for `config`."""
    rng = np.random.default_rng(seed)
    size, low = config.image_size, config.image_size // config.chroma_factor
    count = config.batch_size
    batch = {
        "y": tf.constant(rng.uniform(0, 1, (count, size, size)), tf.float32),
        "cbcr": tf.constant(rng.uniform(0, 1, (count, low, low, 2)), tf.float32),
    }
    noise = tf.constant(rng.standard_normal((count, config.latent_dim)), tf.float32)
    return batch, noise


def mixed_support(policy, gpus) -> str:
    """Why `policy` cannot run on this machine's default device, or "".

    float16 runs on every CUDA GPU and on CPUs. bfloat16 runs on CPUs and
    on GPUs of compute capability 8.0 (Ampere) and later.
    """
    if policy != "mixed_bfloat16" or not gpus:
        return ""
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability")
    if capability and tuple(capability) < (8, 0):
        major, minor = capability
        return f"bfloat16 needs compute capability >= 8.0, this GPU has {major}.{minor}"
    return ""


def mixed_precision(policy) -> Outcome:
    """A structured model's log-likelihood under `policy` against float32's."""
    skipped = mixed_support(policy, tf.config.list_physical_devices("GPU"))
    if skipped:
        return Outcome(skipped=skipped)
    config = _config("structured")
    batch, noise = _batch(config)

    def build(config):
        keras.utils.set_random_seed(config.seed)
        return models.build_model(config)

    def log_likelihood(model):
        outputs = model.decode(noise)
        parts = likelihoods.likelihood(outputs, config.structure)
        return parts, likelihoods.log_likelihood(outputs, batch, config.structure)

    # `train.py --precision` builds the model so (`Config.precision`).
    reference = build(config)
    _, expected = log_likelihood(reference)
    model = build(dataclasses.replace(config, precision=policy))
    model.set_weights(reference.get_weights())
    parts, value = log_likelihood(model)
    given = keras.DTypePolicy(policy)
    compute = given.compute_dtype
    trunk = models.trunk_policy(given).compute_dtype
    for part, dtype in ((model.encoder, compute), (model.trunk, trunk)):
        if part.compute_dtype != dtype:
            raise TypeError(
                f"under {policy} the {part.name} computes in "
                f"{part.compute_dtype}, not {dtype}: the policy does not "
                "reach the model"
            )
    wrong = {name: d.dtype.name for name, d in parts.items() if d.dtype != tf.float32}
    if value.dtype != tf.float32:
        wrong["log_likelihood"] = value.dtype.name
    if wrong:
        raise TypeError(
            f"under {policy} the likelihood is not float32: "
            + ", ".join(f"{name} {dtype}" for name, dtype in wrong.items())
        )
    dims = likelihoods.modelled_dims(config)["total"]
    error = np.max(np.abs(value.numpy() - expected.numpy())) / dims
    return Outcome(
        float(error),
        MIXED_TOLERANCE,
        device_name(value.device),
        f"|log p - float32 policy's| / {dims} values (nats); trunk in {trunk}",
    )


class _Recording(keras.optimizers.Adam):
    """Adam that keeps the gradients it is given, for the check to read."""

    def apply_gradients(self, grads_and_vars):
        pairs = list(grads_and_vars)
        self.recorded = [g for g, _ in pairs]
        return super().apply_gradients(pairs)


def _step(model, optimizer, variables, config, phase):
    """The trainer's step of `phase`, traced as `svae.training` traces it;
    returns the loss terms and the gradients applied."""
    calibrated = training.calibrated_scales(config, phase)

    @tf.function(autograph=False)
    def step(batch, noise):
        terms = training.train_step(
            model, optimizer, variables, batch, config, phase, noise, calibrated
        )
        return terms, optimizer.recorded

    return step


def train_step(model) -> Outcome:
    """One step of `svae.training.train_step` in `model`'s last phase."""
    config = _config(model)
    keras.utils.set_random_seed(config.seed)
    vae = models.build_model(config)
    optimizer = _Recording(config.learning_rate, name="adam")
    optimizer.build(vae.trainable_weights)
    batch, noise = _batch(config)
    # The phase that trains the variant's own likelihood: the "pretrain"
    # phase is `vae_sph`'s step, "warmup" trains a subset of "joint"'s
    # variables on the same loss.
    phase = training.Phase(config.variant.phases[-1], 0, 1)
    variables = training.phase_variables(vae, phase, config)
    terms, grads = _step(vae, optimizer, variables, config, phase)(batch, noise)
    values = [t.numpy() for t in terms.values()] + [g.numpy() for g in grads]
    values += [v.numpy() for v in variables]
    bad = sum(int(np.size(v) - np.isfinite(v).sum()) for v in values)
    loss = float(np.mean(terms["loss"].numpy()))
    detail = f"non-finite values; {phase.name} loss {loss:.4g}, {len(grads)} grads"
    if len(grads) < len(variables):
        detail += f", {len(variables) - len(grads)} variables without one"
    return Outcome(
        float(bad), 0.0, device_name(vae.trainable_weights[0].value.device), detail
    )
