"""`python -m svae.reproduce`: the paper's Tables 1-2 and Figures 3-6.

Trains every row of the table a data set belongs to (Table 1 for `celeb_a`,
in grayscale and YCbCr; Table 2 for `lsun_church`; `sample_photos` runs
Table 1's plan, for trying it out) with the paper's settings (section 5),
evaluates each run with K = 500 importance samples on the test split, and
writes `OUT/table1.md` (or `table2.md`) with the paper's values beside ours,
and the figures (reconstructions and prior samples of every model side by
side). Restartable: finished runs and evaluations are reused, an interrupted
run resumes from its newest good checkpoint (`svae.training.train`).
See docs/reproduce.md.
"""

import argparse
import dataclasses
import json
import pathlib
import statistics
import sys
import tempfile
import time

# cli comes first: importing it quiets TensorFlow's start-up lines.
from svae import cli, evaluation, figures, runs, training  # noqa: F401
from svae import config as config_lib
from svae.config import ReproduceConfig  # Re-exported: the command's options.
from svae.data import default_cache_dir

# The paper's values, transcribed from its Table 1 (CelebA; NLL in nats per
# image as "mean ± std", KL, FLOPs per image; per colour, None where the
# paper has "-") and Table 2 (LSUN church outdoor, YCbCr; NLL, KL, and the
# MSE of RGB in [0, 255] as "mean ± std"). In the paper SUPN's and Ours'
# grayscale std (1455) and KL (269.76) are the same numbers.
PAPER_TABLE1 = {
    "vae_sph": {
        "nll": {"gray": (-3647, 1033), "ycbcr": (-4517, 1308)},
        "kl": {"gray": 326.31, "ycbcr": 322.94},
        "flops": {"gray": 6.67e6, "ycbcr": 6.68e6},
    },
    "vae_diag": {
        "nll": {"gray": (-4016, 813), "ycbcr": (-4598, 2747)},
        "kl": {"gray": 339.69, "ycbcr": 341.92},
        "flops": {"gray": 6.66e6, "ycbcr": 6.67e6},
    },
    "beta_vae_diag": {
        "nll": {"gray": (-3123, 998), "ycbcr": (-5574, 1083)},
        "kl": {"gray": 42.48, "ycbcr": 199.16},
        "flops": {"gray": 6.66e6, "ycbcr": 6.67e6},
    },
    "supn": {
        "nll": {"gray": (-8308, 1455), "ycbcr": None},
        "kl": {"gray": 269.76, "ycbcr": None},
        "flops": {"gray": 9.78e6, "ycbcr": None},
    },
    "structured": {
        "nll": {"gray": (-8297, 1455), "ycbcr": (-8669, 1424)},
        "kl": {"gray": 269.76, "ycbcr": 281.91},
        "flops": {"gray": 6.72e6, "ycbcr": 6.70e6},
    },
}
PAPER_TABLE2 = {
    "vae_sph": {"nll": (-2440, 1176), "kl": 303.83, "mse": (566, 285)},
    "vae_diag": {"nll": (-4464, 1924), "kl": 331.06, "mse": (728, 327)},
    "beta_vae_diag": {"nll": (-4213, 2055), "kl": 205.88, "mse": (800, 354)},
    "structured": {"nll": (-6918, 2423), "kl": 313.92, "mse": (614, 286)},
}
LABELS = {
    "vae_sph": "VAE (Sph)",
    "vae_diag": "VAE (Diag)",
    "beta_vae_diag": "β-VAE (Diag)",
    "supn": "SUPN",
    "structured": "Ours",
}


@dataclasses.dataclass(frozen=True)
class Table:
    """One of the paper's tables: its rows, colours, length and figures."""

    number: int
    models: tuple
    colors: tuple
    # Section 5.1 ("All the models are trained for 110 epochs") and 5.2
    # ("... for 150 epochs").
    epochs: int
    # The figure numbers of its reconstructions and prior samples.
    figures: tuple


TABLES = {
    1: Table(1, tuple(PAPER_TABLE1), ("gray", "ycbcr"), 110, (3, 4)),
    2: Table(2, tuple(PAPER_TABLE2), ("ycbcr",), 150, (5, 6)),
}
DATASET_TABLE = {"celeb_a": 1, "lsun_church": 2, "sample_photos": 1}
# Images per split, from docs/data.md (sample_photos: per crop of each of its
# 12 training and 4 test photographs); the dry run's estimate uses them.
SPLIT_IMAGES = {
    "celeb_a": {"train": 162_770, "test": 19_962},
    "lsun_church": {"train": 126_227, "test": 300},
}
SAMPLE_PHOTOS = {"train": 12, "test": 4}
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
MARKER = "reproduce.json"


@dataclasses.dataclass
class Run:
    """One training run of the plan."""

    name: str
    model: str
    color: str
    # The name of the run it starts from (--init_from), or None.
    init_from: str | None = None


def table_of(dataset: str) -> Table:
    """Returns the paper's table a data set belongs to."""
    if dataset not in DATASET_TABLE:
        raise ValueError(
            f"--dataset must be one of {', '.join(DATASET_TABLE)}, got {dataset!r}."
        )
    return TABLES[DATASET_TABLE[dataset]]


def plan(dataset: str, models=None, colors=None) -> list[Run]:
    """Returns the runs of a data set's table, each after the run it starts from.

    Args:
      dataset: `celeb_a`, `lsun_church` or `sample_photos`.
      models: a subset of the table's models (None: all); `structured` and
        `supn` bring the `vae_sph` run of their colour along.
      colors: a subset of the table's colours (None: all).
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
    """Returns the `Config` of one run of the plan."""
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
        "seed": options.seed,
        "progress": options.progress,
    }
    values |= config_lib.PRESETS.get(options.preset, {})
    values |= scale["config"]
    if options.steps:
        values["steps"] = options.steps
    if values.get("steps"):
        values.setdefault("checkpoint_every", values["steps"])
    return config_lib.Config(**values)


def eval_config(run_dir, options: ReproduceConfig) -> evaluation.EvalConfig:
    """Returns the `EvalConfig` of a run: K = 500 on the whole test split."""
    values = dict(SCALES[options.scale]["eval"])
    if options.num_samples:
        values["num_samples"] = options.num_samples
    if options.max_images:
        values["max_images"] = options.max_images
    return evaluation.EvalConfig(
        model_dir=str(run_dir),
        split="test",
        seed=options.seed,
        progress=options.progress,
        **values,
    )


def _checkpoint_step(run_dir) -> int | None:
    """The step of a run's newest readable checkpoint, or None."""
    prefix = runs.good_checkpoint(pathlib.Path(run_dir) / runs.CHECKPOINTS, quiet=True)
    return None if prefix is None else int(prefix.rsplit("-", 1)[1])


def _read_marker(run_dir) -> dict:
    path = pathlib.Path(run_dir) / MARKER
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _finished(config) -> bool:
    """Whether `config`'s run was trained to its end by an earlier reproduce."""
    run_dir = pathlib.Path(config.model_dir)
    marker = _read_marker(run_dir)
    if "trained" not in marker or not (run_dir / config_lib.CONFIG_FILE).exists():
        return False
    saved = config_lib.load(run_dir)
    same_length = (saved.steps, saved.epochs) == (config.steps, config.epochs)
    return (
        same_length
        and not config.incompatible_fields(saved)
        and _checkpoint_step(run_dir) == marker["trained"]["step"]
    )


def train_run(config) -> str:
    """Trains (resumes, or reuses if finished) one run; says which it did."""
    run_dir = pathlib.Path(config.model_dir)
    if _finished(config):
        return f"reused (finished at step {_read_marker(run_dir)['trained']['step']})"
    result = training.train(config)
    marker = _read_marker(run_dir)
    marker["trained"] = {"step": result["step"]}
    runs.write_json(run_dir / MARKER, marker)
    return f"trained to step {result['step']}"


def evaluate_run(run_dir, ec) -> str:
    """Evaluates a run on the test split unless an equal evaluation is saved."""
    run_dir = pathlib.Path(run_dir)
    wanted = {
        "num_samples": ec.num_samples,
        "max_images": ec.max_images,
        "seed": ec.seed,
        "step": _checkpoint_step(run_dir),
    }
    marker = _read_marker(run_dir)
    saved = run_dir / evaluation.EVAL_DIR / f"{ec.split}.json"
    if marker.get("evaluated") == wanted and saved.exists():
        return f"evaluation reused ({saved})"
    report = evaluation.evaluate(ec)
    marker["evaluated"] = wanted
    runs.write_json(run_dir / MARKER, marker)
    return f"evaluated: {report['num_images']} images, K={report['num_samples']}"


def _mean_std(pair) -> str:
    return "-" if pair is None else f"{pair[0]:.0f} ± {pair[1]:.0f}"


def _number(value, spec) -> str:
    return "-" if value is None else format(value, spec)


def _report(out, name):
    path = pathlib.Path(out) / "runs" / name / evaluation.EVAL_DIR / "test.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def table_markdown(dataset: str, out, runs_done) -> str:
    """Returns the table in the paper's layout, the paper's values beside ours.

    Args:
      dataset: the data set (its table).
      out: the output folder (reports in `out/runs/<name>/eval/test.json`).
      runs_done: the plan's `Run`s; models or colours not in it read "not run".
    """
    table = table_of(dataset)
    names = {(r.model, r.color) for r in runs_done}
    reports = {
        (m, c): _report(out, f"{m}-{c}") if (m, c) in names else None
        for m in table.models
        for c in table.colors
    }

    def ours(model, color, what):
        r = reports[model, color]
        if r is None:
            return "not run"
        if what in ("nll", "mse"):
            return f"{r[what]['mean']:.0f} ± {r[what]['std']:.0f}"
        if what == "kl":
            return f"{r['kl']['mean']:.2f}"
        return f"{r['flops_per_image']:.3g}"

    lines = []
    if table.number == 1:
        lines += [
            "| Model | NLL, paper (gray / YCbCr) | NLL, ours (gray / YCbCr) "
            "| KL, paper | KL, ours | FLOPs, paper | FLOPs, ours |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for model in table.models:
            paper = PAPER_TABLE1[model]
            cells = [
                " / ".join(_mean_std(paper["nll"][c]) for c in table.colors),
                " / ".join(ours(model, c, "nll") for c in table.colors),
                " / ".join(_number(paper["kl"][c], ".2f") for c in table.colors),
                " / ".join(ours(model, c, "kl") for c in table.colors),
                " / ".join(_number(paper["flops"][c], ".3g") for c in table.colors),
                " / ".join(ours(model, c, "flops") for c in table.colors),
            ]
            lines.append(f"| {LABELS[model]} | " + " | ".join(cells) + " |")
    else:
        lines += [
            "| Model | NLL, paper | NLL, ours | KL, paper | KL, ours "
            "| MSE, paper | MSE, ours |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for model in table.models:
            paper = PAPER_TABLE2[model]
            cells = [
                _mean_std(paper["nll"]),
                ours(model, "ycbcr", "nll"),
                f"{paper['kl']:.2f}",
                ours(model, "ycbcr", "kl"),
                _mean_std(paper["mse"]),
                ours(model, "ycbcr", "mse"),
            ]
            lines.append(f"| {LABELS[model]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(options: ReproduceConfig, out, plan_runs, figure_paths) -> pathlib.Path:
    """Writes `out/table<N>.md`: the table, how it was made, details, figures."""
    table = table_of(options.dataset)
    reports = [r for r in (_report(out, run.name) for run in plan_runs) if r]
    counts = sorted({(r["num_images"], r["num_samples"]) for r in reports})
    steps = sorted({r["step"] for r in reports})
    parts = [
        f"# Table {table.number}, reproduced on `{options.dataset}`",
        "",
        f"Written by `python -m svae.reproduce --dataset={options.dataset} "
        f"--scale={options.scale}`. Ours: NLL in nats per image (the "
        "importance-weighted bound, `svae.evaluation.evaluate`), mean ± std "
        "over the test split; KL the mean; MSE of RGB in [0, 255] with "
        "epsilon = 0. Evaluated images and K: "
        + ", ".join(f"{n} images, K={k}" for n, k in counts)
        + "; runs' final steps: "
        + ", ".join(str(s) for s in steps)
        + ". Paper: its Table "
        + f"{table.number} (`svae.reproduce.PAPER_TABLE{table.number}`).",
        "",
        table_markdown(options.dataset, out, plan_runs),
    ]
    for color in table.colors:
        names = [r.name for r in plan_runs if r.color == color]
        if not names:
            continue
        run_dirs = [str(pathlib.Path(out) / "runs" / n) for n in names]
        parts += [
            "",
            f"## All measurements, {color}",
            "",
            evaluation.compare(run_dirs, names=names),
        ]
    if figure_paths:
        parts += ["", "## Figures", ""]
        for label, path in figure_paths.items():
            relative = pathlib.Path(path).relative_to(out)
            parts.append(f"- {label}: [{relative}]({relative})")
    path = pathlib.Path(out) / f"table{table.number}.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def write_comparison_figures(options: ReproduceConfig, out, plan_runs) -> dict:
    """Draws reconstructions and prior samples of every model, per colour.

    The side-by-side figures of `svae.figures.comparison_figures` (as the
    demo's); returns `{label: path}`.
    """
    table = table_of(options.dataset)
    recon, prior = table.figures
    num = SCALES[options.scale]["figure_images"]
    paths = {}
    for color in table.colors:
        run_dirs = {
            r.model: pathlib.Path(out) / "runs" / r.name
            for r in plan_runs
            if r.color == color
        }
        if not run_dirs:
            continue
        folder = pathlib.Path(out) / "figures" / color
        folder.mkdir(parents=True, exist_ok=True)
        written = figures.comparison_figures(run_dirs, folder, num, options.seed)
        paths[f"Figure {recon} ({color}): reconstructions"] = written["reconstructions"]
        paths[f"Figure {prior} ({color}): prior samples"] = written["prior_samples"]
    return paths


def reproduce(options: ReproduceConfig) -> dict:
    """Trains, evaluates and draws the plan into `options.out`; resumable.

    Returns:
      A dict: `table_path`, `figures` (label to path), `runs` (name to what
      was done: trained, reused, evaluated).
    """
    out = pathlib.Path(options.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    plan_runs = plan(options.dataset, options.models, options.colors)
    configs = {r.name: run_config(r, options, out) for r in plan_runs}
    runs.write_json(
        out / "plan.json",
        {r.name: json.loads(configs[r.name].to_json()) for r in plan_runs},
    )
    done = {}
    for index, run in enumerate(plan_runs, 1):
        print(f"svae reproduce: [{index}/{len(plan_runs)}] {run.name}")
        done[run.name] = train_run(configs[run.name])
        print(f"svae reproduce: {run.name}: {done[run.name]}")
    for run in plan_runs:
        ec = eval_config(configs[run.name].model_dir, options)
        outcome = evaluate_run(configs[run.name].model_dir, ec)
        done[run.name] += f"; {outcome}"
        print(f"svae reproduce: {run.name}: {outcome}")
    figure_paths = write_comparison_figures(options, out, plan_runs)
    table_path = write_table(options, out, plan_runs, figure_paths)
    print(table_markdown(options.dataset, out, plan_runs))
    print(f"\nsvae reproduce: table: {table_path}")
    for label, path in figure_paths.items():
        print(f"svae reproduce: {label}: {path}")
    return {
        "table_path": str(table_path),
        "figures": {k: str(v) for k, v in figure_paths.items()},
        "runs": done,
    }


# ------------------------------------------------------------------ dry run


def split_images(options: ReproduceConfig, split: str, config) -> int:
    """Images of a split at the plan's settings (docs/data.md's counts)."""
    if options.dataset == "sample_photos":
        return SAMPLE_PHOTOS[split] * config.crops_per_photo
    return SPLIT_IMAGES[options.dataset][split]


def run_steps(options: ReproduceConfig, config) -> int:
    """Training steps of a run of the plan."""
    if config.steps:
        return config.steps
    return config.epochs * (split_images(options, "train", config) // config.batch_size)


def totals(options: ReproduceConfig) -> dict:
    """Runs, training steps and images of the full plan (no training).

    Returns:
      `{"runs", "steps", "train_images", "eval_images", "eval_passes"}`:
      `train_images` = steps x batch; `eval_passes` = images x K decoded.
    """
    plan_runs = plan(options.dataset, options.models, options.colors)
    steps = train_images = eval_images = passes = 0
    for run in plan_runs:
        config = run_config(run, options, "unused")
        ec = eval_config("unused", options)
        n = run_steps(options, config)
        steps += n
        train_images += n * config.batch_size
        test = split_images(options, "test", config)
        test = min(test, ec.max_images or test)
        eval_images += test
        passes += test * ec.num_samples
    return {
        "runs": len(plan_runs),
        "steps": steps,
        "train_images": train_images,
        "eval_images": eval_images,
        "eval_passes": passes,
    }


def _time_run(run: Run, options: ReproduceConfig, folder) -> tuple[float, float]:
    """Seconds per training step and per evaluated image of one model, measured."""
    config = run_config(run, options, folder)
    steps = max(options.dry_run_steps, 3)
    config = dataclasses.replace(
        config,
        dataset="sample_photos",
        data_dir=None,
        cache_dir=None,
        init_from=None,
        pretrain_epochs=0,
        structured_warmup_epochs=0,
        crops_per_photo=max(4, -(-(steps + 1) * config.batch_size // 12)),
        steps=steps,
        checkpoint_every=steps,
        summary_every=steps,
        image_summary_every=steps,
        progress=False,
    )
    stamps = []
    training.train(
        config, callback=lambda step, model: stamps.append(time.perf_counter())
    )
    # The first steps build the graph: the median of the rest.
    seconds = statistics.median(
        b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)
    )
    ec = dataclasses.replace(
        eval_config(config.model_dir, options),
        max_images=8,
        batch_size=8,
        health_images=8,
        num_prior=8,
        progress=False,
    )
    report = evaluation.evaluate(ec)
    return seconds, 1.0 / report["images_per_second"]


def dry_run(options: ReproduceConfig) -> dict:
    """Times a few steps of each model and prints the full plan's estimate.

    Trains each run's model for `dry_run_steps` steps at the plan's settings
    on `sample_photos` (the step time does not depend on the images) in a
    temporary folder, evaluates 8 images with the plan's K, and multiplies
    by the plan's steps and test images. Writes nothing to `options.out`.

    Returns:
      `{name: {"steps", "step_seconds", "train_hours", "eval_images",
      "eval_hours", "hours"}}` and `"total"`.
    """
    plan_runs = plan(options.dataset, options.models, options.colors)
    estimate = {}
    measured = {}
    with tempfile.TemporaryDirectory(prefix="svae-dry-run-") as folder:
        for run in plan_runs:
            key = (run.model, run.color)
            if key not in measured:
                print(f"svae reproduce --dry_run: timing {run.name}")
                measured[key] = _time_run(run, options, folder)
            step_seconds, image_seconds = measured[key]
            config = run_config(run, options, folder)
            ec = eval_config("unused", options)
            steps = run_steps(options, config)
            test = split_images(options, "test", config)
            test = min(test, ec.max_images or test)
            estimate[run.name] = {
                "steps": steps,
                "step_seconds": step_seconds,
                "train_hours": steps * step_seconds / 3600,
                "eval_images": test,
                "eval_hours": test * image_seconds / 3600,
            }
            estimate[run.name]["hours"] = (
                estimate[run.name]["train_hours"] + estimate[run.name]["eval_hours"]
            )
    total = {
        name: sum(e[name] for e in estimate.values())
        for name in ("steps", "train_hours", "eval_images", "eval_hours", "hours")
    }
    estimate["total"] = total
    table = table_of(options.dataset)
    ec = eval_config("unused", options)
    print(
        f"\nsvae reproduce --dry_run: Table {table.number} on {options.dataset}, "
        f"{len(plan_runs)} runs, strategy {options.strategy}, K={ec.num_samples}"
    )
    print(
        f"{'run':22s} {'steps':>10s} {'s/step':>8s} {'train h':>9s} "
        f"{'test images':>11s} {'eval h':>8s} {'total h':>8s}"
    )
    for name, e in estimate.items():
        print(
            f"{name:22s} {e['steps']:>10,d} "
            f"{format(e['step_seconds'], '.4f') if 'step_seconds' in e else '-':>8s} "
            f"{e['train_hours']:>9.2f} "
            f"{e['eval_images']:>11,d} {e['eval_hours']:>8.2f} {e['hours']:>8.2f}"
        )
    print(
        f"svae reproduce --dry_run: estimated total {total['hours']:.1f} hours "
        "(training and evaluation; not counted: preparing the data cache and "
        "drawing the figures)"
    )
    return estimate


def _names(text):
    return tuple(n for n in text.split(",") if n) if text else None


def main(argv=None):
    """Command line: `python -m svae.reproduce --dataset=celeb_a --data_dir=DIR
    --out=paper/`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", default=ReproduceConfig.dataset, choices=DATASET_TABLE
    )
    parser.add_argument("--data_dir", default=None)
    parser.add_argument(
        "--cache_dir",
        default=None,
        help="Prepared data caches (default $SVAE_CACHE_DIR or ~/.cache/svae; "
        "empty: decode at every start).",
    )
    parser.add_argument("--out", default=ReproduceConfig.out)
    parser.add_argument("--scale", default=ReproduceConfig.scale, choices=SCALES)
    parser.add_argument("--steps", type=int, default=None, help="Steps per run.")
    parser.add_argument("--models", default="", help="Comma list (default all).")
    parser.add_argument("--colors", default="", help="Comma list (default all).")
    parser.add_argument(
        "--strategy", default=ReproduceConfig.strategy, choices=config_lib.STRATEGIES
    )
    parser.add_argument("--preset", default=None, choices=config_lib.PRESETS)
    parser.add_argument("--num_samples", type=int, default=None, help="K (500).")
    parser.add_argument("--max_images", type=int, default=None)
    parser.add_argument("--seed", type=int, default=ReproduceConfig.seed)
    parser.add_argument("--no_progress", action="store_true")
    parser.add_argument("--dry_run", action="store_true")
    parser.add_argument(
        "--dry_run_steps", type=int, default=ReproduceConfig.dry_run_steps
    )
    args = parser.parse_args(argv)
    options = ReproduceConfig(
        dataset=args.dataset,
        out=args.out,
        data_dir=args.data_dir,
        cache_dir=default_cache_dir() if args.cache_dir is None else args.cache_dir,
        scale=args.scale,
        steps=args.steps,
        models=_names(args.models),
        colors=_names(args.colors),
        strategy=args.strategy,
        preset=args.preset,
        num_samples=args.num_samples,
        max_images=args.max_images,
        seed=args.seed,
        progress=not args.no_progress,
        dry_run_steps=args.dry_run_steps,
    )
    try:
        if args.dry_run:
            dry_run(options)
        else:
            reproduce(options)
    except (ValueError, OSError) as e:
        print(f"svae: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
