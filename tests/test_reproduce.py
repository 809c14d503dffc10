"""Tests of `python -m svae.reproduce`, at a tiny scale."""

import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys

import data_fixtures as fx
import numpy as np
import pytest
import tiny
from PIL import Image

from svae import config as config_lib
from svae import evaluation, recipes, reproduce, runs, training
from svae.reproduce import runner

TINY = dict(scale="tiny", progress=False, cache_dir="")


def test_the_plans_are_the_papers_tables():
    celeb_a = reproduce.plan("celeb_a")
    assert [r.name for r in celeb_a] == [
        f"{m}-{c}"
        for c in ("gray", "ycbcr")
        for m in ("vae_sph", "vae_diag", "beta_vae_diag", "supn", "structured")
    ]
    for run in celeb_a:
        parent = f"vae_sph-{run.color}" if run.model in ("supn", "structured") else None
        assert run.init_from == parent
    lsun = reproduce.plan("lsun_church")
    assert [r.name for r in lsun] == [
        "vae_sph-ycbcr",
        "vae_diag-ycbcr",
        "beta_vae_diag-ycbcr",
        "structured-ycbcr",
    ]
    # A pretrained model brings its vae_sph run along, first.
    subset = reproduce.plan("sample_photos", ("structured",), ("gray",))
    assert [r.name for r in subset] == ["vae_sph-gray", "structured-gray"]
    with pytest.raises(ValueError, match="Table 2 has"):
        reproduce.plan("lsun_church", ("supn",))


def test_the_configs_have_the_papers_settings_and_the_strategy():
    options = reproduce.ReproduceConfig(dataset="lsun_church", strategy="mirrored")
    for run in reproduce.plan("lsun_church"):
        config = reproduce.run_config(run, options, "/out")
        assert (config.epochs, config.batch_size, config.learning_rate) == (
            150,
            64,
            5e-4,
        )
        assert config.strategy == "mirrored" and config.image_size == 64
        assert config.model_dir == f"/out/runs/{run.name}"
        if run.model == "structured":
            assert config.init_from == "/out/runs/vae_sph-ycbcr"
            assert config.structured_warmup_epochs == 5
    config = reproduce.run_config(
        reproduce.plan("celeb_a")[0],
        reproduce.ReproduceConfig(dataset="celeb_a"),
        "/out",
    )
    assert config.epochs == 110 and config.color == "gray"
    ec = reproduce.eval_config(
        "/out/runs/x", reproduce.ReproduceConfig(dataset="celeb_a")
    )
    assert ec.num_samples == 500 and ec.max_images is None and ec.split == "test"


def test_likelihood_names_a_recipe_every_run_takes():
    run = reproduce.plan("celeb_a")[-1]
    for name, recipe in recipes.RECIPES.items():
        options = reproduce.ReproduceConfig(dataset="celeb_a", likelihood=name)
        config = reproduce.run_config(run, options, "/out")
        assert recipes.Likelihood.of(config.likelihood) == recipe, name
    assert reproduce.ReproduceConfig().likelihood == "default"
    with pytest.raises(ValueError, match="likelihood must be one of default, paper"):
        reproduce.ReproduceConfig(likelihood="literal")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"seed": -1}, "seed must be in"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"num_samples": 0}, r"num_samples must be in \[1, 5000\]"),
        ({"num_samples": -1}, r"num_samples must be in \[1, 5000\]"),
        ({"num_samples": 5001}, r"num_samples must be in \[1, 5000\]"),
        ({"max_images": 0}, "max_images must be >= 1"),
        ({"dry_run_steps": 2}, "dry_run_steps must be >= 3"),
        ({"scale": "huge"}, "scale must be one of paper, tiny"),
        ({"dataset": "mnist"}, "dataset must be one of celeb_a"),
    ],
)
def test_options_out_of_range_are_errors_naming_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        reproduce.ReproduceConfig(**values)


def test_comma_lists_of_the_flags_are_the_plans_subsets():
    options = reproduce.ReproduceConfig(models=["structured", ""], colors=[])
    assert options.models == ("structured",) and options.colors is None


def test_a_model_not_in_the_table_is_an_error_before_anything_is_written(tmp_path):
    options = reproduce.ReproduceConfig(
        dataset="lsun_church", models=("supn",), out=str(tmp_path / "out"), **TINY
    )
    with pytest.raises(ValueError, match="--models: Table 2 has .* got supn"):
        reproduce.reproduce(options)
    assert not (tmp_path / "out").exists()


def test_the_full_plans_totals():
    table1 = reproduce.totals(reproduce.ReproduceConfig(dataset="celeb_a"))
    # 110 epochs of 162,770 // 64 = 2,543 steps, 10 runs.
    assert table1["runs"] == 10 and table1["steps"] == 10 * 110 * 2543
    assert table1["train_images"] == table1["steps"] * 64
    assert table1["eval_passes"] == 10 * 19_962 * 500
    table2 = reproduce.totals(reproduce.ReproduceConfig(dataset="lsun_church"))
    assert table2["steps"] == 4 * 150 * (126_227 // 64)
    assert table2["eval_images"] == 4 * 300


def test_steps_0_is_no_plan_of_the_tables_epochs():
    # steps=0 once read as "not given" (falsy), planning 2,797,300 steps.
    with pytest.raises(ValueError, match="steps must be >= 1"):
        reproduce.totals(reproduce.ReproduceConfig(dataset="celeb_a", steps=0))
    one = reproduce.totals(reproduce.ReproduceConfig(dataset="celeb_a", steps=1))
    assert one["steps"] == 10


def _reproduce(*args, cwd):
    """Runs `python -m svae.reproduce` at the tiny scale in `cwd`."""
    command = [sys.executable, "-m", "svae.reproduce", "--scale=tiny"]
    command += ["--out=OUT", "--no_progress", *args]
    return subprocess.run(
        command,
        cwd=cwd,
        env=tiny.script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num_samples=-1"], "FATAL Flags parsing error: flag --num_samples=-1: "),
        (["--num_samples=0"], "FATAL Flags parsing error: flag --num_samples=0: "),
        (["--max_images=0"], "FATAL Flags parsing error: flag --max_images=0: "),
        (["--steps=0"], "FATAL Flags parsing error: flag --steps=0: must be >= 1"),
        (["--seed=-1"], "FATAL Flags parsing error: flag --seed=-1: must be in"),
        (["--models=nope"], "svae: error: --models: Table 1 has vae_sph, "),
        (["--colors=rgb"], "svae: error: --colors: Table 1 has gray, ycbcr; "),
    ],
)
def test_bad_flags_fail_at_once_and_write_nothing(args, message, tmp_path):
    done = _reproduce("--models=vae_sph", "--colors=gray", *args, cwd=tmp_path)
    assert done.returncode == 1 and "svae reproduce:" not in done.stdout
    (line,) = [line for line in done.stderr.splitlines() if message in line]
    assert line.startswith(message) and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def _fake_runs(options):
    """Writes the config.json of every run of `options`'s plan, and plan.json."""
    out = pathlib.Path(options.out)
    for run in reproduce.plan(options.dataset, options.models, options.colors):
        config = reproduce.run_config(run, options, out)
        runs.write_config(config, config.model_dir)
    (out / "plan.json").write_text("the first plan\n")


def _tree(folder):
    """{path: bytes} of every file under `folder`."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_rerun_names_the_flags_and_leaves_out_as_it_was(tmp_path):
    options = reproduce.ReproduceConfig(
        out=str(tmp_path / "OUT"), models=("structured",), colors=("gray",), **TINY
    )
    _fake_runs(options)
    before = _tree(tmp_path)
    paper = dataclasses.replace(options, likelihood="paper")
    with pytest.raises(runs.RunError) as error:
        reproduce.reproduce(paper)
    message = str(error.value)
    assert message.startswith(f"--out={tmp_path / 'OUT'} holds runs made with other")
    assert "vae_sph-gray: likelihood.scales: 'calibrated' -> 'learned'" in message
    assert "The flags that differ: --likelihood (it was made with " in message
    assert "--likelihood=default)" in message and "--model_dir" not in message
    assert "or pass another --out" in message
    assert _tree(tmp_path) == before  # plan.json too
    # Another scale differs in the fields --scale sets.
    with pytest.raises(runs.RunError, match="The flags that differ: --scale"):
        reproduce.reproduce(dataclasses.replace(options, scale="paper"))
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("where", ["OUT", "OUT/runs/vae_sph-gray"])
def test_an_out_that_is_a_file_is_refused(where, tmp_path):
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text("a file")
    before = _tree(tmp_path)
    options = reproduce.ReproduceConfig(
        out=str(tmp_path / "OUT"), models=("vae_sph",), colors=("gray",), **TINY
    )
    with pytest.raises(runs.RunError, match="is a file, not a folder"):
        reproduce.reproduce(options)
    assert _tree(tmp_path) == before


def test_a_first_run_that_fails_leaves_no_out(tmp_path):
    options = reproduce.ReproduceConfig(
        dataset="celeb_a",
        data_dir=str(tmp_path / "missing"),
        out=str(tmp_path / "OUT"),
        models=("vae_sph",),
        colors=("gray",),
        **TINY,
    )
    with pytest.raises(ValueError, match="is not a folder"):
        reproduce.reproduce(options)
    assert list(tmp_path.iterdir()) == []


def test_an_evaluation_is_reused_only_at_the_settings_asked(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(
        tiny_run, run_dir, ignore=shutil.ignore_patterns("eval", reproduce.MARKER)
    )
    ec = config_lib.EvalConfig(
        model_dir=str(run_dir),
        num_samples=4,
        max_images=4,
        batch_size=4,
        health_images=4,
        num_prior=4,
        progress=False,
    )
    saved = run_dir / "eval" / "test.json"

    def evaluated(ec):
        outcome = reproduce.evaluate_run(run_dir, ec)
        report = json.loads(saved.read_text())
        return outcome.split(":")[0], report["num_samples"], report["num_images"]

    assert evaluated(ec) == ("evaluated", 4, 4)
    assert evaluated(ec)[0].startswith("evaluation reused")
    assert evaluated(dataclasses.replace(ec, num_samples=2)) == ("evaluated", 2, 4)
    assert evaluated(dataclasses.replace(ec, max_images=2)) == ("evaluated", 4, 2)
    # evaluate.py replaced the report with another K since: evaluated again.
    evaluation.evaluate(dataclasses.replace(ec, max_images=2, num_samples=3))
    assert evaluated(dataclasses.replace(ec, max_images=2)) == ("evaluated", 4, 2)


def test_a_table_of_evaluations_of_different_k_is_refused(tmp_path):
    options = reproduce.ReproduceConfig(out=str(tmp_path), colors=("gray",), **TINY)
    plan_runs = reproduce.plan("sample_photos", ("vae_sph", "vae_diag"), ("gray",))
    for run, k in zip(plan_runs, (8, 4), strict=True):
        path = tmp_path / "runs" / run.name / "eval" / "test.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"num_images": 8, "num_samples": k, "step": 4}))
    with pytest.raises(ValueError, match="vae_sph-gray: K=8, vae_diag-gray: K=4"):
        reproduce.write_table(options, tmp_path, plan_runs, {})
    assert not (tmp_path / "table1.md").exists()


def _files(run_dir):
    """{name: (size, mtime)} of a run's checkpoint files."""
    return {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in (run_dir / "checkpoints").iterdir()
    }


@pytest.mark.slow
def test_reproduce_end_to_end_and_resumes_after_an_interruption(
    tmp_path, monkeypatch, capsys
):
    options = reproduce.ReproduceConfig(
        dataset="sample_photos",
        out=str(tmp_path),
        models=("vae_sph", "structured"),
        colors=("gray",),
        **TINY,
    )
    real_train = training.train
    calls = []

    def interrupted(config, **kwargs):
        """Trains structured halfway, then the machine "goes down"."""
        calls.append(config.model)
        if config.model == "structured":
            real_train(dataclasses.replace(config, steps=2), **kwargs)
            raise RuntimeError("interrupted")
        return real_train(config, **kwargs)

    monkeypatch.setattr(training, "train", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        reproduce.reproduce(options)
    first = tmp_path / "runs" / "vae_sph-gray"
    before = _files(first)
    assert not (tmp_path / "table1.md").exists()

    def counted(config, **kwargs):
        calls.append(config.model)
        return real_train(config, **kwargs)

    monkeypatch.setattr(training, "train", counted)
    calls.clear()
    capsys.readouterr()
    result = reproduce.reproduce(options)
    printed = capsys.readouterr().out
    # The finished run is reused untouched; the interrupted one resumes.
    assert calls == ["structured"] and _files(first) == before
    assert "vae_sph-gray: reused (finished at step 4)" in printed
    assert "resuming from step 2" in printed
    assert result["runs"]["structured-gray"].startswith("trained to step 4")

    table = pathlib.Path(result["table_path"]).read_text()
    assert pathlib.Path(result["table_path"]) == tmp_path / "table1.md"
    for name in ("vae_sph", "structured"):
        report = json.loads(
            (tmp_path / "runs" / f"{name}-gray" / "eval" / "test.json").read_text()
        )
        assert report["step"] == 4 and report["num_samples"] == 8
        ours = f"{report['nll']['mean']:.0f} ± {report['nll']['std']:.0f} / not run"
        label = reproduce.LABELS[name]
        (row,) = [
            line for line in table.splitlines() if line.startswith(f"| {label} |")
        ]
        assert ours in row
    # The paper's values beside ours, rows not run marked so.
    assert "| Ours | -8297 ± 1455 / -8669 ± 1424 |" in table
    assert "| VAE (Diag) | -4016 ± 813 / -4598 ± 2747 | not run / not run |" in table
    assert "## All measurements, gray" in table
    # Input, then mean, actual and sampled residual and sample of each of 2
    # models; 16x16 shown 3x.
    figures = result["figures"]
    with Image.open(figures["Figure 3 (gray): reconstructions"]) as figure:
        assert figure.size[1] == 16 + 9 * (48 + 2)
        assert np.std(np.asarray(figure.convert("L"), float)) > 1.0
    with Image.open(figures["Figure 4 (gray): prior samples"]) as figure:
        assert figure.size[1] == 16 + 4 * (48 + 2)

    # A third time: nothing is trained or evaluated again.
    calls.clear()
    capsys.readouterr()
    again = reproduce.reproduce(options)
    assert calls == []
    assert all(
        "reused" in v and "evaluation reused" in v for v in again["runs"].values()
    )


@pytest.mark.slow
def test_reproduce_on_the_celeb_a_layout_from_the_command_line(tmp_path):
    fx.make_celeb_a(tmp_path / "celeba")
    out = tmp_path / "paper"
    command = [sys.executable, "-m", "svae.reproduce", "--dataset=celeb_a"]
    command += [f"--data_dir={tmp_path / 'celeba'}", f"--out={out}"]
    command += ["--scale=tiny", "--steps=2", "--models=beta_vae_diag"]
    command += ["--colors=ycbcr", "--likelihood=paper", "--no_progress"]
    done = subprocess.run(
        command, env=tiny.script_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(
        (out / "runs" / "beta_vae_diag-ycbcr" / "eval" / "test.json").read_text()
    )
    # The fixture's test split: 3 images.
    assert report["num_images"] == 3 and report["step"] == 2
    table = (out / "table1.md").read_text()
    assert "| β-VAE (Diag) | -3123 ± 998 / -5574 ± 1083 | not run / " in table
    assert (out / "figures" / "ycbcr" / "reconstructions.png").is_file()
    saved = config_lib.load(out / "runs" / "beta_vae_diag-ycbcr")
    assert saved.likelihood == recipes.RECIPES["paper"] and not saved.progress


@pytest.mark.slow
def test_reproduce_table2_on_the_lsun_layout(tmp_path):
    root = tmp_path / "lsun"
    fx.make_lmdb(root / "church_outdoor_train_lmdb", fx.lsun_values(9, seed=0))
    fx.make_lmdb(root / "church_outdoor_val_lmdb", fx.lsun_values(4, 1), 100)
    result = reproduce.reproduce(
        reproduce.ReproduceConfig(
            dataset="lsun_church",
            data_dir=str(root),
            out=str(tmp_path / "paper"),
            models=("vae_sph",),
            steps=2,
            **TINY,
        )
    )
    table = pathlib.Path(result["table_path"]).read_text()
    assert result["table_path"].endswith("table2.md")
    assert "| Ours | -6918 ± 2423 | not run | 313.92 | not run | 614 ± 286 |" in table
    (row,) = [line for line in table.splitlines() if line.startswith("| VAE (Sph) |")]
    assert "not run" not in row
    assert "Figure 5 (ycbcr): reconstructions" in result["figures"]


@pytest.mark.slow
def test_dry_run_times_each_model_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "paper"
    estimate = reproduce.dry_run(
        reproduce.ReproduceConfig(
            dataset="sample_photos",
            out=str(out),
            models=("vae_sph",),
            colors=("gray",),
            dry_run_steps=3,
            **TINY,
        )
    )
    assert not out.exists()
    run = estimate["vae_sph-gray"]
    assert run["steps"] == 4 and run["step_seconds"] > 0 and run["hours"] > 0
    assert estimate["total"]["hours"] == pytest.approx(run["hours"])
    assert "estimated total" in capsys.readouterr().out


def test_a_refused_rerun_names_the_flag_that_sets_each_field():
    # steps is a flag of its own and a field the tiny scale sets.
    assert runner._flag_of("steps") == "--steps or --scale"
    assert runner._flag_of("latent_dim") == "--scale"
    assert runner._flag_of("likelihood.factor") == "--likelihood"
    assert runner._flag_of("seed") == "--seed"
    assert runner._flag_of("precision") == "--precision"
    assert runner._flag_of("init_from") == "--out"
