"""Training step time of `structured` against `vae_diag` with the same trunk.

Runs svae.training's compiled step (the one `train()` uses) on one in-memory
batch of real photograph crops, alternating the two models in short rounds so
that both see the same machine state, and counts FLOPs per image with TF's
profiler. The machine's speed drifts by up to 30% within a minute, so the
ratio is the median over rounds of `structured`'s time over the time of the
`vae_diag` round just before it, with its quartiles; the ratio of the two
medians is printed too. Prints a Markdown table for benchmarks/log/speed.md.
"""

import dataclasses
import json
import pathlib
import statistics
import tempfile

import step_timer  # benchmarks/ is on sys.path when run as a script
import tensorflow as tf
from absl import app, flags

from svae import config as config_lib
from svae import data, flops, recipes

flags.DEFINE_integer("batch_size", 64, "Batch size (the paper's).")
flags.DEFINE_integer("image_size", 64, "Image side.")
flags.DEFINE_integer("steps", 15, "Timed steps per round.")
flags.DEFINE_integer("rounds", 21, "Alternating rounds per model.")
flags.DEFINE_integer("warmup_steps", 20, "Untimed steps per model first.")
flags.DEFINE_list(
    "overrides",
    [],
    "Config fields of both models as name=value (e.g. likelihood=paper for the "
    "paper's likelihood, likelihood.factor=product for one field of it; "
    "default: svae's defaults).",
)
FLAGS = flags.FLAGS

MODELS = (("vae_diag", "train"), ("structured", "joint"))


def _overrides():
    """Returns `--overrides` as Config keyword arguments (JSON values, else strings).

    `likelihood.FIELD=VALUE` changes one field of the likelihood (of the
    recipe `likelihood=NAME` names, else the default). `Config` checks each
    value's type and range.
    """
    values, fields = {}, {}
    for item in FLAGS.overrides:
        name, _, value = item.partition("=")
        try:
            value = json.loads(value)
        except ValueError:
            pass
        if name.startswith("likelihood."):
            fields[name.partition(".")[2]] = value
        elif name in config_lib.Config.__dataclass_fields__:
            values[name] = value
        else:
            raise app.UsageError(f"--overrides: no Config field {name!r}.")
    if fields:
        base = recipes.Likelihood.of(values.get("likelihood", "default"))
        try:
            values["likelihood"] = dataclasses.replace(base, **fields)
        except (TypeError, ValueError) as e:
            raise app.UsageError(f"--overrides: {e}") from e
    return values


def main(argv):
    """Times both models and prints the table."""
    del argv
    size, batch_size = FLAGS.image_size, FLAGS.batch_size
    images = data.load("sample_photos", "train", image_size=size, crops_per_photo=8)
    rgb = tf.stack(list(images.take(batch_size)))
    batch = data.to_model_inputs(rgb)
    runners, times, counted = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, _ in MODELS:
            config = config_lib.Config(
                model=name,
                image_size=size,
                batch_size=batch_size,
                pretrain_epochs=0,
                structured_warmup_epochs=0,
                **_overrides(),
            )
            counted[name] = (
                flops.model_flops(config),
                flops.model_flops(config, with_likelihood=True),
            )
            runners[name] = step_timer.step_runner(
                config, batch, pathlib.Path(tmp) / name, dict(MODELS)[name]
            )
            times[name] = []
        for name, _ in MODELS:  # Compiles and warms up, after the profiler.
            runners[name](FLAGS.warmup_steps)
        for _ in range(FLAGS.rounds):
            for name, _ in MODELS:
                times[name].append(runners[name](FLAGS.steps) / FLAGS.steps)
    paired = sorted(
        s / d for s, d in zip(times["structured"], times["vae_diag"], strict=True)
    )
    quartiles = statistics.quantiles(paired, n=4)
    print(
        f"\n{size}x{size} YCbCr, batch {batch_size}, {FLAGS.rounds} alternating "
        f"rounds of {FLAGS.steps} steps, overrides {FLAGS.overrides or 'none'}\n"
    )
    print(
        "| model | ms/step | images/s | ratio of medians | FLOPs/image (network) "
        "| (+ log p) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.median(times["vae_diag"])
    for name, _ in MODELS:
        median = statistics.median(times[name])
        net, total = counted[name]
        print(
            f"| {name} | {median * 1e3:.1f} | {batch_size / median:,.0f} | "
            f"{median / base:.3f}x | {net:.3e} | {total:.3e} |"
        )
    print(
        "\nstructured / vae_diag, paired rounds: median "
        f"{statistics.median(paired):.3f}x (quartiles {quartiles[0]:.3f}-"
        f"{quartiles[2]:.3f}x)"
    )
    print("\nper-round ms/step:")
    for name, _ in MODELS:
        print(f"  {name}: " + ", ".join(f"{t * 1e3:.1f}" for t in times[name]))


if __name__ == "__main__":
    app.run(main)
