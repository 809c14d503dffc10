"""Fixtures shared by several test modules."""

import os

import pytest
import tiny

from svae import training

# The modules with the longest tests run first, each module's tests together
# and in order: two xdist workers then end the suite on short tests instead
# of one of them alone on a minute-long one (test_training.py, the longest,
# would otherwise come last but one).
FIRST = ("test_training.py", "test_export.py", "test_cli.py")


def _rank(item):
    """Where a test's module goes: its place in `FIRST`, else after them."""
    name = item.path.name
    return FIRST.index(name) if name in FIRST else len(FIRST)


def pytest_collection_modifyitems(config, items):
    """Moves the modules of `FIRST` to the front (a stable sort)."""
    del config
    items.sort(key=_rank)


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
