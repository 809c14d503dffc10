"""Tests of svae.cli: flags from the dataclasses, the newest run, quiet starts."""

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf
from absl import flags

from svae import cli, data, evaluation, figures, runs
from svae import config as config_lib
from svae.cli import common
from svae.cli import evaluate as evaluate_cli
from svae.cli import export as export_cli
from svae.cli import sample as sample_cli
from svae.cli import train as train_cli

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Flags whose default differs from their field's, on purpose (svae.cli.train).
TRAIN_DEFAULTS = {"cache_dir", "export"}


@pytest.mark.parametrize(
    "script, cls, extra",
    [
        (train_cli, config_lib.Config, {"preset"}),
        (evaluate_cli, evaluation.EvalConfig, {"compare"}),
        (sample_cli, figures.SampleConfig, set()),
    ],
)
def test_flags_are_the_fields_of_the_config_dataclasses(script, cls, extra):
    flag_values = flags.FlagValues()
    script.define_flags(flag_values)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(flag_values) == fields.keys() | extra
    flag_values(["prog"])
    for name, field in fields.items():
        if script is train_cli and name in TRAIN_DEFAULTS:
            continue
        default = None if field.default is dataclasses.MISSING else field.default
        assert flag_values[name].value == default, name
    for name, allowed in config_lib.field_ranges(cls).items():
        assert flag_values[name].help.endswith(f" Must be {allowed}."), name
    if script is train_cli:
        assert flag_values.export is True
        assert flag_values.cache_dir == data.default_cache_dir()


def test_a_field_without_a_help_is_an_error():
    helps = dict(evaluate_cli.HELPS)
    del helps["num_prior"]
    with pytest.raises(ValueError, match=r"missing: num_prior; no such field: none"):
        common.define_flags(
            evaluation.EvalConfig, helps, flag_values=flags.FlagValues()
        )


def test_export_version_is_bounded():
    flag_values = flags.FlagValues()
    export_cli.define_flags(flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match="--version=0: must be >="):
        flag_values(["export.py", "--version=0"])


# ----------------------------------------------------------- the newest run


def _fake_run(root, name, steps=3, step=3, written=0.0, checkpoint=True):
    """A run folder: config.json and a tiny readable checkpoint of `step`."""
    path = root / name
    runs.write_config(config_lib.Config(model_dir=str(path), steps=steps), path)
    if checkpoint:
        prefix = path / runs.CHECKPOINTS / f"ckpt-{step}"
        tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])).write(str(prefix))
        os.utime(f"{prefix}.index", (written, written))
    return path


def test_newest_run_is_the_last_finished_one(tmp_path):
    root = tmp_path / "runs"
    _fake_run(root, "a-older", written=1000)
    newest = _fake_run(root, "b-newest", written=2000)
    _fake_run(root, "z-started-first", written=1500)
    assert runs.newest_run(root) == newest
    # Newer ones that are not finished are skipped.
    training = _fake_run(root, "c-training", written=3000)
    (training / runs.LOCK_FILE).write_text("{}")
    _fake_run(root, "d-stopped", step=2, written=3000)
    broken = _fake_run(root, "e-broken", written=3000)
    (broken / runs.CHECKPOINTS / "ckpt-3.index").write_bytes(b"garbage")
    os.utime(broken / runs.CHECKPOINTS / "ckpt-3.index", (3000, 3000))
    _fake_run(root, "f-no-checkpoint", checkpoint=False)
    (root / "g-not-a-run").mkdir()
    (root / "notes.txt").write_text("not a folder")
    assert runs.newest_run(root) == newest
    # A run of --epochs (steps=None) is finished once its trainer has exited.
    epochs = _fake_run(root, "h-epochs", steps=None, step=7, written=4000)
    assert runs.newest_run(root) == epochs


def test_no_finished_run_is_an_error_naming_why(tmp_path):
    with pytest.raises(
        runs.RunError, match=f"No folder {tmp_path}/runs/ .*--model_dir"
    ):
        runs.newest_run(str(tmp_path / "runs"))
    root = tmp_path / "runs"
    training = _fake_run(root, "training")
    (training / runs.LOCK_FILE).write_text("{}")
    _fake_run(root, "stopped", step=2)
    with pytest.raises(runs.RunError) as error:
        runs.newest_run(root)
    message = str(error.value)
    assert f"No finished run under {root}/" in message
    assert f"{root / 'training'}: being trained, or its trainer was killed" in message
    assert f"{root / 'stopped'}: stopped at step 2 of 3" in message
    assert "Pass --model_dir=DIR" in message


def _env(**extra):
    """The environment of a script: no TF_CPP_MIN_LOG_LEVEL unless given."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.pop("TF_CONFIG", None)
    return env | {"PYTHONPATH": str(ROOT)} | extra


def _script(name, *args, cwd, env=None, timeout=300):
    """Runs `ROOT/name args` in `cwd`; returns the finished process."""
    return subprocess.run(
        [sys.executable, str(ROOT / name), *args],
        cwd=cwd,
        env=_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_evaluate_without_model_dir_uses_the_newest_finished_run(tiny_run, tmp_path):
    # Without the evaluation other tests may have written into tiny_run.
    shutil.copytree(
        tiny_run,
        tmp_path / "runs" / "structured-x",
        ignore=shutil.ignore_patterns("eval"),
    )
    done = _script(
        "evaluate.py",
        "--num_samples=2",
        "--max_images=2",
        "--health_images=2",
        "--num_prior=2",
        "--noprogress",
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first == "svae: using the newest finished run runs/structured-x"
    assert "oneDNN" not in done.stderr and "cuInit" not in done.stderr
    assert (tmp_path / "runs" / "structured-x" / "eval" / "test.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--help", "--helpfull"])
def test_help_is_printed_with_exit_status_0(tmp_path, flag):
    done = _script("evaluate.py", flag, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--num_samples" in done.stdout


@pytest.mark.slow
def test_scripts_start_without_tensorflow_banners(tmp_path):
    missing = tmp_path / "nope"
    for env, banners in [(_env(), False), (_env(TF_CPP_MIN_LOG_LEVEL="0"), True)]:
        done = _script("export.py", f"--model_dir={missing}", cwd=tmp_path, env=env)
        assert done.returncode == 1
        lines = done.stderr.splitlines()
        assert lines[-1] == (
            f"svae: error: --model_dir={missing} does not exist. Pass the directory "
            "of a run written by train.py (it holds config.json and checkpoints/)."
        )
        # oneDNN's line is printed while TensorFlow is imported, before its
        # logging reads TF_CPP_MIN_LOG_LEVEL: svae.cli filters it.
        assert any("oneDNN" in line for line in lines) == banners, done.stderr
        assert (len(lines) == 1) != banners, done.stderr
    # No run under runs/ at all: one clear line.
    done = _script("sample.py", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"svae: error: No folder {tmp_path}/runs/ to"), (
        done.stderr
    )


@pytest.mark.parametrize(
    "line, level, shown",
    [
        (b"I0000 00:00:1796146490.519341    3188 port.cc:153] oneDNN ...\n", 1, False),
        (b"I0000 00:00:1796146490.519341    3188 port.cc:153] oneDNN ...\n", 0, True),
        (b"W0000 00:00:1796146490.5 12 x.cc:1] warning\n", 2, False),
        (b"W0000 00:00:1796146490.5 12 x.cc:1] warning\n", 1, True),
        (b"E0000 00:00:1796146493.336276 3188 cuda_platform.cc:52] cuInit\n", 3, False),
        (b"E0000 00:00:1796146493.336276 3188 cuda_platform.cc:52] cuInit\n", 2, True),
        (
            b"2026-12-01 10:00:00.000001: W tensorflow/core/x.cc:12] old format\n",
            2,
            False,
        ),
        (
            b"2026-12-01 10:00:00.000001: E tensorflow/core/x.cc:12] old format\n",
            2,
            True,
        ),
        (
            b"WARNING: All log messages before absl::InitializeLog() is called\n",
            2,
            False,
        ),
        (b"Traceback (most recent call last):\n", 3, True),
        (b"svae: error: something\n", 3, True),
    ],
)
def test_only_log_lines_below_the_level_are_filtered(line, level, shown):
    assert cli._shown(line, level) == shown
