"""Tests of the `make demo` job, at a tiny size."""

import json
import pathlib

import numpy as np
import pytest
import tiny
from PIL import Image

from svae import demo, runs


@pytest.mark.parametrize(
    "values, message",
    [
        ({"seed": -1}, "seed must be in"),
        ({"vae_steps": 0}, "vae_steps must be >= 1"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"num_images": 1.5}, "num_images must be an integer"),
    ],
)
def test_budget_out_of_range_is_an_error_naming_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        demo.DemoConfig(**values)


def test_a_value_no_run_accepts_is_an_error_before_anything_is_written(tmp_path):
    # In DemoConfig's range, but no power of 2: the runs' Config refuses it.
    config = demo.DemoConfig(output_dir=str(tmp_path / "demo"), image_size=24)
    with pytest.raises(ValueError, match="image_size must be a power of 2"):
        demo.run(config)
    assert not (tmp_path / "demo").exists()


def _demo(*args, cwd):
    """Runs `python -m svae.demo args` in `cwd`; returns the finished process."""
    return tiny.run_python(
        "-m", "svae.demo", "--noprogress", *args, cwd=cwd, timeout=300
    )


def _tree(folder):
    """{path: bytes or None (a folder)} of everything under `folder`."""
    return {p: None if p.is_dir() else p.read_bytes() for p in folder.rglob("*")}


def test_a_seed_out_of_range_is_a_usage_error(tmp_path):
    done = _demo("--seed=-1", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(
        "FATAL Flags parsing error: flag --seed=-1: must be in [0, "
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "field, value", [("num_samples", 5001), ("num_figure_images", 65)]
)
def test_evaluation_and_figure_sizes_are_bounded_before_training(field, value):
    # As evaluate.py's and sample.py's: the demo builds those configs only
    # after training, so its own fields carry their bounds.
    with pytest.raises(ValueError, match=f"{field} must be in \\[1, "):
        demo.DemoConfig(**{field: value})


def _under_a_file(tmp_path):
    """An --output_dir below a regular file."""
    (tmp_path / "file").write_text("a file")
    return "--output_dir=file/demo"


def _incompatible_run(tmp_path):
    """An --output_dir whose vae_diag run was made at another image size."""
    other = demo.DemoConfig(output_dir=str(tmp_path / "out"), image_size=32)
    config = demo._config(other, "vae_diag", 10)
    runs.write_config(config, config.model_dir)
    return "--output_dir=out"


@pytest.mark.parametrize(
    "make, message",
    [
        (_under_a_file, "--output_dir=file/demo lies under "),
        (
            _incompatible_run,
            "--output_dir=out holds a vae_diag run made with other settings "
            "(image_size: 32 -> 64). Rerun with the flags it was made with, or "
            "pass another --output_dir. Nothing was written.",
        ),
    ],
)
def test_an_unusable_output_dir_is_one_error_line_and_writes_nothing(
    make, message, tmp_path
):
    flag = make(tmp_path)
    before = _tree(tmp_path)
    done = _demo(flag, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    errors = [line for line in done.stderr.splitlines() if "svae: error" in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"svae: error: {message}"), done.stderr
    assert "Traceback" not in done.stderr
    assert _tree(tmp_path) == before


@pytest.mark.slow
def test_demo_trains_evaluates_and_writes_the_table_and_figures(tmp_path):
    config = demo.DemoConfig(
        output_dir=str(tmp_path),
        image_size=16,
        latent_dim=4,
        crops_per_photo=8,
        batch_size=8,
        filters=4,
        vae_steps=12,
        structured_steps=24,
        num_images=6,
        num_samples=8,
        num_figure_images=3,
        progress=False,
    )
    result = demo.run(config)
    rows = result["table"].splitlines()
    assert [row.split("|")[1].strip() for row in rows[2:]] == list(demo.MODELS)
    assert pathlib.Path(result["table_path"]).read_text().strip() == result["table"]
    for model in demo.MODELS:
        saved = json.loads((tmp_path / model / "eval" / "test.json").read_text())
        assert saved["num_images"] == 6 and saved["num_samples"] == 8
        assert saved["model"] == model and saved["step"] > 0
        assert (
            f"{saved['nll']['mean']:.0f} ± {saved['nll']['std']:.0f}"
            in (rows[2 + demo.MODELS.index(model)])
        )
    # Input, then mean, actual and sampled residual and sample of each
    # model; 16x16 shown 3x.
    with Image.open(result["figures"]["reconstructions"]) as figure:
        assert figure.size[1] == 16 + 13 * (48 + 2)
    with Image.open(result["figures"]["prior_samples"]) as figure:
        assert figure.size[1] == 16 + 6 * (48 + 2)
    # structured starts from the vae_sph run, as the paper pretrains it.
    structured = json.loads((tmp_path / "structured" / "config.json").read_text())
    assert structured["init_from"] == str(tmp_path / "vae_sph")
    for name, path in result["figures"].items():
        if pathlib.Path(path).suffix == ".json":
            assert json.loads(pathlib.Path(path).read_text()), name
            continue
        with Image.open(path) as figure:  # a whole PNG, and not a blank one
            assert np.std(np.asarray(figure.convert("L"), float)) > 1.0, name
    # The stages are parts of the total.
    stages = [v for k, v in result["seconds"].items() if k != "total"]
    assert len(stages) == 7 and result["seconds"]["total"] >= sum(stages)
