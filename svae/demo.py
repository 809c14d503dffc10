"""`make demo`: the paper's comparison at a small scale, with no download.

Trains Table 1's rows on `sample_photos` (crops of the photographs shipped
with scikit-image): a VAE with a spherical (`vae_sph`) and one with a
diagonal Gaussian likelihood (`vae_diag`), and the structured-residual model
(`structured`) initialised from the `vae_sph` run, as the paper pretrains it.
Evaluates each with the importance-weighted bound and the sample health
(`svae.health`, with the structure of the sampled residuals against the
actual ones) on crops of held-out photographs, and writes the comparison
table (Tables 1-2) and the figures (Figures 3-4: reconstructions, residual
samples, prior samples).

`python -m svae.demo [flags]`; every flag has a default, sized for a CPU.
"""

import dataclasses
import pathlib
import time

from absl import flags, logging

# The modules that import TensorFlow are imported where they are used, after
# the flags are parsed (svae.cli): --help and bad flags answer without it.
from svae import config as config_lib
from svae.cli import common
from svae.fields import check_fields, ranged

FLAGS = flags.FLAGS

MODELS = ("vae_sph", "vae_diag", "structured")


@dataclasses.dataclass
class DemoConfig:
    """The demo's budget: small runs of `train.py`'s models, a short evaluation.

    `vae_sph` and `vae_diag` train `vae_steps` steps; `structured` starts
    from the `vae_sph` run and trains `structured_steps` more, its first
    epoch the structured branch alone. Each is evaluated on the first
    `num_images` held-out crops with `num_samples` importance samples; the
    figures show `num_figure_images` images.
    """

    output_dir: str = "demo_output"
    image_size: int = ranged(64, ge=8)
    latent_dim: int = ranged(100, ge=1)
    filters: int = ranged(config_lib.Config.filters, ge=1)
    crops_per_photo: int = ranged(512, ge=1)
    batch_size: int = ranged(64, ge=1)
    learning_rate: float = ranged(5e-4, gt=0)
    vae_steps: int = ranged(1500, ge=1)
    structured_steps: int = ranged(1000, ge=1)
    num_images: int = ranged(128, ge=1)
    num_samples: int = ranged(500, ge=1, le=config_lib.MAX_NUM_SAMPLES)
    num_figure_images: int = ranged(6, ge=1, le=config_lib.MAX_FIGURE_IMAGES)
    seed: int = ranged(0, ge=0, le=config_lib.MAX_SEED)
    progress: bool = True

    def __post_init__(self):
        """Checks each field; raises ValueError naming it."""
        check_fields(self)


def _config(demo, model, steps, init_from=None) -> config_lib.Config:
    """The `Config` of one model of the demo, in `output_dir/<model>`."""
    shared = ("image_size", "latent_dim", "filters", "crops_per_photo")
    shared += ("batch_size", "learning_rate", "seed", "progress")
    return config_lib.Config(
        model=model,
        model_dir=str(pathlib.Path(demo.output_dir) / model),
        dataset="sample_photos",
        **{name: getattr(demo, name) for name in shared},
        steps=steps,
        init_from=init_from,
        structured_warmup_epochs=1,
        checkpoint_every=steps,
        summary_every=100,
        image_summary_every=steps,
    )


def check_output_dir(output_dir, configs) -> None:
    """Checks that the demo's runs can go in `output_dir`; writes nothing.

    Args:
      output_dir: the demo's folder.
      configs: `{model: Config}` of its runs.

    Raises:
      svae.runs.RunError: `output_dir` (or a run's folder) is a file, lies
        under one or cannot be written; or a run's folder holds files of a
        run that its config cannot resume.
    """
    from svae import runs

    runs.check_model_dir(output_dir, flag="--output_dir")
    for model, (_, changed) in runs.unresumable(configs, "--output_dir").items():
        raise runs.RunError(
            f"--output_dir={output_dir} holds a {model} run made with other "
            f"settings ({runs.describe_changes(changed)}). Rerun with the flags "
            "it was made with, or pass another --output_dir. Nothing was written."
        )


def run(demo=None):
    """Runs the demo; returns the table, file paths, reports and timings.

    Args:
      demo: a `DemoConfig`; None uses the defaults.

    Returns:
      A dict: `table` (Markdown), `reports` (per model, see
      `svae.evaluation.evaluate`), `figures` (name to path), `table_path`
      and `seconds` (per stage and total).
    """
    from svae import cli

    cli.quiet_tensorflow()
    from svae import evaluation, figures, training

    demo = demo or DemoConfig()
    start = time.perf_counter()
    # Every run's config first: a value no run accepts is an error before
    # anything is written.
    configs = {
        "vae_sph": _config(demo, "vae_sph", demo.vae_steps),
        "vae_diag": _config(demo, "vae_diag", demo.vae_steps),
    }
    configs["structured"] = _config(
        demo, "structured", demo.structured_steps, configs["vae_sph"].model_dir
    )
    check_output_dir(demo.output_dir, configs)
    output_dir = pathlib.Path(demo.output_dir)
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    run_dirs = {}
    try:
        for model in MODELS:
            begin = time.perf_counter()
            training.train(configs[model])
            run_dirs[model] = pathlib.Path(configs[model].model_dir)
            seconds[f"train {model}"] = time.perf_counter() - begin
    except BaseException:
        # A start that fails before any run wrote a file leaves no folder.
        if created and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise

    reports = {}
    for model, run_dir in run_dirs.items():
        begin = time.perf_counter()
        print(
            f"svae demo: evaluating {model} on {demo.num_images} held-out crops, "
            f"K={demo.num_samples} importance samples each"
        )
        reports[model] = evaluation.evaluate(
            config_lib.EvalConfig(
                model_dir=str(run_dir),
                num_samples=demo.num_samples,
                max_images=demo.num_images,
                seed=demo.seed,
                progress=demo.progress,
            )
        )
        seconds[f"evaluate {model}"] = time.perf_counter() - begin

    begin = time.perf_counter()
    table = evaluation.compare(
        [str(d) for d in run_dirs.values()], names=list(run_dirs)
    )
    table_path = output_dir / "comparison.md"
    table_path.write_text(table + "\n", encoding="utf-8")
    paths = figures.comparison_figures(
        run_dirs, output_dir, demo.num_figure_images, demo.seed
    )
    for model, run_dir in run_dirs.items():
        written = figures.write_figures(
            config_lib.SampleConfig(
                model_dir=str(run_dir),
                num=demo.num_figure_images,
                seed=demo.seed,
            )
        )
        paths.update({f"{model} {name}": path for name, path in written.items()})
    seconds["figures"] = time.perf_counter() - begin
    seconds["total"] = time.perf_counter() - start

    print(
        f"\nsvae demo: {demo.image_size}x{demo.image_size} crops of the photographs "
        "shipped with scikit-image.\n"
        f"Trained on crops of 12 photographs; NLL, KL and MSE are over the first "
        f"{demo.num_images} crops of 4 held-out photographs (coffee, "
        "immunohistochemistry, gravel, clock),\n"
        f"each NLL the importance-weighted bound with K={demo.num_samples} samples "
        "(nats per image: lower is better;\ndensities of [0, 1] values, so NLLs "
        "are negative as in the paper). MSE: RGB in [0, 255], epsilon = 0.\n"
        f"Training is brief ({demo.vae_steps} steps; structured "
        f"{demo.structured_steps} more from vae_sph's, not the paper's 110 "
        "epochs): the numbers show the\ntrend, not the paper's values. Health: "
        "prior and reconstruction samples whose residual of Y leaves [-1, 1]\n"
        "(diverged), calibration = std of sampled / RMS of actual residuals, and "
        "the structure of Y's sampled residuals\nagainst the actual ones: the "
        "distance of their power spectra (dB, 0 = the same), the power on the\n"
        "frequency axes over the power off them (1 = no plaid), the lag-1 "
        "correlations (0 = white noise)\n(svae.health).\n"
    )
    print(table)
    print(f"\ntable: {table_path}")
    for name, path in paths.items():
        print(f"figure: {name}: {path}")
    timing = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    print(f"time: {timing}")
    return {
        "table": table,
        "table_path": str(table_path),
        "reports": reports,
        "figures": {name: str(path) for name, path in paths.items()},
        "seconds": seconds,
    }


HELPS = {
    "output_dir": "Folder of the runs, the table and the figures.",
    "image_size": "Crop side (a power of 2).",
    "latent_dim": "Latent dimensions.",
    "filters": "Width of the first conv layer.",
    "crops_per_photo": "Training crops per photograph.",
    "batch_size": "Batch size.",
    "learning_rate": "Adam learning rate.",
    "vae_steps": "Training steps of vae_sph and vae_diag.",
    "structured_steps": (
        "Steps of structured after it starts from vae_sph (its first epoch "
        "trains the structured branch alone)."
    ),
    "num_images": "Held-out crops evaluated.",
    "num_samples": "Importance samples K per held-out crop.",
    "num_figure_images": "Images in each figure.",
    "seed": "Seed of weights, crops, noise and figures.",
    "progress": "Show progress bars.",
}


def define_flags(flag_values=FLAGS) -> None:
    """Defines the flags: one per `DemoConfig` field, with its default and range."""
    common.define_flags(DemoConfig, HELPS, flag_values=flag_values)


def main() -> int:
    """Builds the demo's budget from the flags and runs it."""
    # TF logs every checkpoint save at INFO, which would break the progress bars.
    logging.set_verbosity(logging.WARNING)
    run(DemoConfig(**{name: FLAGS[name].value for name in HELPS}))
    return 0


def errors() -> tuple:
    """What `main` raises for bad input: one `svae: error:` line each."""
    from svae import training

    return (ValueError, OSError, training.NonFiniteLossError)


if __name__ == "__main__":
    common.run(main, define_flags, errors=errors)
