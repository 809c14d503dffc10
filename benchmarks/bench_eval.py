"""Seconds per image of the K=500 IW-bound evaluation vs 500 decoder passes.

`python benchmarks/bench_eval.py [--write]`: for each model, times
`svae.evaluation`'s per-batch evaluation (encoder, K decoder passes, the
likelihood, `log q`, `log p`, logsumexp) and, in the same run, K bare decoder
forward passes per image in the same chunks. The target is a ratio of at most
1.25. `--write` appends the table, dated, to benchmarks/log/speed.md.
"""

import argparse
import datetime
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from svae import config as config_lib  # noqa: E402
from svae import data, evaluation, models  # noqa: E402

LOG = pathlib.Path(__file__).resolve().parent / "log" / "speed.md"


def _best_of(fns, repeats):
    """Returns the smallest wall time of each function over `repeats` rounds.

    The functions run alternately, after one warm-up each, so both see the
    same load on a shared machine.
    """
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def bench_model(model_name, num_samples, sample_chunk, batch_size, repeats):
    """Returns `(eval_s, decoder_s)` per image for one model at 64x64."""
    config = config_lib.Config(model=model_name)
    model = models.build_model(config)
    images = data.load("sample_photos", "test", crops_per_photo=batch_size)
    rgb = next(iter(images.batch(batch_size)))
    batch = data.to_model_inputs(rgb, config.color, config.chroma_factor)
    evaluator = evaluation._BatchEvaluator(model, config)
    noise = tf.random.stateless_normal(
        [num_samples, batch_size, config.latent_dim], seed=[0, 1]
    )

    def run_eval():
        """One batch of the evaluation, as `evaluate` runs it."""
        evaluator(batch, noise, sample_chunk)

    decode = tf.function(model.decode)
    chunks = [
        tf.reshape(noise[i : i + sample_chunk], [-1, config.latent_dim])
        for i in range(0, num_samples, sample_chunk)
    ]

    def run_decoder():
        """The same number of decoder passes, in the same chunks."""
        for z in chunks:
            outputs = decode(z)
        return {name: value.numpy() for name, value in outputs.items()}

    eval_s, decoder_s = _best_of([run_eval, run_decoder], repeats)
    return eval_s / batch_size, decoder_s / batch_size


def _append_to_log(text):
    """Appends `text` to the speed log under a dated heading."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d, %H:%M UTC")
    content = LOG.read_text(encoding="utf-8") if LOG.exists() else ""
    section = f"## {stamp}: bench_eval\n\n{text}"
    LOG.write_text(content.rstrip("\n") + "\n\n" + section, encoding="utf-8")


def main():
    """Runs the benchmark and prints (optionally writes) the Markdown section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_samples", type=int, default=500)
    parser.add_argument("--sample_chunk", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rows = []
    for name in ("vae_diag", "structured"):
        eval_s, decoder_s = bench_model(
            name, args.num_samples, args.sample_chunk, args.batch_size, args.repeats
        )
        rows.append((name, eval_s, decoder_s))
        print(f"{name}: {eval_s:.3f} s/image eval, {decoder_s:.3f} s/image decoder")
    lines = [
        f"`python benchmarks/bench_eval.py` on this machine ({os.cpu_count()} CPU "
        f"cores, no GPU; TensorFlow {tf.__version__}, Python "
        f"{platform.python_version()}),"
        f" one run, best of {args.repeats} alternating rounds. 64x64 YCbCr models "
        "at the default config (untrained weights: the cost does not depend on them), "
        f"K={args.num_samples} importance samples per image, "
        f"--sample_chunk={args.sample_chunk}, --batch_size={args.batch_size}. "
        f'"decoder" is {args.num_samples} bare decoder forward passes per image '
        "in the same chunks, timed in the same run; the target is eval / decoder "
        "<= 1.25.",
        "",
        "| model | eval s/image | decoder s/image | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, eval_s, decoder_s in rows:
        lines.append(
            f"| {name} | {eval_s:.3f} | {decoder_s:.3f} | {eval_s / decoder_s:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        _append_to_log(text)
        print(f"appended to {LOG}")
    return np.array([r[1] / r[2] for r in rows])


if __name__ == "__main__":
    main()
