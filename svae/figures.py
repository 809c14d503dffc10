"""Figures of the paper: prior samples, reconstructions, residuals, Y's std.

Prior samples (Figures 4 and 6): for `z ~ N(0, T^2 I)` the mean `mu(z)` and a
full sample `mu + T * epsilon`. Reconstructions (Figures 1, 3 and 5): the
input, the mean at the posterior mean `z`, a residual sample `epsilon` and the
full sample `mu + T * epsilon`. Everything is shown in RGB with the chroma
upsampled; residuals of Y are shown as gray images with +-3 robust standard
deviations of the figure's residuals (`residual_spread`) spanning black to
white. The per-pixel standard deviation of Y is a heat map: exact for the
structured models (`SparsePrecisionGaussian.marginal_variance`),
`exp(y_log_scale)` for the factorised ones. Beside the figures, the run's
sample health (`svae.health`) is written, printed, and warned about when
samples diverge. Every random draw uses a stateless seed: the same seed
writes the same bytes.
"""

import dataclasses
import pathlib
import sys

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from svae import config as config_lib
from svae import evaluation, health, likelihoods, runs
from svae.data import load_batch as load_images  # Re-exported: figures' images.
from svae.distributions import SparsePrecisionGaussian

__all__ = [
    "SampleConfig",
    "colormap",
    "load_images",
    "prior_samples",
    "reconstructions",
    "residual_image",
    "save_grid",
    "write_figures",
    "y_std",
]

# Control points of a black-purple-orange-yellow map (like matplotlib's
# "inferno"), interpolated linearly: readable in print and for most colour
# vision deficiencies.
_HEAT = np.array(
    [
        [0.0, 0.0, 0.02],
        [0.26, 0.04, 0.41],
        [0.58, 0.15, 0.40],
        [0.87, 0.32, 0.23],
        [0.99, 0.64, 0.04],
        [0.99, 1.0, 0.64],
    ]
)


@dataclasses.dataclass
class SampleConfig:
    """What `write_figures` needs; `sample.py` fills it from flags."""

    model_dir: str
    num: int = config_lib.ranged(8, ge=1)
    seed: int = config_lib.ranged(0, ge=0, le=config_lib.MAX_INT32)
    temperature: float = config_lib.ranged(1.0, ge=0)
    output_dir: str | None = None
    split: str = "test"
    dataset: str | None = None
    data_dir: str | None = None
    # None: the run's prepared-data folder; "": none (svae.data).
    cache_dir: str | None = None
    std_method: str = "exact"
    scale: int = config_lib.ranged(2, ge=1)
    inpaint: bool = False
    mask: str = "center"

    def __post_init__(self):
        """Checks the values."""
        config_lib.check_fields(self)
        if self.std_method not in ("exact", "sample"):
            raise ValueError(
                f'std_method must be "exact" or "sample", got {self.std_method!r}.'
            )


def colormap(values, vmax):
    """Maps `[...]` values in `[0, vmax]` to `[..., 3]` RGB in [0, 1]."""
    t = np.clip(np.asarray(values, np.float64) / max(vmax, 1e-12), 0.0, 1.0)
    points = np.linspace(0.0, 1.0, len(_HEAT))
    return np.stack([np.interp(t, points, _HEAT[:, c]) for c in range(3)], axis=-1)


def save_grid(rows, labels, path, scale=2, title=None):
    """Writes rows of images as one PNG with a label left of each row.

    Args:
      rows: a list of `[n, H, W, 3]` (or `[n, H, W]` gray) arrays in [0, 1].
      labels: one string per row.
      path: the PNG file to write.
      scale: nearest-neighbour magnification of each image.
      title: optional line of text above the grid.

    Returns:
      The path, as a `pathlib.Path`.
    """
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = 8 + max(int(measure.textlength(text, font=font)) for text in labels)
    gap = 2
    height, width = np.asarray(rows[0]).shape[1:3]
    cell_h, cell_w = height * scale, width * scale
    top = 16 if title else 0
    n_cols = max(len(row) for row in rows)
    canvas = Image.new(
        "RGB",
        (label_width + n_cols * (cell_w + gap), top + len(rows) * (cell_h + gap)),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill="black", font=font)
    for i, (row, text) in enumerate(zip(rows, labels, strict=True)):
        y = top + i * (cell_h + gap)
        draw.text((4, y + cell_h // 2 - 6), text, fill="black", font=font)
        for j, image in enumerate(np.asarray(row)):
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=-1)
            pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
            pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
            canvas.paste(Image.fromarray(pixels), (label_width + j * (cell_w + gap), y))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def y_std(outputs, config, method="exact", seed=(0, 0)):
    """Returns the per-pixel standard deviation of Y under `p(x|z)`.

    Args:
      outputs: a model's output dict.
      config: the run's `Config` (kernel size and dilation of `L`).
      method: for the structured models, "exact" (`diag(Lambda^{-1})` by
        wavefront solves, about a second per 64x64 image on a CPU) or
        "sample" (1000 samples, about 4% relative error); factorised models
        are always exact.
      seed: stateless seed for `method="sample"`.

    Returns:
      `[n, H, W]` numpy standard deviations.
    """
    if "off_diag" not in outputs:
        return np.exp(outputs["y_log_scale"].numpy())
    dist = SparsePrecisionGaussian(
        outputs["y_mean"],
        outputs["log_diag"],
        outputs["off_diag"],
        **config.structure.kwargs,
    )
    variance = dist.marginal_variance(method=method, seed=seed)
    return np.sqrt(variance.numpy())


def _heat_map(std):
    """Returns `([n, H, W, 3] heat map, row label)` of standard deviations.

    A structured model's variance can exceed float32's range where `L` is
    badly conditioned; such pixels are shown at the top colour and counted.
    """
    finite = np.isfinite(std)
    vmax = float(np.max(std[finite])) if finite.any() else 1.0
    label = f"std of Y, 0-{vmax:.3g}"
    if not finite.all():
        label += f" ({int(np.sum(~finite))} px overflow)"
    return colormap(np.where(finite, std, vmax), vmax), label


def residual_spread(residual):
    """Returns 3 robust standard deviations of residuals: their display range.

    `3 * median |r - median r| / Phi^-1(3/4)` (Phi^-1(3/4) = 0.6745), 3
    standard deviations for Gaussian residuals, over the finite values: one
    diverging sample (after brief training, say) saturates its own panel
    instead of flattening the others to gray, as the plain standard deviation
    would.

    Args:
      residual: an array of residuals.

    Returns:
      A positive float.
    """
    values = np.asarray(residual, np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return 1.0
    mad = float(np.median(np.abs(values - np.median(values))))
    if mad > 0:
        return 3.0 * mad / 0.6744897501960817
    return float(np.max(np.abs(values))) or 1.0


def residual_image(residual, spread):
    """Maps `[n, H, W]` Y residuals to gray images: `+-spread` spans [0, 1]."""
    return np.clip(0.5 + 0.5 * residual / max(spread, 1e-12), 0.0, 1.0)


def _tempered(mean, drawn, temperature):
    """Returns `mean + temperature * (drawn - mean)` per channel group."""
    return {
        name: mean[name] + temperature * (drawn[name] - mean[name]) for name in mean
    }


def _draw(model, config, z, seed, temperature):
    """Decodes `z`; returns the outputs, RGB mean, RGB sample and Y residual."""
    outputs = model.decode(z)
    structure = config.structure
    drawn = likelihoods.sample(outputs, tf.constant(seed, tf.int32), structure)
    mean = likelihoods.means(outputs)
    full = _tempered(mean, drawn, temperature)
    factor = config.chroma_factor
    return (
        outputs,
        likelihoods.to_rgb(mean, factor).numpy(),
        likelihoods.to_rgb(full, factor).numpy(),
        (full["y"] - mean["y"]).numpy(),
    )


def prior_samples(model, config, num, seed=0, temperature=1.0):
    """Returns samples of the generative model (Figures 4 and 6).

    Args:
      model: a restored `VAE`.
      config: its `Config`.
      num: number of samples.
      seed: int seed; the same seed gives the same samples.
      temperature: scales the latent prior's and the residual's standard
        deviations.

    Returns:
      A dict of numpy arrays: `mean`, `sample` `[num, H, W, 3]` RGB in [0, 1],
      `residual` `[num, H, W]` (Y, unscaled) and `outputs` (the decoder's).
    """
    z = temperature * tf.random.stateless_normal(
        [num, config.latent_dim], seed=[seed, 0], alg="philox"
    )
    outputs, mean, sample, residual = _draw(model, config, z, [seed, 1], temperature)
    return {"mean": mean, "sample": sample, "residual": residual, "outputs": outputs}


def reconstructions(model, config, batch, seed=0, temperature=1.0):
    """Returns reconstructions of input images (Figures 1, 3 and 5).

    Args:
      model: a restored `VAE`.
      config: its `Config`.
      batch: an input batch dict (`y`, `rgb`, `cbcr` with colour).
      seed: int seed of the residual noise.
      temperature: scales the residual's standard deviation.

    Returns:
      A dict of numpy arrays: `input`, `mean`, `sample` `[n, H, W, 3]` RGB,
      `residual` `[n, H, W]` (Y, unscaled) and `outputs`.
    """
    z_mean, _ = model.encode(batch["y"], batch.get("cbcr"))
    outputs, mean, sample, residual = _draw(
        model, config, z_mean, [seed, 2], temperature
    )
    if config.color == "ycbcr":
        shown = np.clip(np.asarray(batch["rgb"]), 0.0, 1.0)
    else:
        shown = likelihoods.to_rgb({"y": batch["y"]}, config.chroma_factor).numpy()
    return {
        "input": shown,
        "mean": mean,
        "sample": sample,
        "residual": residual,
        "outputs": outputs,
    }


def inpainting_mask(kind, num, size, seed=0):
    """Returns a boolean `[num, size, size]` mask, True where a pixel is observed.

    Args:
      kind: `"center"` (a centred square of half the side is missing),
        `"random"` (each pixel missing with probability 1/2, seeded), or the
        path of an image whose light pixels (>= 128 in gray) mark what is
        missing, resized to `size` (nearest).
      num: number of images.
      size: image side.
      seed: seed of the random mask.

    Returns:
      A numpy boolean array.

    Raises:
      ValueError: a path that is not a readable image.
    """
    if kind == "center":
        mask = np.ones((size, size), bool)
        low, high = size // 4, size - size // 4
        mask[low:high, low:high] = False
        return np.broadcast_to(mask, (num, size, size)).copy()
    if kind == "random":
        rng = np.random.default_rng(seed)
        return rng.random((num, size, size)) >= 0.5
    try:
        with Image.open(kind) as image:
            gray = image.convert("L").resize((size, size), Image.Resampling.NEAREST)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"--mask must be center, random or an image file; cannot read {kind!r}: {e}"
        ) from e
    return np.broadcast_to(np.asarray(gray) < 128, (num, size, size)).copy()


def inpaint(model, config, batch, mask, seed=0, temperature=1.0):
    """Fills the missing pixels of images from the model (issue 7).

    The latent is the encoder's mean for the image with its missing pixels
    replaced by the mean of its observed ones (a neutral fill: the encoder
    never saw holes), then `p(x|z)` is conditioned on the observed pixels
    (`svae.likelihoods.conditional`). A chroma pixel counts as observed only
    if all the Y pixels it covers are.

    Args:
      model: a restored `VAE`.
      config: its `Config`.
      batch: an input batch dict (`y`, `rgb`, `cbcr` with colour).
      mask: boolean `[n, H, W]`, True where observed.
      seed: int seed of the residual noise.
      temperature: scales the conditional residual.

    Returns:
      A dict of numpy arrays: `input`, `masked` (missing pixels gray),
      `reconstruction` (the unconditional mean), `mean` (the conditional
      mean) and `sample`, `[n, H, W, 3]` RGB; and `masks`, the dict of masks.
    """
    mask = tf.constant(mask)
    factor = config.chroma_factor
    weights = tf.cast(mask, tf.float32)
    fill = tf.reduce_sum(batch["y"] * weights, [1, 2]) / tf.maximum(
        tf.reduce_sum(weights, [1, 2]), 1.0
    )
    masks = {"y": mask}
    filled = {"y": tf.where(mask, batch["y"], fill[:, None, None])}
    if "cbcr" in batch:
        size = mask.shape[1] // factor
        blocks = tf.reshape(mask, [-1, size, factor, size, factor])
        chroma_mask = tf.reduce_all(blocks, axis=[2, 4])[..., None]
        masks["cbcr"] = tf.broadcast_to(chroma_mask, tf.shape(batch["cbcr"]))
        chroma_fill = tf.reduce_mean(batch["cbcr"], [1, 2], keepdims=True)
        filled["cbcr"] = tf.where(masks["cbcr"], batch["cbcr"], chroma_fill)
    z_mean, _ = model.encode(filled["y"], filled.get("cbcr"))
    outputs = model.decode(z_mean)
    structure = config.structure
    observed = {name: batch[name] for name in masks}
    mean, drawn = likelihoods.conditional(
        outputs, observed, masks, tf.constant([seed, 4], tf.int32), structure
    )
    full = _tempered(mean, drawn, temperature)
    recon = likelihoods.means(outputs)
    gray = {"y": tf.where(mask, batch["y"], 0.5)}
    if "cbcr" in batch:
        gray["cbcr"] = tf.where(masks["cbcr"], batch["cbcr"], 0.5)
    if config.color == "ycbcr":
        shown = np.clip(np.asarray(batch["rgb"]), 0.0, 1.0)
    else:
        shown = likelihoods.to_rgb({"y": batch["y"]}, factor).numpy()
    return {
        "input": shown,
        "masked": likelihoods.to_rgb(gray, factor).numpy(),
        "reconstruction": likelihoods.to_rgb(recon, factor).numpy(),
        "mean": likelihoods.to_rgb(mean, factor).numpy(),
        "sample": likelihoods.to_rgb(full, factor).numpy(),
        "y_mean": mean["y"].numpy(),
        "y_sample": full["y"].numpy(),
        "masks": {name: value.numpy() for name, value in masks.items()},
    }


def write_figures(sample_config):
    """Writes the PNG figures of a trained run.

    Files in `output_dir` (default `model_dir/samples`):
    `prior_samples.png` (rows: mean, sample, std of Y), `reconstructions.png`
    (rows: input, mean, residual sample, full sample) and `std_y.png` (rows:
    input, mean, per-pixel std of Y as a heat map); with `inpaint`,
    `inpainting.png` (rows: input, observed pixels, unconditional mean,
    conditional mean, conditional sample). Also `health.json`: the sample
    health (`svae.health.run_health`, seeded by `seed`, at temperature 1)
    on the split, printed by `svae.health.format_health`, with a warning on
    stderr when samples diverge.

    Args:
      sample_config: a `SampleConfig`.

    Returns:
      `{"prior_samples", "reconstructions", "std_y", "health"}` (and
      `"inpainting"`): the paths written.

    Raises:
      svae.evaluation.EvaluationError: see `svae.evaluation.load_run`.
      svae.data.DatasetError: an unknown data set or split.
    """
    sc = sample_config
    config, model, step = evaluation.load_run(
        sc.model_dir, sc.dataset, sc.data_dir, sc.cache_dir
    )
    output_dir = pathlib.Path(sc.output_dir or pathlib.Path(sc.model_dir) / "samples")
    name = f"{config.model}, step {step}, T={sc.temperature:g}, seed {sc.seed}"
    std_seed = (sc.seed, 3)

    sample_health = health.run_health((config, model), sc.split, seed=sc.seed)
    warning = health.divergence_warning(sample_health)
    if warning:
        print(f"svae: warning: {warning}", file=sys.stderr)
    print(health.format_health(sample_health))
    output_dir.mkdir(parents=True, exist_ok=True)
    health_path = output_dir / "health.json"
    runs.write_json(health_path, sample_health)

    prior = prior_samples(model, config, sc.num, sc.seed, sc.temperature)
    prior_heat, prior_label = _heat_map(
        y_std(prior["outputs"], config, sc.std_method, std_seed)
    )
    paths = {
        "prior_samples": save_grid(
            [prior["mean"], prior["sample"], prior_heat],
            ["mean mu", "sample mu+eps", prior_label],
            output_dir / "prior_samples.png",
            sc.scale,
            f"prior samples: {name}",
        )
    }
    paths["health"] = health_path
    batch = load_images(config, sc.split, sc.num)
    recon = reconstructions(model, config, batch, sc.seed, sc.temperature)
    spread = residual_spread(recon["residual"])
    paths["reconstructions"] = save_grid(
        [
            recon["input"],
            recon["mean"],
            residual_image(recon["residual"], spread),
            recon["sample"],
        ],
        ["input", "mean mu", f"eps of Y, +-{spread:.3f}", "sample mu+eps"],
        output_dir / "reconstructions.png",
        sc.scale,
        f"reconstructions of {config.dataset}/{sc.split}: {name}",
    )
    recon_heat, recon_label = _heat_map(
        y_std(recon["outputs"], config, sc.std_method, std_seed)
    )
    paths["std_y"] = save_grid(
        [recon["input"], recon["mean"], recon_heat],
        ["input", "mean mu", recon_label],
        output_dir / "std_y.png",
        sc.scale,
        f"per-pixel std of Y ({sc.std_method}): {name}",
    )
    if sc.inpaint:
        mask = inpainting_mask(sc.mask, sc.num, config.image_size, sc.seed)
        filled = inpaint(model, config, batch, mask, sc.seed, sc.temperature)
        paths["inpainting"] = save_grid(
            [
                filled["input"],
                filled["masked"],
                filled["reconstruction"],
                filled["mean"],
                filled["sample"],
            ],
            [
                "input",
                "observed",
                "unconditional mean",
                "conditional mean",
                "conditional sample",
            ],
            output_dir / "inpainting.png",
            sc.scale,
            f"inpainting ({sc.mask} mask): {name}",
        )
    return paths
