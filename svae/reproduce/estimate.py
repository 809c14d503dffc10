"""What the full plan processes, and how long it takes: `totals`, `dry_run`.

`totals` counts the plan's runs, steps and images from the split sizes of
docs/data.md; `dry_run` times a few steps of each model on this machine and
multiplies.
"""

import dataclasses
import statistics
import tempfile
import time

from svae import evaluation, training
from svae.reproduce.paper import table_of
from svae.reproduce.planning import ReproduceConfig, Run, eval_config, plan, run_config

__all__ = [
    "SAMPLE_PHOTOS",
    "SPLIT_IMAGES",
    "dry_run",
    "run_steps",
    "split_images",
    "totals",
]

# Images per split, from docs/data.md (sample_photos: per crop of each of its
# 12 training and 4 test photographs).
SPLIT_IMAGES = {
    "celeb_a": {"train": 162_770, "test": 19_962},
    "lsun_church": {"train": 126_227, "test": 300},
}
SAMPLE_PHOTOS = {"train": 12, "test": 4}


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


def _test_images(options: ReproduceConfig, config, ec) -> int:
    """Test images a run's evaluation reads."""
    test = split_images(options, "test", config)
    return min(test, ec.max_images or test)


def totals(options: ReproduceConfig) -> dict:
    """Runs, training steps and images of the full plan (no training).

    Returns:
      `{"runs", "steps", "train_images", "eval_images", "eval_passes"}`:
      `train_images` = steps x batch; `eval_passes` = images x K decoded.
    """
    plan_runs = plan(options.dataset, options.models, options.colors)
    ec = eval_config("unused", options)
    steps = train_images = eval_images = passes = 0
    for run in plan_runs:
        config = run_config(run, options, "unused")
        n = run_steps(options, config)
        steps += n
        train_images += n * config.batch_size
        test = _test_images(options, config, ec)
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
    steps = options.dry_run_steps
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


def _print_estimate(options: ReproduceConfig, estimate: dict, runs: int) -> None:
    """Prints the estimate as a table, one row per run and the total."""
    table = table_of(options.dataset)
    ec = eval_config("unused", options)
    print(
        f"\nsvae reproduce --dry_run: Table {table.number} on {options.dataset}, "
        f"{runs} runs, strategy {options.strategy}, K={ec.num_samples}"
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
        "svae reproduce --dry_run: estimated total "
        f"{estimate['total']['hours']:.1f} hours (training and evaluation; not "
        "counted: preparing the data cache and drawing the figures)"
    )


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
    ec = eval_config("unused", options)
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
            steps = run_steps(options, config)
            test = _test_images(options, config, ec)
            train_hours = steps * step_seconds / 3600
            eval_hours = test * image_seconds / 3600
            estimate[run.name] = {
                "steps": steps,
                "step_seconds": step_seconds,
                "train_hours": train_hours,
                "eval_images": test,
                "eval_hours": eval_hours,
                "hours": train_hours + eval_hours,
            }
    estimate["total"] = {
        name: sum(e[name] for e in estimate.values())
        for name in ("steps", "train_hours", "eval_images", "eval_hours", "hours")
    }
    _print_estimate(options, estimate, len(plan_runs))
    return estimate
