"""Tests of svae.cli: flags from the dataclasses, the newest run, quiet starts."""

import dataclasses
import errno
import importlib
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tiny
from absl import flags
from PIL import Image

from svae import cli, data, demo, evaluation, fields, figures, reproduce, runs
from svae import config as config_lib
from svae.cli import common
from svae.cli import evaluate as evaluate_cli
from svae.cli import export as export_cli
from svae.cli import sample as sample_cli
from svae.cli import train as train_cli
from svae.data import prepare
from svae.reproduce import command as reproduce_cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A flag default of data.default_cache_dir(), read when the test runs.
CACHE_DIR = "$SVAE_CACHE_DIR"


@pytest.mark.parametrize(
    "script, cls, extra, argv, defaults",
    [
        # train.py's and reproduce's cache_dir default to the prepared cache
        # ($SVAE_CACHE_DIR), train.py exports, and its likelihood is a
        # recipe's name: flag defaults that differ from their field's, on
        # purpose.
        (
            train_cli,
            config_lib.Config,
            set(),
            [],
            {
                "cache_dir": CACHE_DIR,
                "export": True,
                "likelihood": "default",
            },
        ),
        (evaluate_cli, evaluation.EvalConfig, {"compare"}, [], {}),
        (sample_cli, figures.SampleConfig, set(), [], {}),
        (demo, demo.DemoConfig, set(), [], {}),
        (
            reproduce_cli,
            reproduce.ReproduceConfig,
            {"dry_run", "no_progress"},
            [],
            {"cache_dir": CACHE_DIR},
        ),
        (
            prepare,
            prepare.PrepareConfig,
            set(),
            ["--dataset=celeb_a"],
            {"dataset": "celeb_a", "cache_dir": CACHE_DIR},
        ),
    ],
)
def test_flags_are_the_fields_of_the_config_dataclasses(
    script, cls, extra, argv, defaults
):
    flag_values = flags.FlagValues()
    script.define_flags(flag_values)
    names = {f.name: f for f in dataclasses.fields(cls)}
    assert set(flag_values) == names.keys() | extra
    flag_values(["prog", *argv])
    for name, field in names.items():
        default = None if field.default is dataclasses.MISSING else field.default
        expected = defaults.get(name, default)
        if expected == CACHE_DIR:
            expected = data.default_cache_dir()
        assert flag_values[name].value == expected, name
    for name, allowed in fields.field_ranges(cls).items():
        assert flag_values[name].help.endswith(f" Must be {allowed}."), name


def test_a_tuple_field_is_a_comma_list_flag():
    flag_values = flags.FlagValues()
    reproduce_cli.define_flags(flag_values)
    flag_values(["prog", "--models=structured,supn", "--likelihood=paper"])
    assert flag_values.models == ["structured", "supn"]
    assert flag_values.colors is None and flag_values.likelihood == "paper"
    with pytest.raises(flags.IllegalFlagValueError, match=r"one of <default\|paper>"):
        flag_values(["prog", "--likelihood=literal"])


def test_the_dataset_of_prepare_is_required():
    flag_values = flags.FlagValues()
    prepare.define_flags(flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match="--dataset"):
        flag_values(["prog", "--split=test"])


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


def test_flags_are_defined_and_parsed_without_tensorflow():
    # --help and a bad flag answer in a fraction of a second: every command
    # imports TensorFlow only after its flags are parsed (svae.cli).
    code = """
import sys
from absl import flags
from svae.cli import evaluate, export, sample, train
from svae import demo
from svae.reproduce import command as reproduce
from svae.selfcheck import command as selfcheck
from svae.data import prepare
modules = (train, evaluate, sample, export, demo, reproduce, selfcheck, prepare)
for module in modules:
    flag_values = flags.FlagValues()
    module.define_flags(flag_values)
    flag_values(["prog", "--dataset=celeb_a"] if module is prepare else ["prog"])
loaded = [name for name in sys.modules if name.startswith(("tensorflow", "keras"))]
print(sorted(loaded)[:5])
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


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


# ------------------------------------------- python -m svae.demo, reproduce, prepare

# Per command: a flag of its own, the flags it needs, values out of range
# (or of the wrong type) with the error each gives, and a value only `main`
# refuses with its message. Relative output folders: nothing may appear in
# the working folder.
COMMANDS = {
    "svae.demo": {
        "own": "--vae_steps",
        "needs": [],
        "bad": {
            "--seed=-1": "flag --seed=-1: must be in [0, 67108863], got -1",
            "--vae_steps=many": "flag --vae_steps=many: invalid literal",
        },
        "refused": (["--image_size=24"], "image_size must be a power of 2"),
    },
    "svae.reproduce": {
        "own": "--likelihood",
        "needs": [],
        "bad": {
            "--num_samples=0": "flag --num_samples=0: must be in [1, 5000], got 0",
            "--likelihood=literal": "flag --likelihood=literal: value should be",
        },
        "refused": (
            ["--dataset=lsun_church", "--models=supn"],
            "--models: Table 2 has vae_sph, vae_diag, beta_vae_diag, structured; "
            "got supn.",
        ),
    },
    "svae.data.prepare": {
        "own": "--image_size",
        "needs": ["--dataset=sample_photos", "--cache_dir=cache"],
        "bad": {"--image_size=4": "flag --image_size=4: must be >= 8, got 4"},
        "refused": ([], "sample_photos is made in memory at every start"),
    },
}


def _command(module, *args, cwd):
    """Runs `python -m module args` in `cwd`; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=tiny.script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("module", list(COMMANDS))
def test_commands_answer_help_and_refuse_bad_flags_before_any_work(module, tmp_path):
    case = COMMANDS[module]
    done = _command(module, "--helpshort", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"  {case['own']}:" in done.stdout and "--preset" not in done.stdout
    # A stray word is a usage error.
    done = _command(module, *case["needs"], "stray", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert (
        "FATAL Flags parsing error: unexpected argument(s) 'stray': "
        f"python -m {module} takes flags only (--name=value)."
    ) in done.stderr.splitlines()
    # A value out of range or of the wrong type: one line naming it.
    for arg, message in case["bad"].items():
        done = _command(module, *case["needs"], arg, cwd=tmp_path)
        assert done.returncode == 1 and done.stdout == "", done.stderr
        name = arg.partition("=")[0]
        (line,) = [line for line in done.stderr.splitlines() if name in line]
        assert line.startswith(f"FATAL Flags parsing error: {message}"), line
    # A value that only main refuses: one `svae: error:` line.
    args, message = case["refused"]
    done = _command(module, *case["needs"], *args, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "svae: error" in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"svae: error: {message}"), done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["evaluate.py", "sample.py"])
def test_unwritable_output_dir_is_one_error_line_before_any_work(
    tiny_run, tmp_path, name
):
    regular = tmp_path / "regular"
    regular.write_text("x")
    for output_dir, message in [
        (regular / "out", f"lies under {regular}, which is a file"),
        ("/proc/svae-out", "cannot be written"),
    ]:
        done = _script(
            name,
            f"--model_dir={tiny_run}",
            f"--output_dir={output_dir}",
            cwd=tmp_path,
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines() == [
            line for line in done.stderr.splitlines() if line.startswith("svae: error")
        ], done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"svae: error: --output_dir={output_dir} "), line
        assert message in line
        assert done.stdout == ""  # No table, no health: nothing was computed.
    assert [p.name for p in tmp_path.iterdir()] == ["regular"]


@pytest.mark.slow
def test_compare_of_a_broken_report_is_one_error_line(tmp_path):
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    for text, problem in [
        ("{}", "it has no model"),
        ("garbage", "it cannot be read as JSON"),
    ]:
        (run / "eval" / "test.json").write_text(text)
        done = _script("evaluate.py", f"--compare={run}", cwd=tmp_path)
        assert done.returncode == 1 and done.stdout == "", done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith(
            f"svae: error: {run}/eval/test.json is not an evaluation written by "
            f"evaluate.py ({problem}"
        ), line


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--mask=centre"],
            "--mask must be center, random or the path of an image file (light "
            "pixels = missing) of at most 16.8 million pixels, got 'centre': there "
            "is no such file (did you mean center?).",
        ),
        (
            ["--num=20"],
            "--num=20 is more than the 16 images of the sample_photos test split, "
            "and --inpaint fills one image per column: pass --num=16 or fewer, or "
            "another --split.",
        ),
    ],
)
def test_inpainting_that_cannot_be_done_is_one_error_line_before_any_work(
    tiny_run, tmp_path, args, message
):
    out = tmp_path / "out"
    done = _script(
        "sample.py",
        f"--model_dir={tiny_run}",
        f"--output_dir={out}",
        "--inpaint",
        *args,
        cwd=tmp_path,
    )
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert done.stderr.splitlines() == [f"svae: error: {message}"], done.stderr
    assert not out.exists()


@pytest.mark.slow
def test_inpainting_fills_the_images_a_split_of_bad_files_has(tiny_run, tmp_path):
    # 3 files, one bad: undecoded (--cache_dir=), the split counts 3 files,
    # and the figures get the 2 images there are.
    test = tmp_path / "photos" / "test"
    test.mkdir(parents=True)
    (tmp_path / "photos" / "train").mkdir()
    for index, value in enumerate((40, 200)):
        Image.fromarray(np.full((20, 20, 3), value, np.uint8)).save(
            test / f"{index}.png"
        )
    (test / "2.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    done = _script(
        "sample.py",
        f"--model_dir={tiny_run}",
        f"--output_dir={out}",
        f"--dataset=folder:{tmp_path / 'photos'}",
        "--cache_dir=",
        "--num=3",
        "--inpaint",
        "--scale=1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"inpainting: {out / 'inpainting.png'}" in done.stdout.splitlines()
    with Image.open(out / "inpainting.png") as figure:
        figure.verify()


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device", "eval/test.json"),
        tf.errors.ResourceExhaustedError(
            None, None, "runs/x/samples; No space left on device"
        ),
    ],
    ids=["python", "tensorflow"],
)
def test_a_full_disk_in_any_script_is_one_error_line(error, monkeypatch, capsys):
    # evaluate.py and sample.py write with Python and TensorFlow; neither
    # lists the error, common.run turns it into one line for every script.
    def main():
        raise error

    monkeypatch.setattr(sys, "argv", ["evaluate.py"])
    with pytest.raises(SystemExit) as done:
        common.run(main, lambda flag_values: None)
    assert done.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("svae: error: ")
    assert "No space left on device" in err[0] and "run the same command" in err[0]


def test_other_os_errors_are_not_taken_for_a_full_disk(monkeypatch):
    def main():
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(sys, "argv", ["evaluate.py"])
    with pytest.raises(PermissionError):
        common.run(main, lambda flag_values: None)


@pytest.mark.parametrize("package", ["svae", "svae.data", "svae.reproduce"])
def test_every_name_a_package_exports_resolves(package):
    # The packages import their names on first use (svae.lazy): each name of
    # `__all__` is found where the package says it is, and no other.
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute"):
        module.no_such_name  # noqa: B018
