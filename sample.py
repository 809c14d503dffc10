"""Command line: samples, reconstructions, Y's std, inpainting, health. See README."""

import sys

from absl import flags, logging

from svae import cli, data, evaluation, figures

flags.DEFINE_string("model_dir", None, "Run directory written by train.py.")
flags.DEFINE_integer("num", 8, "Images per row.")
flags.DEFINE_integer("seed", 0, "Seed: the same seed writes the same images.")
flags.DEFINE_float("temperature", 1.0, "Scales the latent prior and residual noise.")
flags.DEFINE_string("output_dir", None, "Where to write (default: DIR/samples).")
flags.DEFINE_string("split", "test", "Split of the reconstructed images.")
flags.DEFINE_string("dataset", None, "Data set (default: the run's).")
flags.DEFINE_string("data_dir", None, "Data directory (default: the run's).")
flags.DEFINE_string(
    "cache_dir", None, "Prepared-data folder (default: the run's; empty: none)."
)
flags.DEFINE_enum(
    "std_method", "exact", ["exact", "sample"], "Std of Y for structured models."
)
flags.DEFINE_integer("scale", 2, "Magnification of each image in the PNGs.")
flags.DEFINE_bool("inpaint", False, "Also write inpainting.png (see --mask).")
flags.DEFINE_string(
    "mask",
    "center",
    "Missing pixels for --inpaint: center, random, or an image (light = missing).",
)

cli.bound_flags(figures.SampleConfig)

FLAGS = flags.FLAGS


def main(argv):
    """Builds the sampling config from the flags and writes the figures."""
    del argv
    logging.set_verbosity(logging.ERROR)
    try:
        if not FLAGS.model_dir:
            raise ValueError("Pass --model_dir=DIR, a run directory of train.py.")
        sample_config = figures.SampleConfig(
            model_dir=FLAGS.model_dir,
            num=FLAGS.num,
            seed=FLAGS.seed,
            temperature=FLAGS.temperature,
            output_dir=FLAGS.output_dir,
            split=FLAGS.split,
            dataset=FLAGS.dataset,
            data_dir=FLAGS.data_dir,
            cache_dir=FLAGS.cache_dir,
            std_method=FLAGS.std_method,
            scale=FLAGS.scale,
            inpaint=FLAGS.inpaint,
            mask=FLAGS.mask,
        )
        paths = figures.write_figures(sample_config)
    except (ValueError, evaluation.EvaluationError, data.DatasetError) as e:
        print(f"svae: error: {e}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def run():
    """Console-script entry point."""
    cli.run(main)


if __name__ == "__main__":
    run()
