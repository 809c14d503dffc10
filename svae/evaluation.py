"""Evaluation: the importance-weighted NLL of Tables 1-2, KL, MSE, FLOPs, health.

`evaluate(EvalConfig(...))` is the one entry point (`evaluate.py` calls it);
`compare(model_dirs)` formats saved results as the paper's tables. The
importance-weighted bound (Burda et al., 2016) is written against plain
callables and distributions (`importance_weighted_bound`), so it is tested on
a linear-Gaussian model whose `log p(x)` is known in closed form.

Units: images are continuous in [0, 1]; the NLL is `-log p(x)` of the density
of the modelled representation (Y at full size and, with colour, Cb and Cr
downsampled), in nats per image, as in the paper (whose NLLs are negative).
Bits per dimension divide it by `num_dims * ln 2`, `num_dims` being the number
of modelled values (`H * W` for Y plus `2 * (H / f) * (W / f)` for CbCr).
Where the bits go: `recon_<group>_bpd` is the reconstruction term of the
ELBO of one channel group, `-mean_k log p(x_group|z_k)` on the bound's
samples, in bits per value of the group (`y`, and `cbcr` with colour); the
ELBO is `-sum_group recon_group - KL` in nats. The report also holds the
sample health of the run (`svae.health`) on the first evaluated images,
with the structure of Y's sampled residuals against its actual ones.
"""

import csv
import json
import math
import pathlib
import time

import numpy as np
import tensorflow as tf

from svae import data, flops, health, likelihoods, runs
from svae.config import EvalConfig  # Re-exported: evaluate's config.
from svae.data import load_split  # Re-exported: evaluation's images.
from svae.likelihoods import modelled_dims  # Re-exported: the NLL's units.
from svae.progress import Progress
from svae.runs import load_run  # Re-exported: a run's config and model.

__all__ = [
    "METRICS",
    "EvalConfig",
    "EvaluationError",
    "compare",
    "evaluate",
    "importance_weighted_bound",
    "latent_log_likelihood",
    "latent_log_likelihood_parts",
    "load_run",
    "load_split",
    "modelled_dims",
    "rgb_mse",
]

METRICS = ("nll", "nll_bpd", "elbo", "kl", "mse")
# Per channel group (see recon_metrics): -E_q log p(x_group|z), bits per value.
GROUPS = ("y", "cbcr")
EVAL_DIR = "eval"


# A run directory, split or saved result that cannot be evaluated: the same
# error as any unusable run directory (svae.runs), so that callers catch one.
EvaluationError = runs.RunError


@tf.function(reduce_retracing=True)
def _log_prior_ratio(prior, posterior, z):
    """Returns `log p(z) - log q(z|x)` `[K, B]`, compiled (eagerly it costs ~2%)."""
    return prior.log_prob(z) - posterior.log_prob(z)


def importance_weighted_bound(
    log_likelihood_fn, posterior, prior, z, sample_chunk=None
):
    """Returns the importance-weighted lower bound of `log p(x)` (Burda et al.).

    `log p(x) >= logmeanexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)]`,
    computed with `reduce_logsumexp` (shifted by the maximum, so weights of
    thousands of nats neither overflow nor underflow). `log_likelihood_fn` is
    called on chunks of `sample_chunk` samples, which bounds the memory of a
    decoder to `sample_chunk * B` images, also when K is known only at run
    time (`z` of shape `[None, B, D]` in a `tf.function`, as in served
    models): the chunks are then a `tf.while_loop` that runs one at a time.

    Args:
      log_likelihood_fn: maps `z` `[S, B, D]` to `log p(x|z)` `[S, B]`.
      posterior: `q(z|x)`, batch shape `[B]`, event shape `[D]`.
      prior: `p(z)`, event shape `[D]` (batch shape broadcasting to `[B]`).
      z: `[K, B, D]` samples of `posterior`.
      sample_chunk: samples per call of `log_likelihood_fn`; None for all.
        With a run-time K, `log_likelihood_fn` must return `z`'s dtype.

    Returns:
      A dict of tensors: `bound` `[B]`, `log_weights` `[K, B]` and
      `log_likelihood` `[K, B]`.
    """
    z = tf.convert_to_tensor(z)
    num_samples = z.shape[0]
    if sample_chunk is None:
        # One call; K may then be known only at run time.
        log_likelihood = log_likelihood_fn(z)
        num_samples = tf.shape(z)[0]
    elif num_samples is None:
        # K known at run time only (served models): the same chunks in a
        # loop that runs one at a time, so memory is bounded for any K.
        num_samples = tf.shape(z)[0]
        starts = tf.range(0, num_samples, sample_chunk)
        chunks = tf.TensorArray(
            z.dtype,
            size=tf.size(starts),
            infer_shape=False,
            element_shape=tf.TensorShape([None]).concatenate(z.shape[1:2]),
        )

        def one_chunk(i, chunks):
            chunk = z[starts[i] : starts[i] + sample_chunk]
            return i + 1, chunks.write(i, log_likelihood_fn(chunk))

        _, chunks = tf.while_loop(
            lambda i, _: i < tf.size(starts),
            one_chunk,
            (tf.constant(0), chunks),
            parallel_iterations=1,
        )
        log_likelihood = chunks.concat()
    else:
        log_likelihood = tf.concat(
            [
                log_likelihood_fn(z[i : i + sample_chunk])
                for i in range(0, num_samples, sample_chunk)
            ],
            axis=0,
        )
    log_weights = log_likelihood + _log_prior_ratio(prior, posterior, z)
    log_k = tf.math.log(tf.cast(num_samples, log_weights.dtype))
    bound = tf.reduce_logsumexp(log_weights, axis=0) - log_k
    return {
        "bound": bound,
        "log_weights": log_weights,
        "log_likelihood": log_likelihood,
    }


def rgb_mse(outputs, batch, chroma_factor=4):
    """Returns the paper's Table 2 MSE: predicted mean vs input, RGB in [0, 255].

    The mean (`epsilon = 0`) is converted to RGB with the chroma upsampled
    (`likelihoods.to_rgb`) and clipped to [0, 1], as an image would be shown.
    With colour the reference is the original RGB input; for gray models
    (Y only) it is the input's Y as a gray RGB image.

    Args:
      outputs: a model's output dict (`y_mean`, `cbcr_mean` with colour).
      batch: the input batch dict (`y`, `rgb`, `cbcr` with colour).
      chroma_factor: upsampling factor of CbCr.

    Returns:
      `[batch]` mean squared errors over pixels and the 3 channels.
    """
    mean = likelihoods.means(outputs)
    if "cbcr" in mean:
        reference = batch["rgb"]
    else:
        reference = likelihoods.to_rgb({"y": batch["y"]}, chroma_factor)
    predicted = likelihoods.to_rgb(mean, chroma_factor, clip=True)
    error = tf.square(255.0 * (tf.cast(reference, predicted.dtype) - predicted))
    return tf.reduce_mean(error, axis=[1, 2, 3])


def _images(config, split, max_images, batch_size):
    """Returns `(batches, count)` of the split as model inputs; count may be None."""
    images = load_split(config, split)
    # An upper bound where bad files may still be skipped: the progress bar
    # then ends early rather than having no ETA.
    count = data.size_hint(images)
    if max_images is not None:
        images = images.take(max_images)
        count = max_images if count is None else min(count, max_images)
    batches = images.batch(batch_size).map(
        lambda rgb: data.to_model_inputs(rgb, config.color, config.chroma_factor),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return batches.prefetch(2), count


def _latent_noise(seed, first_index, batch_size, num_samples, latent_dim):
    """Returns `[K, B, D]` standard normals; image `i` always gets seed `(seed, i)`.

    Per-image seeds make each image's numbers independent of the batch size
    and of the chunking.
    """
    noise = [
        tf.random.stateless_normal(
            [num_samples, latent_dim],
            seed=tf.constant([seed, first_index + i], tf.int64),
            alg="philox",
        )
        for i in range(batch_size)
    ]
    return tf.stack(noise, axis=1)


def _decode_samples(model, z):
    """Decodes latents `[S, B, D]` into outputs shaped `[S, B, ...]`.

    One decoder call on `[S * B, D]`; the outputs keep the sample axis in
    front, so the likelihood broadcasts them against a `[B, ...]` batch
    without tiling the images.
    """
    num, size = tf.shape(z)[0], tf.shape(z)[1]
    outputs = model.decode(tf.reshape(z, [num * size, z.shape[-1]]))
    return {
        name: tf.reshape(value, tf.concat([[num, size], tf.shape(value)[1:]], 0))
        for name, value in outputs.items()
    }


def latent_log_likelihood_parts(model, z, batch):
    """Returns `{group: log p(x_group|z)}`, `[S, B]` each, for latents `[S, B, D]`.

    Args:
      model: a `VAE`.
      z: `[S, B, D]` latents, S per image.
      batch: a model-input batch dict of B images.
    """
    observed = {name: batch[name] for name in GROUPS if name in batch}
    outputs = _decode_samples(model, z)
    return likelihoods.log_likelihood_parts(outputs, observed, model.structure)


def latent_log_likelihood(model, z, batch):
    """Returns `log p(x|z)` `[S, B]`: the sum of `latent_log_likelihood_parts`."""
    return tf.add_n(list(latent_log_likelihood_parts(model, z, batch).values()))


def recon_metrics(dims):
    """Returns the names of the per-group metrics of a run's `dims`."""
    return tuple(f"recon_{group}_bpd" for group in GROUPS if dims[group])


class _BatchEvaluator:
    """The compiled pieces of one batch's metrics for a model and config."""

    def __init__(self, model, config):
        self.model = model
        self.config = config

    @tf.function(reduce_retracing=True)
    def encode(self, batch):
        """Returns posterior parameters, KL and RGB MSE at the posterior mean."""
        z_mean, z_log_scale = self.model.encode(batch["y"], batch.get("cbcr"))
        outputs = self.model.decode(z_mean)
        return {
            "z_mean": z_mean,
            "z_log_scale": z_log_scale,
            "kl": likelihoods.kl_divergence(z_mean, z_log_scale),
            "mse": rgb_mse(outputs, batch, self.config.chroma_factor),
        }

    @tf.function(reduce_retracing=True)
    def log_likelihood_parts(self, z, batch):
        """Returns `{group: log p(x_group|z)}` `[S, B]` for latents `[S, B, D]`."""
        return latent_log_likelihood_parts(self.model, z, batch)

    def __call__(self, batch, noise, sample_chunk):
        """Returns `{metric: [B] numpy}` for a batch and its `[K, B, D]` noise.

        The metrics are `nll`, `elbo`, `kl`, `mse` and `recon_<group>` (nats:
        `-mean_k log p(x_group|z_k)`), from one decoding of the samples.
        """
        encoded = self.encode(batch)
        posterior = likelihoods.posterior(encoded["z_mean"], encoded["z_log_scale"])
        prior = likelihoods.prior(self.config.latent_dim)
        z = encoded["z_mean"] + tf.exp(encoded["z_log_scale"]) * noise
        chunks = []

        def log_likelihood(chunk):
            parts = self.log_likelihood_parts(chunk, batch)
            chunks.append(parts)
            return tf.add_n(list(parts.values()))

        result = importance_weighted_bound(
            log_likelihood, posterior, prior, z, sample_chunk
        )
        elbo = tf.reduce_mean(result["log_likelihood"], axis=0) - encoded["kl"]
        recon = {
            f"recon_{group}": -tf.reduce_mean(
                tf.concat([parts[group] for parts in chunks], 0), axis=0
            ).numpy()
            for group in chunks[0]
        }
        return {
            "nll": -result["bound"].numpy(),
            "elbo": elbo.numpy(),
            "kl": encoded["kl"].numpy(),
            "mse": encoded["mse"].numpy(),
            **recon,
        }


def _summary(values):
    """Returns `{"mean", "std"}` (population standard deviation) of an array."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _format_table(report):
    """Returns the printed table of one evaluation."""
    dims = report["dims"]
    label = {
        "nll": "NLL (nats/image, IW bound)",
        "nll_bpd": f"NLL (bits/dim, {dims['total']} dims)",
        "elbo": "ELBO (nats/image)",
        "kl": "KL(q(z|x) || p(z)) (nats)",
        "mse": "MSE (RGB, [0, 255])",
        "recon_y_bpd": "-E log p(Y|z) (bits/value)",
        "recon_cbcr_bpd": "-E log p(CbCr|z) (bits/value)",
    }
    lines = [
        f"{report['model']} ({report['model_dir']}, step {report['step']}): "
        f"{report['num_images']} {report['dataset']}/{report['split']} images, "
        f"K={report['num_samples']}",
        f"  {'metric':34s} {'mean':>12s} {'std':>10s}",
    ]
    for name in METRICS + recon_metrics(dims):
        value = report[name]
        lines.append(f"  {label[name]:34s} {value['mean']:12.2f} {value['std']:10.2f}")
    lines.append(f"  {'FLOPs per image':34s} {report['flops_per_image']:12.3g}")
    lines.append(f"  {'images/s':34s} {report['images_per_second']:12.2f}")
    return "\n".join(lines)


def evaluate(eval_config):
    """Evaluates a trained run on a split and writes `<split>.json` and `.csv`.

    Per image: `nll = -IW bound` with `num_samples` samples of `q(z|x)`
    (never any beta: for `beta_vae_diag` this is the beta = 1 likelihood, as
    in the paper), `elbo = mean_k log p(x|z_k) - KL` on the same samples,
    `kl = KL[q(z|x) || p(z)]` analytically, `mse` (`rgb_mse`) and, per
    channel group, `recon_<group>_bpd = -mean_k log p(x_group|z_k)` in bits
    per value of the group (`recon_metrics`); then the
    sample health (`svae.health.sample_health`) on the first `health_images`
    of these images and `num_prior` prior samples, seeded by `seed`.

    Args:
      eval_config: an `EvalConfig`.

    Returns:
      The report dict written as JSON: per-metric `{"mean", "std"}`, `dims`,
      `flops_per_image`, `images_per_second`, `health` (the dict of
      `svae.health.sample_health`), the run's details, and the paths `json`
      and `csv`.

    Raises:
      EvaluationError: see `load_run`; also an empty split, or an
        `output_dir` that cannot be created and written (checked first).
      svae.data.DatasetError: an unknown data set or split, missing files.
    """
    ec = eval_config
    flag = "--output_dir"
    output_dir = ec.output_dir and runs.check_model_dir(ec.output_dir, flag)
    config, model, step = load_run(ec.model_dir, ec.dataset, ec.data_dir, ec.cache_dir)
    output_dir = output_dir or runs.check_model_dir(
        pathlib.Path(ec.model_dir) / EVAL_DIR, flag
    )
    batches, count = _images(config, ec.split, ec.max_images, ec.batch_size)
    evaluator = _BatchEvaluator(model, config)
    dims = modelled_dims(config)
    metrics = METRICS + recon_metrics(dims)
    per_image = {}
    progress = Progress(count, "image", metrics=("nll",)) if ec.progress else None
    seen = 0
    health_batches = []
    start = time.perf_counter()
    for batch in batches:
        size = int(batch["y"].shape[0])
        noise = _latent_noise(ec.seed, seen, size, ec.num_samples, config.latent_dim)
        for name, values in evaluator(batch, noise, ec.sample_chunk).items():
            per_image.setdefault(name, []).append(values)
        if seen < ec.health_images:
            health_batches.append(batch)
        seen += size
        if progress is not None:
            nll = float(np.mean(np.concatenate(per_image["nll"])))
            progress.update(seen, [("nll", nll)], finalize=False)
    seconds = time.perf_counter() - start
    if progress is not None:
        progress.update(seen, finalize=True)
    if not seen:
        raise EvaluationError(f"The {config.dataset} {ec.split} split has no images.")
    values = {name: np.concatenate(parts) for name, parts in per_image.items()}
    values["nll_bpd"] = values["nll"] / (dims["total"] * math.log(2.0))
    for group in GROUPS:
        if dims[group]:
            nats = values.pop(f"recon_{group}")
            values[f"recon_{group}_bpd"] = nats / (dims[group] * math.log(2.0))
    broken = {
        name: int(np.sum(~np.isfinite(v)))
        for name, v in values.items()
        if name != "nll_bpd"
    }
    broken = {name: count for name, count in broken.items() if count}
    if broken:
        raise EvaluationError(
            f"{ec.model_dir} (its checkpoint of step {step}) gives non-finite "
            + ", ".join(f"{name} on {n} of {seen} images" for name, n in broken.items())
            + ": its weights are broken (did training diverge?). Nothing was "
            "written. Evaluate an earlier checkpoint by moving the newer ckpt-* "
            "files out of checkpoints/ (docs/training.md, The NaN policy)."
        )
    held_out = {
        name: tf.concat([b[name] for b in health_batches], 0)[: ec.health_images]
        for name in health_batches[0]
    }
    sample_health = health.sample_health(model, config, held_out, ec.num_prior, ec.seed)

    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / f"{ec.split}.json"
    csv_path = output_dir / f"{ec.split}.csv"
    report = {
        "model_dir": str(ec.model_dir),
        "model": config.model,
        "dataset": config.dataset,
        "split": ec.split,
        "step": step,
        "num_images": seen,
        "num_samples": ec.num_samples,
        "seed": ec.seed,
        "dims": dims,
        **{name: _summary(values[name]) for name in metrics},
        "flops_per_image": flops.model_flops(config),
        "images_per_second": seen / seconds,
        "seconds": seconds,
        "health": sample_health,
        "json": str(json_path),
        "csv": str(csv_path),
    }
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("image",) + metrics)
        for i in range(seen):
            writer.writerow([i] + [repr(float(values[name][i])) for name in metrics])
    runs.write_json(json_path, report)
    print(_format_table(report))
    print(health.format_health(sample_health))
    print(f"  written: {json_path}, {csv_path}")
    return report


# The fields of a saved report that `compare` prints, dotted into dicts.
_REPORT_TEXT = ("model", "model_dir")
_REPORT_NUMBERS = (
    "nll.mean",
    "nll.std",
    "nll_bpd.mean",
    "kl.mean",
    "flops_per_image",
    "mse.mean",
    "mse.std",
    "num_images",
    "num_samples",
)


def _report_problem(report):
    """Returns what keeps `compare` from printing a saved report, or None."""
    if not isinstance(report, dict):
        return f"it holds {json.dumps(report)[:40]}, not a JSON object"
    for dotted in _REPORT_TEXT + _REPORT_NUMBERS:
        value = report
        for key in dotted.split("."):
            if not isinstance(value, dict) or key not in value:
                return f"it has no {dotted}"
            value = value[key]
        kind = str if dotted in _REPORT_TEXT else (int, float)
        if value is None or isinstance(value, bool) or not isinstance(value, kind):
            return f"its {dotted} is {json.dumps(value)[:40]}, not a " + (
                "string" if kind is str else "number"
            )
    try:
        _recon_cell(report)
        _health_cells(report.get("health"))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        why = f"{type(e).__name__}: {e}"
        return f"its reconstruction terms or health are malformed ({why})"
    return None


def _read_report(model_dir, split):
    """Reads a saved `<split>.json` of a run; raises if `compare` cannot print it."""
    path = pathlib.Path(model_dir) / EVAL_DIR / f"{split}.json"
    again = f"python evaluate.py --model_dir={model_dir} --split={split}"
    if not path.exists():
        raise EvaluationError(f"{path} does not exist: run `{again}` first.")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        problem = f"it cannot be read as JSON: {e}"
    else:
        problem = _report_problem(report)
    if problem:
        raise EvaluationError(
            f"{path} is not an evaluation written by evaluate.py ({problem}). "
            f"Run `{again}` to write it again."
        )
    return report


def compare(model_dirs, split="test", names=None):
    """Returns a Markdown table of saved evaluations in the layout of Tables 1-2.

    Args:
      model_dirs: run directories, each evaluated on `split` already.
      split: which saved evaluation to read (`DIR/eval/<split>.json`).
      names: optional row labels; by default the model and directory.

    Returns:
      The table as a string: NLL and MSE as `mean ± std`, KL as the mean,
      FLOPs per image, the reconstruction terms of Y and CbCr in bits per
      value (`recon_<group>_bpd`), then the sample health (`svae.health`):
      diverged prior and reconstruction samples as `count/num`, the calibration of Y
      (median / p95) and of CbCr (median), the prior's CbCr spread, and the
      structure of Y's residuals (`svae.health.residual_structure`): the
      spectral distance of the sampled to the actual residuals in dB, the
      axis ratio (sampled / actual) and the lag-1 correlations along x, y
      and the diagonals (sampled; actual), and the lag-1 correlations of
      CbCr's residuals; `-` where a report predates these numbers or the
      run is gray.

    Raises:
      EvaluationError: a run without a saved evaluation of `split`, or with
        one that is not JSON or lacks (or holds null in) a printed field.
    """
    reports = [_read_report(d, split) for d in model_dirs]
    names = names or [f"{r['model']} (`{r['model_dir']}`)" for r in reports]
    lines = [
        "| Model | NLL (nats) | NLL (bits/dim) | KL | FLOPs | MSE | images, K "
        "| recon. Y / CbCr (bits/value) | prior diverged | recon. diverged "
        "| calibration Y (median / p95) "
        "| calibration CbCr (median) | prior CbCr spread "
        "| spectral dist. Y (dB) | axis ratio Y (sampled / actual) "
        "| lag-1 Y x / y / diag (sampled; actual) "
        "| lag-1 CbCr x / y / diag (sampled; actual) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
        "|---:|---:|---:|---:|",
    ]
    for name, r in zip(names, reports, strict=True):
        lines.append(
            f"| {name} | {r['nll']['mean']:.0f} ± {r['nll']['std']:.0f} "
            f"| {r['nll_bpd']['mean']:.3f} | {r['kl']['mean']:.2f} "
            f"| {r['flops_per_image']:.3g} "
            f"| {r['mse']['mean']:.0f} ± {r['mse']['std']:.0f} "
            f"| {r['num_images']}, {r['num_samples']} "
            f"| {_recon_cell(r)} "
            f"| {' | '.join(_health_cells(r.get('health')))} |"
        )
    return "\n".join(lines)


def _recon_cell(report):
    """Returns `compare`'s `Y / CbCr` cell of reconstruction bits per value."""
    parts = [report.get(f"recon_{group}_bpd", {}).get("mean") for group in GROUPS]
    return " / ".join("-" if value is None else f"{value:.3f}" for value in parts)


def _health_cells(sample_health):
    """Returns `compare`'s nine health cells of a report's `health`, or dashes."""
    if sample_health is None:
        return ["-"] * 9
    number = health.format_number
    y, cbcr = sample_health["calibration_y"], sample_health["calibration_cbcr"]
    return [
        "{count}/{num}".format(**sample_health["prior_diverged"]),
        "{count}/{num}".format(**sample_health["recon_diverged"]),
        f"{number(y['median'])} / {number(y['p95'])}",
        number(cbcr and cbcr["median"]),
        number(sample_health["prior_cbcr_spread"]),
        *health.format_structure(sample_health.get("structure_y")),
        health.format_structure(sample_health.get("structure_cbcr"))[2],
    ]
