"""Runs the plan: trains, evaluates and draws it, reusing what is finished.

Each run folder holds a marker, `reproduce.json`: the step its training
finished at and the settings of its saved evaluation. A run whose newest
readable checkpoint is that step, and whose config is unchanged, is reused
untouched; an interrupted run resumes (`svae.training.train`); an evaluation
is redone only if K, the images, the seed or the run's step changed.
"""

import json
import pathlib

from svae import config as config_lib
from svae import evaluation, runs, training
from svae.reproduce import tables
from svae.reproduce.planning import ReproduceConfig, eval_config, plan, run_config

__all__ = ["MARKER", "evaluate_run", "reproduce", "train_run"]

MARKER = "reproduce.json"


def _checkpoint_step(run_dir) -> int | None:
    """The step of a run's newest readable checkpoint, or None."""
    prefix = runs.good_checkpoint(pathlib.Path(run_dir) / runs.CHECKPOINTS, quiet=True)
    return None if prefix is None else int(prefix.rsplit("-", 1)[1])


def _read_marker(run_dir) -> dict:
    """A run's marker, or {} if it has none (or an unreadable one)."""
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


def reproduce(options: ReproduceConfig) -> dict:
    """Trains, evaluates and draws the plan into `options.out`; resumable.

    The plan and every run's config are built (and so checked) before
    anything is written; `out/plan.json` then holds every run's config.

    Returns:
      A dict: `table_path`, `figures` (label to path), `runs` (name to what
      was done: trained, reused, evaluated).

    Raises:
      ValueError: a model or colour not in the data set's table, or a run's
        setting out of range.
    """
    out = pathlib.Path(options.out)
    plan_runs = plan(options.dataset, options.models, options.colors)
    configs = {r.name: run_config(r, options, out) for r in plan_runs}
    (out / "runs").mkdir(parents=True, exist_ok=True)
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
    figure_paths = tables.write_comparison_figures(options, out, plan_runs)
    table_path = tables.write_table(options, out, plan_runs, figure_paths)
    print(tables.table_markdown(options.dataset, out, plan_runs))
    print(f"\nsvae reproduce: table: {table_path}")
    for label, path in figure_paths.items():
        print(f"svae reproduce: {label}: {path}")
    return {
        "table_path": str(table_path),
        "figures": {k: str(v) for k, v in figure_paths.items()},
        "runs": done,
    }
