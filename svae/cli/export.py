"""Exports a trained run as a SavedModel for TF Serving (docs/serving.md).

`svae-export [flags]` or `python export.py [flags]`: exports the newest
good checkpoint of --model_dir, by default the newest finished run under
runs/.
"""

from absl import flags, logging

from svae import fields
from svae.cli import common

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS) -> None:
    """Defines the flags (the arguments of `svae.export.export`)."""
    flags.DEFINE_string(
        "model_dir",
        None,
        "Run directory written by train.py (default: the newest finished run "
        "under runs/).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "export_dir",
        None,
        "Base directory (default: DIR/export).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "version",
        None,
        "Numeric version (default: next free).",
        flag_values=flag_values,
    )
    # TF Serving loads numeric versions > 0 only.
    common.bound_flags(ranges={"version": fields.Range(ge=1)}, flag_values=flag_values)


def main() -> int:
    """Exports the run's latest checkpoint and prints where."""
    logging.set_verbosity(logging.ERROR)
    from svae import export

    model_dir = common.model_dir_or_newest(FLAGS.model_dir)
    path = export.export(model_dir, FLAGS.export_dir, FLAGS.version)
    print(f"svae: exported {model_dir} to {path}")
    return 0


def errors() -> tuple:
    """What `main` raises for bad input: one `svae: error:` line each."""
    from svae import evaluation, files

    return (ValueError, evaluation.EvaluationError, files.NoSpaceError)


def run() -> None:
    """The entry point of `svae-export` and `python export.py`."""
    common.run(main, define_flags, errors=errors)


if __name__ == "__main__":
    run()
