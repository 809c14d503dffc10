"""Images per second of each input pipeline against a stand-in training step.

Runs every data set through `svae.data.training_pipeline` (batch 64, YCbCr,
64x64) on generated fixtures in the official layouts, twice: decoding every
epoch (cache=False) and from the in-memory cache (second epoch onwards). The
reference is a training step of a STAND-IN model, not svae's (which does not
exist yet): a ~3M-parameter DCGAN-style convolutional VAE at 64x64x3, batch
64, Adam. Usage: `python benchmarks/bench_data.py [--images 2000]`.
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

from svae import data  # noqa: E402

BATCH = 64
SIZE = 64


def stand_in_vae(latent: int = 128):
    """Returns (encoder, decoder) of a ~3M-parameter DCGAN-style conv VAE."""
    import keras

    layers = keras.layers
    encoder = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3))]
        + [
            layers.Conv2D(c, 4, 2, padding="same", activation="relu")
            for c in (32, 64, 128, 256)
        ]
        + [layers.Flatten(), layers.Dense(2 * latent)]
    )
    decoder = keras.Sequential(
        [
            keras.Input((latent,)),
            layers.Dense(4 * 4 * 256, activation="relu"),
            layers.Reshape((4, 4, 256)),
        ]
        + [
            layers.Conv2DTranspose(c, 4, 2, padding="same", activation="relu")
            for c in (128, 64, 32)
        ]
        + [layers.Conv2DTranspose(3, 4, 2, padding="same")]
    )
    return encoder, decoder


def model_images_per_second(steps: int = 30) -> tuple[float, int]:
    """Times Adam training steps of the stand-in VAE on random batches."""
    import keras

    encoder, decoder = stand_in_vae()
    optimizer = keras.optimizers.Adam(5e-4)
    weights = encoder.trainable_variables + decoder.trainable_variables
    params = sum(int(np.prod(w.shape)) for w in weights)

    @tf.function
    def step(images):
        """One VAE step: Gaussian reconstruction term plus KL."""
        with tf.GradientTape() as tape:
            mean, log_var = tf.split(encoder(images, training=True), 2, axis=-1)
            z = mean + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mean))
            recon = decoder(z, training=True)
            nll = 0.5 * tf.reduce_sum((recon - images) ** 2, axis=[1, 2, 3])
            kl = 0.5 * tf.reduce_sum(tf.exp(log_var) + mean**2 - 1 - log_var, -1)
            loss = tf.reduce_mean(nll + kl)
        gradients = tape.gradient(loss, weights)
        optimizer.apply_gradients(zip(gradients, weights, strict=True))
        return loss

    images = tf.random.uniform((BATCH, SIZE, SIZE, 3))
    for _ in range(3):
        step(images).numpy()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(images)
    loss.numpy()
    return steps * BATCH / (time.perf_counter() - start), params


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
    """Prints the table of pipeline rates against the stand-in step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    model_rate, params = model_images_per_second()
    print(
        f"STAND-IN training step (DCGAN-style conv VAE, {params / 1e6:.2f}M "
        f"params, 64x64x3, batch {BATCH}, Adam): {model_rate:.0f} images/s"
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
