"""Command line: export a trained run as a SavedModel for TF Serving. See README."""

import sys

from absl import flags, logging

from svae import cli, evaluation, export
from svae import config as config_lib

flags.DEFINE_string("model_dir", None, "Run directory written by train.py.")
flags.DEFINE_string("export_dir", None, "Base directory (default: DIR/export).")
flags.DEFINE_integer("version", None, "Numeric version (default: next free).")

# TF Serving loads numeric versions > 0 only.
cli.bound_flags(ranges={"version": config_lib.Range(ge=1)})

FLAGS = flags.FLAGS


def main(argv):
    """Exports the run's latest checkpoint and prints where."""
    del argv
    logging.set_verbosity(logging.ERROR)
    if not FLAGS.model_dir:
        print("svae: error: pass --model_dir=DIR, a run of train.py.", file=sys.stderr)
        return 1
    try:
        path = export.export(FLAGS.model_dir, FLAGS.export_dir, FLAGS.version)
    except (ValueError, evaluation.EvaluationError) as e:
        print(f"svae: error: {e}", file=sys.stderr)
        return 1
    print(f"svae: exported {FLAGS.model_dir} to {path}")
    return 0


def run():
    """Console-script entry point."""
    cli.run(main)


if __name__ == "__main__":
    run()
