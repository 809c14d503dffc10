"""Every bad input is a clear error: flag ranges, config.json, stray arguments."""

import dataclasses
import io
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tiny
from absl import flags
from PIL import Image

from svae import cli, drawing, evaluation, fields, figures, recipes, training
from svae import config as config_lib
from svae.cli import evaluate as evaluate_cli
from svae.cli import export as export_cli
from svae.cli import sample as sample_cli
from svae.cli import train as train_cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------ field ranges


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("steps", 0, "steps must be >= 1, got 0"),
        ("steps", -5, "steps must be >= 1, got -5"),
        ("epochs", 0, "epochs must be >= 1"),
        ("batch_size", 0, "batch_size must be >= 1, got 0"),
        ("batch_size", -1, "batch_size must be >= 1, got -1"),
        ("checkpoint_every", 0, "checkpoint_every must be >= 1"),
        ("summary_every", 0, "summary_every must be >= 1"),
        ("max_checkpoints", 0, "max_checkpoints must be >= 1"),
        ("learning_rate", 0.0, "learning_rate must be > 0, got 0.0"),
        ("learning_rate", math.inf, "learning_rate must be a finite number"),
        ("learning_rate", math.nan, "learning_rate must be a finite number"),
        ("likelihood", "papers", "must be one of the recipes default, paper"),
        ("kernel_size", 4, "kernel_size must be one of 3, 5, 7, got 4"),
        ("seed", -1, r"seed must be in \[0, 67108863\], got -1"),
        ("shuffle_buffer", -1, "shuffle_buffer must be >= 0"),
        ("alpha", -1.0, "alpha must be >= 0"),
        ("pretrain_epochs", -1, "pretrain_epochs must be >= 0"),
        ("image_size", 4, "image_size must be >= 8"),
        ("image_size", 48, "image_size must be a power of 2"),
        ("chroma_factor", 0, "chroma_factor must be >= 1"),
        ("chroma_factor", 3, "chroma_factor must divide image_size"),
        ("image_size", "64", "image_size must be an integer, got '64'"),
        ("epochs", True, "epochs must be an integer, got True"),
        ("model_dir", 3, "model_dir must be a string or None, got 3"),
        ("flip", "yes", "flip must be true or false, got 'yes'"),
    ],
)
def test_config_rejects_values_outside_their_range(field, value, says):
    with pytest.raises(ValueError, match=says):
        config_lib.Config(**{field: value})


def _numeric_fields(cls):
    """The int and float fields (optional or not) of a dataclass."""
    numeric = {int, float, int | None, float | None}
    return {f.name for f in dataclasses.fields(cls) if f.type in numeric}


@pytest.mark.parametrize(
    "cls",
    [
        config_lib.Config,
        evaluation.EvalConfig,
        figures.SampleConfig,
        recipes.Likelihood,
    ],
)
def test_every_numeric_field_has_a_range(cls):
    assert _numeric_fields(cls) == set(fields.field_ranges(cls))


def test_eval_and_sample_configs_check_their_ranges():
    with pytest.raises(ValueError, match=r"num_samples must be in \[1, 5000\]"):
        evaluation.EvalConfig(model_dir="run", num_samples=0)
    with pytest.raises(ValueError, match="max_images must be >= 1"):
        evaluation.EvalConfig(model_dir="run", max_images=0)
    with pytest.raises(ValueError, match="seed must be in"):
        evaluation.EvalConfig(model_dir="run", seed=2**31)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        figures.SampleConfig(model_dir="run", temperature=-0.5)
    with pytest.raises(ValueError, match=r"scale must be in \[1, 64\], got 0"):
        figures.SampleConfig(model_dir="run", scale=0)


def test_config_values_become_builtin_types():
    config = config_lib.Config(
        image_size=np.int64(16),
        learning_rate=1,
        alpha=np.float32(2.5),
        model_dir=pathlib.Path("runs") / "x",
    )
    assert type(config.image_size) is int and type(config.learning_rate) is float
    assert config.alpha == 2.5 and type(config.alpha) is float
    assert config.model_dir == os.path.join("runs", "x")
    assert config_lib.Config.from_json(config.to_json()) == config


# -------------------------------------------------------------- config.json


def _load_tampered(tmp_path, text):
    """Writes `text` as tmp_path/config.json and loads it."""
    path = tmp_path / config_lib.CONFIG_FILE
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return config_lib.load(tmp_path)


def _saved(**changes):
    """A valid config.json's fields, changed."""
    return json.loads(config_lib.Config().to_json()) | changes


@pytest.mark.parametrize(
    "text, says",
    [
        ('{"batch_size": 8,', r"is not valid JSON: .* at line 1, column 18"),
        ("[1, 2]", "must hold a JSON object"),
        (
            json.dumps(_saved(imagesize=64)),
            r"unknown field\(s\) 'imagesize' \(did you mean 'image_size'\?\)",
        ),
        (
            json.dumps(_saved(colour_space="rgb")),
            "unknown field.*'colour_space'.*The fields of svae.config.Config: "
            "dataset, ",
        ),
        (
            json.dumps(_saved(image_size="64")),
            "image_size must be an integer, got '64'",
        ),
        (json.dumps(_saved(learning_rate="fast")), "learning_rate must be a finite"),
        (json.dumps(_saved(steps=True)), "steps must be an integer or None, got True"),
        (json.dumps(_saved(batch_size=0)), "batch_size must be >= 1, got 0"),
        (
            '{"likelihood": {"dominance": NaN}}',
            "likelihood: dominance must be a finite number, got nan",
        ),
        (b'{"model": "\xff"}', "cannot be read"),
    ],
)
def test_tampered_config_json_names_the_file_and_the_field(tmp_path, text, says):
    with pytest.raises(ValueError, match=says) as error:
        _load_tampered(tmp_path, text)
    assert str(tmp_path / config_lib.CONFIG_FILE) in str(error.value)


def test_config_json_without_newer_likelihood_fields_still_loads(tmp_path):
    old = _saved()
    del old["likelihood"]["contrast_scale"]
    loaded = _load_tampered(tmp_path, json.dumps(old))
    # Runs before the contrast scale were trained without it: the paper's.
    assert loaded.likelihood == dataclasses.replace(
        recipes.DEFAULT, contrast_scale=False
    )


def test_train_on_a_tampered_run_is_a_value_error(tmp_path):
    config = config_lib.Config(model_dir=str(tmp_path), image_size=16, steps=1)
    (tmp_path / config_lib.CONFIG_FILE).write_text(json.dumps(_saved(image_size="16")))
    with pytest.raises(ValueError, match="config.json.*image_size must be an int"):
        training.train(config)


# ------------------------------------------------------------------- flags


def _flag_values(script):
    """A fresh FlagValues with the flags of a script (`svae.cli.train`, ...)."""
    flag_values = flags.FlagValues()
    script.define_flags(flag_values)
    return flag_values


def test_numeric_flags_are_bounded_by_their_fields():
    flag_values = _flag_values(train_cli)
    assert flag_values(["train.py", "--batch_size=2", "--likelihood=paper"])
    assert flag_values.steps is None  # An unset optional flag passes.
    assert "Must be >= 1." in flag_values["batch_size"].help
    for argv, says in [
        (["--steps=0"], "flag --steps=0: must be >= 1, got 0"),
        (["--batch_size=-1"], "flag --batch_size=-1: must be >= 1, got -1"),
        (["--learning_rate=0"], "flag --learning_rate=0.0: must be > 0"),
        (["--likelihood=papers"], "flag --likelihood=papers: value should be one"),
        (["--checkpoint_every=0"], "flag --checkpoint_every=0: must be >= 1"),
        (["--kernel_size=4"], "flag --kernel_size=4: must be one of 3, 5, 7"),
    ]:
        flag_values.unparse_flags()
        with pytest.raises(flags.IllegalFlagValueError, match=says):
            flag_values(["train.py", *argv])


def test_eval_sample_and_export_flags_are_bounded():
    for script, argv in [
        (evaluate_cli, "--num_samples=0"),
        (evaluate_cli, "--max_images=0"),
        (sample_cli, "--temperature=-1"),
        (sample_cli, "--num=0"),
        (export_cli, "--version=-3"),
    ]:
        with pytest.raises(flags.IllegalFlagValueError, match=argv):
            _flag_values(script)(["prog", argv])
    # bound_flags on flags that are no field.
    flag_values = flags.FlagValues()
    flags.DEFINE_integer("version", None, "?", flag_values=flag_values)
    cli.bound_flags(ranges={"version": fields.Range(ge=1)}, flag_values=flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match="--version=-3"):
        flag_values(["export.py", "--version=-3"])


def test_positional_arguments_are_a_usage_error(capsys):
    flag_values = _flag_values(train_cli)
    assert cli.parse_flags(["train.py", "--steps=3"], flag_values) == ["train.py"]
    flag_values.unparse_flags()
    with pytest.raises(SystemExit) as exit_:
        cli.parse_flags(["train.py", "foo", "steps=5"], flag_values)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "unexpected argument(s) 'foo' 'steps=5'" in err
    assert "did you mean --steps=5?" in err and "train.py takes flags only" in err


def test_resource_flags_have_upper_bounds():
    for script, argv, says in [
        (
            evaluate_cli,
            "--num_samples=2000000000",
            r"must be in \[1, 5000\], got 2000000000: the limit of the exported "
            "log_prob signature",
        ),
        (evaluate_cli, "--num_samples=5001", r"must be in \[1, 5000\], got 5001"),
        (evaluate_cli, "--sample_chunk=5001", r"must be in \[1, 5000\], got 5001"),
        (
            sample_cli,
            "--scale=3000",
            r"must be in \[1, 64\], got 3000: figures of 64x64 images at a larger "
            "scale need over 24 GiB",
        ),
        (sample_cli, "--num=65", r"must be in \[1, 64\], got 65"),
        (evaluate_cli, "--batch_size=257", r"must be in \[1, 256\], got 257"),
        (evaluate_cli, "--num_prior=4097", r"must be in \[1, 4096\], got 4097"),
        (evaluate_cli, "--health_images=4097", r"must be in \[1, 4096\], got 4097"),
    ]:
        with pytest.raises(flags.IllegalFlagValueError, match=f"{argv}: {says}"):
            _flag_values(script)(["prog", argv])
    # The bounds themselves are allowed.
    _flag_values(evaluate_cli)(["prog", "--num_samples=5000", "--sample_chunk=5000"])
    _flag_values(evaluate_cli)(
        ["prog", "--batch_size=256", "--num_prior=4096", "--health_images=4096"]
    )
    _flag_values(sample_cli)(["prog", "--num=64", "--scale=64"])
    with pytest.raises(ValueError, match="scale must be in"):
        figures.SampleConfig(model_dir="run", scale=65)


class _CanvasError(Exception):
    """The size of the figure's canvas, raised before it is allocated."""


def test_the_largest_figure_of_64x64_images_fits_in_24_gib(monkeypatch):
    """inpainting.png at the largest --num and --scale: Pillow's 4 bytes a pixel."""
    new = drawing.Image.new

    def measured(mode, size, *args):
        """Image.new, except that the canvas raises its size."""
        if size[0] * size[1] > 1:
            raise _CanvasError(size)
        return new(mode, size, *args)

    monkeypatch.setattr(drawing.Image, "new", measured)
    rows = [np.zeros((config_lib.MAX_FIGURE_IMAGES, 64, 64, 3))] * 5
    labels = ["unconditional mean", "conditional sample", "input", "a", "b"]
    need = {}
    for scale in (config_lib.MAX_SCALE, 2 * config_lib.MAX_SCALE):
        with pytest.raises(_CanvasError) as canvas:
            drawing.save_grid(rows, labels, "unused.png", scale, "inpainting")
        width, height = canvas.value.args[0]
        need[scale] = 4 * width * height / 2**30
    assert 19 < need[config_lib.MAX_SCALE] < 21  # GiB, and TensorFlow's 1-2.
    assert need[2 * config_lib.MAX_SCALE] > 24


def _png(pixels) -> bytes:
    """A PNG of gray pixels."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "mask, says",
    [
        ("centre", "there is no such file (did you mean center?)."),
        ("Random", "there is no such file (did you mean random?)."),
        ("nope.png", "there is no such file."),
        ("", "it is empty."),
        ("folder", "it is a folder."),
        ("notes.txt", "it cannot be read as an image (cannot identify image file"),
        ("truncated.png", "it cannot be read as an image (image file is truncated"),
        ("huge.png", "it is 4097 x 4096 pixels."),
    ],
)
def test_a_mask_that_is_no_usable_image_is_refused(tmp_path, monkeypatch, mask, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    whole = _png(np.random.default_rng(0).integers(0, 256, (64, 64)))
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "huge.png").write_bytes(_png(np.zeros((4096, 4097))))
    with pytest.raises(ValueError) as error:
        figures.SampleConfig(model_dir="run", mask=mask)
    message = str(error.value)
    assert message.startswith(
        "--mask must be center, random or the path of an image file (light "
        f"pixels = missing) of at most 16.8 million pixels, got {mask!r}: "
    ), message
    assert says in message and "\n" not in message


def test_a_mask_image_is_read_as_its_light_pixels(tmp_path):
    pixels = np.zeros((4, 4))
    pixels[:2] = 255  # The top half is missing.
    (tmp_path / "mask.png").write_bytes(_png(pixels))
    path = str(tmp_path / "mask.png")
    assert figures.SampleConfig(model_dir="run", mask=path).mask == path
    mask = figures.inpainting_mask(path, 2, 8)
    assert mask.shape == (2, 8, 8) and not mask[:, :4].any() and mask[:, 4:].all()


# ------------------------------------------------------ the scripts, end to end


def _run(script, *args, env=None):
    """Runs a script; returns (exit status, stderr)."""
    environment = tiny.script_env()
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        env=environment | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stderr


@pytest.mark.slow
def test_scripts_reject_bad_flags_and_stray_arguments_before_any_work(tmp_path):
    run = tmp_path / "run"
    status, err = _run("train.py", "--steps=0", "--batch_size=0", f"--model_dir={run}")
    assert status == 1 and "FATAL Flags parsing error" in err
    assert "--steps=0: must be >= 1" in err and "--batch_size=0: must be >= 1" in err
    assert not run.exists()
    status, err = _run("evaluate.py", f"--model_dir={run}", "stray")
    assert status == 1 and "unexpected argument(s) 'stray'" in err
    status, err = _run("sample.py", f"--model_dir={run}", "--num=0")
    assert status == 1 and "--num=0: must be in [1, 64], got 0" in err
    status, err = _run("sample.py", f"--model_dir={run}", "--scale=3000")
    assert status == 1 and "--scale=3000: must be in [1, 64], got 3000" in err
    status, err = _run("evaluate.py", f"--model_dir={run}", "--num_samples=2000000000")
    assert status == 1 and "--num_samples=2000000000: must be in [1, 5000]" in err
    status, err = _run("export.py", f"--model_dir={run}", "--version=-3")
    assert status == 1 and "--version=-3: must be >= 1" in err
    assert not run.exists()


@pytest.mark.slow
def test_folder_of_non_images_is_one_clear_line_without_traceback(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        (folder / f"notes{index}.txt").write_text("not an image")
        (folder / f"fake{index}.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    status, err = _run(
        "train.py",
        f"--dataset=folder:{folder}",
        f"--model_dir={tmp_path / 'run'}",
        f"--cache_dir={tmp_path / 'cache'}",
        "--steps=1",
        "--noprogress",
        # TensorFlow's own warnings on: they printed the tracebacks.
        env={"TF_CPP_MIN_LOG_LEVEL": "0"},
    )
    assert status == 1
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("svae: error:")]
    assert len(errors) == 1 and f"No image of folder:{folder}" in errors[0]
    assert not (tmp_path / "run").exists()
