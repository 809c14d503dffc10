"""IW-bound NLL, ELBO, KL, MSE, FLOPs, sample health (docs/evaluation.md).

`svae-evaluate [flags]` or `python evaluate.py [flags]`: evaluates
--model_dir, by default the newest finished run under runs/;
--compare=DIR1,DIR2 prints saved results instead.
"""

from absl import flags, logging

from svae import config as config_lib
from svae.cli import common

FLAGS = flags.FLAGS

# One flag per field of svae.config.EvalConfig, with its default and range.
HELPS = {
    "model_dir": (
        "Run directory written by train.py (default: the newest finished run "
        "under runs/)."
    ),
    "split": "Split to evaluate.",
    "num_samples": "Importance samples K per image.",
    "sample_chunk": "Samples per decoder call (memory).",
    "batch_size": "Images per batch.",
    "max_images": "Evaluate only the first N images.",
    "dataset": "Data set (default: the run's).",
    "data_dir": "Data directory (default: the run's).",
    "cache_dir": "Prepared-data folder (default: the run's; empty: none).",
    "seed": "Seed of the importance samples.",
    "output_dir": "Where to write (default: DIR/eval).",
    "progress": "Show a progress bar.",
    "health_images": "Images of the sample health (<= evaluated).",
    "num_prior": "Prior samples of the sample health.",
}


def define_flags(flag_values=FLAGS) -> None:
    """Defines the flags: one per `EvalConfig` field, and --compare."""
    common.define_flags(config_lib.EvalConfig, HELPS, flag_values=flag_values)
    flags.DEFINE_list(
        "compare",
        None,
        "Run dirs: print saved results of --split as one table.",
        flag_values=flag_values,
    )


def main() -> int:
    """Builds the evaluation config from the flags and evaluates (or compares)."""
    # TF logs deprecations of its own profiler (FLOPs) at WARNING.
    logging.set_verbosity(logging.ERROR)
    from svae import evaluation

    if FLAGS.compare:
        print(evaluation.compare(FLAGS.compare, FLAGS.split))
        return 0
    values = {name: FLAGS[name].value for name in HELPS}
    values["model_dir"] = common.model_dir_or_newest(FLAGS.model_dir)
    evaluation.evaluate(evaluation.EvalConfig(**values))
    return 0


def errors() -> tuple:
    """What `main` raises for bad input: one `svae: error:` line each."""
    from svae import data

    return (ValueError, data.DatasetError)


def run() -> None:
    """The entry point of `svae-evaluate` and `python evaluate.py`."""
    common.run(main, define_flags, errors=errors)


if __name__ == "__main__":
    run()
