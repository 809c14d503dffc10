"""Tests of the `make demo` job, at a tiny size."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from svae import demo


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
    # Input, then mean, residual and sample of each model; 16x16 shown 3x.
    with Image.open(result["figures"]["reconstructions"]) as figure:
        assert figure.size[1] == 16 + 10 * (48 + 2)
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
