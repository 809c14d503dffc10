"""Runs the plan: trains, evaluates and draws it, reusing what is finished.

Each run folder holds a marker, `reproduce.json`: the step its training
finished at and the settings of its saved evaluation. A run whose newest
readable checkpoint is that step, and whose config is unchanged, is reused
untouched; an interrupted run resumes (`svae.training.train`); an evaluation
is redone only if K, the images, the seed or the run's step changed, in the
marker or in the saved report.

Before anything is written, every run folder that exists must be one its run
can resume (`check_out`); a refused start leaves `OUT` as it was.
"""

import dataclasses
import json
import pathlib

from svae import config as config_lib
from svae import evaluation, runs, training
from svae.reproduce import tables
from svae.reproduce.planning import (
    SCALES,
    ReproduceConfig,
    eval_config,
    plan,
    run_config,
)

__all__ = ["MARKER", "check_out", "evaluate_run", "reproduce", "train_run"]

MARKER = "reproduce.json"

# The config fields that a flag of reproduce sets (the rest follow --scale).
_FLAG_FIELDS = {"init_from": "--out"}


def _flag_of(field: str) -> str:
    """The reproduce flag that sets a run's config field."""
    if field.startswith("likelihood."):
        return "--likelihood"
    flags = {f.name for f in dataclasses.fields(ReproduceConfig)}
    in_scale = any(field in scale["config"] for scale in SCALES.values())
    # A field that is a flag of its own and a scale's (steps): either.
    if in_scale and field in flags:
        return f"--{field} or --scale"
    if in_scale:
        return "--scale"
    if field in flags:
        return f"--{field}"
    return _FLAG_FIELDS.get(field, field)


def check_out(out, configs: dict) -> None:
    """Checks that `out` can hold the plan: a folder, its runs resumable.

    Args:
      out: the output folder.
      configs: `{run name: Config}` of the plan.

    Raises:
      svae.runs.RunError: `out` is a file, lies under one or cannot be
        written; or a run folder holds files of a run that its config cannot
        resume (the message names the run, the fields and the flags that
        differ).
    """
    runs.check_model_dir(out, flag="--out")
    changed, flags = [], {}
    for name, (saved, fields) in runs.unresumable(configs, "--out").items():
        changed.append(f"{name}: {runs.describe_changes(fields)}")
        for field in fields:
            flag = _flag_of(field)
            if flag == "--likelihood" and saved.likelihood.name:
                flag += f" (it was made with --likelihood={saved.likelihood.name})"
            flags.setdefault(flag)
    if changed:
        raise runs.RunError(
            f"--out={out} holds runs made with other settings "
            f"({'; '.join(changed)}). "
            f"The flags that differ: {', '.join(flags)}. Rerun with the flags it "
            "was made with, or pass another --out. Nothing was written."
        )


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


def _saved_report(path) -> dict | None:
    """A saved evaluation report, or None if missing or unreadable."""
    try:
        return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def evaluate_run(run_dir, ec) -> str:
    """Evaluates a run on the test split unless an equal evaluation is saved.

    The saved one is reused only if the marker records this K, `max_images`,
    seed and step, and the report on disk still is that evaluation (an
    `evaluate.py` of another K may have replaced it since).
    """
    run_dir = pathlib.Path(run_dir)
    wanted = {
        "num_samples": ec.num_samples,
        "max_images": ec.max_images,
        "seed": ec.seed,
        "step": _checkpoint_step(run_dir),
    }
    marker = _read_marker(run_dir)
    recorded = dict(marker.get("evaluated") or {})
    num_images = recorded.pop("num_images", None)
    saved = run_dir / evaluation.EVAL_DIR / f"{ec.split}.json"
    report = _saved_report(saved)
    if (
        recorded == wanted
        and isinstance(report, dict)
        and report.get("num_images") == num_images
        and all(report.get(k) == wanted[k] for k in ("num_samples", "seed", "step"))
    ):
        return f"evaluation reused ({saved})"
    report = evaluation.evaluate(ec)
    marker["evaluated"] = wanted | {"num_images": report["num_images"]}
    runs.write_json(run_dir / MARKER, marker)
    return f"evaluated: {report['num_images']} images, K={report['num_samples']}"


def _remove(paths) -> None:
    """Removes what a failed start made: files, then empty folders, innermost first."""
    for path in sorted(paths, key=lambda p: (p.is_dir(), -len(p.parts))):
        try:
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass  # A folder something else wrote into stays.


def reproduce(options: ReproduceConfig) -> dict:
    """Trains, evaluates and draws the plan into `options.out`; resumable.

    The plan and every run's config are built (and so checked), and every
    existing run folder checked resumable (`check_out`), before anything is
    written; `out/plan.json` then holds every run's config. If the first run
    fails before its folder holds anything, what this call wrote is removed.

    Returns:
      A dict: `table_path`, `figures` (label to path), `runs` (name to what
      was done: trained, reused, evaluated).

    Raises:
      ValueError: a model or colour not in the data set's table, a run's
        setting out of range, an unusable `out`, or runs in `out` made with
        other settings (`svae.runs.RunError`).
    """
    out = pathlib.Path(options.out)
    plan_runs = plan(options.dataset, options.models, options.colors)
    configs = {r.name: run_config(r, options, out) for r in plan_runs}
    check_out(out, configs)
    made = [p for p in (out, out / "runs", out / "plan.json") if not p.exists()]
    (out / "runs").mkdir(parents=True, exist_ok=True)
    runs.write_json(
        out / "plan.json",
        {r.name: json.loads(configs[r.name].to_json()) for r in plan_runs},
    )
    done = {}
    try:
        for index, run in enumerate(plan_runs, 1):
            print(f"svae reproduce: [{index}/{len(plan_runs)}] {run.name}")
            done[run.name] = train_run(configs[run.name])
            print(f"svae reproduce: {run.name}: {done[run.name]}")
    except BaseException:
        if made and not any((out / "runs").iterdir()):
            _remove(made)
        raise
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
