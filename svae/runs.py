"""Run directories: where a run lives, who trains it, which checkpoint is good.

A run directory (`--model_dir`) holds `config.json` (and its copy
`checkpoints/config.json`), `checkpoints/ckpt-<step>.{index,data-*}`,
TensorBoard events in `train/`, evaluations and exports. This module is the
one place that decides what such a folder holds:

- `check_model_dir`: a `--model_dir` that can be created and written (and
  is UTF-8, `check_utf8`), checked before any work.
- `run_state`: whether a folder is a fresh run, a run to resume, or a run
  that cannot be resumed as it is (checkpoints but no `config.json`): a
  folder holding any checkpoint is never trained from step 0.
- `good_checkpoint`: the newest checkpoint whose files can be read, with a
  warning naming each newer one skipped and why (the files themselves are
  `svae.checkpoints`' matter: `repair_index` rewrites a missing or garbage
  `checkpoints/checkpoint` index from them).
- `check_resumable`, `check_steps`: a run is resumed with the settings it
  was made with, and never asked to end before the step it has reached.
- `RunLock`: one trainer per run directory (an `fcntl.flock`, released by the
  kernel when its process dies, so a lock left by `kill -9` is taken over).
- `load_run`: a run's config and model from its newest good checkpoint, for
  evaluation, sampling and export.
- `newest_run`: the newest finished run under `runs/`, which `evaluate.py`,
  `sample.py` and `export.py` use without `--model_dir`.
- `write_json`: strict (no `NaN`) JSON, written atomically (`svae.files`).
"""

import dataclasses
import datetime
import fcntl
import json
import os
import pathlib
import socket
import sys
import tempfile

import tensorflow as tf

from svae import checkpoints, files, models
from svae import config as config_lib

# Re-exported from their modules.
from svae.checkpoints import checkpoint_steps, read_checkpoint, repair_index
from svae.files import strict, write_json

__all__ = [
    "LOCK_FILE",
    "RunError",
    "RunLock",
    "check_model_dir",
    "check_resumable",
    "check_steps",
    "check_utf8",
    "checkpoint_steps",
    "fresh_model_dir",
    "good_checkpoint",
    "load_run",
    "newest_run",
    "read_checkpoint",
    "repair_index",
    "run_state",
    "strict",
    "write_config",
    "write_json",
]

CHECKPOINTS = "checkpoints"
LOCK_FILE = "svae.lock"


class RunError(ValueError):
    """A run directory that cannot be used as asked; the message says why."""


def warn(message: str) -> None:
    """Prints an svae warning on stderr."""
    print(f"svae: warning: {message}", file=sys.stderr)


# ------------------------------------------------------------- the directory


def fresh_model_dir(config) -> str:
    """Returns a new run directory name under `runs/`."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(pathlib.Path("runs") / f"{config.model}-{config.dataset}-{stamp}")


def check_utf8(path, flag: str = "--model_dir") -> None:
    """Raises `RunError` if `path` is not valid UTF-8.

    TensorFlow's file functions (checkpoints, summaries, SavedModels) take
    UTF-8 paths only: a folder whose name holds other bytes (`\\xff`, which
    Python carries as a lone surrogate) would get a `config.json` and then
    fail, so it is refused before anything is written.
    """
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        shown = raw.decode("utf-8", "backslashreplace")
        raise RunError(
            f"{flag}={shown} is not valid UTF-8 (byte {raw[e.start]:#04x}), and "
            "TensorFlow reads and writes UTF-8 paths only: rename the folder, or "
            "pass another."
        ) from None


def check_model_dir(model_dir, flag: str = "--model_dir") -> pathlib.Path:
    """Checks that `model_dir` is, or can be created as, a writable folder.

    Nothing is created: the nearest existing ancestor must be a folder in
    which a folder can be made (tried with a temporary one, so read-only
    mounts and pseudo file systems such as /proc are caught).

    Returns:
      The path.

    Raises:
      RunError: the path is not UTF-8 (`check_utf8`), is a file, lies under a
        file, or cannot be written.
    """
    check_utf8(model_dir, flag)
    path = pathlib.Path(model_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise RunError(f"{flag}={model_dir} is a file, not a folder: pass a folder.")
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunError(
            f"{flag}={model_dir} lies under {existing}, which is a file: "
            "pass a folder whose parents are folders."
        )
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".svae-probe-").cleanup()
    except OSError as e:
        raise RunError(
            f"{flag}={model_dir} cannot be written: making a folder in "
            f"{existing} fails ({e.strerror or e}). Pass a writable folder."
        ) from e
    return path


def write_config(config, model_dir) -> None:
    """Writes `config.json` and its copy `checkpoints/config.json`, atomically.

    The copy lets a run whose `config.json` was lost be recovered by hand.
    """
    model_dir = pathlib.Path(model_dir)
    (model_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    text = config.to_json() + "\n"
    files.write_atomically(model_dir / CHECKPOINTS / config_lib.CONFIG_FILE, text)
    files.write_atomically(model_dir / config_lib.CONFIG_FILE, text)


# ---------------------------------------------------------------- checkpoints


def good_checkpoint(directory, quiet: bool = False) -> str | None:
    """Returns the prefix of the newest readable checkpoint in `directory`.

    Checkpoints are found from their files, not from the `checkpoint` index
    (which may be stale or garbage). Each newer checkpoint that cannot be
    read is named in a warning, with the reason, unless `quiet`.

    Raises:
      RunError: checkpoint files exist but none can be read.
    """
    directory = pathlib.Path(directory)
    skipped = []
    for step in checkpoint_steps(directory):
        prefix = directory / f"ckpt-{step}"
        reason = read_checkpoint(prefix)
        if reason is None:
            if skipped and not quiet:
                warn(
                    f"skipped unreadable checkpoint(s) in {directory}: "
                    + "; ".join(skipped)
                    + f". Using ckpt-{step}."
                )
            return str(prefix)
        skipped.append(f"ckpt-{step} ({reason})")
    if skipped:
        raise RunError(
            f"No checkpoint in {directory} can be read: {'; '.join(skipped)}. "
            "Restore them from a backup, or move the folder away to start afresh."
        )
    return None


def _run_files(model_dir: pathlib.Path) -> list[str]:
    """Names what in `model_dir` shows a run was trained there."""
    found = []
    if checkpoint_steps(model_dir / CHECKPOINTS):
        found.append(f"{CHECKPOINTS}/ckpt-*")
    for name in ("train", "export"):
        if (model_dir / name).is_dir() and any((model_dir / name).iterdir()):
            found.append(f"{name}/")
    return found


def run_state(model_dir):
    """Returns the saved `Config` of the run in `model_dir`, or None if fresh.

    Raises:
      RunError: the folder holds a run's files but no `config.json` (it is
        never trained from step 0 over them), or an invalid `config.json`.
    """
    model_dir = pathlib.Path(model_dir)
    path = model_dir / config_lib.CONFIG_FILE
    if path.exists():
        try:
            return config_lib.load(model_dir)
        except (TypeError, ValueError) as e:
            raise RunError(str(e)) from e  # Its message names the file.
    found = _run_files(model_dir)
    if not found:
        return None
    backup = model_dir / CHECKPOINTS / config_lib.CONFIG_FILE
    how = (
        f"copy its backup back (cp {backup} {path}) and run again"
        if backup.exists()
        else f"write {path} with the run's flags (train.py wrote one like it "
        "at the start of every run), or pass another --model_dir"
    )
    raise RunError(
        f"{model_dir} holds a run ({', '.join(found)}) but no "
        f"{config_lib.CONFIG_FILE}, so it can neither be resumed nor started "
        f"afresh without overwriting it. To resume: {how}."
    )


def describe_changes(changed) -> str:
    """`"name: old -> new, ..."` of `Config.incompatible_fields`' dict."""
    return ", ".join(
        f"{name}: {old!r} -> {new!r}" for name, (old, new) in changed.items()
    )


def unresumable(configs, flag="--model_dir") -> dict:
    """The runs whose folders hold a run their config cannot resume.

    A run cannot be resumed with other settings (`incompatible_fields`), nor
    with fewer `steps` than its newest checkpoint's (`check_steps`; listed
    as `steps: (step reached, steps asked)`). Checks each config's
    `model_dir` (`check_model_dir`, named as `flag` in the message) before
    any work; writes nothing.

    Args:
      configs: `{name: Config}`.
      flag: the flag that chose the folders, for the messages.

    Returns:
      `{name: (saved Config, incompatible_fields dict)}`, empty if none.
    """
    found = {}
    for name, config in configs.items():
        check_model_dir(config.model_dir, flag=flag)
        saved = run_state(config.model_dir)
        changed = {} if saved is None else config.incompatible_fields(saved)
        step = _reached(config.model_dir) if saved is not None else 0
        if config.steps is not None and step > config.steps:
            # Trained past the length asked (`check_steps`): the step reached.
            changed["steps"] = (step, config.steps)
        if changed:
            found[name] = (saved, changed)
    return found


def _reached(model_dir) -> int:
    """The step of the newest readable checkpoint in `model_dir` (0: none)."""
    prefix = good_checkpoint(pathlib.Path(model_dir) / CHECKPOINTS, quiet=True)
    return 0 if prefix is None else int(prefix.rsplit("-", 1)[1])


def check_steps(step, total_steps, model_dir) -> None:
    """Raises `RunError` if a run at `step` is asked to end before it.

    Training does not go back: a shorter `--steps` (or `--epochs`) would
    only rewrite `config.json` with a length the run is past, after which
    `newest_run` skips it as stopped.

    Args:
      step: the step of the checkpoint the run resumes from.
      total_steps: the steps the config asks for.
      model_dir: the run directory (for the message).
    """
    if step > total_steps:
        raise RunError(
            f"{model_dir} holds a run at step {step}, and this command asks it "
            f"to end at step {total_steps}: training does not go back. Pass "
            f"--steps >= {step} (the same flags leave the run as it is), or use "
            "another --model_dir. Nothing was written."
        )


def check_resumable(config, saved, model_dir):
    """Raises if the run `saved` in `model_dir` cannot be resumed with `config`."""
    changed = config.incompatible_fields(saved)
    if changed:
        details = describe_changes(changed)
        recipe = saved.likelihood.name
        hint = (
            f" (it was trained with --likelihood={recipe})"
            if recipe and any(name.startswith("likelihood.") for name in changed)
            else ""
        )
        raise RunError(
            f"{model_dir} holds a run with a different configuration ({details}). "
            f"Use the same flags to resume it{hint}, or another --model_dir."
        )


# ----------------------------------------------------------------------- lock


class RunLock:
    """Makes one process the only trainer of a run directory.

    `with RunLock(model_dir):` takes an exclusive `fcntl.flock` on
    `model_dir/svae.lock` and writes who holds it (pid, host, start time,
    command). A second trainer fails at once with a `RunError` naming the
    holder. The kernel drops the lock when its process ends, however it ends,
    so a lock file left by a killed process is stale and taken over (with a
    warning naming the process that left it).
    """

    def __init__(self, model_dir):
        self.path = pathlib.Path(model_dir) / LOCK_FILE
        self._file = None

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            return (
                f"pid {info['pid']} on {info['host']}, started {info['started']}"
                f" ({info.get('command', '?')})"
            )
        except (OSError, ValueError, KeyError, TypeError):
            return "another process (its lock file cannot be read)"

    def acquire(self) -> "RunLock":
        """Takes the lock; raises `RunError` if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                raise RunError(
                    f"{self.path.parent} is being trained by {self._holder()}. "
                    "Wait for it to finish or stop it, or pass another --model_dir."
                ) from None
            if self._is_current(file):
                break
            # Its holder removed the file between our open and our lock: a
            # lock on a removed file excludes no one. Lock the file there now.
            file.close()
        file.seek(0)
        previous = file.read().strip()
        if previous:
            warn(
                f"took over the lock of {self.path.parent} left by "
                f"{self._holder()}, which no longer holds it (killed?)."
            )
        file.seek(0)
        file.truncate()
        json.dump(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": " ".join(sys.argv),
            },
            file,
        )
        file.flush()
        self._file = file
        return self

    def _is_current(self, file) -> bool:
        """Whether `file` (open) is the file at `self.path` now, not a removed one."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(file.fileno())
        return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        """Removes the lock file, then drops the lock.

        The file is removed while locked, and `acquire` checks that the file
        it locked is still the one at the path: a trainer that opened the
        file before it was removed locks a removed file, notices, and locks
        the new one, so two trainers never both hold the lock.
        """
        if self._file is None:
            return
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ------------------------------------------------------------------- loading


def load_run(model_dir, dataset=None, data_dir=None, cache_dir=None):
    """Loads a training run's config and its newest good checkpoint.

    Args:
      model_dir: a directory written by `svae.training.train`.
      dataset: overrides the run's data set.
      data_dir: overrides the run's data directory.
      cache_dir: overrides the run's prepared-data folder (`""`: none).

    Returns:
      `(config, model, step)`: the `Config`, the restored `VAE` and the
      checkpoint's training step.

    Raises:
      RunError: a path that is not UTF-8, no such directory, no or an invalid
        config.json, no readable checkpoint, or a checkpoint that does not
        match the config.
    """
    check_utf8(model_dir)
    path = pathlib.Path(model_dir)
    if not path.is_dir():
        raise RunError(
            f"--model_dir={model_dir} does not exist. Pass the directory of a run "
            "written by train.py (it holds config.json and checkpoints/)."
        )
    config = run_state(path)
    if config is None:
        raise RunError(
            f"{path} has no {config_lib.CONFIG_FILE}: it is not a training run. "
            "Pass the --model_dir you gave train.py."
        )
    overrides = {"model_dir": str(path)}
    if dataset:
        overrides["dataset"] = dataset
    if data_dir:
        overrides["data_dir"] = data_dir
    if cache_dir is not None:
        overrides["cache_dir"] = cache_dir
    config = dataclasses.replace(config, **overrides)
    latest = good_checkpoint(path / CHECKPOINTS)
    if latest is None:
        raise RunError(
            f"{path / CHECKPOINTS} holds no checkpoint: train first "
            f"(python train.py --model_dir={path} ...) or wait for the first save."
        )
    model = models.build_model(config)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    restore(tf.train.Checkpoint(model=model, step=step), latest, path, partial=True)
    return config, model, int(step.numpy())


def restore(checkpoint, prefix, model_dir, partial=False) -> None:
    """Restores `checkpoint` from `prefix`; a mismatch is a `RunError`.

    The model's variables (`checkpoint.model`) must be those the checkpoint
    holds for its model, no more and no fewer: a variable of the checkpoint
    the model does not have (a `config.json` edited to drop a part of the
    likelihood) would otherwise be ignored. What the checkpoint holds besides
    the model (the optimizer) is not compared.

    Args:
      checkpoint: a `tf.train.Checkpoint` of the run's objects.
      prefix: the checkpoint's path prefix.
      model_dir: the run directory (for the message).
      partial: the checkpoint may hold more (an optimizer) than `checkpoint`.
    """
    config_path = pathlib.Path(model_dir) / config_lib.CONFIG_FILE

    def mismatch(why):
        return RunError(
            f"{prefix} does not match the model {config_path} describes ({why}). "
            "Was config.json edited, or the checkpoint copied from another run?"
        )

    model = getattr(checkpoint, "model", None)
    saved = checkpoints.saved_model_variables(prefix) if model is not None else None
    if saved is not None:
        built = checkpoints.model_variables(model)
        parts = []
        if saved - built:
            parts.append(
                "the checkpoint holds model variable(s) the model does not have: "
                + ", ".join(sorted(saved - built))
            )
        if built - saved:
            parts.append(
                "the model has variable(s) the checkpoint lacks: "
                + ", ".join(sorted(built - saved))
            )
        if parts:
            raise mismatch("; ".join(parts))
    try:
        status = checkpoint.read(str(prefix))
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        lines = str(e).strip().splitlines()
        raise mismatch(lines[0] if lines else type(e).__name__) from e
    if partial:
        status.expect_partial()


# ---------------------------------------------------------------- finding runs


def newest_run(root="runs") -> pathlib.Path:
    """Returns the newest finished run directory directly under `root`.

    What `evaluate.py`, `sample.py` and `export.py` use without `--model_dir`
    (`train.py` without one makes `runs/<model>-<dataset>-<time>/`). A folder
    of `root` is a finished run when

    - its `config.json` is valid (`run_state`);
    - it holds no `svae.lock` (`LOCK_FILE`): `RunLock` removes the file when
      its trainer exits, a running trainer holds it and a killed one leaves
      it behind (the folder is not probed for a live lock, which could make a
      trainer starting at that moment fail);
    - it holds a readable checkpoint (`good_checkpoint`), and with a fixed
      `steps` that checkpoint is of the last step (training always saves
      it). A run of `--epochs` stopped by an exception or Ctrl-C (its trainer
      exited) cannot be told from a finished one without its data set.

    The newest is the one whose checkpoint was written last (the run that
    finished last), not the one started last.

    Raises:
      RunError: no finished run under `root`; the message names each run
        skipped and why.
    """
    base = pathlib.Path(root)
    if not base.is_dir():
        raise RunError(
            f"No folder {base.absolute()}/ to take the newest finished run "
            "from: pass --model_dir=DIR, a run directory of train.py."
        )
    skipped, candidates = [], []
    for path in sorted(p for p in base.iterdir() if p.is_dir()):
        if not (path / config_lib.CONFIG_FILE).is_file():
            continue  # Not a run.
        steps = checkpoint_steps(path / CHECKPOINTS)
        if (path / LOCK_FILE).exists():
            skipped.append(f"{path}: being trained, or its trainer was killed")
        elif not steps:
            skipped.append(f"{path}: no checkpoint")
        else:
            written = max(
                (path / CHECKPOINTS / f"ckpt-{s}.index").stat().st_mtime for s in steps
            )
            candidates.append((written, str(path)))
    for _, name in sorted(candidates, reverse=True):
        path = pathlib.Path(name)
        try:
            config = run_state(path)
            prefix = good_checkpoint(path / CHECKPOINTS, quiet=True)
        except RunError as e:
            skipped.append(f"{path}: {e}")
            continue
        if config is None or prefix is None:
            continue  # Removed since it was listed.
        step = int(prefix.rsplit("-", 1)[1])
        if config.steps is not None and step != config.steps:
            skipped.append(f"{path}: stopped at step {step} of {config.steps}")
            continue
        return path
    why = f" Skipped: {'; '.join(skipped)}." if skipped else ""
    raise RunError(
        f"No finished run under {root}/ (a folder with config.json and a "
        f"readable checkpoint, whose trainer has exited).{why} Pass "
        "--model_dir=DIR, or train one first (python train.py)."
    )
