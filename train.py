"""Command line: trains a model of the paper. See docs/training.md."""

import sys

from absl import flags, logging

from svae import cli, data, training
from svae import config as config_lib

_DEFAULTS = config_lib.Config()

flags.DEFINE_enum(
    "preset",
    None,
    list(config_lib.PRESETS),
    "Defaults for several flags at once (flags given explicitly win): paper = "
    "the paper literally (--filters=6 --factor=free --scales=learned).",
)
flags.DEFINE_string("dataset", _DEFAULTS.dataset, "Data set name, see docs/data.md.")
flags.DEFINE_string("data_dir", None, "Folder with the data set's files.")
flags.DEFINE_string(
    "cache_dir",
    data.default_cache_dir(),
    "Folder of prepared (decoded once) file-based data sets, default "
    "$SVAE_CACHE_DIR or ~/.cache/svae; empty: decode at every start.",
)
flags.DEFINE_enum("model", _DEFAULTS.model, config_lib.MODELS, "Model variant.")
flags.DEFINE_string("model_dir", None, "Run directory (default: a fresh one).")
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Epochs of the run, all phases.")
flags.DEFINE_integer("steps", None, "Steps of the run (overrides --epochs).")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global batch size.")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Adam learning rate.")
flags.DEFINE_integer("latent_dim", _DEFAULTS.latent_dim, "Latent dimensions.")
flags.DEFINE_enum("color", _DEFAULTS.color, ["ycbcr", "gray"], "Colour model.")
flags.DEFINE_integer("image_size", _DEFAULTS.image_size, "Image side (power of 2).")
flags.DEFINE_integer("chroma_factor", _DEFAULTS.chroma_factor, "CbCr downsampling.")
flags.DEFINE_integer(
    "crops_per_photo", _DEFAULTS.crops_per_photo, "sample_photos crops per photo."
)
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of weights, data order, noise.")
flags.DEFINE_bool("flip", _DEFAULTS.flip, "Random left-right flips.")
flags.DEFINE_integer(
    "shuffle_buffer", _DEFAULTS.shuffle_buffer, "Shuffle buffer (0: keep the order)."
)
flags.DEFINE_enum(
    "strategy", _DEFAULTS.strategy, config_lib.STRATEGIES, "tf.distribute strategy."
)
flags.DEFINE_integer("filters", _DEFAULTS.filters, "Width of the first conv layer.")
flags.DEFINE_integer("kernel_size", _DEFAULTS.kernel_size, "Neighbourhood of L.")
flags.DEFINE_integer("dilation", _DEFAULTS.dilation, "Dilation of L's pattern.")
flags.DEFINE_integer("num_basis", _DEFAULTS.num_basis, "Basis size (0: no basis).")
flags.DEFINE_enum(
    "factor",
    _DEFAULTS.factor,
    config_lib.FACTORS,
    "L's parameterisation: product or bounded (samples cannot explode), free "
    "(the paper's).",
)
flags.DEFINE_float(
    "dominance", _DEFAULTS.dominance, "Off-diagonal mass bound of L's factors, < 1."
)
flags.DEFINE_enum(
    "scales",
    _DEFAULTS.scales,
    config_lib.SCALES,
    "Global sigma_Y, sigma_CbCr: calibrated each step, or learned (the paper's).",
)
flags.DEFINE_enum(
    "variance_term",
    _DEFAULTS.variance_term,
    config_lib.VARIANCE_TERMS,
    "Eq. 12's alpha term: empirical ||x - mu||^2 (the paper's) or sampled tr Sigma.",
)
flags.DEFINE_float("alpha", None, "Weight of the variance term (default 10 / 0).")
flags.DEFINE_float("gamma", _DEFAULTS.gamma, "Weight of the L1 on off_diag.")
flags.DEFINE_float("beta", None, "KL weight (beta_vae_diag only; default 5).")
flags.DEFINE_string("init_from", None, "A vae_sph run to initialise from.")
flags.DEFINE_integer(
    "pretrain_epochs", _DEFAULTS.pretrain_epochs, "vae_sph pretraining epochs."
)
flags.DEFINE_integer(
    "structured_warmup_epochs",
    _DEFAULTS.structured_warmup_epochs,
    "Epochs training only the structured branch.",
)
flags.DEFINE_integer(
    "checkpoint_every", _DEFAULTS.checkpoint_every, "Steps between checkpoints."
)
flags.DEFINE_integer("max_checkpoints", _DEFAULTS.max_checkpoints, "Checkpoints kept.")
flags.DEFINE_integer("summary_every", _DEFAULTS.summary_every, "Steps per scalars.")
flags.DEFINE_integer(
    "image_summary_every", _DEFAULTS.image_summary_every, "Steps per images."
)
flags.DEFINE_bool("progress", _DEFAULTS.progress, "Show a progress bar.")
flags.DEFINE_bool(
    "export", True, "Export a SavedModel to MODEL_DIR/export/<n>/ when training ends."
)

# Every numeric flag is checked at parsing against its Config field's range.
cli.bound_flags(config_lib.Config)

FLAGS = flags.FLAGS


def main(argv):
    """Builds the config from the flags and trains."""
    del argv
    # TF logs every checkpoint save at INFO, which would break the progress bar.
    logging.set_verbosity(logging.WARNING)

    values = {
        name: FLAGS[name].value for name in config_lib.Config.__dataclass_fields__
    }
    preset = config_lib.PRESETS.get(FLAGS.preset, {})
    values.update(
        {name: value for name, value in preset.items() if not FLAGS[name].present}
    )
    try:
        config = config_lib.Config(**values)
        training.train(config)
    except (ValueError, training.NonFiniteLossError) as e:
        print(f"svae: error: {e}", file=sys.stderr)
        return 1
    return 0


def run():
    """Console-script entry point."""
    cli.run(main)


if __name__ == "__main__":
    run()
