"""Tests of svae.runs: no silent restart, the newest readable checkpoint, the lock.

Each test damages a copy of one tiny run the way issue 13 found runs lost:
deleted or truncated checkpoint files, a garbage index, a deleted
config.json, two trainers on one folder, a trainer killed with its lock.
"""

import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
import tiny

from svae import config as config_lib
from svae import evaluation, export, files, models, runs, training

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(model_dir, **kwargs):
    """A tiny vae_diag run checkpointed every 2 steps."""
    defaults = dict(
        model="vae_diag",
        latent_dim=4,
        steps=6,
        checkpoint_every=2,
        max_checkpoints=10,
        export=False,
    )
    return tiny.config(model_dir, **(defaults | kwargs))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run with checkpoints at steps 2, 4 and 6."""
    model_dir = tmp_path_factory.mktemp("trained") / "run"
    training.train(_config(model_dir))
    return model_dir


@pytest.fixture
def run(trained, tmp_path):
    """A private copy of `trained`, to damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _files(model_dir):
    """`{relative path: (size, mtime)}` of every checkpoint file."""
    folder = pathlib.Path(model_dir) / "checkpoints"
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.iterdir()
        if p.name.startswith("ckpt-")
    }


def _resume(model_dir, steps=8):
    """Resumes the run to `steps`; returns the first step it trained."""
    first = []
    training.train(
        _config(model_dir, steps=steps),
        callback=lambda step, _: first or first.append(step),
    )
    return first[0] if first else None


def _truncate(path, size=10):
    with open(path, "r+b") as file:
        file.truncate(size)


def test_checkpoint_steps_and_reading(trained):
    folder = trained / "checkpoints"
    assert runs.checkpoint_steps(folder) == [6, 4, 2]
    assert runs.read_checkpoint(folder / "ckpt-6") is None
    assert runs.good_checkpoint(folder) == str(folder / "ckpt-6")
    assert (folder / config_lib.CONFIG_FILE).read_text() == (
        trained / config_lib.CONFIG_FILE
    ).read_text()


@pytest.mark.slow
def test_deleted_newest_checkpoint_resumes_from_the_one_before(run, capsys):
    for path in (run / "checkpoints").glob("ckpt-6.*"):
        path.unlink()
    before = _files(run)
    assert _resume(run) == 5
    after = _files(run)
    # ckpt-2 and ckpt-4 are the old files, untouched; 6 and 8 new.
    for name in ("ckpt-2.index", "ckpt-4.index"):
        assert after[name] == before[name]
    assert runs.checkpoint_steps(run / "checkpoints") == [8, 6, 4, 2]
    assert "resuming from step 4" in capsys.readouterr().out


@pytest.mark.slow
def test_garbage_index_is_repaired_and_resumed(run, capsys):
    index = run / "checkpoints" / "checkpoint"
    index.write_text("this is not a checkpoint state {{{")
    assert _resume(run) == 7
    assert 'model_checkpoint_path: "ckpt-8"' in index.read_text()
    assert tf.train.latest_checkpoint(run / "checkpoints").endswith("ckpt-8")
    # The index lists every checkpoint again, so max_checkpoints applies.
    state = tf.train.get_checkpoint_state(str(run / "checkpoints"))
    assert len(state.all_model_checkpoint_paths) == 4


@pytest.mark.slow
@pytest.mark.parametrize("part", ["index", "data"])
def test_truncated_newest_checkpoint_is_skipped_with_a_warning(run, part, capsys):
    pattern = "ckpt-6.index" if part == "index" else "ckpt-6.data-*"
    for path in (run / "checkpoints").glob(pattern):
        _truncate(path)
    config, _, step = evaluation.load_run(run)
    assert step == 4
    err = capsys.readouterr().err
    assert "ckpt-6" in err and "Using ckpt-4" in err
    assert _resume(run) == 5


def test_no_readable_checkpoint_is_an_error_not_a_restart(run):
    for path in (run / "checkpoints").glob("ckpt-*.index"):
        _truncate(path)
    before = _files(run)
    with pytest.raises(runs.RunError, match="No checkpoint .* can be read"):
        training.train(_config(run, steps=8))
    with pytest.raises(runs.RunError, match="No checkpoint .* can be read"):
        evaluation.load_run(run)
    assert _files(run) == before


def test_missing_config_is_an_error_that_says_how_to_recover(run):
    (run / config_lib.CONFIG_FILE).unlink()
    before = _files(run)
    with pytest.raises(runs.RunError, match="no config.json") as error:
        training.train(_config(run, steps=8))
    assert "cp " in str(error.value)
    assert _files(run) == before
    with pytest.raises(runs.RunError, match="no config.json"):
        evaluation.load_run(run)
    # Without the backup either: still an error, never a fresh run.
    (run / "checkpoints" / config_lib.CONFIG_FILE).unlink()
    with pytest.raises(runs.RunError, match="neither be resumed"):
        training.train(_config(run, steps=8))
    assert _files(run) == before


def test_recovery_by_the_backup(run):
    (run / config_lib.CONFIG_FILE).unlink()
    shutil.copy(run / "checkpoints" / config_lib.CONFIG_FILE, run)
    assert _resume(run) == 7


def test_checkpoint_that_does_not_match_the_config(run):
    saved = json.loads((run / config_lib.CONFIG_FILE).read_text())
    saved["latent_dim"] = 5
    (run / config_lib.CONFIG_FILE).write_text(json.dumps(saved))
    with pytest.raises(runs.RunError, match="ckpt-6 does not match .*config.json"):
        evaluation.load_run(run)


def test_checkpoint_with_other_model_variables_than_the_config(run):
    # config.json edited to drop the contrast scale: the checkpoint's slope
    # would be ignored.
    path = run / config_lib.CONFIG_FILE
    original = path.read_text()
    saved = json.loads(original)
    assert saved["likelihood"]["contrast_scale"] is True
    saved["likelihood"]["contrast_scale"] = False
    path.write_text(json.dumps(saved))
    extra = (
        "ckpt-6 does not match the model .*config.json describes \\(the "
        "checkpoint holds model variable\\(s\\) the model does not have: "
        "contrast_scale/slope_variable\\)"
    )
    with pytest.raises(runs.RunError, match=extra):
        evaluation.load_run(run)
    edited = config_lib.load(run)
    with pytest.raises(runs.RunError, match=extra):
        training.train(dataclasses.replace(edited, model_dir=str(run), steps=8))
    assert runs.checkpoint_steps(run / "checkpoints") == [6, 4, 2]
    # A checkpoint without the slope, under the config that has it.
    model = models.build_model(edited)
    step = tf.Variable(10, dtype=tf.int64)
    tf.train.Checkpoint(model=model, step=step).write(str(run / "checkpoints/ckpt-10"))
    path.write_text(original)
    lacks = "the model has variable\\(s\\) the checkpoint lacks: contrast_scale/"
    with pytest.raises(runs.RunError, match="ckpt-10 does not match .*" + lacks):
        evaluation.load_run(run)


@pytest.mark.parametrize(
    "where, message",
    [
        ("file", "is a file"),
        ("under_file", "lies under"),
        ("proc", "cannot be written"),
    ],
)
def test_unusable_model_dir_fails_before_any_work(tmp_path, where, message):
    regular = tmp_path / "regular"
    regular.write_text("x")
    path = {
        "file": regular,
        "under_file": regular / "run",
        "proc": pathlib.Path("/proc/svae-run"),
    }[where]
    start = time.perf_counter()
    with pytest.raises(runs.RunError, match=message):
        training.train(_config(path))
    assert time.perf_counter() - start < 5  # before the data loads


def test_non_utf8_model_dir_is_refused_before_anything_is_written(tmp_path):
    # TensorFlow takes UTF-8 paths only: such a run once got its config.json
    # and then failed. Python carries the byte as a lone surrogate.
    bad = os.fsdecode(os.fsencode(tmp_path) + b"/run\xff")
    with pytest.raises(runs.RunError) as error:
        training.train(_config(bad))
    assert str(error.value) == (
        f"--model_dir={tmp_path}/run\\xff is not valid UTF-8 (byte 0xff), and "
        "TensorFlow reads and writes UTF-8 paths only: rename the folder, or "
        "pass another."
    )
    with pytest.raises(runs.RunError, match="--export_dir=.* is not valid UTF-8"):
        export.export(str(tmp_path / "no-run"), bad)
    with pytest.raises(runs.RunError, match="--model_dir=.* is not valid UTF-8"):
        evaluation.load_run(bad)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "umask, file_mode, folder_mode",
    [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
    ids=["umask 022", "umask 027"],
)
def test_files_are_made_with_the_usual_permissions(
    tmp_path, umask, file_mode, folder_mode
):
    # tempfile's 0600 and 0700 kept a server of another user (TF Serving) from
    # reading config.json and the export folders renamed into place.
    previous = os.umask(umask)
    try:
        runs.write_config(_config(tmp_path), tmp_path)
        files.write_json(tmp_path / "report.json", {"a": 1})
        scratch = files.scratch_dir(tmp_path, ".export-")
    finally:
        os.umask(previous)
    for path in (
        tmp_path / "config.json",
        tmp_path / "checkpoints" / "config.json",
        tmp_path / "report.json",
    ):
        assert path.stat().st_mode & 0o777 == file_mode, path
    assert scratch.stat().st_mode & 0o777 == folder_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        scratch.name,
        "checkpoints",
        "config.json",
        "report.json",
    ]


def test_a_run_past_the_steps_asked_cannot_be_resumed(trained):
    # trained is at step 6: fewer --steps would only rewrite its config.json.
    with pytest.raises(runs.RunError) as error:
        runs.check_steps(6, 4, trained)
    assert str(error.value).startswith(
        f"{trained} holds a run at step 6, and this command asks it to end at "
        "step 4: training does not go back. Pass --steps >= 6"
    )
    runs.check_steps(6, 6, trained)
    # What reproduce and the demo check before any work.
    shorter = {"run": _config(trained, steps=4), "same": _config(trained)}
    found = runs.unresumable(shorter | {"longer": _config(trained, steps=8)})
    assert list(found) == ["run"] and found["run"][1] == {"steps": (6, 4)}


def test_failed_start_leaves_no_folder(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        training.train(_config(tmp_path / "new", batch_size=10_000))
    assert not (tmp_path / "new").exists()


def test_second_trainer_fails_naming_the_holder(run):
    with runs.RunLock(run):
        with pytest.raises(runs.RunError, match=f"pid {os.getpid()}"):
            training.train(_config(run, steps=8))
        info = json.loads((run / runs.LOCK_FILE).read_text())
        assert info["pid"] == os.getpid()
    assert not (run / runs.LOCK_FILE).exists()


def test_lock_released_between_open_and_flock_is_never_held_twice(
    tmp_path, monkeypatch
):
    # B opens svae.lock, A releases (removes the file, unlocks), then B locks:
    # B's lock is on a removed file, so a third trainer C would get one too.
    first = runs.RunLock(tmp_path).acquire()
    flock = runs.fcntl.flock
    interleaved = []

    def release_first_then_flock(file, operation):
        if operation & runs.fcntl.LOCK_EX and not interleaved:
            interleaved.append(True)
            first.release()
        return flock(file, operation)

    monkeypatch.setattr(runs.fcntl, "flock", release_first_then_flock)
    second = runs.RunLock(tmp_path).acquire()
    assert interleaved
    with pytest.raises(runs.RunError, match=f"pid {os.getpid()}"):
        runs.RunLock(tmp_path).acquire()
    second.release()
    runs.RunLock(tmp_path).acquire().release()


_HOLD = """
import sys, time
from svae import runs
lock = runs.RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_lock_of_a_killed_trainer_is_taken_over(run, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(run)],
        stdout=subprocess.PIPE,
        text=True,
        env=tiny.script_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunError, match=f"pid {holder.pid}"):
            runs.RunLock(run).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / runs.LOCK_FILE).exists()  # left behind by kill -9
    assert _resume(run) == 7
    assert f"left by pid {holder.pid}" in capsys.readouterr().err


def test_strict_json():
    value = {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}}
    assert runs.strict(value) == {"a": None, "b": [1.0, None], "c": {"d": None}}


def test_diverging_step_is_never_saved_as_good(tmp_path):
    # Step 1's loss is finite, but its update takes the weights to ~1e6,
    # where the loss is not: those weights must not become a checkpoint.
    config = _config(tmp_path / "run", learning_rate=1e6, checkpoint_every=1)
    with pytest.raises(training.NonFiniteLossError, match="weights after step 1"):
        training.train(config)
    assert runs.checkpoint_steps(tmp_path / "run" / "checkpoints") == []


def test_evaluation_of_broken_weights_is_an_error_and_writes_nothing(run):
    config, model, _ = evaluation.load_run(run)
    weight = model.weights[0]
    weight.assign(tf.fill(weight.shape, float("nan")))
    step = tf.Variable(10, dtype=tf.int64)
    tf.train.Checkpoint(model=model, step=step).write(str(run / "checkpoints/ckpt-10"))
    eval_config = evaluation.EvalConfig(
        model_dir=str(run), num_samples=2, max_images=8, progress=False
    )
    with pytest.raises(evaluation.EvaluationError, match="non-finite nll on 8 of 8"):
        evaluation.evaluate(eval_config)
    assert not (run / evaluation.EVAL_DIR / "test.json").exists()
