"""`python -m svae.selfcheck`: does svae compute correctly on this machine?

Lists the devices TensorFlow sees, its versions and whether XLA compiles,
then checks on the default device (a GPU if one is visible), in about a
minute and with no data set:

    distribution     log_prob, sample (and its moments), conditional mean and
                     exact marginal variance of SparsePrecisionGaussian in
                     float32, against a float64 dense reference on the CPU
    xla              the same under tf.function(jit_compile=True), against
                     the eager results
    mixed_precision  a structured model's likelihood under the
                     mixed_bfloat16 and mixed_float16 Keras policies: float32,
                     and close to the float32 policy's
    training         one training step of each model: finite loss and
                     gradients
    placement        the device every op of log_prob and sample ran on

Prints one line per check (device, time, PASS/FAIL with the error against
its tolerance) and exits with status 1 if any check failed, naming them.
See docs/selfcheck.md for the tolerances and what to do when a check fails.
"""

import dataclasses
import functools
import pathlib
import time
import warnings

from absl import flags

from svae import cli
from svae.cli import common
from svae.selfcheck import report
from svae.variants import MODELS

FLAGS = flags.FLAGS

GROUPS = ("distribution", "xla", "mixed_precision", "training", "placement")
DISTRIBUTION = (
    "log_prob",
    "sample",
    "sample_moments",
    "conditional_mean",
    "marginal_variance",
)
XLA = ("log_prob", "sample", "conditional_mean", "marginal_variance")
POLICIES = ("mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass
class SelfCheckConfig:
    """Which checks to run, and where to write the report as JSON.

    `checks` and `skip` hold names of checks (the table's first column) or
    of groups (`GROUPS`); no `checks` runs them all.
    """

    checks: tuple = ()
    skip: tuple = ()
    json: str | None = None

    def __post_init__(self):
        """Checks the names and the JSON file's folder; raises ValueError."""
        names = [name for name, _ in check_names()]
        known = set(GROUPS) | set(names)
        for field in ("checks", "skip"):
            unknown = [n for n in getattr(self, field) if n not in known]
            if unknown:
                raise ValueError(
                    f"--{field}: no check or group named {', '.join(unknown)}; "
                    f"the groups: {', '.join(GROUPS)}; the checks: "
                    f"{', '.join(names)}."
                )
        if self.json:
            folder = pathlib.Path(self.json).resolve().parent
            if not folder.is_dir():
                raise ValueError(f"--json: the folder {folder} does not exist.")


def check_names():
    """`[(name, group)]`: every check, in the table's order."""
    return (
        [(name, "distribution") for name in DISTRIBUTION]
        + [(f"xla_{name}", "xla") for name in XLA]
        + [(policy, "mixed_precision") for policy in POLICIES]
        + [(f"train_{model}", "training") for model in MODELS]
        + [("placement", "placement")]
    )


def registry(state):
    """`[(name, group, function)]`: every check, in the table's order.

    Args:
      state: the `svae.selfcheck.numerics.Checks` that the distribution's
        checks and the placement share (inputs, reference, eager results).
    """
    # Here, not at the top: `--help` and bad flags need neither TensorFlow
    # nor the models.
    cli.quiet_tensorflow()
    from svae.selfcheck import devices, model_checks

    functions = {name: functools.partial(state.check, name) for name in DISTRIBUTION}
    functions["sample_moments"] = state.sample_moments
    for name in XLA:
        functions[f"xla_{name}"] = functools.partial(state.xla, name)
    for policy in POLICIES:
        functions[policy] = functools.partial(model_checks.mixed_precision, policy)
    for model in MODELS:
        functions[f"train_{model}"] = functools.partial(model_checks.train_step, model)
    functions["placement"] = functools.partial(devices.placement, state)
    return [(name, group, functions[name]) for name, group in check_names()]


def selected(config, checks):
    """The checks `config` asks for, in the table's order."""

    def named(names, name, group):
        return name in names or group in names

    return [
        (name, group, function)
        for name, group, function in checks
        if (not config.checks or named(config.checks, name, group))
        and not named(config.skip, name, group)
    ]


def run_selfcheck(config, out=None) -> dict:
    """Runs the checks `config` selects; prints the report as it goes.

    Args:
      config: a `SelfCheckConfig`.
      out: prints one line (`print`, flushed, by default).

    Returns:
      `{"results": [svae.selfcheck.report.Result], "environment": {...},
      "seconds": total, "failed": [names]}`; with `config.json`, the same
      written there as JSON.
    """
    # TensorFlow after svae.cli (above), which quiets its start-up lines.
    import tensorflow as tf

    from svae.selfcheck import devices, numerics

    out = out or functools.partial(print, flush=True)
    start = time.perf_counter()
    tf.get_logger().setLevel("ERROR")  # Retracing notes would break the table.
    environment = devices.environment()
    out("svae self-check (docs/selfcheck.md)")
    for label, text in environment.items():
        out(f"  {label + ':':<24}{text}")
    out("")
    out(report.table_header())
    results = []
    state = numerics.Checks()
    with warnings.catch_warnings():
        # Keras' warnings about a layer that failed to build repeat the
        # error that the check's line names.
        warnings.simplefilter("ignore")
        for name, group, function in selected(config, registry(state)):
            result = report.run_check(name, group, function)
            results.append(result)
            out(report.row(result))
    seconds = time.perf_counter() - start
    failed = [r.name for r in results if r.failed]
    out("")
    summary = f"{len(results)} checks in {seconds:.1f} s: "
    if failed:
        out(summary + f"{len(failed)} FAILED: {', '.join(failed)}.")
        out("See docs/selfcheck.md, 'When a check fails'.")
    else:
        skipped = [r.name for r in results if r.status == report.SKIP]
        note = f" ({len(skipped)} skipped: {', '.join(skipped)})" if skipped else ""
        out(summary + f"all passed{note}.")
    if config.json:
        text = report.to_json(results, environment, seconds)
        pathlib.Path(config.json).write_text(text + "\n", encoding="utf-8")
        out(f"report: {config.json}")
    return {
        "results": results,
        "environment": environment,
        "seconds": seconds,
        "failed": failed,
    }


HELPS = {
    "checks": (
        "Run only these checks or groups (comma-separated; default all). "
        f"Groups: {', '.join(GROUPS)}."
    ),
    "skip": "Skip these checks or groups (comma-separated), e.g. training.",
    "json": "Also write the report to this JSON file.",
}


def define_flags(flag_values=FLAGS) -> None:
    """Defines the flags: one per `SelfCheckConfig` field."""
    common.define_flags(SelfCheckConfig, HELPS, flag_values=flag_values)


def main() -> int:
    """Runs the self-check the flags ask for; 1 if a check failed."""
    config = SelfCheckConfig(
        **{name: tuple(FLAGS[name].value or ()) for name in ("checks", "skip")},
        json=FLAGS.json,
    )
    result = run_selfcheck(config)
    return 1 if result["failed"] else 0


def run() -> None:
    """The entry point of `python -m svae.selfcheck`."""
    common.run(main, define_flags, errors=lambda: (ValueError, OSError))
