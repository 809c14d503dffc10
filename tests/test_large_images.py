"""Past 64x64 (paper, section 4.3): training, evaluation and figures at 128x128."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tiny
from PIL import Image

from svae import evaluation, figures

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_128x128_trains_evaluates_and_draws_from_the_command_line(tmp_path):
    env = tiny.script_env()
    run_dir = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"--model_dir={run_dir}"]
        + ["--image_size=128", "--steps=4", "--batch_size=4", "--crops_per_photo=2"]
        + ["--pretrain_epochs=0", "--structured_warmup_epochs=0", "--noprogress"]
        # The larger, dilated pattern with a basis: section 4.3's proposal,
        # in the paper's likelihood (the default recipe's full product would
        # make L's pattern 9x9 and compile for minutes).
        + ["--kernel_size=5", "--dilation=2", "--num_basis=4", "--latent_dim=8"]
        + ["--likelihood=paper"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert train.returncode == 0, train.stderr
    assert "finished at step 4" in train.stdout
    # train.py exports a SavedModel when training ends.
    assert (run_dir / "export" / "1" / "saved_model.pb").exists()
    assert "exported a SavedModel" in train.stdout
    report = evaluation.evaluate(
        evaluation.EvalConfig(
            model_dir=str(run_dir), num_samples=4, max_images=2, progress=False
        )
    )
    # Y at 128x128 plus Cb, Cr at 32x32.
    assert report["dims"]["total"] == 128 * 128 + 2 * 32 * 32
    assert np.isfinite(report["nll"]["mean"])
    paths = figures.write_figures(
        figures.SampleConfig(
            model_dir=str(run_dir),
            output_dir=str(tmp_path / "samples"),
            num=2,
            scale=1,
            std_method="sample",
            inpaint=True,
        )
    )
    with Image.open(paths["inpainting"]) as image:
        assert image.width >= 2 * 128 and image.height >= 5 * 128
