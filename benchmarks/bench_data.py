"""What train.py's input side costs, per data set, against the training step.

For each source, on generated fixtures in the official layouts (crops of real
photographs, so that JPEG/WebP decoding costs what it does on real data), it
times what `svae.training.train` does, through its own `_Data` class:

- first start: `_Data(config)` with an empty cache_dir, which decodes the
  training split once into the prepared cache (seconds);
- later start: `_Data(config)` again, which reads the prepared cache;
- prepare: images / (first - later start), the decoding rate, and from it
  the first start on the full CelebA and LSUN church training sets;
- feed: the batches of `_Data.epoch` that train.py's steps consume, whole
  epochs each from a fresh iterator as in train.py, after one warm-up epoch
  (images/s, and the ratio to the step rate).

The reference, measured in the same run, is the compiled training step of
`train.py`'s default model (`structured`, joint phase, batch 64, 64x64 YCbCr).
Usage: `python benchmarks/bench_data.py [--images 6000] [--feed_images 30000]`.
"""

import argparse
import os
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
from svae import data, training  # noqa: E402

BATCH = 64
SIZE = 64
# Training images of the full data sets, to extrapolate the prepare time.
FULL_SIZES = {"lsun_church": 126_227, "celeb_a": 162_770}


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


def build_fixtures(root: pathlib.Path, count: int) -> dict[str, dict]:
    """Writes the file fixtures; returns each source's Config fields."""
    rng = np.random.default_rng(0)
    folder = root / "photos" / "train"
    for index in range(count):
        part = folder / f"part{index % 3}"
        part.mkdir(parents=True, exist_ok=True)
        pixels = fx.photo_image(rng, 375, 500)
        (part / f"{index:05d}.jpg").write_bytes(fx.encode(pixels, "JPEG", quality=90))
    (root / "photos" / "test").mkdir()
    values = []
    for index in range(count):
        pixels = fx.photo_image(rng, 256, 341)
        values.append(fx.encode(pixels, "WEBP" if index % 2 else "JPEG", quality=85))
    fx.make_lmdb(root / "lsun" / "church_outdoor_train_lmdb", values, map_size=2**32)
    celeb_a = root / "celeb_a"
    (celeb_a / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(count)]
    for name in names:
        pixels = fx.photo_image(rng, 218, 178)
        encoded = fx.encode(pixels, "JPEG", quality=90)
        (celeb_a / "img_align_celeba" / name).write_bytes(encoded)
    lines = "".join(f"{name} 0\n" for name in names)
    (celeb_a / "list_eval_partition.txt").write_text(lines)
    return {
        "sample_photos": {"dataset": "sample_photos"},
        "folder: (500x375 JPEG)": {"dataset": f"folder:{root / 'photos'}"},
        "lsun_church (LMDB, 341x256)": {
            "dataset": "lsun_church",
            "data_dir": str(root / "lsun"),
        },
        "celeb_a (folder, 178x218)": {
            "dataset": "celeb_a",
            "data_dir": str(celeb_a),
        },
    }


def timed_data(config: config_lib.Config) -> tuple[training._Data, float]:
    """Builds train.py's `_Data` (a start of train.py); returns it and seconds."""
    start = time.perf_counter()
    dataset = training._Data(config, tf.distribute.get_strategy())
    return dataset, time.perf_counter() - start


def feed_images_per_second(dataset: training._Data, min_images: int) -> float:
    """Images/s of whole epochs of `_Data.epoch`, as train.py iterates them."""
    steps = dataset.steps_per_epoch

    def run_epoch(epoch: int) -> None:
        """Takes one epoch's batches from a fresh iterator, as train.py does."""
        iterator = dataset.epoch(epoch, 0)
        for _ in range(steps):
            next(iterator)

    run_epoch(0)  # Warm-up: tracing, and the first fill of the page cache.
    count, epoch, start = 0, 1, time.perf_counter()
    while count < min_images:
        run_epoch(epoch)
        count, epoch = count + steps * BATCH, epoch + 1
    return count / (time.perf_counter() - start)


def main() -> None:
    """Prints the table of start-up costs and feed rates against the step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--feed_images", type=int, default=30_000)
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    model_rate = model_images_per_second()
    print(
        f"training step of the default model (structured, joint phase, "
        f"{SIZE}x{SIZE} YCbCr, batch {BATCH}): {model_rate:.0f} images/s"
    )
    header = (
        f"{'source':30s} {'first':>8s} {'later':>7s} {'prepare':>10s} "
        f"{'full split':>10s} {'feed':>10s} {'ratio':>6s}"
    )
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        for name, fields in build_fixtures(root, args.images).items():
            config = config_lib.Config(
                image_size=SIZE,
                batch_size=BATCH,
                cache_dir=str(root / "cache"),
                progress=False,
                **fields,
            )
            dataset, first = timed_data(config)
            count = dataset.steps_per_epoch * BATCH
            later, prepare, full = "-", "-", "-"
            if fields["dataset"] != "sample_photos":  # Made in memory, no cache.
                del dataset
                dataset, second = timed_data(config)
                rate = args.images / (first - second)
                later, prepare = f"{second:5.2f} s", f"{rate:6.0f} i/s"
                full_size = FULL_SIZES.get(fields["dataset"])
                if full_size:
                    full = f"{second + full_size / rate:8.0f} s"
            feed = feed_images_per_second(dataset, args.feed_images)
            print(
                f"{name:30s} {first:6.2f} s {later:>7s} {prepare:>10s} {full:>10s} "
                f"{feed:6.0f} i/s {feed / model_rate:5.1f}x  ({count} images/epoch)",
                flush=True,
            )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
