"""Where a training step's time goes: per op type and per XLA kernel.

Runs svae.training's compiled step (the one `train()` uses, as
`bench_train.py` does) under TensorFlow's profiler and sums, over the
traced steps, the time the executor's threads spend in each op type and in
each XLA launch (`svae.xla.kernel`s and their gradients, named by the op
that launches them). Times are thread time per step: with two threads the
sum can exceed the step's wall time, and an XLA launch counts once (the
time of the thread that launched it) even where XLA split its loops
across the cores, where a two-thread convolution counts twice. With `--compare`
a second config is profiled in the same process and the table shows both
and their difference, largest first.

    python benchmarks/profile_step.py --model=structured --compare=vae_diag
    python benchmarks/profile_step.py --overrides=likelihood.factor=product

Flags `--batch_size`, `--image_size` and `--overrides` are `bench_train.py`'s.
"""

import collections
import pathlib
import tempfile

import bench_train  # benchmarks/ is on sys.path when run as a script
import step_timer
import tensorflow as tf
from absl import app, flags
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from svae import config as config_lib
from svae import data

flags.DEFINE_string("model", "structured", "The model profiled.")
flags.DEFINE_string("compare", None, "A second model, profiled beside it.")
flags.DEFINE_integer("profiled_steps", 20, "Steps traced, after the warm-up.")
flags.DEFINE_integer("top", 25, "Rows printed.")
FLAGS = flags.FLAGS

# The executor's event of an XLA launch; its `name` stat is the launching op.
XLA_LAUNCH = "ExecutorState::ProcessAsync::Start"


def _profile(model, batch, directory):
    """Returns `(ms per step, {row: thread ms per step})` of `model`'s step."""
    config = config_lib.Config(
        model=model,
        image_size=FLAGS.image_size,
        batch_size=FLAGS.batch_size,
        pretrain_epochs=0,
        structured_warmup_epochs=0,
        **bench_train._overrides(),
    )
    # The model's main phase (`joint`, `train`, ...), after its pretraining.
    phase = config.variant.phases[-1]
    run = step_timer.step_runner(config, batch, directory / model, phase)
    run(FLAGS.warmup_steps)
    steps = FLAGS.profiled_steps
    trace = directory / f"trace-{model}"
    tf.profiler.experimental.start(str(trace))
    seconds = run(steps)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(next(trace.rglob("*.xplane.pb")).read_bytes())
    rows = collections.Counter()
    for plane in space.planes:
        events = {k: v.name for k, v in plane.event_metadata.items()}
        stats = {k: v.name for k, v in plane.stat_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = events.get(event.metadata_id, "")
                if name == XLA_LAUNCH:
                    op = next(
                        (
                            s.str_value or stats.get(s.ref_value, "?")
                            for s in event.stats
                            if stats.get(s.metadata_id) == "name"
                        ),
                        "?",
                    )
                    row = f"XLA kernel launched by {op}"
                elif ":" in name and "::" not in name:
                    op, kind = name.rsplit(":", 1)
                    row = kind + (" (gradient)" if "gradient_tape" in op else "")
                else:
                    continue
                rows[row] += event.duration_ps / 1e9 / steps
    return seconds / steps * 1e3, rows


def main(argv):
    """Profiles `--model` (and `--compare`) and prints the table."""
    del argv
    size = FLAGS.image_size
    images = data.load("sample_photos", "train", image_size=size, crops_per_photo=8)
    batch = data.to_model_inputs(tf.stack(list(images.take(FLAGS.batch_size))))
    models = [FLAGS.model] + ([FLAGS.compare] if FLAGS.compare else [])
    with tempfile.TemporaryDirectory() as tmp:
        results = [_profile(m, batch, pathlib.Path(tmp)) for m in models]
    print(
        f"\n{size}x{size} YCbCr, batch {FLAGS.batch_size}, {FLAGS.profiled_steps} "
        f"steps traced, overrides {FLAGS.overrides or 'none'}\n"
    )
    for model, (ms, rows) in zip(models, results, strict=True):
        xla = sum(v for k, v in rows.items() if k.startswith("XLA"))
        print(
            f"- {model}: {ms:.1f} ms/step wall; {sum(rows.values()):.1f} ms thread "
            f"time, of which XLA kernels {xla:.1f} ms "
            f"({sum(1 for k in rows if k.startswith('XLA'))} launches)"
        )
    first = results[0][1]
    second = results[1][1] if FLAGS.compare else collections.Counter()
    keys = sorted(set(first) | set(second), key=lambda k: -(first[k] - second[k]))
    header = f"| row | {models[0]} ms |"
    if FLAGS.compare:
        header += f" {models[1]} ms | difference |"
    print("\n" + header)
    print("|---|" + "---:|" * (3 if FLAGS.compare else 1))
    for key in keys[: FLAGS.top]:
        line = f"| {key} | {first[key]:.2f} |"
        if FLAGS.compare:
            line += f" {second[key]:.2f} | {first[key] - second[key]:+.2f} |"
        print(line)


if __name__ == "__main__":
    app.run(main)
