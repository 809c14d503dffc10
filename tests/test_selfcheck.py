"""Tests of svae.selfcheck: it passes here, and each kind of check can fail."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
import tiny

from svae import likelihoods, linalg, models
from svae.selfcheck import command, devices, model_checks, numerics, report


def _selfcheck(*args, cwd, code=None):
    """Runs `python -m svae.selfcheck args` (or `python -c code args`)."""
    program = ["-m", "svae.selfcheck"] if code is None else ["-c", code]
    return tiny.run_python(*program, *args, cwd=cwd, timeout=600)


def _rows(stdout):
    """`{check: (device, status)}` from the table of a run's output."""
    names = {name for name, _ in command.check_names()}
    rows = {}
    for line in stdout.splitlines():
        fields = line.split()
        if fields and fields[0] in names:
            rows[fields[0]] = (fields[1], fields[3])
    return rows


@pytest.mark.slow
def test_the_selfcheck_passes_here_and_prints_its_table(tmp_path):
    done = _selfcheck("--json=report.json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"tensorflow:             {tf.__version__}" in out
    assert "xla:                    available (compiled on CPU:0)" in out
    assert report.table_header() in out
    rows = _rows(out)
    assert list(rows) == [name for name, _ in command.check_names()]
    assert set(rows.values()) == {("CPU:0", "PASS")}, out
    assert out.rstrip().endswith("all passed.\nreport: report.json"), out
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["passed"] and saved["failed"] == []
    for check in saved["checks"]:
        assert 0 <= check["error"] <= check["tolerance"], check
        assert check["milliseconds"] > 0
    placed = saved["checks"][-1]
    assert placed["name"] == "placement" and placed["data"]["misplaced"] == []


# L^T x 1e-3 off: the log-density about 0.2 nats off in about 400, a wrong
# answer no training run would show.
PERTURBED = """
import sys
from svae.selfcheck import command
from svae import linalg
exact = linalg.factors_transpose_matvec
linalg.factors_transpose_matvec = lambda *a, **k: exact(*a, **k) * 1.001
sys.argv[1:] = ["--checks=log_prob,sample"]
command.run()
"""


@pytest.mark.slow
def test_a_wrong_log_prob_exits_1_naming_the_check(tmp_path):
    done = _selfcheck(cwd=tmp_path, code=PERTURBED)
    assert done.returncode == 1, done.stdout + done.stderr
    assert _rows(done.stdout) == {
        "log_prob": ("CPU:0", "FAIL"),
        "sample": ("CPU:0", "PASS"),
    }
    assert "2 checks in " in done.stdout
    assert done.stdout.splitlines()[-2].endswith("1 FAILED: log_prob.")


@pytest.mark.slow
def test_help_lists_the_flags(tmp_path):
    done = _selfcheck("--helpshort", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "python -m svae.selfcheck" in done.stdout
    for flag in ("--checks", "--skip", "--json"):
        assert f"  {flag}:" in done.stdout


def test_unknown_check_names_and_a_missing_json_folder_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--checks: no check or group named nope;"):
        command.SelfCheckConfig(checks=("log_prob", "nope"))
    with pytest.raises(ValueError, match="--skip: no check or group named xla_x;"):
        command.SelfCheckConfig(skip=("xla_x",))
    with pytest.raises(ValueError, match="--json: the folder .* does not exist"):
        command.SelfCheckConfig(json=str(tmp_path / "no" / "report.json"))
    config = command.SelfCheckConfig(checks=("xla", "placement"), skip=("xla_sample",))
    rows = [(name, group, None) for name, group in command.check_names()]
    names = [name for name, _, _ in command.selected(config, rows)]
    assert names == [
        "xla_log_prob",
        "xla_conditional_mean",
        "xla_marginal_variance",
        "placement",
    ]


def test_a_check_that_raises_fails_with_its_error_and_the_rest_run():
    def broken():
        raise tf.errors.InvalidArgumentError(None, None, "no kernel\nmore lines")

    results = [
        report.run_check("broken", "test", broken),
        report.run_check("fine", "test", lambda: report.Outcome(1e-8, 1e-6, "CPU:0")),
        report.run_check("nan", "test", lambda: report.Outcome(float("nan"), 1.0)),
        report.run_check("skipped", "test", lambda: report.Outcome(skipped="why")),
    ]
    lines = [report.row(r) for r in results]
    assert [r.status for r in results] == ["FAIL", "PASS", "FAIL", "SKIP"]
    assert results[0].detail == "InvalidArgumentError: no kernel"
    assert lines[1].split()[3:6] == ["PASS", "1.0e-08", "<="]
    assert json.loads(report.to_json(results, {}, 1.0))["failed"] == ["broken", "nan"]


@pytest.fixture
def checks():
    """The distribution's checks on fresh inputs (nothing computed yet)."""
    return numerics.Checks()


def _perturbed(monkeypatch, traced):
    """Makes `Checks.compute` 1e-3 off, in the traced (XLA) or the eager run."""
    compute = numerics.Checks.compute

    def wrong(self, name, params):
        value = compute(self, name, params)
        if tf.inside_function() != traced:
            return value
        if name == "sample":
            return value[0] + 1e-3 * (value[0] - params.loc), value[1]
        return value * (1.0 + 1e-3)

    monkeypatch.setattr(numerics.Checks, "compute", wrong)


@pytest.mark.parametrize("name", numerics.Checks.COMPUTATIONS)
def test_each_distribution_check_fails_when_its_result_is_1e_3_off(
    checks, monkeypatch, name
):
    _perturbed(monkeypatch, traced=False)
    outcome = checks.check(name)
    assert outcome.error > outcome.tolerance, outcome
    assert outcome.device == "CPU:0"


def test_the_xla_check_fails_when_only_the_compiled_result_is_off(checks, monkeypatch):
    exact = checks.xla("log_prob")
    assert exact.error <= exact.tolerance
    _perturbed(monkeypatch, traced=True)
    assert checks.check("log_prob").error <= exact.tolerance / 2
    wrong = checks.xla("log_prob")
    assert wrong.error > 3 * wrong.tolerance, wrong


def test_sample_moments_fail_for_a_sampler_5_percent_too_wide(checks, monkeypatch):
    assert checks.sample_moments().error <= numerics.MAX_Z
    solve = linalg.factor_transpose_solve
    monkeypatch.setattr(
        linalg, "factor_transpose_solve", lambda *a, **k: 1.05 * solve(*a, **k)
    )
    outcome = checks.sample_moments()
    assert outcome.error > numerics.MAX_Z, outcome


def test_the_reference_is_the_distributions_dense_precision(checks):
    dist = numerics.distribution(checks.params, checks.config)
    ref = checks.reference
    dense = dist.precision().numpy()
    assert np.max(np.abs(dense - ref.precision)) < 1e-5 * np.max(ref.precision)
    assert 1 < ref.cond < 50  # "Well-conditioned": the tolerances assume it.


def test_the_placement_fails_cpu_float_ops_when_a_gpu_is_visible(checks):
    outcome = devices.placement(checks)
    assert outcome.error == 0 and outcome.device == "CPU:0", outcome
    nodes = devices.placed_nodes(
        tf.function(
            lambda p: numerics.distribution(p, checks.config).log_prob(p.x),
            autograph=False,
        ),
        checks.params,
    )
    assert nodes and {n.device for n in nodes} == {"CPU:0"}
    assert devices.misplaced(nodes, gpu_visible=False) == []
    wrong = devices.misplaced(nodes, gpu_visible=True)
    # The float ops are flagged; integer bookkeeping (shapes) is not.
    assert wrong and all(n.floating for n in wrong)
    assert len(wrong) < len(nodes)


def test_a_likelihood_in_16_bits_fails_the_mixed_precision_check(monkeypatch):
    exact = likelihoods.log_likelihood
    monkeypatch.setattr(
        likelihoods,
        "log_likelihood",
        lambda *a, **k: tf.cast(exact(*a, **k), tf.bfloat16),
    )
    with pytest.raises(TypeError, match="likelihood is not float32: log_likelihood"):
        model_checks.mixed_precision("mixed_bfloat16")


def test_a_policy_that_does_not_reach_the_model_fails_the_check(monkeypatch):
    build = models.build_model
    monkeypatch.setattr(
        models,
        "build_model",
        lambda config: build(dataclasses.replace(config, precision="float32")),
    )
    wrong = r"the encoder\w* computes in float32, not bfloat16"
    with pytest.raises(TypeError, match=wrong):
        model_checks.mixed_precision("mixed_bfloat16")


def test_a_nan_in_the_loss_fails_the_training_step(monkeypatch):
    exact = likelihoods.squared_error
    monkeypatch.setattr(
        likelihoods,
        "squared_error",
        lambda outputs, batch: exact(outputs, batch) * float("nan"),
    )
    outcome = model_checks.train_step("vae_sph")
    assert outcome.error > 0 and outcome.tolerance == 0, outcome


def test_bfloat16_is_skipped_on_gpus_before_ampere(monkeypatch):
    monkeypatch.setattr(
        tf.config.experimental,
        "get_device_details",
        lambda device: {"compute_capability": (7, 5)},
    )
    assert model_checks.mixed_support("mixed_bfloat16", ["gpu"]).startswith(
        "bfloat16 needs compute capability >= 8.0, this GPU has 7.5"
    )
    assert model_checks.mixed_support("mixed_float16", ["gpu"]) == ""
    assert model_checks.mixed_support("mixed_bfloat16", []) == ""
