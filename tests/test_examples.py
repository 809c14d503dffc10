"""The scripts in examples/ run, at a tiny size."""

import importlib.util
import json
import math
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _import(name):
    """Imports `examples/<name>.py` (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"examples_{name}", EXAMPLES / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def denoiser():
    return _import("denoiser")


def test_denoiser_trains_both_heads_and_writes_its_numbers_and_figure(
    denoiser, tmp_path
):
    report = denoiser.main(
        [
            "--image_size=16",
            "--steps=6",
            "--steps_per_epoch=3",
            "--batch_size=4",
            "--crops_per_photo=2",
            "--filters=4",
            "--num_test=8",
            "--num_show=3",
            "--verbose=0",
            f"--output_dir={tmp_path}",
        ]
    )
    saved = json.loads((tmp_path / "denoiser.json").read_text())
    assert saved["settings"] == report["settings"]
    assert saved["settings"]["steps"] == 6 and saved["settings"]["test_images"] == 8
    for kind in ("structured", "independent"):
        for name in ("nll_nats", "nll_bpd", "mse", "train_seconds"):
            assert math.isfinite(saved[kind][name]), (kind, name)
        assert saved[kind]["nll_bpd"] == pytest.approx(
            saved[kind]["nll_nats"] / (16 * 16 * math.log(2.0)), rel=1e-6
        )
        assert f"| {kind} | {saved[kind]['nll_bpd']:.3f}" in (
            (tmp_path / "denoiser.md").read_text()
        )
    with Image.open(tmp_path / "denoiser.png") as figure:
        figure.load()
        pixels = np.asarray(figure.convert("RGB"))
    # Nine rows of three 16x16 images, magnified 6x, with a label column.
    assert pixels.shape[0] == 9 * (16 * 6 + 2) and pixels.shape[1] > 3 * 16 * 6
    assert pixels.std() > 10


def test_the_independent_nll_is_the_normal_log_prob(denoiser):
    rng = np.random.default_rng(0)
    y = rng.random((2, 5, 4, 1), dtype=np.float32)
    params = rng.normal(size=(2, 5, 4, 2)).astype(np.float32)
    expected = -np.sum(
        -0.5 * ((y[..., 0] - params[..., 0]) / np.exp(params[..., 1])) ** 2
        - params[..., 1]
        - 0.5 * np.log(2 * np.pi),
        axis=(1, 2),
    )
    loss = denoiser.IndependentGaussianNLL(reduction=None)
    np.testing.assert_allclose(loss(y, tf.constant(params)), expected, rtol=1e-5)
    per_pixel = denoiser.IndependentGaussianNLL(per_pixel=True, reduction=None)
    np.testing.assert_allclose(
        per_pixel(y, tf.constant(params)), expected / 20, rtol=1e-5
    )


@pytest.mark.parametrize("per_pixel", ["no", 1, None])
def test_the_independent_nll_refuses_a_per_pixel_that_is_not_a_bool(
    denoiser, per_pixel
):
    # As svae.losses.SparsePrecisionNLL: "no" would be truthy.
    with pytest.raises(ValueError, match="per_pixel must be True or False"):
        denoiser.IndependentGaussianNLL(per_pixel=per_pixel)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--noise=0"], "argument --noise: must be in (0.0, 1.0], got 0.0"),
        (["--noise=nan"], "argument --noise: must be a finite number, got 'nan'"),
        (["--num_test=0"], "argument --num_test: must be >= 1, got 0"),
        (["--kernel_size=4"], "argument --kernel_size: must be one of 3, 5, 7, got 4"),
        (["--steps=0"], "argument --steps: must be >= 1, got 0"),
        (["--image_size=301"], "argument --image_size: must be in [8, 300], got 301"),
        (["--seed=-1"], "argument --seed: must be in [0, 2147483647], got -1"),
        (["--learning_rate=inf"], "argument --learning_rate: must be a finite"),
        (["--verbose=3"], "argument --verbose: must be one of 0, 1, 2, got 3"),
        (
            ["--crops_per_photo=2", "--num_test=9"],
            "argument --num_test: must be <= 8 (the test photographs times "
            "--crops_per_photo), got 9",
        ),
        (
            ["--num_test=4", "--num_show=5"],
            "argument --num_show: must be <= --num_test (4), got 5",
        ),
    ],
)
def test_denoiser_flags_out_of_range_are_usage_errors_before_any_work(
    denoiser, tmp_path, capsys, monkeypatch, flags, message
):
    def no_work(*args, **kwargs):
        raise AssertionError("the denoiser started working")

    monkeypatch.setattr(denoiser, "load_y", no_work)
    output_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        denoiser.main([*flags, f"--output_dir={output_dir}"])
    assert exit_info.value.code == 2  # argparse's usage error.
    assert message in capsys.readouterr().err
    assert not output_dir.exists()


def test_denoiser_help_names_each_flags_range(denoiser, capsys):
    with pytest.raises(SystemExit):
        denoiser.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, (_, _, allowed, _) in denoiser.FLAGS.items():
        assert f"Must be {allowed}." in text, name
