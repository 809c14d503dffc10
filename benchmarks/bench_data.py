"""Images per second of each input pipeline against the training step.

Runs every data set through `svae.data.training_pipeline` (batch 64, YCbCr,
64x64) on generated fixtures in the official layouts, twice: decoding every
epoch (cache=False) and from the in-memory cache (second epoch onwards). The
reference, measured in the same run, is the compiled training step of the
default model of `train.py` (`structured`, joint phase, batch 64). Usage:
`python benchmarks/bench_data.py [--images 2000]`.
"""

import argparse
import pathlib
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import data_fixtures as fx  # noqa: E402
import step_timer  # noqa: E402

from svae import config as config_lib  # noqa: E402
from svae import data  # noqa: E402

BATCH = 64
SIZE = 64


def model_images_per_second(rounds: int = 3, steps: int = 30) -> float:
    """Images/s that the default model's training step consumes (best round).

    The default run of `train.py`: `structured` at 64x64 YCbCr, batch 64, in
    its joint phase (its slowest), on one in-memory batch of real crops.
    """
    images = data.load("sample_photos", "train", image_size=SIZE, crops_per_photo=8)
    batch = data.to_model_inputs(tf.stack(list(images.take(BATCH))))
    config = config_lib.Config(
        image_size=SIZE, batch_size=BATCH, pretrain_epochs=0, structured_warmup_epochs=0
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = step_timer.step_runner(config, batch, pathlib.Path(tmp), "joint")
        run(5)  # Compiles and warms up.
        seconds = min(run(steps) for _ in range(rounds)) / steps
    return BATCH / seconds


def pipeline_images_per_second(
    dataset: tf.data.Dataset, cache: bool, min_images: int
) -> float:
    """Times full passes of the training pipeline (after one warm-up pass)."""
    pipeline = data.training_pipeline(dataset, BATCH, cache=cache, seed=0)
    for _ in pipeline:
        pass
    count, start = 0, time.perf_counter()
    while count < min_images:
        for batch in pipeline:
            count += int(batch["y"].shape[0])
    return count / (time.perf_counter() - start)


def build_fixtures(root: pathlib.Path, count: int) -> dict[str, tf.data.Dataset]:
    """Writes the file fixtures and returns the train data set of each source."""
    rng = np.random.default_rng(0)
    folder = root / "photos"
    fx.make_jpeg_folder(folder, count, size=(500, 375))
    values = []
    for index in range(count):
        pixels = fx.smooth_image(rng, 256, 341)
        values.append(fx.encode(pixels, "WEBP" if index % 2 else "JPEG", quality=85))
    fx.make_lmdb(root / "lsun" / "church_outdoor_train_lmdb", values)
    fx.make_celeb_a(root / "celeb_a", partitions=(0,) * count)
    load = {"image_size": SIZE}
    return {
        "sample_photos": data.load("sample_photos", "train", **load),
        "folder: (500x375 JPEG)": data.load(
            f"folder:{folder}", "train", test_fraction=0.01, **load
        ),
        "lsun_church (LMDB, 341x256)": data.load(
            "lsun_church", "train", data_dir=root / "lsun", **load
        ),
        "celeb_a (folder, 178x218)": data.load(
            "celeb_a", "train", data_dir=root / "celeb_a", **load
        ),
    }


def main() -> None:
    """Prints the table of pipeline rates against the training step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    model_rate = model_images_per_second()
    print(
        f"training step of the default model (structured, joint phase, "
        f"{SIZE}x{SIZE} YCbCr, batch {BATCH}): {model_rate:.0f} images/s"
    )
    print(
        f"{'pipeline':30s} {'decode/epoch':>14s} {'ratio':>7s} {'cached':>10s} "
        f"{'ratio':>7s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, dataset in build_fixtures(pathlib.Path(tmp), args.images).items():
            cold = pipeline_images_per_second(dataset, False, args.images)
            warm = pipeline_images_per_second(dataset, True, 4 * args.images)
            print(
                f"{name:30s} {cold:10.0f} i/s {cold / model_rate:6.1f}x "
                f"{warm:6.0f} i/s {warm / model_rate:6.1f}x"
            )


if __name__ == "__main__":
    main()
