"""Command line: IW-bound NLL, ELBO, KL, MSE, FLOPs, sample health. See README."""

import sys

from absl import flags, logging

from svae import cli, data, evaluation

flags.DEFINE_string("model_dir", None, "Run directory written by train.py.")
flags.DEFINE_integer("num_samples", 500, "Importance samples K per image.")
flags.DEFINE_integer("sample_chunk", 100, "Samples per decoder call (memory).")
flags.DEFINE_integer("batch_size", 8, "Images per batch.")
flags.DEFINE_string("split", "test", "Split to evaluate.")
flags.DEFINE_string("dataset", None, "Data set (default: the run's).")
flags.DEFINE_string("data_dir", None, "Data directory (default: the run's).")
flags.DEFINE_string(
    "cache_dir", None, "Prepared-data folder (default: the run's; empty: none)."
)
flags.DEFINE_integer("max_images", None, "Evaluate only the first N images.")
flags.DEFINE_integer("seed", 0, "Seed of the importance samples.")
flags.DEFINE_string("output_dir", None, "Where to write (default: DIR/eval).")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_integer("health_images", 64, "Images of the sample health (<= evaluated).")
flags.DEFINE_integer("num_prior", 64, "Prior samples of the sample health.")
flags.DEFINE_list(
    "compare", None, "Run dirs: print saved results of --split as one table."
)

cli.bound_flags(evaluation.EvalConfig)

FLAGS = flags.FLAGS


def main(argv):
    """Builds the evaluation config from the flags and evaluates (or compares)."""
    del argv
    # TF logs deprecations of its own profiler (FLOPs) at WARNING.
    logging.set_verbosity(logging.ERROR)
    try:
        if FLAGS.compare:
            print(evaluation.compare(FLAGS.compare, FLAGS.split))
            return 0
        if not FLAGS.model_dir:
            raise evaluation.EvaluationError(
                "Pass --model_dir=DIR (a run of train.py), or --compare=DIR1,DIR2."
            )
        eval_config = evaluation.EvalConfig(
            model_dir=FLAGS.model_dir,
            split=FLAGS.split,
            num_samples=FLAGS.num_samples,
            sample_chunk=FLAGS.sample_chunk,
            batch_size=FLAGS.batch_size,
            max_images=FLAGS.max_images,
            dataset=FLAGS.dataset,
            data_dir=FLAGS.data_dir,
            cache_dir=FLAGS.cache_dir,
            seed=FLAGS.seed,
            output_dir=FLAGS.output_dir,
            progress=FLAGS.progress,
            health_images=FLAGS.health_images,
            num_prior=FLAGS.num_prior,
        )
        evaluation.evaluate(eval_config)
    except (evaluation.EvaluationError, data.DatasetError) as e:
        print(f"svae: error: {e}", file=sys.stderr)
        return 1
    return 0


def run():
    """Console-script entry point."""
    cli.run(main)


if __name__ == "__main__":
    run()
