"""Training: the schedule of section 5, the gradient step and the loop.

`train(config)` is the one entry point (`train.py` calls it). It runs under any
`tf.distribute` strategy with a custom loop (`strategy.run`), checkpoints with
`tf.train.CheckpointManager` and resumes from the newest good checkpoint of
`config.model_dir` (`svae.runs` decides what a run directory holds and locks
it to one trainer).
"""

import dataclasses
import pathlib
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from svae import checkpoints, data, files, hooks, likelihoods, models, objective, runs
from svae import config as config_lib
from svae.objective import (  # Re-exported: the objective's names.
    TERMS,
    NonFiniteLossError,
    Phase,
    calibrated_scales,
    calibration_shift,
    loss_terms,
    phase_variables,
    schedule,
)

__all__ = [
    "INIT_FIELDS",
    "TERMS",
    "NonFiniteLossError",
    "Phase",
    "schedule",
    "loss_terms",
    "phase_variables",
    "train_step",
    "calibrated_scales",
    "calibration_shift",
    "make_optimizer",
    "make_strategy",
    "init_source",
    "train",
]

# The fields a run must share with the vae_sph run it is initialised from.
INIT_FIELDS = ("latent_dim", "image_size", "filters", "color", "chroma_factor")


def train_step(
    model,
    optimizer,
    variables,
    batch,
    config,
    phase,
    noise,
    calibrated=(),
    global_batch=None,
):
    """One gradient step of eq. 12 on `batch`; returns its per-image terms.

    The loss is the sum of the per-image `loss` over `global_batch` (the
    batch of all replicas; default this batch), so that replicas' gradients
    add up to the global mean's.

    Args:
      model: an `svae.models.VAE`.
      optimizer: a Keras optimizer, built for `variables`.
      variables: the phase's trained variables (`phase_variables`).
      batch: a batch dict.
      config: the run's `Config`.
      phase: a `Phase`.
      noise, calibrated: as for `loss_terms`.
      global_batch: the divisor of the summed loss; None for this batch's size.

    Returns:
      `loss_terms`' dict of `[batch]` tensors.
    """
    if global_batch is None:
        global_batch = tf.shape(batch["y"])[0]
    with tf.GradientTape() as tape:
        terms = loss_terms(model, batch, config, phase.spherical, noise, calibrated)
        loss = tf.reduce_sum(terms["loss"]) / tf.cast(global_batch, tf.float32)
        # Times the loss scale under mixed_float16 (`make_optimizer`), which
        # `apply_gradients` divides out; the loss itself otherwise.
        scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, variables)
    optimizer.apply_gradients(
        [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
    )
    return terms


def make_optimizer(config):
    """Returns the run's optimizer: Adam, loss-scaled under mixed_float16.

    float16 flushes gradients below about 6e-8 to zero; Keras'
    `LossScaleOptimizer` multiplies the loss by a dynamic scale before the
    gradients are taken, divides them by it, and skips a step whose
    gradients overflow (halving the scale). bfloat16 has float32's range
    and needs none.
    """
    optimizer = keras.optimizers.Adam(config.learning_rate)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def make_strategy(name):
    """Returns the `tf.distribute.Strategy` named by `--strategy`.

    Args:
      name: "default", "mirrored" (all local GPUs), "multi_worker" (reads
        `TF_CONFIG`) or "tpu".

    Returns:
      The strategy.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # Without GPUs, mirror over the logical CPUs (one unless configured).
        devices = tf.config.list_logical_devices(
            "GPU"
        ) or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            # Finds the TPU of a Cloud TPU VM, or the one named by $TPU_NAME.
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            raise ValueError(
                f"--strategy=tpu found no TPU ({error}). Run on a Cloud TPU VM, "
                "or set TPU_NAME to the TPU's name or grpc:// address; "
                "elsewhere use --strategy=default or --strategy=mirrored."
            ) from error
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}; valid: {config_lib.STRATEGIES}.")


def _worker_role(strategy):
    """Returns `(is_chief, task_id)` of this process in its cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    is_chief = task_type == "chief" or (
        not has_chief and task_type == "worker" and task_id == 0
    )
    return is_chief, task_id


class _Data:
    """The training images, cached once as uint8, and their batches per epoch."""

    def __init__(self, config, strategy):
        self.config = config
        self.strategy = strategy
        images = data.load_split(config, "train", dtype=tf.uint8)
        # sample_photos and a prepared cache (config.cache_dir) are decoded
        # already; otherwise one full pass decodes into an in-memory cache.
        count = data.prepared_size(images)
        if count is None:
            images = images.cache()
            count = sum(int(b.shape[0]) for b in images.batch(1024))
        self.images = images
        preview = data.training_pipeline(
            self.images,
            8,
            flip=False,
            shuffle_buffer=None,
            cache=False,
            color=config.color,
            chroma_factor=config.chroma_factor,
            drop_remainder=False,
        )
        self.preview = next(iter(preview))
        self.steps_per_epoch = count // config.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{config.dataset} has {count} training images, fewer than one "
                f"batch of {config.batch_size}."
            )

    def epoch(self, epoch, skip):
        """Returns the distributed batches of `epoch`, after skipping `skip`."""
        config = self.config

        def dataset_fn(input_context):
            """One input pipeline's batches."""
            batches = data.training_pipeline(
                self.images,
                config.batch_size,
                seed=config.seed * 100_003 + epoch,
                flip=config.flip,
                shuffle_buffer=config.shuffle_buffer,
                cache=False,
                color=config.color,
                chroma_factor=config.chroma_factor,
                input_context=input_context,
            )
            # A shard may hold one batch fewer than steps_per_epoch.
            return batches.repeat().skip(skip)

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))


class _Trainer:
    """Holds the strategy, model, optimizer, checkpoints and step functions."""

    def __init__(self, config, strategy, model_dir, is_chief, task_id):
        self.config = config
        self.strategy = strategy
        self.model_dir = model_dir
        self.is_chief = is_chief
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            self.model = models.build_model(config)
            self.optimizer = make_optimizer(config)
            self.optimizer.build(self.model.trainable_weights)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step
        )
        directory = model_dir / "checkpoints"
        if not is_chief:
            # Other workers must save too (collectively); they save aside.
            directory = model_dir / f"worker{task_id}_tmp"
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=config.max_checkpoints
        )
        self._step_fns = {}
        self._check_fns = {}

    def restore(self, prefix):
        """Restores the checkpoint at `prefix`; returns its step."""
        runs.restore(self.checkpoint, prefix, self.model_dir)
        return int(self.step.numpy())

    def healthy(self, batch, phase):
        """Whether the weights are finite and give a finite loss on `batch`.

        A step's loss is computed before its update: a finite loss does not
        make the updated weights good. Checked before each save, so that every
        checkpoint on disk gives a finite loss.
        """
        if not all(np.isfinite(w.numpy()).all() for w in self.model.weights):
            return False
        if phase.name not in self._check_fns:
            config, model = self.config, self.model

            @tf.function(autograph=False)
            def check(batch):
                count = tf.shape(batch["y"])[0]
                terms = loss_terms(
                    model,
                    batch,
                    config,
                    phase.spherical,
                    tf.zeros([count, config.latent_dim]),
                )
                return tf.reduce_all(tf.math.is_finite(terms["loss"]))

            self._check_fns[phase.name] = check
        return bool(self._check_fns[phase.name](batch))

    def init_from(self, prefix):
        """Loads encoder, trunk, means and spherical scales of a vae_sph checkpoint."""
        tf.train.Checkpoint(model=self.model).read(prefix).expect_partial()
        print(f"svae: initialised from {prefix}")

    def save(self, step):
        """Writes a checkpoint of `step` (every worker takes part).

        A save that fails (a full disk) leaves none of its files behind.
        """
        self.step.assign(step)
        try:
            self.manager.save(checkpoint_number=step)
        except Exception:
            checkpoints.remove_partial(self.manager.directory, step)
            raise
        if not self.is_chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)

    def step_fn(self, phase):
        """Returns the compiled training step of a phase."""
        if phase.name in self._step_fns:
            return self._step_fns[phase.name]
        config, model, strategy = self.config, self.model, self.strategy
        variables = phase_variables(model, phase, config)
        calibrated = calibrated_scales(config, phase)
        global_batch = config.batch_size
        # Values per image of each group, for the mean of w^2.
        group_dims = likelihoods.modelled_dims(config)

        def replica_step(batch, step):
            """One replica's share: its part of the loss and gradients."""
            context = tf.distribute.get_replica_context()
            local_batch = tf.shape(batch["y"])[0]
            # Draw for the global batch and keep this replica's rows, so the
            # noise does not depend on the number of replicas.
            seed = tf.stack([tf.constant(config.seed, tf.int64), step])
            start = context.replica_id_in_sync_group * local_batch
            noise = tf.random.stateless_normal(
                [global_batch, config.latent_dim], seed=seed
            )[start : start + local_batch]
            terms = train_step(
                model,
                self.optimizer,
                variables,
                batch,
                config,
                phase,
                noise,
                calibrated,
                global_batch,
            )
            return {name: tf.reduce_sum(value) for name, value in terms.items()}

        # No Python control flow depends on tensors here: AutoGraph not needed.
        @tf.function(autograph=False)
        def distributed_step(iterator, step):
            """Runs one step on every replica; returns the mean terms."""
            sums = strategy.run(replica_step, args=(next(iterator), step))
            means = {
                name: strategy.reduce("SUM", value, axis=None) / global_batch
                for name, value in sums.items()
            }
            for group in calibrated:
                # The L1 term scales with L: the optimum of Y's offset weighs it.
                penalty = config.resolved_gamma * means["l1"] if group == "y" else 0.0
                shift = calibration_shift(
                    means.pop(f"w2_{group}"), group_dims[group], penalty
                )
                variable = objective.scale_variable(model, group)
                ok = tf.math.is_finite(shift)
                variable.assign_add(tf.where(ok, shift, tf.zeros_like(shift)))
            return means

        self._step_fns[phase.name] = distributed_step
        return distributed_step


def train(config, strategy=None, callback=None):
    """Trains (or resumes) the run a config describes.

    Args:
      config: an `svae.config.Config`; `model_dir=None` makes a fresh run
        directory under `runs/`.
      strategy: a `tf.distribute.Strategy`; None builds `config.strategy`.
      callback: optional `callback(step, model)` called after every step on
        the host (for tests and tooling).

    Returns:
      A dict with `model_dir`, `step` and the last step's mean loss terms.

    A finished run (its checkpoint at the last step) is not trained again:
    it is exported only if `config.export` and its newest export is missing
    or of an older checkpoint (`svae.export.is_current`).

    Raises:
      ValueError: an incompatible config in an existing `model_dir`, a
        length below the step the run has reached (`runs.check_steps`), an
        empty or non-UTF-8 `model_dir`, or an unusable `init_from`
        (`init_source`); all checked before anything is written.
      NonFiniteLossError: a loss term became NaN or infinite.
      svae.files.NoSpaceError: the disk filled up; the run resumes from its
        last checkpoint when trained again.
    """
    if config.model_dir is not None and not config.model_dir.strip():
        raise ValueError(
            f"--model_dir={config.model_dir!r} is empty: pass a folder, or leave "
            "the flag out for a fresh run directory under runs/."
        )
    if config.model_dir is None:
        config = dataclasses.replace(config, model_dir=runs.fresh_model_dir(config))
    model_dir = runs.check_model_dir(config.model_dir)
    strategy = strategy or make_strategy(config.strategy)
    is_chief, task_id = _worker_role(strategy)
    if not is_chief:
        # Workers of a multi-worker run share its directory with the chief,
        # which holds the lock.
        return _train(config, strategy, model_dir, is_chief, task_id, callback)
    created = not model_dir.exists()
    full = files.on_full_disk(
        f"the run in {model_dir}", lambda: hooks.resumes_from(model_dir)
    )
    try:
        with full, runs.RunLock(model_dir):
            return _train(config, strategy, model_dir, is_chief, task_id, callback)
    finally:
        # A run that failed before writing anything leaves no folder behind.
        if created and model_dir.is_dir() and not any(model_dir.iterdir()):
            model_dir.rmdir()


def init_source(config):
    """Returns the checkpoint `config.init_from` names, checked before any work.

    Raises:
      ValueError: `init_from` is not a run directory, not a `vae_sph` run with
        the config's `INIT_FIELDS`, or has no readable checkpoint.
    """
    run_dir = pathlib.Path(config.init_from)
    flag = f"--init_from={config.init_from}"
    if not (run_dir / config_lib.CONFIG_FILE).is_file():
        raise ValueError(
            f"{flag} is not a run directory (no {run_dir / config_lib.CONFIG_FILE}): "
            "pass the --model_dir of a finished vae_sph run."
        )
    source = config_lib.load(run_dir)
    if source.model != "vae_sph" or any(
        getattr(source, f) != getattr(config, f) for f in INIT_FIELDS
    ):
        raise ValueError(
            f"{flag} must be a vae_sph run with the same "
            f"{', '.join(INIT_FIELDS)}; it is a {source.model} run with "
            + ", ".join(f"{f}={getattr(source, f)!r}" for f in INIT_FIELDS)
            + "."
        )
    prefix = runs.good_checkpoint(run_dir / runs.CHECKPOINTS)
    if prefix is None:
        raise ValueError(
            f"{flag} has no checkpoint in {run_dir / runs.CHECKPOINTS}: "
            "train it first, or pass another run."
        )
    return prefix


def _train(config, strategy, model_dir, is_chief, task_id, callback):
    """`train` once the run directory is checked (and locked by the chief)."""
    checkpoint_dir = model_dir / runs.CHECKPOINTS
    if is_chief:
        saved = runs.run_state(model_dir)
        if saved is not None:
            runs.check_resumable(config, saved, model_dir)
        # Before the data loads: unreadable checkpoints fail here, at once.
        latest = runs.good_checkpoint(checkpoint_dir) if saved is not None else None
        print(f"svae: training {config.model} on {config.dataset} in {model_dir}")
    else:
        latest = runs.good_checkpoint(checkpoint_dir, quiet=True)
    resuming = latest is not None
    # Before anything is written: a bad --init_from leaves no run behind.
    init_prefix = init_source(config) if config.init_from and not resuming else None
    # The data first: a missing data set or too few images leaves no run
    # directory behind to trip over.
    dataset = _Data(config, strategy)
    steps_per_epoch = dataset.steps_per_epoch
    total_steps = config.steps or config.epochs * steps_per_epoch
    reached = int(latest.rsplit("-", 1)[1]) if resuming else 0
    # Workers decide as the chief does, from the same checkpoint.
    runs.check_steps(reached, total_steps, model_dir)
    if reached == total_steps:
        return _finished(config, model_dir, reached, is_chief)
    if is_chief:
        # A run resumed as it was keeps its file as it was written: today's
        # fields would make it unreadable to the build that wrote it.
        if saved is None or config != saved:
            runs.write_config(config, model_dir)
        runs.repair_index(checkpoint_dir)
    phases = schedule(config, steps_per_epoch, total_steps)
    trainer = _Trainer(config, strategy, model_dir, is_chief, task_id)
    step = trainer.restore(latest) if resuming else 0
    if init_prefix is not None:
        trainer.init_from(init_prefix)
    if step:
        print(f"svae: resuming from step {step}")
    writer = (
        tf.summary.create_file_writer(str(model_dir / "train"))
        if is_chief
        else tf.summary.create_noop_writer()
    )
    saver = hooks.Checkpoints(trainer, dataset.preview, step if step else None)
    after_step = [hooks.Scalars(config, trainer.optimizer, total_steps)]
    if is_chief:
        after_step.append(
            hooks.Images(config, trainer.model, dataset.preview, total_steps)
        )
    after_step.append(saver)
    if is_chief and config.progress:
        after_step.append(hooks.ProgressBar(config, total_steps, step))
    values = {}
    start_time, start_step = time.perf_counter(), step
    with writer.as_default():
        while step < total_steps:
            phase = next(p for p in phases if p.start <= step < p.end)
            epoch, skip = divmod(step, steps_per_epoch)
            iterator = dataset.epoch(epoch, skip)
            step_fn = trainer.step_fn(phase)
            end = min(phase.end, (epoch + 1) * steps_per_epoch)
            while step < end:
                result = step_fn(iterator, tf.constant(step, tf.int64))
                values = {name: float(result[name]) for name in TERMS}
                hooks.check_finite(values, step, saver.last_saved, model_dir)
                step += 1
                if callback is not None:
                    callback(step, trainer.model)
                seconds = time.perf_counter() - start_time
                state = hooks.StepState(
                    step,
                    phase,
                    values,
                    (step - start_step) * config.batch_size / seconds,
                    step in (end, total_steps),
                )
                for hook in after_step:
                    hook(state)
    writer.flush()
    result = {"model_dir": str(model_dir), "step": step, **values}
    if is_chief:
        print(f"svae: finished at step {step}; checkpoints in {model_dir}")
        _export(config, model_dir, step, result)
    return result


def _finished(config, model_dir, step, is_chief):
    """A run already at its last step: trains nothing, writes no config.

    Its newest export is made again only if it is missing or of an older
    checkpoint (`_export`).
    """
    result = {"model_dir": str(model_dir), "step": step}
    if is_chief:
        print(f"svae: {model_dir} is finished at step {step}: nothing to train")
        _export(config, model_dir, step, result)
    return result


def _export(config, model_dir, step, result):
    """Exports the run if `config.export`, unless its newest export is of `step`."""
    if not config.export:
        return
    from svae import export  # Imports evaluation: only when asked.

    if export.is_current(model_dir, step):
        newest = export.newest_version(model_dir / "export")
        print(f"svae: {newest} is an export of step {step} already")
        return
    result["export"] = str(export.export(model_dir))
    print(f"svae: exported a SavedModel to {result['export']}")
