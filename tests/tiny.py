"""What many tests share: tiny run configs and the environment of a script.

import tiny
config = tiny.config(tmp_path, model="vae_diag", steps=6)
done = subprocess.run([...], env=tiny.script_env(), ...)
"""

import os
import pathlib
import subprocess
import sys

from svae import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# 16x16 images from 4 crops of each sample photograph: a step in milliseconds.
TINY = dict(
    image_size=16, latent_dim=8, batch_size=8, crops_per_photo=4, progress=False
)


def config(model_dir=None, **overrides) -> config_lib.Config:
    """A `Config` with the tiny settings, in `model_dir`, with `overrides`."""
    where = {} if model_dir is None else {"model_dir": str(model_dir)}
    return config_lib.Config(**(TINY | where | overrides))


def script_env(**extra) -> dict:
    """The environment of a script run by a test: svae importable, TF quiet.

    `TF_CONFIG` (a multi-worker cluster) is never inherited; `extra` wins.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    return env | extra


def run_python(*args, cwd, timeout) -> subprocess.CompletedProcess:
    """Runs `python args` in `cwd` with `script_env()`; returns it finished
    (text output captured, any exit status)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
