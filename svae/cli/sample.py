"""Samples, reconstructions, Y's std, inpainting, health (docs/evaluation.md).

`svae-sample [flags]` or `python sample.py [flags]`: writes the figures of
--model_dir, by default the newest finished run under runs/.
"""

from absl import flags, logging

from svae import data, evaluation, figures
from svae.cli import common

FLAGS = flags.FLAGS

# One flag per field of svae.figures.SampleConfig, with its default and range.
HELPS = {
    "model_dir": (
        "Run directory written by train.py (default: the newest finished run "
        "under runs/)."
    ),
    "num": "Images per row.",
    "seed": "Seed: the same seed writes the same images.",
    "temperature": "Scales the latent prior and residual noise.",
    "output_dir": "Where to write (default: DIR/samples).",
    "split": "Split of the reconstructed images.",
    "dataset": "Data set (default: the run's).",
    "data_dir": "Data directory (default: the run's).",
    "cache_dir": "Prepared-data folder (default: the run's; empty: none).",
    "std_method": "Std of Y for structured models.",
    "scale": "Magnification of each image in the PNGs.",
    "inpaint": "Also write inpainting.png (see --mask).",
    "mask": (
        "Missing pixels for --inpaint: center, random, or an image (light = missing)."
    ),
}
ENUMS = {"std_method": ("exact", "sample")}


def define_flags(flag_values=FLAGS) -> None:
    """Defines the flags: one per `SampleConfig` field."""
    common.define_flags(
        figures.SampleConfig, HELPS, enums=ENUMS, flag_values=flag_values
    )


def main() -> int:
    """Builds the sampling config from the flags and writes the figures."""
    logging.set_verbosity(logging.ERROR)
    values = {name: FLAGS[name].value for name in HELPS}
    values["model_dir"] = common.model_dir_or_newest(FLAGS.model_dir)
    paths = figures.write_figures(figures.SampleConfig(**values))
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def run() -> None:
    """The entry point of `svae-sample` and `python sample.py`."""
    common.run(
        main,
        define_flags,
        errors=(ValueError, evaluation.EvaluationError, data.DatasetError),
    )


if __name__ == "__main__":
    run()
