"""Fixtures shared by several test modules."""

import os

import pytest
import tiny

from svae import training


@pytest.fixture(scope="session", autouse=True)
def scratch_data_cache(tmp_path_factory):
    """Points the scripts' prepared data cache (svae.data) away from ~/.cache.

    The tests, and the scripts they start, inherit the variable.
    """
    os.environ["SVAE_CACHE_DIR"] = str(tmp_path_factory.mktemp("svae-cache"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny structured colour run (16x16), trained for a few steps."""
    model_dir = tmp_path_factory.mktemp("run")
    config = tiny.config(
        model_dir,
        model="structured",
        latent_dim=4,
        steps=36,
        learning_rate=3e-3,
        pretrain_epochs=1,
        structured_warmup_epochs=1,
    )
    training.train(config)
    return model_dir
