"""Figures of the paper: prior samples, reconstructions, residuals, Y's std.

`write_figures` (what `sample.py` runs) computes them with `svae.inference`
and draws them with `svae.drawing`; both are re-exported here.

Prior samples (Figures 4 and 6): for `z ~ N(0, T^2 I)` the mean `mu(z)` and a
full sample `mu + T * epsilon`. Reconstructions (Figures 1, 3 and 5): the
input, the mean at the posterior mean `z`, the actual residual `y - mu` of Y
beside a residual sample `epsilon` (Figure 1's comparison) and the full
sample `mu + T * epsilon`. Everything is shown in RGB with the chroma
upsampled bilinearly (`svae.likelihoods.to_rgb`: smooth colour, no 4x4
blocks); residuals of Y are shown as gray images with +-3 robust standard
deviations of the actual residuals (`residual_spread`) spanning black to
white. The per-pixel standard deviation of Y is a heat map: exact for the
structured models (`SparsePrecisionGaussian.marginal_variance`),
`exp(y_log_scale)` for the factorised ones. Beside the figures, the run's
sample health (`svae.health`) is written, printed, and warned about when
samples diverge. Every random draw uses a stateless seed: the same seed
writes the same bytes.
"""

import pathlib
import sys

from svae import health, runs
from svae.config import SampleConfig  # Re-exported: sample.py's config.
from svae.data import load_batch as load_images  # Re-exported: figures' images.
from svae.drawing import (  # Re-exported: the drawing helpers.
    colormap,
    heat_map,
    residual_image,
    residual_spread,
    save_grid,
)
from svae.inference import (  # Re-exported: what the figures show.
    inpaint,
    inpainting_mask,
    prior_samples,
    reconstructions,
    y_std,
)

__all__ = [
    "SampleConfig",
    "colormap",
    "comparison_figures",
    "inpaint",
    "inpainting_mask",
    "load_images",
    "prior_samples",
    "reconstructions",
    "residual_image",
    "residual_spread",
    "save_grid",
    "write_figures",
    "y_std",
]


def write_figures(sample_config):
    """Writes the PNG figures of a trained run.

    Files in `output_dir` (default `model_dir/samples`):
    `prior_samples.png` (rows: mean, sample, std of Y), `reconstructions.png`
    (rows: input, mean, actual residual of Y, residual sample, full sample)
    and `std_y.png` (rows: input, mean, per-pixel std of Y as a heat map);
    with `inpaint`, `inpainting.png` (rows: input, observed pixels,
    unconditional mean, conditional mean, conditional sample). Also
    `health.json`: the sample health (`svae.health.run_health`, seeded by
    `seed`, at temperature 1) on the split, printed by
    `svae.health.format_health`, with a warning on stderr when samples
    diverge.

    Args:
      sample_config: a `SampleConfig`.

    Returns:
      `{"prior_samples", "reconstructions", "std_y", "health"}` (and
      `"inpainting"`): the paths written.

    Raises:
      svae.runs.RunError: see `svae.runs.load_run`; also an `output_dir`
        that cannot be created and written (checked before any work).
      svae.data.DatasetError: an unknown data set or split.
    """
    sc = sample_config
    # Before any work: an --output_dir that cannot be written, then the run.
    flag = "--output_dir"
    output_dir = sc.output_dir and runs.check_model_dir(sc.output_dir, flag)
    config, model, step = runs.load_run(
        sc.model_dir, sc.dataset, sc.data_dir, sc.cache_dir
    )
    output_dir = output_dir or runs.check_model_dir(
        pathlib.Path(sc.model_dir) / "samples", flag
    )
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
    prior_heat, prior_label = heat_map(
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
    residual_rows, residual_labels = _residual_rows(recon)
    paths["reconstructions"] = save_grid(
        [recon["input"], recon["mean"], *residual_rows, recon["sample"]],
        ["input", "mean mu", *residual_labels, "sample mu+eps"],
        output_dir / "reconstructions.png",
        sc.scale,
        f"reconstructions of {config.dataset}/{sc.split}: {name}",
    )
    recon_heat, recon_label = heat_map(
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


def _residual_rows(recon):
    """The actual residual of Y and the sampled one, as gray rows and labels.

    Both on the actual residual's scale (`residual_spread`), so a sample as
    wide as the residual it models looks as strong, and one that diverges
    saturates.
    """
    spread = residual_spread(recon["actual"])
    rows = [residual_image(recon[key], spread) for key in ("actual", "residual")]
    return rows, [f"y-mu of Y, +-{spread:.2f}", f"eps of Y, +-{spread:.2f}"]


def comparison_figures(run_dirs, output_dir, num=6, seed=0):
    """Writes reconstructions and prior samples of several runs side by side.

    Args:
      run_dirs: `{label: run directory}`, in the order of the rows.
      output_dir: folder for `reconstructions.png` and `prior_samples.png`.
      num: held-out images and prior samples per row.
      seed: the stateless seed of every draw.

    Returns:
      `{"reconstructions": path, "prior_samples": path}`.
    """
    recon_rows, recon_labels, prior_rows, prior_labels = [], [], [], []
    for model, run_dir in run_dirs.items():
        config, net, _ = runs.load_run(run_dir)
        batch = load_images(config, "test", num)
        recon = reconstructions(net, config, batch, seed)
        if not recon_rows:
            recon_rows.append(recon["input"])
            recon_labels.append("input (held out)")
        residual_rows, residual_labels = _residual_rows(recon)
        recon_rows += [recon["mean"], *residual_rows, recon["sample"]]
        recon_labels += [
            f"{model}: {label}" for label in ("mean mu", *residual_labels, "mu+eps")
        ]
        prior = prior_samples(net, config, num, seed)
        prior_rows += [prior["mean"], prior["sample"]]
        prior_labels += [f"{model}: mean mu", f"{model}: sample mu+eps"]
    return {
        "reconstructions": save_grid(
            recon_rows,
            recon_labels,
            pathlib.Path(output_dir) / "reconstructions.png",
            3,
            "Reconstructions of held-out photographs (cf. Figures 1, 3, 5)",
        ),
        "prior_samples": save_grid(
            prior_rows,
            prior_labels,
            pathlib.Path(output_dir) / "prior_samples.png",
            3,
            "Samples from the prior, z ~ N(0, I) (cf. Figures 4, 6)",
        ),
    }
