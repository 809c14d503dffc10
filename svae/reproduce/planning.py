"""The plan of runs: the command's options, each run's `Config` and `EvalConfig`.

`plan(dataset)` lists the runs of the data set's table, each after the run
it starts from; `run_config` and `eval_config` give a run the paper's
settings (section 5) at the scale asked for (`SCALES`).
"""

import dataclasses
import pathlib

from svae import config as config_lib
from svae import recipes
from svae.fields import check_fields, ranged
from svae.reproduce.paper import DATASET_TABLE, table_of

__all__ = [
    "PRETRAINED",
    "SCALES",
    "ReproduceConfig",
    "Run",
    "eval_config",
    "plan",
    "run_config",
]

# The models that start from the vae_sph run of their colour (--init_from).
PRETRAINED = ("structured", "supn")

# What --scale sets: "paper" is section 5's (64x64, batch 64, lr 5e-4, 5
# epochs training the structured branch alone; the width and latent size are
# train.py's defaults); "tiny" is for tests and trying the command out.
SCALES = {
    "paper": {
        "config": {
            "image_size": 64,
            "batch_size": 64,
            "learning_rate": 5e-4,
            "structured_warmup_epochs": 5,
        },
        "eval": {},
        "figure_images": 8,
    },
    "tiny": {
        "config": {
            "image_size": 16,
            "latent_dim": 8,
            "filters": 4,
            "batch_size": 4,
            "learning_rate": 3e-3,
            "crops_per_photo": 4,
            "steps": 4,
            "structured_warmup_epochs": 1,
            "image_summary_every": 1000,
        },
        "eval": {
            "num_samples": 8,
            "max_images": 8,
            "batch_size": 8,
            "health_images": 8,
            "num_prior": 8,
        },
        "figure_images": 3,
    },
}


def _names(value) -> tuple | None:
    """A tuple of the non-empty names of a list or tuple; None if there are none."""
    return tuple(name for name in value or () if name) or None


@dataclasses.dataclass
class ReproduceConfig:
    """What `python -m svae.reproduce` is asked; its flags fill it.

    Attributes:
      dataset: `celeb_a` (Table 1), `lsun_church` (Table 2) or
        `sample_photos` (Table 1's plan, no download).
      out: the output folder: `runs/`, `figures/`, the table.
      data_dir, cache_dir: as `svae.config.Config`'s.
      scale: a key of `SCALES`: "paper" (section 5) or "tiny".
      steps: steps per run instead of the table's epochs.
      models, colors: a part of the table's (None: all of them).
      strategy: the `tf.distribute` strategy of every run.
      precision: the Keras dtype policy of every run (`Config.precision`).
      likelihood: the name of a recipe of `svae.recipes.RECIPES`, every
        run's likelihood.
      num_samples, max_images: K and the test images of the evaluation
        (None: the scale's, K = 500 on the whole test split at "paper").
      seed: the seed of every run, evaluation and figure.
      progress: show progress bars.
      dry_run_steps: the steps `dry_run` times per model.
    """

    dataset: str = "sample_photos"
    out: str = "paper"
    data_dir: str | None = None
    cache_dir: str | None = None
    scale: str = "paper"
    steps: int | None = ranged(None, ge=1)
    models: tuple | None = None
    colors: tuple | None = None
    strategy: str = "default"
    precision: str = "float32"
    likelihood: str = "default"
    num_samples: int | None = ranged(None, ge=1, le=config_lib.MAX_NUM_SAMPLES)
    max_images: int | None = ranged(None, ge=1)
    seed: int = ranged(0, ge=0, le=config_lib.MAX_SEED)
    progress: bool = True
    dry_run_steps: int = ranged(
        6, ge=3, note="the median step time leaves out the first step"
    )

    def __post_init__(self):
        """Checks each field; raises ValueError naming it."""
        check_fields(self)
        # A comma list of a flag: "a,,b" and "" as the plain tuples they mean.
        self.models, self.colors = _names(self.models), _names(self.colors)
        for name, valid in (
            ("dataset", DATASET_TABLE),
            ("scale", SCALES),
            ("strategy", config_lib.STRATEGIES),
            ("precision", config_lib.PRECISIONS),
            ("likelihood", recipes.RECIPES),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"{name} must be one of {', '.join(valid)}, got "
                    f"{getattr(self, name)!r}."
                )


@dataclasses.dataclass
class Run:
    """One training run of the plan."""

    name: str
    model: str
    color: str
    # The name of the run it starts from (--init_from), or None.
    init_from: str | None = None


def plan(dataset: str, models=None, colors=None) -> list[Run]:
    """Returns the runs of a data set's table, each after the run it starts from.

    Args:
      dataset: `celeb_a`, `lsun_church` or `sample_photos`.
      models: a subset of the table's models (None: all); `structured` and
        `supn` bring the `vae_sph` run of their colour along.
      colors: a subset of the table's colours (None: all).

    Raises:
      ValueError: an unknown data set, or a model or colour not in its table.
    """
    table = table_of(dataset)
    for asked, valid, flag in (
        (models, table.models, "models"),
        (colors, table.colors, "colors"),
    ):
        unknown = sorted(set(asked or ()) - set(valid))
        if unknown:
            raise ValueError(
                f"--{flag}: Table {table.number} has {', '.join(valid)}; "
                f"got {', '.join(unknown)}."
            )
    wanted = set(models or table.models)
    if wanted & set(PRETRAINED):
        wanted.add("vae_sph")
    result = []
    for color in table.colors:
        if colors and color not in colors:
            continue
        for model in table.models:
            if model in wanted:
                parent = f"vae_sph-{color}" if model in PRETRAINED else None
                result.append(Run(f"{model}-{color}", model, color, parent))
    return result


def run_config(run: Run, options: ReproduceConfig, out) -> config_lib.Config:
    """Returns the `Config` of one run of the plan, its folder under `out/runs/`."""
    table = table_of(options.dataset)
    scale = SCALES[options.scale]
    runs_dir = pathlib.Path(out) / "runs"
    values = {
        "dataset": options.dataset,
        "data_dir": options.data_dir,
        "cache_dir": options.cache_dir,
        "model": run.model,
        "color": run.color,
        "model_dir": str(runs_dir / run.name),
        "epochs": table.epochs,
        "init_from": run.init_from and str(runs_dir / run.init_from),
        "strategy": options.strategy,
        "precision": options.precision,
        "likelihood": options.likelihood,
        "seed": options.seed,
        "progress": options.progress,
    }
    values |= scale["config"]
    if options.steps:
        values["steps"] = options.steps
    if values.get("steps"):
        values.setdefault("checkpoint_every", values["steps"])
    return config_lib.Config(**values)


def eval_config(run_dir, options: ReproduceConfig) -> config_lib.EvalConfig:
    """Returns the `EvalConfig` of a run: K = 500 on the whole test split."""
    values = dict(SCALES[options.scale]["eval"])
    if options.num_samples:
        values["num_samples"] = options.num_samples
    if options.max_images:
        values["max_images"] = options.max_images
    return config_lib.EvalConfig(
        model_dir=str(run_dir),
        split="test",
        seed=options.seed,
        progress=options.progress,
        **values,
    )
