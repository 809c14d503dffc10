"""The reproduced tables in the paper's layout (Markdown), and the figures."""

import json
import pathlib

from svae import evaluation, figures
from svae.reproduce.paper import LABELS, PAPER_TABLE1, PAPER_TABLE2, table_of
from svae.reproduce.planning import SCALES, ReproduceConfig

__all__ = ["table_markdown", "write_comparison_figures", "write_table"]


def _mean_std(pair) -> str:
    """A paper's "mean ± std" cell, or "-" where it has none."""
    return "-" if pair is None else f"{pair[0]:.0f} ± {pair[1]:.0f}"


def _number(value, spec) -> str:
    """A paper's number cell, or "-" where it has none."""
    return "-" if value is None else format(value, spec)


def _report(out, name) -> dict | None:
    """The saved test evaluation of run `name`, or None."""
    path = pathlib.Path(out) / "runs" / name / evaluation.EVAL_DIR / "test.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def table_markdown(dataset: str, out, runs_done) -> str:
    """Returns the table in the paper's layout, the paper's values beside ours.

    Args:
      dataset: the data set (its table).
      out: the output folder (reports in `out/runs/<name>/eval/test.json`).
      runs_done: the plan's `Run`s; models or colours not in it read "not run".
    """
    table = table_of(dataset)
    names = {(r.model, r.color) for r in runs_done}
    reports = {
        (m, c): _report(out, f"{m}-{c}") if (m, c) in names else None
        for m in table.models
        for c in table.colors
    }

    def ours(model, color, what):
        r = reports[model, color]
        if r is None:
            return "not run"
        if what in ("nll", "mse"):
            return f"{r[what]['mean']:.0f} ± {r[what]['std']:.0f}"
        if what == "kl":
            return f"{r['kl']['mean']:.2f}"
        return f"{r['flops_per_image']:.3g}"

    lines = []
    if table.number == 1:
        lines += [
            "| Model | NLL, paper (gray / YCbCr) | NLL, ours (gray / YCbCr) "
            "| KL, paper | KL, ours | FLOPs, paper | FLOPs, ours |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for model in table.models:
            paper = PAPER_TABLE1[model]
            cells = [
                " / ".join(_mean_std(paper["nll"][c]) for c in table.colors),
                " / ".join(ours(model, c, "nll") for c in table.colors),
                " / ".join(_number(paper["kl"][c], ".2f") for c in table.colors),
                " / ".join(ours(model, c, "kl") for c in table.colors),
                " / ".join(_number(paper["flops"][c], ".3g") for c in table.colors),
                " / ".join(ours(model, c, "flops") for c in table.colors),
            ]
            lines.append(f"| {LABELS[model]} | " + " | ".join(cells) + " |")
    else:
        lines += [
            "| Model | NLL, paper | NLL, ours | KL, paper | KL, ours "
            "| MSE, paper | MSE, ours |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for model in table.models:
            paper = PAPER_TABLE2[model]
            cells = [
                _mean_std(paper["nll"]),
                ours(model, "ycbcr", "nll"),
                f"{paper['kl']:.2f}",
                ours(model, "ycbcr", "kl"),
                _mean_std(paper["mse"]),
                ours(model, "ycbcr", "mse"),
            ]
            lines.append(f"| {LABELS[model]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(options: ReproduceConfig, out, plan_runs, figure_paths) -> pathlib.Path:
    """Writes `out/table<N>.md`: the table, how it was made, details, figures.

    Raises:
      ValueError: the plan's saved evaluations differ in K (nothing written).
    """
    table = table_of(options.dataset)
    reports = [r for r in (_report(out, run.name) for run in plan_runs) if r]
    counts = sorted({(r["num_images"], r["num_samples"]) for r in reports})
    if len({k for _, k in counts}) > 1:
        raise ValueError(
            f"The evaluations in {out}/runs differ in K ("
            + ", ".join(
                f"{run.name}: K={r['num_samples']}"
                for run in plan_runs
                if (r := _report(out, run.name))
            )
            + "): one table holds one K. Run the command again to re-evaluate."
        )
    steps = sorted({r["step"] for r in reports})
    parts = [
        f"# Table {table.number}, reproduced on `{options.dataset}`",
        "",
        f"Written by `python -m svae.reproduce --dataset={options.dataset} "
        f"--scale={options.scale} --likelihood={options.likelihood}`. Ours: NLL "
        "in nats per image (the importance-weighted bound, "
        "`svae.evaluation.evaluate`), mean ± std over the test split; KL the "
        "mean; MSE of RGB in [0, 255] with epsilon = 0. Evaluated images and K: "
        + ", ".join(f"{n} images, K={k}" for n, k in counts)
        + "; runs' final steps: "
        + ", ".join(str(s) for s in steps)
        + ". Paper: its Table "
        + f"{table.number} (`svae.reproduce.PAPER_TABLE{table.number}`). "
        "All measurements add the sample health (`svae.health`, "
        "docs/evaluation.md): diverged samples, calibration and, as numbers "
        "for the paper's Figure 1, the structure of Y's sampled residuals "
        "against the actual ones: the distance of their power spectra in dB "
        "(0: the same spectrum), the axis ratio (power on the frequency axes "
        "over the power off them; 1: no plaid) and the lag-1 correlations "
        "(0: white noise).",
        "",
        table_markdown(options.dataset, out, plan_runs),
    ]
    for color in table.colors:
        names = [r.name for r in plan_runs if r.color == color]
        if not names:
            continue
        run_dirs = [str(pathlib.Path(out) / "runs" / n) for n in names]
        parts += [
            "",
            f"## All measurements, {color}",
            "",
            evaluation.compare(run_dirs, names=names),
        ]
    if figure_paths:
        parts += ["", "## Figures", ""]
        for label, path in figure_paths.items():
            relative = pathlib.Path(path).relative_to(out)
            parts.append(f"- {label}: [{relative}]({relative})")
    path = pathlib.Path(out) / f"table{table.number}.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def write_comparison_figures(options: ReproduceConfig, out, plan_runs) -> dict:
    """Draws reconstructions and prior samples of every model, per colour.

    The side-by-side figures of `svae.figures.comparison_figures` (as the
    demo's); returns `{label: path}`.
    """
    table = table_of(options.dataset)
    recon, prior = table.figures
    num = SCALES[options.scale]["figure_images"]
    paths = {}
    for color in table.colors:
        run_dirs = {
            r.model: pathlib.Path(out) / "runs" / r.name
            for r in plan_runs
            if r.color == color
        }
        if not run_dirs:
            continue
        folder = pathlib.Path(out) / "figures" / color
        folder.mkdir(parents=True, exist_ok=True)
        written = figures.comparison_figures(run_dirs, folder, num, options.seed)
        paths[f"Figure {recon} ({color}): reconstructions"] = written["reconstructions"]
        paths[f"Figure {prior} ({color}): prior samples"] = written["prior_samples"]
    return paths
