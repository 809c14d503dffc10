"""A small convolutional denoiser with a structured residual (issue 15).

The same convolutional trunk, trained with `compile` + `fit` on the Y channel
of `sample_photos` crops to map `clean + noise` to `clean`, ends in one of two
heads:

- structured: `svae.layers.SparsePrecisionGaussianHead` with
  `svae.losses.SparsePrecisionNLL`, a Gaussian whose precision has a sparse
  (3x3 by default) Cholesky factor, so the residual of the denoised image may
  be correlated between neighbouring pixels;
- independent: a per-pixel Gaussian (mean and log-scale, 2 channels) with
  `IndependentGaussianNLL` below.

Both train the same number of steps from the same initial trunk; the script
reports the held-out (test split) NLL in bits/dim (nats / (H W log 2), the
density of Y in [0, 1] as `svae.evaluation` reports it, so it may be
negative) and the MSE of each mean, and writes `denoiser.png`,
`denoiser.json` and `denoiser.md` to `--output_dir`.

    python examples/denoiser.py --output_dir /tmp/denoiser
"""

import argparse
import json
import math
import pathlib
import time

import keras
import numpy as np
import tensorflow as tf

from svae import data, drawing, layers, losses
from svae.data import SAMPLE_PHOTOS
from svae.fields import Range

LOG2 = math.log(2.0)
# The smallest side of the sample photographs: larger crops drop photographs.
MAX_IMAGE_SIZE = 300
MAX_SEED = 2**31 - 1  # A stateless int32 seed.


@keras.saving.register_keras_serializable(package="svae_examples")
class IndependentGaussianNLL(keras.losses.Loss):
    """Negative log-likelihood under an independent per-pixel Gaussian.

    `y_pred` is `[batch, H, W, 2]`: the mean and the log standard deviation of
    each pixel. Returns `sum_p 0.5 z_p^2 + log_scale_p + 0.5 log(2 pi)` per
    example (nats), `z = (y - mean) / exp(log_scale)`; with `per_pixel` it is
    divided by `H * W`, as `SparsePrecisionNLL(per_pixel=True)`.
    """

    def __init__(self, per_pixel=False, name="independent_gaussian_nll", **kwargs):
        if not isinstance(per_pixel, bool | np.bool_):
            raise ValueError(f"per_pixel must be True or False, got {per_pixel!r}.")
        super().__init__(name=name, **kwargs)
        self.per_pixel = bool(per_pixel)

    def call(self, y_true, y_pred):
        y_true = layers.as_images(y_true, y_pred.dtype)
        loc, log_scale = y_pred[..., 0], y_pred[..., 1]
        z = (y_true - loc) * tf.exp(-log_scale)
        nll = 0.5 * tf.square(z) + log_scale + 0.5 * math.log(2.0 * math.pi)
        reduce = tf.reduce_mean if self.per_pixel else tf.reduce_sum
        return reduce(nll, axis=[-2, -1])

    def get_config(self):
        return {**super().get_config(), "per_pixel": self.per_pixel}


def _bounded(kind, allowed):
    """An argparse `type`: `kind` (int or float, finite) in `Range` `allowed`.

    A value outside it is a usage error naming the flag, what it must be and
    the value, before any work, as `svae.cli.bound_flags` makes it for the
    scripts' flags.
    """

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            what = "an integer" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        if value not in allowed:
            raise argparse.ArgumentTypeError(allowed.error(value))
        return value

    return parse


# Each numeric flag: (type, default, range, help).
FLAGS = {
    "steps": (int, 1000, Range(ge=1), "training steps"),
    "steps_per_epoch": (int, 250, Range(ge=1), "steps between fit's reports"),
    "batch_size": (int, 16, Range(ge=1), "images per step"),
    "image_size": (
        int,
        32,
        Range(ge=8, le=MAX_IMAGE_SIZE, note="every sample photograph gives crops"),
        "side of the crops",
    ),
    "crops_per_photo": (int, 256, Range(ge=1), "crops of each photograph"),
    "noise": (float, 0.1, Range(gt=0.0, le=1.0, note="Y is in [0, 1]"), "noise std"),
    "filters": (int, 32, Range(ge=1), "channels of the trunk"),
    "kernel_size": (int, 3, Range(choices=(3, 5, 7)), "of the head's factors"),
    "learning_rate": (float, 2e-3, Range(gt=0.0, le=1.0), "Adam's"),
    "num_test": (int, 512, Range(ge=1), "test images"),
    "num_show": (int, 8, Range(ge=1), "figure columns"),
    "seed": (int, 0, Range(ge=0, le=MAX_SEED), "of the crops, noise and weights"),
    "verbose": (int, 2, Range(choices=(0, 1, 2)), "fit's verbose"),
}


def parse_args(argv=None):
    """Parses the flags; a value out of its range is a usage error (exit 2)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, (kind, default, allowed, help_) in FLAGS.items():
        parser.add_argument(
            f"--{name}",
            type=_bounded(kind, allowed),
            default=default,
            help=f"{help_} (default {default}). Must be {allowed}.",
        )
    parser.add_argument("--output_dir", default="denoiser_output")
    args = parser.parse_args(argv)
    # The test crops come from the test photographs, crops_per_photo each.
    available = len(SAMPLE_PHOTOS["test"]) * args.crops_per_photo
    if args.num_test > available:
        parser.error(
            f"argument --num_test: must be <= {available} (the test "
            f"photographs times --crops_per_photo), got {args.num_test}"
        )
    if args.num_show > args.num_test:
        parser.error(
            f"argument --num_show: must be <= --num_test ({args.num_test}), "
            f"got {args.num_show}"
        )
    return args


def load_y(split, args):
    """The Y channel of `sample_photos` crops of `split`, `[N, S, S, 1]` numpy."""
    rgb = data.load(
        "sample_photos",
        split,
        image_size=args.image_size,
        crops_per_photo=args.crops_per_photo,
        seed=args.seed,
    )
    batches = [
        data.to_model_inputs(batch, "gray")["y"].numpy() for batch in rgb.batch(1024)
    ]
    return np.concatenate(batches)[..., None].astype(np.float32)


def trunk(inputs, filters):
    """Dilated 3x3 convolutions (receptive field 31); the input is passed on."""
    h = inputs
    for dilation in (1, 2, 4, 8, 1):
        h = keras.layers.Conv2D(
            filters, 3, padding="same", dilation_rate=dilation, activation="relu"
        )(h)
    # The heads' 1x1 convolutions see the noisy pixel itself as well.
    return keras.layers.Concatenate()([h, inputs])


def build_models(args):
    """Returns `(structured, independent)`: one trunk's weights, two heads."""
    inputs = keras.Input([args.image_size, args.image_size, 1])
    features = trunk(inputs, args.filters)
    log_scale = math.log(args.noise)
    head = layers.SparsePrecisionGaussianHead(
        kernel_size=args.kernel_size, log_scale=log_scale, name="structured"
    )
    structured = keras.Model(inputs, head(features), name="structured")
    independent_head = keras.layers.Conv2D(
        2,
        1,
        bias_initializer=keras.initializers.Constant([0.0, log_scale]),
        name="independent",
    )
    # A clone of the trunk starts from the same weights as the structured one.
    trunk_model = keras.Model(inputs, features)
    clone = keras.models.clone_model(trunk_model)
    clone.set_weights(trunk_model.get_weights())
    independent = keras.Model(
        clone.inputs[0], independent_head(clone.outputs[0]), name="independent"
    )
    structured.compile(
        keras.optimizers.Adam(args.learning_rate),
        loss=losses.SparsePrecisionNLL(per_pixel=True),
    )
    independent.compile(
        keras.optimizers.Adam(args.learning_rate),
        loss=IndependentGaussianNLL(per_pixel=True),
    )
    return structured, independent


def noisy_pairs(clean, args):
    """Repeated, shuffled `(clean + fresh noise, clean)` batches for `fit`."""
    dataset = tf.data.Dataset.from_tensor_slices(clean)
    dataset = dataset.shuffle(len(clean), seed=args.seed).repeat()
    dataset = dataset.batch(args.batch_size, drop_remainder=True)

    def add_noise(index, images):
        seed = tf.stack([tf.cast(index, tf.int32), tf.constant(args.seed)])
        noise = tf.random.stateless_normal(tf.shape(images), seed) * args.noise
        return images + noise, images

    return dataset.enumerate().map(add_noise).prefetch(2)


def evaluate(model, kind, noisy, clean, args):
    """Held-out NLL (nats per image, bits/dim) and MSE of the mean."""
    nll, mse = [], []
    for start in range(0, len(clean), 128):
        x, y = noisy[start : start + 128], clean[start : start + 128, ..., 0]
        params = model(x, training=False)
        if kind == "structured":
            dist = layers.to_distribution(params)
            log_prob, mean = dist.log_prob(y), dist.mean()
        else:
            loss = IndependentGaussianNLL(reduction=None)
            log_prob, mean = -loss(y, params), params[..., 0]
        nll.append(-log_prob.numpy())
        mse.append(np.mean((mean.numpy() - y) ** 2, axis=(1, 2)))
    nll, mse = np.concatenate(nll), np.concatenate(mse)
    dims = args.image_size**2
    return {
        "nll_nats": float(np.mean(nll)),
        "nll_bpd": float(np.mean(nll) / (dims * LOG2)),
        "nll_bpd_stderr": float(np.std(nll) / math.sqrt(len(nll)) / (dims * LOG2)),
        "mse": float(np.mean(mse)),
    }


def figure(structured, independent, noisy, clean, args, path):
    """Writes the figure of the first `num_show` test images."""
    show = np.unique(np.linspace(0, len(clean) - 1, args.num_show).astype(int))
    x, y = noisy[show], clean[show, ..., 0]
    dist = layers.to_distribution(structured(x, training=False))
    samples = [dist.sample(seed=[args.seed, i]).numpy() for i in (1, 2)]
    std = np.sqrt(dist.marginal_variance().numpy())
    params = independent(x, training=False).numpy()
    ind_std = np.exp(params[..., 1])
    rng = np.random.default_rng(args.seed)
    ind_sample = params[..., 0] + ind_std * rng.standard_normal(ind_std.shape)
    finite = np.concatenate([std[np.isfinite(std)], ind_std.ravel()])
    vmax = float(np.max(finite))
    rows = [
        x[..., 0],
        y,
        dist.mean().numpy(),
        samples[0],
        samples[1],
        drawing.colormap(np.where(np.isfinite(std), std, vmax), vmax),
        params[..., 0],
        ind_sample,
        drawing.colormap(ind_std, vmax),
    ]
    labels = [
        f"noisy input (std {args.noise:g})",
        "clean",
        "structured: mean",
        "structured: sample 1",
        "structured: sample 2",
        f"structured: std, 0-{vmax:.3g}",
        "independent: mean",
        "independent: sample",
        f"independent: std, 0-{vmax:.3g}",
    ]
    scale = max(1, 96 // args.image_size)
    return drawing.save_grid(rows, labels, path, scale=scale)


def main(argv=None):
    args = parse_args(argv)
    begin = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    output_dir = pathlib.Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    train = load_y("train", args)
    test = load_y("test", args)
    # The test crops come photograph by photograph: take them evenly from all.
    test = test[np.unique(np.linspace(0, len(test) - 1, args.num_test).astype(int))]
    rng = np.random.default_rng(args.seed + 1)
    test_noisy = (test + args.noise * rng.standard_normal(test.shape)).astype(
        np.float32
    )
    structured, independent = build_models(args)

    steps_per_epoch = min(args.steps_per_epoch, args.steps)
    epochs = max(1, args.steps // steps_per_epoch)
    results = {}
    for kind, model in (("structured", structured), ("independent", independent)):
        start = time.perf_counter()
        history = model.fit(
            noisy_pairs(train, args),
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            verbose=args.verbose,
            shuffle=False,  # noisy_pairs shuffles.
        )
        seconds = time.perf_counter() - start
        results[kind] = {
            **evaluate(model, kind, test_noisy, test, args),
            "train_loss_nats_per_pixel": float(history.history["loss"][-1]),
            "train_seconds": seconds,
        }
        print(f"{kind}: {results[kind]}")
    noisy_mse = float(np.mean((test_noisy - test) ** 2))
    report = {
        "settings": {
            "steps": epochs * steps_per_epoch,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "noise": args.noise,
            "kernel_size": args.kernel_size,
            "train_images": len(train),
            "test_images": len(test),
            "seed": args.seed,
        },
        "noisy_input_mse": noisy_mse,
        **results,
    }
    figure_path = figure(
        structured, independent, test_noisy, test, args, output_dir / "denoiser.png"
    )
    report["total_seconds"] = time.perf_counter() - begin
    (output_dir / "denoiser.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| head | test NLL (bits/dim) | test NLL (nats/image) | MSE of the mean "
        "| train time (s) |",
        "|---|---|---|---|---|",
    ]
    for kind in ("structured", "independent"):
        r = results[kind]
        lines.append(
            f"| {kind} | {r['nll_bpd']:.3f} +- {r['nll_bpd_stderr']:.3f} "
            f"| {r['nll_nats']:.1f} | {r['mse']:.2e} | {r['train_seconds']:.0f} |"
        )
    lines.append(
        f"\nMSE of the noisy input: {noisy_mse:.2e}. Total time: "
        f"{report['total_seconds']:.0f} s."
    )
    (output_dir / "denoiser.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"Wrote {figure_path}")
    return report


if __name__ == "__main__":
    main()
