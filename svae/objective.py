"""The objective of eq. 12: its terms, its phases, the calibrated scales.

`loss = nll + beta * kl + alpha * mse + gamma * l1` per image
(`loss_terms`), with the global log scales of Y and CbCr either learned or
set to their closed-form optimum after each step (`calibrated_scales`,
`calibration_shift`), over the schedule of section 5 (`schedule`: the
`Phase`s and the variables each trains, `phase_variables`).
`svae.training` takes gradient steps on it.
"""

import dataclasses

import tensorflow as tf

from svae import likelihoods

__all__ = [
    "TERMS",
    "NonFiniteLossError",
    "Phase",
    "phase_variables",
    "schedule",
    "calibrated_scales",
    "calibration_shift",
    "loss_terms",
    "scale_variable",
]

TERMS = ("loss", "nll", "kl", "mse", "l1")


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of the schedule: which likelihood, which variables train.

    `name` is "train" (the baselines), "pretrain" (`vae_sph` pretraining of
    `structured` and `supn`), "warmup" (only the structured branch),
    "joint" (everything) or "covariance" (SUPN's covariance decoder alone).
    """

    name: str
    start: int
    end: int

    @property
    def spherical(self) -> bool:
        """Whether this phase trains the spherical `vae_sph` likelihood."""
        return self.name == "pretrain"


def schedule(config, steps_per_epoch, total_steps):
    """Returns the run's phases, in order, covering `[0, total_steps)`.

    Args:
      config: the run's `Config`.
      steps_per_epoch: training steps in one pass over the data.
      total_steps: length of the run in steps.

    Returns:
      A list of `Phase`s (empty ones dropped).
    """
    epochs = {
        "pretrain": config.num_pretrain_epochs,
        "warmup": config.structured_warmup_epochs,
    }
    *leading, last = config.variant.phases
    bounds, end = [], 0
    for name in leading:
        end = min(end + epochs[name] * steps_per_epoch, total_steps)
        bounds.append((name, end))
    bounds.append((last, total_steps))
    phases, start = [], 0
    for name, end in bounds:
        if end > start:
            phases.append(Phase(name, start, end))
        start = max(start, end)
    return phases


def phase_variables(model, phase, config):
    """Returns the variables a phase trains (calibrated scales excluded)."""
    if phase.name == "pretrain":
        variables = model.mean_variables()
    elif phase.name in ("warmup", "covariance"):
        variables = model.uncertainty_variables()
    else:
        variables = list(model.trainable_weights)
    calibrated = {
        id(scale_variable(model, g)) for g in calibrated_scales(config, phase)
    }
    return [v for v in variables if id(v) not in calibrated]


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; training stopped."""


def calibrated_scales(config, phase):
    """Returns the channel groups whose global log scale a phase calibrates.

    With the likelihood's `scales="calibrated"`, the offset `c` of a group's log
    scales (`y_log_scale`, `cbcr_log_scale`) is not trained by gradients:
    after each step it takes its analytic optimum on the batch,
    `c <- c + 0.5 log mean(w^2)`, `w` the whitened residual
    (`likelihoods.whitened_square_sums`; with the L1 term on `L`'s entries
    see `calibration_shift`), wherever the group's likelihood is
    a scale family in `c` (scaling all of its standard deviations by `e^c`):
    always for the factorised Y, Cb and Cr, and for the structured ones
    with a dominant factor, whose off-diagonals scale with the diagonal
    (`svae.recipes.Likelihood.scale_family`). The
    optimum is exact, so a scale that must fall from 1 to 0.05 gets there in
    a step, where Adam at the paper's learning rate moves a log scale by
    about 5e-4 a step (`vae_sph` then collapses: KL 0 and a flat mean).

    Args:
      config: the run's `Config`.
      phase: a `Phase`.

    Returns:
      A tuple of group names (`"y"`, `"cbcr"`), possibly empty.
    """
    likelihood = config.likelihood
    if likelihood.scales != "calibrated":
        return ()
    groups = ()
    factorised = phase.spherical or not config.structured_likelihood
    if factorised or likelihood.scale_family:
        groups += ("y",)
    if config.color == "ycbcr" and (
        factorised or likelihood.chroma == "factorised" or likelihood.scale_family
    ):
        groups += ("cbcr",)
    return groups


def calibration_shift(square, count, penalty=0.0):
    """Returns the change of a group's log scale `c` that minimises the loss.

    Scaling the group's standard deviations by `e^delta` (`L` by `t =
    e^-delta`) turns its part of the loss, per image, into
    `-count log t + 0.5 t^2 square + penalty t` (plus constants): `square`
    the sum of squared whitened residuals and `penalty` the L1 term
    (`gamma * sum |off_diag|`), both at `t = 1`. Its minimum is at
    `t = 2 count / (penalty + sqrt(penalty^2 + 4 square count))` (the
    positive root, in a form without cancellation); without the penalty,
    `delta = 0.5 log(square / count)`, the log RMS of the whitened residual.
    The penalty matters: left out, the L1 term's pull on `L` would be undone
    by the offset after every step, and the head's output would drift down
    and the offset with it, without end.

    Args:
      square: mean over the batch of `||w||^2` per image, a scalar tensor.
      count: values per image in the group, a Python int.
      penalty: mean over the batch of the L1 term per image (0 for groups
        without off-diagonals).

    Returns:
      `delta`, a scalar tensor; non-finite for a degenerate batch.
    """
    root = tf.sqrt(penalty**2 + 4.0 * square * count)
    return -tf.math.log(2.0 * count / (penalty + root))


def scale_variable(model, group):
    """Returns the global log-scale variable of a channel group."""
    return model.y_log_scale if group == "y" else model.cbcr_log_scale


def loss_terms(model, batch, config, spherical, noise, calibrated=()):
    """Returns the terms of eq. 12 per image, with one reparameterised `z`.

    `loss = nll + beta * kl + alpha * mse + gamma * l1`, where `nll` is
    `-log p(x|z)`, `kl` is `KL[q(z|x) || p(z)]`, `l1` the masked
    `sum |off_diag|` and `mse = ||x - mu||^2` the paper's empirical stand-in
    for eq. 12's variance term `||sigma(z)^2||_1`.

    Args:
      model: an `svae.models.VAE`.
      batch: a batch dict (`y`, `cbcr` with colour).
      config: the run's `Config`.
      spherical: use the spherical likelihood (pretraining).
      noise: `[batch, latent_dim]` standard normal draws for `z`.
      calibrated: channel groups (`calibrated_scales`) whose `||w||^2`
        (`likelihoods.whitened_square_sums`) to add as `w2_<group>`.

    Returns:
      A dict of `[batch]` tensors named as `TERMS`, plus the
      `w2_<group>` of `calibrated`.
    """
    z_mean, z_log_scale = model.encode(batch["y"], batch.get("cbcr"))
    z = z_mean + tf.exp(z_log_scale) * noise
    outputs = model.decode(z, spherical=spherical)
    structure = config.structure
    log_probs = likelihoods.log_likelihood_parts(outputs, batch, structure)
    terms = {
        "nll": -tf.add_n(list(log_probs.values())),
        "kl": likelihoods.kl_divergence(z_mean, z_log_scale),
        "mse": likelihoods.squared_error(outputs, batch),
        "l1": likelihoods.off_diag_l1(outputs, structure),
    }
    terms["loss"] = (
        terms["nll"]
        + config.resolved_beta * terms["kl"]
        + config.resolved_alpha * terms["mse"]
        + config.resolved_gamma * terms["l1"]
    )
    if calibrated:
        white = likelihoods.whitened_square_sums(
            outputs, batch, structure, log_probs=log_probs
        )
        terms.update({f"w2_{g}": tf.stop_gradient(white[g]) for g in calibrated})
    return terms
