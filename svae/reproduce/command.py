"""`python -m svae.reproduce`: the paper's Tables 1-2 and Figures 3-6.

    python -m svae.reproduce --dataset=celeb_a --data_dir=DIR --out=paper/
    python -m svae.reproduce --dataset=celeb_a --dry_run

Trains every run of the table the data set belongs to, evaluates each on the
test split, and writes OUT/table1.md (or table2.md) with the paper's values
beside ours, and the figures. Run it again after an interruption: finished
runs and evaluations are reused. --dry_run estimates the time instead.
See docs/reproduce.md.
"""

from absl import flags, logging

from svae import config as config_lib
from svae import recipes
from svae.cli import common
from svae.reproduce.paper import DATASET_TABLE
from svae.reproduce.planning import SCALES, ReproduceConfig

FLAGS = flags.FLAGS

# One flag per field of ReproduceConfig, with its default and range.
HELPS = {
    "dataset": (
        "Data set, and so the table: celeb_a (Table 1), lsun_church (Table 2), "
        "sample_photos (Table 1's plan, no download)."
    ),
    "out": "Output folder: runs/, figures/, the table.",
    "data_dir": "Folder with the data set's files.",
    "cache_dir": (
        "Folder of prepared (decoded once) data sets, default $SVAE_CACHE_DIR "
        "or ~/.cache/svae; empty: decode at every start."
    ),
    "scale": "paper: section 5's settings; tiny: tiny models, a few steps (tests).",
    "steps": "Steps per run instead of the table's epochs.",
    "models": (
        "The table's models to run (default all); structured and supn bring "
        "the vae_sph run of their colour along."
    ),
    "colors": "The table's colours to run (default all).",
    "strategy": "tf.distribute strategy of every run.",
    "precision": "Keras dtype policy of every run (train.py's --precision).",
    "likelihood": (
        "Every run's likelihood, a recipe of svae.recipes: default, or paper "
        "(the paper's, taken literally)."
    ),
    "num_samples": "Importance samples K per test image (default 500).",
    "max_images": "Evaluate only the first N test images (default all).",
    "seed": "Seed of every run, evaluation and figure.",
    "progress": "Show progress bars.",
    "dry_run_steps": "Steps of each model --dry_run times.",
}
ENUMS = {
    "dataset": list(DATASET_TABLE),
    "scale": list(SCALES),
    "strategy": config_lib.STRATEGIES,
    "precision": config_lib.PRECISIONS,
    "likelihood": list(recipes.RECIPES),
}


def define_flags(flag_values=FLAGS) -> None:
    """Defines the flags: one per `ReproduceConfig` field, --dry_run, --no_progress."""
    common.define_flags(
        ReproduceConfig,
        HELPS,
        enums=ENUMS,
        # The command line uses the prepared cache, as train.py does.
        defaults={"cache_dir": config_lib.default_cache_dir()},
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "dry_run",
        False,
        "Time a few steps of each model and print the full plan's estimated "
        "hours; writes nothing to --out.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "no_progress", False, "The same as --noprogress.", flag_values=flag_values
    )


def main() -> int:
    """Builds the options from the flags; reproduces the table (or estimates it)."""
    # TF logs every checkpoint save at INFO, which would break the progress bars.
    logging.set_verbosity(logging.WARNING)
    from svae.reproduce import estimate, runner

    values = {name: FLAGS[name].value for name in HELPS}
    values["progress"] = FLAGS.progress and not FLAGS.no_progress
    options = ReproduceConfig(**values)
    if FLAGS.dry_run:
        estimate.dry_run(options)
    else:
        runner.reproduce(options)
    return 0


def errors() -> tuple:
    """What `main` raises for bad input: one `svae: error:` line each."""
    from svae import training

    return (ValueError, OSError, training.NonFiniteLossError)


def run() -> None:
    """The entry point of `python -m svae.reproduce`."""
    common.run(main, define_flags, errors=errors)
