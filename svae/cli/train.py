"""Trains a model of the paper (docs/training.md).

`svae-train [flags]` or `python train.py [flags]`: without --model_dir the
run goes to a fresh runs/<model>-<dataset>-<time>/; a run directory that
holds a run is resumed.
"""

from absl import flags, logging

from svae import config as config_lib
from svae import recipes
from svae.cli import common

FLAGS = flags.FLAGS

# One flag per field of svae.config.Config, with its default and range.
HELPS = {
    "dataset": "Data set name (docs/data.md).",
    "data_dir": "Folder with the data set's files.",
    "cache_dir": (
        "Folder of prepared (decoded once) file-based data sets, default "
        "$SVAE_CACHE_DIR or ~/.cache/svae; empty: decode at every start."
    ),
    "model": "Model variant.",
    "model_dir": "Run directory (default: a fresh one).",
    "epochs": "Epochs of the run, all phases.",
    "steps": "Steps of the run (overrides --epochs).",
    "batch_size": "Global batch size.",
    "learning_rate": "Adam learning rate.",
    "latent_dim": "Latent dimensions.",
    "color": "Colour model.",
    "image_size": "Image side (power of 2).",
    "chroma_factor": "CbCr downsampling.",
    "crops_per_photo": "sample_photos crops per photo.",
    "seed": "Seed of weights, data order, noise.",
    "flip": "Random left-right flips.",
    "shuffle_buffer": "Shuffle buffer (0: keep the order).",
    "strategy": "tf.distribute strategy.",
    "precision": (
        "Keras dtype policy: mixed_bfloat16 / mixed_float16 (loss-scaled) run the "
        "convolutions in 16 bits (bfloat16: the encoder's only), the likelihood "
        "in float32 (docs/training.md)."
    ),
    "filters": "Width of the first conv layer.",
    "kernel_size": "Neighbourhood of L.",
    "dilation": "Dilation of L's pattern.",
    "num_basis": "Basis size (0: no basis).",
    "likelihood": (
        "The likelihood's recipe (docs/training.md): default (samples that cannot "
        "explode, calibrated scales) or paper (the paper taken literally)."
    ),
    "alpha": "Weight of the variance term (default 10 / 0).",
    "gamma": "Weight of the L1 on off_diag.",
    "beta": "KL weight (beta_vae_diag only; default 5).",
    "init_from": "A vae_sph run to initialise from.",
    "pretrain_epochs": "vae_sph pretraining epochs.",
    "structured_warmup_epochs": "Epochs training only the structured branch.",
    "checkpoint_every": "Steps between checkpoints.",
    "summary_every": "Steps per scalars.",
    "image_summary_every": "Steps per images.",
    "max_checkpoints": "Checkpoints kept.",
    "progress": "Show a progress bar.",
    "export": "Export a SavedModel to MODEL_DIR/export/<n>/ when training ends.",
}
ENUMS = {
    "model": config_lib.MODELS,
    "color": ("ycbcr", "gray"),
    "strategy": config_lib.STRATEGIES,
    "precision": config_lib.PRECISIONS,
    "likelihood": recipes.RECIPES,
}


def define_flags(flag_values=FLAGS) -> None:
    """Defines the flags: one per `Config` field."""
    common.define_flags(
        config_lib.Config,
        HELPS,
        enums=ENUMS,
        # The command line uses the prepared cache and exports; library
        # callers of svae.training.train opt in.
        defaults={
            "cache_dir": config_lib.default_cache_dir(),
            "export": True,
            "likelihood": "default",
        },
        flag_values=flag_values,
    )


def main() -> int:
    """Builds the config from the flags and trains."""
    # TF logs every checkpoint save at INFO, which would break the progress bar.
    logging.set_verbosity(logging.WARNING)
    from svae import training

    values = {name: FLAGS[name].value for name in HELPS}
    training.train(config_lib.Config(**values))
    return 0


def errors() -> tuple:
    """What `main` raises for bad input: one `svae: error:` line each."""
    from svae import files, training

    return (ValueError, training.NonFiniteLossError, files.NoSpaceError)


def run() -> None:
    """The entry point of `svae-train` and `python train.py`."""
    common.run(main, define_flags, errors=errors)


if __name__ == "__main__":
    run()
