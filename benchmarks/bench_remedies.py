"""The likelihood's fields and the widths, measured at the demo's length.

Trains each named variant on `--dataset` (by default `sample_photos`, the
demo's data; `benchmarks/other_photos.py` builds a second set of real
photographs for `--dataset=folder:PATH`) with the demo's settings and
schedule (`vae_sph` first, then `structured` initialised from it), evaluates
it on the held-out photographs (IW bound with `--num_samples`, KL, MSE) and
measures its sample health (`svae.health`) and its training step time, then
prints one Markdown row per run for benchmarks/log/likelihood.md (the last
column splits the ELBO's reconstruction term into Y and Cb/Cr,
`recon_<group>_bpd` of `evaluate.py`). Finished runs in `--output_dir` are
reused, so a long list can be run in pieces; every row is also appended to
`OUTPUT_DIR/results.jsonl`.

    python benchmarks/bench_remedies.py --variants=paper,product_cs --seeds=0,1
"""

import dataclasses
import json
import pathlib
import statistics
import time

from absl import app, flags

from svae import config as config_lib
from svae import evaluation, health, recipes, training

flags.DEFINE_string("output_dir", "/tmp/svae-remedies", "Where the runs go.")
flags.DEFINE_string("dataset", "sample_photos", "Data set (any --dataset of train.py).")
flags.DEFINE_list("variants", ["paper", "bounded"], "Names of VARIANTS to run.")
flags.DEFINE_list("seeds", ["0"], "Seeds (weights, data order, noise).")
flags.DEFINE_integer("filters", 16, "Width (Config.filters) unless a variant sets it.")
flags.DEFINE_integer(
    "sph_steps", 1500, "Steps of the vae_sph run structured starts from."
)
flags.DEFINE_integer("steps", 1000, "Steps of each variant after vae_sph.")
flags.DEFINE_integer("num_samples", 100, "Importance samples K of the NLL.")
flags.DEFINE_integer("num_images", 128, "Held-out images evaluated.")
flags.DEFINE_bool(
    "table_only", False, "Print every row of OUTPUT_DIR/results.jsonl; train nothing."
)
FLAGS = flags.FLAGS

PAPER = recipes.RECIPES["paper"]
# The default recipe without the contrast scale, with the factorised chroma and
# without border offsets: the variants' rows in the log were measured so,
# before each became the default (`_cs`: with the contrast scale).
PLAIN = dataclasses.replace(
    recipes.DEFAULT, contrast_scale=False, chroma="factorised", borders=False
)


def _plain(**fields):
    """`PLAIN` with `fields` changed."""
    return dataclasses.replace(PLAIN, **fields)


# name -> (model, likelihood, other Config fields, whether it starts from a
# vae_sph run).
VARIANTS = {
    "paper": ("structured", PAPER, {}, True),
    "paper_calibrated": ("structured", _plain(factor="free"), {}, True),
    "bounded": ("structured", _plain(factor="bounded"), {}, True),
    "bounded_090": ("structured", _plain(factor="bounded", dominance=0.9), {}, True),
    "product": ("structured", PLAIN, {}, True),
    "product_095": ("structured", _plain(dominance=0.95), {}, True),
    "product_basis": ("structured", PLAIN, {"num_basis": 3}, True),
    "product_dilated": ("structured", PLAIN, {"dilation": 2}, True),
    "product_cs": ("structured", _plain(contrast_scale=True), {}, True),
    "full_product_cs": (
        "structured",
        _plain(factor="full_product", contrast_scale=True),
        {},
        True,
    ),
    "full_product_cs_chroma": (
        "structured",
        _plain(factor="full_product", contrast_scale=True, chroma="structured"),
        {},
        True,
    ),
    "full_product_cs_chroma_borders": (
        "structured",
        _plain(
            factor="full_product",
            contrast_scale=True,
            chroma="structured",
            borders=True,
        ),
        {},
        True,
    ),
    "full_product_cs_chroma_g0": (
        "structured",
        _plain(factor="full_product", contrast_scale=True, chroma="structured"),
        {"gamma": 0.0},
        True,
    ),
    "supn_product": ("supn", PLAIN, {}, True),
    "supn_product_095": ("supn", _plain(dominance=0.95), {}, True),
    "supn_product_cs": ("supn", _plain(contrast_scale=True), {}, True),
    "supn_full_product_cs": (
        "supn",
        _plain(factor="full_product", contrast_scale=True),
        {},
        True,
    ),
    "supn_paper": ("supn", PAPER, {}, True),
    "vae_sph": ("vae_sph", PLAIN, {}, False),
    "vae_sph_paper": ("vae_sph", PAPER, {}, False),
    "vae_diag": ("vae_diag", PLAIN, {}, False),
    "vae_diag_cs": ("vae_diag", _plain(contrast_scale=True), {}, False),
    "vae_diag_paper": ("vae_diag", PAPER, {}, False),
    "beta_vae_diag": ("beta_vae_diag", PLAIN, {}, False),
}
# The default recipe's models under the mixed policies (`--precision`); the
# structured runs start from the vae_sph run of the same precision.
for _precision in ("mixed_bfloat16", "mixed_float16"):
    _mixed = {"precision": _precision}
    _short = _precision.removeprefix("mixed_")
    VARIANTS[f"vae_sph_{_short}"] = ("vae_sph", PLAIN, _mixed, False)
    VARIANTS[f"vae_diag_cs_{_short}"] = (
        "vae_diag",
        _plain(contrast_scale=True),
        _mixed,
        False,
    )
    VARIANTS[f"default_{_short}"] = ("structured", recipes.DEFAULT, _mixed, True)
for _width in (6, 16, 32, 64):
    _wide = {"filters": _width}
    VARIANTS[f"product_w{_width}"] = ("structured", PLAIN, _wide, True)
    VARIANTS[f"vae_diag_w{_width}"] = ("vae_diag", PLAIN, _wide, False)
    VARIANTS[f"vae_sph_w{_width}"] = ("vae_sph", PLAIN, _wide, False)


def _train(model, likelihood, overrides, seed, steps, model_dir, init_from=None):
    """Trains one run (or finds it finished); returns median ms per step."""
    config = config_lib.Config(
        model=model,
        likelihood=likelihood,
        model_dir=str(model_dir),
        dataset=FLAGS.dataset,
        steps=steps,
        seed=seed,
        init_from=init_from,
        pretrain_epochs=0,
        structured_warmup_epochs=1,
        checkpoint_every=steps,
        summary_every=100,
        image_summary_every=steps,
        progress=False,
        **({"filters": FLAGS.filters} | overrides),
    )
    stamps = []
    training.train(config, callback=lambda step, _: stamps.append(time.perf_counter()))
    timing = pathlib.Path(model_dir) / "ms_per_step.json"
    if len(stamps) > 1:
        gaps = [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)]
        timing.write_text(json.dumps(1e3 * statistics.median(gaps)))
    return json.loads(timing.read_text()) if timing.exists() else None


def _run(name, seed):
    """Trains and evaluates one variant; returns its row as a dict."""
    model, likelihood, overrides, from_sph = VARIANTS[name]
    root = pathlib.Path(FLAGS.output_dir)
    init_from = None
    if from_sph:
        # The paper's structured model starts from its own (learned-scale)
        # vae_sph; every other variant from the calibrated one.
        sph_name = "vae_sph_paper" if likelihood.scales == "learned" else "vae_sph"
        sph = {k: v for k, v in overrides.items() if k in ("filters", "precision")}
        precision = sph.get("precision", "float32").removeprefix("mixed_")
        suffix = "" if precision == "float32" else f"_{precision}"
        init_from = (
            root / f"{sph_name}{suffix}-w{sph.get('filters', FLAGS.filters)}-s{seed}"
        )
        sph_likelihood = VARIANTS[sph_name][1]
        _train("vae_sph", sph_likelihood, sph, seed, FLAGS.sph_steps, init_from)
    width = overrides.get("filters", FLAGS.filters)
    model_dir = root / f"{name}-w{width}-s{seed}"
    steps = FLAGS.steps if from_sph else FLAGS.sph_steps
    ms = _train(
        model,
        likelihood,
        overrides,
        seed,
        steps,
        model_dir,
        init_from and str(init_from),
    )
    report = evaluation.evaluate(
        evaluation.EvalConfig(
            model_dir=str(model_dir),
            num_samples=FLAGS.num_samples,
            max_images=FLAGS.num_images,
            progress=False,
        )
    )
    health = report.get("health") or {}
    row = {
        "variant": name,
        "dataset": FLAGS.dataset,
        "filters": width,
        "seed": seed,
        "steps": steps,
        "nll_bpd": report["nll_bpd"]["mean"],
        "nll": report["nll"]["mean"],
        "kl": report["kl"]["mean"],
        "mse": report["mse"]["mean"],
        "health": health,
        "ms_per_step": ms,
        "recon_bpd": [
            report.get(f"recon_{group}_bpd", {}).get("mean")
            for group in evaluation.GROUPS
        ],
    }
    with (root / "results.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return row


def _cell(part, key):
    """Formats one number of a health part, '-' if absent."""
    value = (part or {}).get(key)
    return "-" if value is None else f"{value:.3g}"


def _format(row):
    """Returns a Markdown row."""
    h = row["health"]
    prior, recon = h.get("prior_diverged") or {}, h.get("recon_diverged") or {}
    ms = row["ms_per_step"]
    # Rows written before the width was recorded ran at 16 unless named _wN.
    name = row["variant"]
    width = row.get("filters") or (int(name.rsplit("_w", 1)[1]) if "_w" in name else 16)
    return (
        f"| {name} | {width} | {row['seed']} | {row['steps']} | {row['nll_bpd']:.3f} | "
        f"{row['kl']:.1f} | {row['mse']:.0f} | "
        f"{prior.get('count', '-')}/{prior.get('num', '-')} "
        f"({_cell(prior, 'max_abs_residual')}) | "
        f"{recon.get('count', '-')}/{recon.get('num', '-')} | "
        f"{_cell(h.get('calibration_y'), 'median')} / "
        f"{_cell(h.get('calibration_y'), 'p95')} | "
        f"{_cell(h.get('calibration_cbcr'), 'median')} | "
        f"{_cell(h, 'prior_cbcr_spread')} | "
        f"{'-' if ms is None else f'{ms:.0f}'} | "
        + " / ".join(
            "-" if value is None else f"{value:.3f}"
            for value in row.get("recon_bpd") or (None, None)
        )
        + " | "
        + " | ".join(health.format_structure(h.get("structure_y")))
        + f" | {health.format_structure(h.get('structure_cbcr'))[2]} |"
    )


def main(argv):
    """Runs the variants and prints the table."""
    del argv
    if FLAGS.table_only:
        path = pathlib.Path(FLAGS.output_dir) / "results.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    else:
        rows = [
            _run(name, int(seed)) for seed in FLAGS.seeds for name in FLAGS.variants
        ]
    print(
        f"\n{FLAGS.dataset} 64x64, batch 64; vae_sph {FLAGS.sph_steps} steps, "
        f"structured variants {FLAGS.steps} more from it; NLL with "
        f"K={FLAGS.num_samples} on {FLAGS.num_images} held-out crops\n"
    )
    print(
        "| variant | filters | seed | steps | NLL bits/dim | KL | MSE "
        "| prior diverged (max) | recon. diverged | calibration Y median / p95 "
        "| calibration CbCr "
        "| prior CbCr spread | ms/step | recon. Y / CbCr bits/value "
        "| spectral dist. Y (dB) | axis ratio Y (sampled / actual) "
        "| lag-1 Y x / y / diag (sampled; actual) "
        "| lag-1 CbCr x / y / diag (sampled; actual) |"
    )
    print("|---" + "|---:" * 17 + "|")
    for row in rows:
        print(_format(row))


if __name__ == "__main__":
    app.run(main)
