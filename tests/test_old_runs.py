"""Runs written by an older build load, evaluate and resume unchanged.

The fixtures (tests/fixtures/old_runs/README.md) were trained by the build
before the likelihood's options became one value; each holds the numbers
that build computed from the restored model.
"""

import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from svae import config as config_lib
from svae import likelihoods, recipes, runs, training

OLD_RUNS = pathlib.Path(__file__).parent / "fixtures" / "old_runs"
# The likelihood each run was trained with: that build's default, the
# paper's, or fields of their own.
OLD_DEFAULT = recipes.Likelihood(factor="product", chroma="factorised", borders=False)
RECIPE = {
    "structured_default": OLD_DEFAULT,
    "structured_paper": recipes.RECIPES["paper"],
    "structured_bounded": recipes.Likelihood(
        factor="bounded", contrast_scale=False, chroma="factorised", borders=False
    ),
    "vae_diag_default": OLD_DEFAULT,
    "vae_sph_default": OLD_DEFAULT,
    "structured_legacy": recipes.RECIPES["paper"],
}


def _copy(name, tmp_path):
    """A copy of the fixture run `name` (tests may write into it)."""
    return pathlib.Path(shutil.copytree(OLD_RUNS / name, tmp_path / name))


@pytest.mark.parametrize("name", sorted(RECIPE))
def test_old_run_loads_to_the_same_numbers(name, tmp_path):
    model_dir = _copy(name, tmp_path)
    config, model, step = runs.load_run(model_dir)
    assert config.likelihood == RECIPE[name]
    reference = json.loads((model_dir / "reference.json").read_text())
    assert step == reference["step"]
    inputs = np.load(OLD_RUNS / "inputs.npz")
    batch = {key: tf.constant(inputs[key]) for key in ("y", "cbcr")}
    outputs = model(batch)
    parts = likelihoods.log_likelihood_parts(outputs, batch, config.structure)
    for group, expected in reference["log_likelihood"].items():
        np.testing.assert_allclose(parts[group].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(
        float(tf.reduce_sum(outputs["y_mean"])), reference["y_mean_sum"], rtol=1e-5
    )


def test_a_config_without_the_likelihood_fields_is_the_papers():
    text = (OLD_RUNS / "structured_legacy" / "config.json").read_text()
    assert "factor" not in json.loads(text)
    assert config_lib.Config.from_json(text).likelihood == recipes.RECIPES["paper"]


@pytest.mark.parametrize("name", ["structured_default", "structured_legacy"])
def test_old_run_resumes_with_its_own_likelihood(name, tmp_path):
    model_dir = _copy(name, tmp_path)
    saved = config_lib.load(model_dir)
    config = dataclasses.replace(saved, model_dir=str(model_dir), steps=4)
    result = training.train(config)
    assert result["step"] == 4
    written = json.loads((model_dir / "config.json").read_text())
    assert written["likelihood"] == saved.likelihood.to_dict()
    assert "factor" not in written


def test_resuming_an_old_run_with_another_recipe_names_the_fields(tmp_path):
    model_dir = _copy("structured_legacy", tmp_path)
    saved = config_lib.load(model_dir)
    config = dataclasses.replace(
        saved, model_dir=str(model_dir), steps=4, likelihood="default"
    )
    assert saved.likelihood.name == "paper"
    with pytest.raises(ValueError, match="likelihood.factor") as error:
        training.train(config)
    assert "likelihood.scales" in str(error.value)


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_scale", 0.25),
        ("covariance_init", "mean_trunk"),
        ("variance_term", "sampled"),
    ],
)
def test_a_run_with_a_removed_option_is_refused_by_name(field, value):
    values = json.loads((OLD_RUNS / "structured_default" / "config.json").read_text())
    values[field] = value
    with pytest.raises(ValueError, match=f"{field}={value!r}.*no longer has"):
        config_lib.Config.from_json(json.dumps(values), source="config.json")


def test_removed_options_at_their_neutral_values_load():
    values = json.loads((OLD_RUNS / "structured_default" / "config.json").read_text())
    assert values["max_scale"] is None and values["variance_term"] == "empirical"
    config = config_lib.Config.from_json(json.dumps(values))
    assert config.likelihood == OLD_DEFAULT
