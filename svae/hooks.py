"""What the training loop does after each step, one concern per hook.

`svae.training` calls each hook with a `StepState` after every step:
`Scalars` and `Images` write TensorBoard summaries, `Checkpoints` saves
(good weights only: the NaN policy; a full disk is a `svae.files.NoSpaceError`
that says where the run resumes, `resumes_from`), `ProgressBar` shows the
terms.
"""

import dataclasses

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from svae import files, likelihoods, runs
from svae.objective import TERMS, NonFiniteLossError
from svae.progress import Progress

__all__ = [
    "Checkpoints",
    "Images",
    "ProgressBar",
    "Scalars",
    "StepState",
    "check_finite",
    "last_good",
    "resumes_from",
]


def _metadata(plugin_name):
    """Returns serialised summary metadata for a TensorBoard plugin."""
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name)
    ).SerializeToString()


def _scalar(name, value, step):
    """Writes a TensorBoard scalar (TF core only: no tensorboard package needed)."""
    tf.summary.write(name, tf.constant(value, tf.float32), step, _metadata("scalars"))


def _images(name, images, step):
    """Writes `[n, H, W, C]` images in [0, 1] as TensorBoard PNG images."""
    images = tf.image.convert_image_dtype(
        tf.clip_by_value(images, 0.0, 1.0), tf.uint8, saturate=True
    )
    height, width = images.shape[1], images.shape[2]
    encoded = [tf.io.encode_png(image) for image in images]
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height))] + encoded)
    tf.summary.write(name, tensor, step, _metadata("images"))


def _image_summaries(model, batch, config, phase, step):
    """Writes inputs, means, samples and residual samples to TensorBoard."""
    structure = config.structure
    batch = {k: v[:8] for k, v in batch.items()}
    outputs = model(batch, spherical=phase.spherical)
    seed = tf.constant([config.seed, step], tf.int32)
    noise = tf.random.stateless_normal([8, config.latent_dim], seed=seed)
    prior_outputs = model.decode(noise, spherical=phase.spherical)
    drawn = likelihoods.sample(prior_outputs, seed, structure)
    residual = drawn["y"] - prior_outputs["y_mean"]
    scale = tf.reduce_max(tf.abs(residual), axis=[1, 2], keepdims=True) + 1e-6
    factor = config.chroma_factor
    recon = likelihoods.means(outputs)
    _images("inputs", batch["rgb"], step)
    _images("reconstruction_means", likelihoods.to_rgb(recon, factor), step)
    sample_means = likelihoods.means(prior_outputs)
    _images("sample_means", likelihoods.to_rgb(sample_means, factor), step)
    _images("samples", likelihoods.to_rgb(drawn, factor), step)
    _images("residual_samples", (residual / scale * 0.5 + 0.5)[..., None], step)


def last_good(last_saved, model_dir):
    """Names the last good checkpoint for a `NonFiniteLossError`."""
    if last_saved is None:
        return "no checkpoint was written yet"
    return (
        f"the last good checkpoint is step {last_saved} in "
        f"{model_dir / runs.CHECKPOINTS} (docs/training.md, The NaN policy, says how "
        "to go on from it)"
    )


def resumes_from(model_dir, lost=""):
    """Says what to do after a write of a run failed on a full disk.

    Args:
      model_dir: the run directory.
      lost: what the failed write lost, said first ("It was not kept.").

    Returns:
      The text: free space, run the same command again, and the checkpoint
      the run resumes from (or that it starts from step 0).
    """
    steps = runs.checkpoint_steps(model_dir / runs.CHECKPOINTS)
    where = (
        f"the run resumes from its last checkpoint, step {steps[0]} in "
        f"{model_dir / runs.CHECKPOINTS}"
        if steps
        else "no checkpoint was written yet, so it starts from step 0"
    )
    return f"{lost} Free space and run the same command again: {where}.".lstrip()


@dataclasses.dataclass(frozen=True)
class StepState:
    """What the loop's hooks see after a step."""

    step: int  # Steps done (1-based number of the step just taken).
    phase: object  # The step's `svae.training.Phase`.
    values: dict  # The step's mean loss terms.
    rate: float  # Images per second since the loop started.
    boundary: bool  # The end of an epoch, a phase or the run.


class Scalars:
    """Writes the loss terms, learning rate and rate to TensorBoard."""

    def __init__(self, config, optimizer, total_steps):
        self.every, self.total = config.summary_every, total_steps
        self.optimizer = optimizer

    def __call__(self, state):
        if state.step % self.every and state.step != self.total:
            return
        for name, value in state.values.items():
            _scalar(f"loss/{name}", value, state.step)
        learning_rate = float(self.optimizer.learning_rate.numpy())
        _scalar("learning_rate", learning_rate, state.step)
        _scalar("images_per_second", state.rate, state.step)


class Images:
    """Writes inputs, means and samples to TensorBoard (`_image_summaries`)."""

    def __init__(self, config, model, preview, total_steps):
        self.config, self.model, self.preview = config, model, preview
        self.every, self.total = config.image_summary_every, total_steps

    def __call__(self, state):
        if state.step % self.every == 0 or state.step == self.total:
            _image_summaries(
                self.model, self.preview, self.config, state.phase, state.step
            )


class Checkpoints:
    """Saves every `checkpoint_every` steps and at boundaries, good weights only.

    `last_saved` is the step of the newest checkpoint written (or found on
    resuming), for the NaN policy's messages.
    """

    def __init__(self, trainer, preview, last_saved):
        self.trainer, self.preview, self.last_saved = trainer, preview, last_saved
        self.every = trainer.config.checkpoint_every

    def __call__(self, state):
        if state.step % self.every and not state.boundary:
            return
        if not self.trainer.healthy(self.preview, state.phase):
            raise NonFiniteLossError(
                f"The weights after step {state.step} are not finite or give "
                "a non-finite loss (training diverged in that step, whose own "
                "loss was finite); they were not saved. Training stopped; "
                f"{last_good(self.last_saved, self.trainer.model_dir)}."
            )
        run = self.trainer.model_dir
        where = f"checkpoint {state.step} in {self.trainer.manager.directory}"
        with files.on_full_disk(where, lambda: resumes_from(run, "It was not kept.")):
            self.trainer.save(state.step)
        self.last_saved = state.step


class ProgressBar:
    """Shows the loss terms and images per second (`svae.progress`)."""

    def __init__(self, config, total_steps, step):
        self.progress = Progress(total_steps, metrics=TERMS + ("img/s",))
        self.progress.update(step)

    def __call__(self, state):
        self.progress.update(
            state.step, list(state.values.items()) + [("img/s", state.rate)]
        )


def check_finite(values, step, last_saved, model_dir):
    """Raises `NonFiniteLossError` naming the first non-finite term."""
    names = tuple(values)
    # The parts before their sum, so the message names the culprit.
    for name in names[1:] + names[:1]:
        if not np.isfinite(values[name]):
            raise NonFiniteLossError(
                f"Non-finite loss at step {step + 1}: the term '{name}' is "
                f"{values[name]} ({', '.join(f'{k}={values[k]:.4g}' for k in names)})."
                f" Training stopped; {last_good(last_saved, model_dir)}."
            )
