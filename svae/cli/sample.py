"""Samples, reconstructions, Y's std, inpainting, health (docs/evaluation.md).

`svae-sample [flags]` or `python sample.py [flags]`: writes the figures of
--model_dir, by default the newest finished run under runs/.
"""

import dataclasses
import pathlib

from absl import flags, logging

from svae import config as config_lib
from svae.cli import common

FLAGS = flags.FLAGS

# One flag per field of svae.config.SampleConfig, with its default and range.
HELPS = {
    "model_dir": (
        "Run directory written by train.py (default: the newest finished run "
        "under runs/)."
    ),
    "num": "Images per row (with --inpaint, at most the images of --split).",
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
        config_lib.SampleConfig, HELPS, enums=ENUMS, flag_values=flag_values
    )


def check_inpainting_images(sample_config) -> None:
    """Checks, before any work, that --split has the --num images --inpaint fills.

    The split is opened as `write_figures` opens it: the run's data set,
    `--dataset`, `--data_dir` and `--cache_dir` overriding its own (a
    prepared cache is prepared now, as the figures would). Its number of
    images is exact for a prepared cache and for images made in memory; the
    number of files is an upper bound otherwise (bad files are skipped while
    decoding), and then `svae.inference.inpaint` fills the images there are.
    A folder without `config.json` is left to `write_figures`, which says
    what is wrong with it.

    Args:
      sample_config: a `SampleConfig` with `inpaint`.

    Raises:
      svae.data.DatasetError: fewer images in the split than `num`; an
        unknown data set or split.
      ValueError: an invalid `config.json`.
    """
    from svae import data

    sc = sample_config
    if not (pathlib.Path(sc.model_dir) / config_lib.CONFIG_FILE).is_file():
        return
    config = config_lib.load(sc.model_dir)
    overrides = {
        "dataset": sc.dataset or config.dataset,
        "data_dir": sc.data_dir or config.data_dir,
        "cache_dir": config.cache_dir if sc.cache_dir is None else sc.cache_dir,
    }
    config = dataclasses.replace(config, **overrides)
    count = data.size_hint(data.load_split(config, sc.split))
    if count is not None and count < sc.num:
        raise data.DatasetError(
            f"--num={sc.num} is more than the {count} images of the "
            f"{config.dataset} {sc.split} split, and --inpaint fills one image "
            f"per column: pass --num={count} or fewer, or another --split."
        )


def main() -> int:
    """Builds the sampling config from the flags and writes the figures."""
    logging.set_verbosity(logging.ERROR)
    from svae import figures

    values = {name: FLAGS[name].value for name in HELPS}
    values["model_dir"] = common.model_dir_or_newest(FLAGS.model_dir)
    sample_config = config_lib.SampleConfig(**values)
    if sample_config.inpaint:
        check_inpainting_images(sample_config)
    paths = figures.write_figures(sample_config)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def errors() -> tuple:
    """What `main` raises for bad input: one `svae: error:` line each."""
    from svae import data, evaluation

    return (ValueError, evaluation.EvaluationError, data.DatasetError)


def run() -> None:
    """The entry point of `svae-sample` and `python sample.py`."""
    common.run(main, define_flags, errors=errors)


if __name__ == "__main__":
    run()
