"""Times svae's compiled training step: shared by bench_train and bench_data."""

import time

import tensorflow as tf

from svae import training


def step_runner(config, batch, model_dir, phase_name):
    """Returns `run(n)`: n training steps of one schedule phase, in seconds.

    Args:
      config: an `svae.config.Config`.
      batch: one model-input batch dict, repeated for every step.
      model_dir: a scratch run directory.
      phase_name: the schedule phase whose step is timed (`"train"`,
        `"pretrain"`, `"warmup"`, `"joint"`).

    Returns:
      A function of `n` that runs `n` steps, blocks, and returns seconds.
    """
    strategy = tf.distribute.get_strategy()
    trainer = training._Trainer(config, strategy, model_dir, True, 0)
    dataset = strategy.distribute_datasets_from_function(
        lambda _: tf.data.Dataset.from_tensors(batch).repeat()
    )
    iterator = iter(dataset)
    phases = training.schedule(config, 1, 10)
    phase = next(p for p in phases if p.name == phase_name)
    step_fn = trainer.step_fn(phase)

    def run(n):
        """Runs n steps; returns seconds."""
        start = time.perf_counter()
        for i in range(n):
            result = step_fn(iterator, tf.constant(i, tf.int64))
        float(result["loss"])
        return time.perf_counter() - start

    return run
