"""Tests of svae.training: schedule, resume after SIGKILL, NaN policy, strategies."""

import dataclasses
import json
import pathlib
import signal
import socket
import subprocess
import sys
import time

import data_fixtures as fx
import keras
import numpy as np
import pytest
import tensorflow as tf
import tiny
from PIL import Image

from svae import config as config_lib
from svae import data, models, recipes, runs, training

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--image_size=16",
    "--latent_dim=8",
    "--batch_size=8",
    "--crops_per_photo=4",
    "--noprogress",
]


def _config(tmp_path, **kwargs):
    """A tiny structured run in tmp_path."""
    return tiny.config(tmp_path, **kwargs)


def _env(**extra):
    """Environment of a training subprocess."""
    return tiny.script_env(**extra)


def _train_cli(args, env=None, **kwargs):
    """Starts `train.py` with the tiny flags."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *TINY, *args],
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _model_weights(model_dir, step=None):
    """Returns `{name: array}` of the model weights in a run's checkpoint."""
    directory = pathlib.Path(model_dir) / "checkpoints"
    path = (
        str(directory / f"ckpt-{step}")
        if step
        else tf.train.latest_checkpoint(directory)
    )
    model = models.build_model(config_lib.load(model_dir))
    tf.train.Checkpoint(model=model).read(path).assert_existing_objects_matched()
    return {f"{i}:{v.name}": v.numpy() for i, v in enumerate(model.weights)}


def _assert_same_weights(first, second, **tolerance):
    """Asserts two weight dicts are equal within tolerance."""
    assert first.keys() == second.keys() and len(first) > 10
    for name in first:
        np.testing.assert_allclose(first[name], second[name], err_msg=name, **tolerance)


def test_schedule_of_each_model():
    structured = config_lib.Config(pretrain_epochs=2, structured_warmup_epochs=1)
    phases = training.schedule(structured, 10, 50)
    assert [(p.name, p.start, p.end) for p in phases] == [
        ("pretrain", 0, 20),
        ("warmup", 20, 30),
        ("joint", 30, 50),
    ]
    from_sph = config_lib.Config(init_from="somewhere", structured_warmup_epochs=1)
    assert [p.name for p in training.schedule(from_sph, 10, 50)] == ["warmup", "joint"]
    supn = config_lib.Config(model="supn", pretrain_epochs=1)
    assert [(p.name, p.start) for p in training.schedule(supn, 10, 30)] == [
        ("pretrain", 0),
        ("covariance", 10),
    ]
    assert [
        p.name for p in training.schedule(config_lib.Config(model="vae_sph"), 10, 5)
    ] == ["train"]


def test_config_json_round_trip_and_defaults():
    config = config_lib.Config(model="beta_vae_diag", alpha=3.0)
    assert config_lib.Config.from_json(config.to_json()) == config
    assert config.resolved_beta == 5.0 and config.resolved_alpha == 3.0
    assert config_lib.Config().resolved_alpha == 10.0
    assert config_lib.Config(model="vae_diag").resolved_alpha == 0.0
    with pytest.raises(ValueError, match="beta"):
        config_lib.Config(model="vae_sph", beta=2.0)


@pytest.mark.slow
def test_incompatible_flag_on_resume_is_a_clear_error(tmp_path):
    config = _config(tmp_path, model="vae_sph", color="gray", steps=2)
    training.train(config)
    # As an older build wrote it: the likelihood's fields at the top level,
    # and a field since removed at the value this build computes. Resumed as
    # it was, the file is left alone.
    path = tmp_path / "config.json"
    fields = json.loads(path.read_text())
    likelihood = fields.pop("likelihood")  # Fields added since: left out.
    old = {name: likelihood[name] for name in config_lib._LIKELIHOOD_FIELDS}
    fields.update(old, covariance_init="random")
    path.write_text(json.dumps(fields))
    before = path.read_bytes()
    assert training.train(config)["step"] == 2
    assert path.read_bytes() == before
    changed = _config(tmp_path, model="vae_sph", color="gray", steps=4, latent_dim=4)
    with pytest.raises(ValueError, match="latent_dim: 8 -> 4"):
        training.train(changed)
    result = training.train(_config(tmp_path, model="vae_sph", color="gray", steps=4))
    assert result["step"] == 4
    events = sorted((tmp_path / "train").glob("events.out.tfevents.*"))
    tags = {
        value.tag
        for event in tf.compat.v1.train.summary_iterator(str(events[0]))
        for value in event.summary.value
    }
    expected = {f"loss/{name}" for name in training.TERMS}
    expected |= {"learning_rate", "inputs", "samples", "residual_samples"}
    assert expected <= tags


@pytest.mark.slow
def test_init_from_a_vae_sph_run(tmp_path):
    sph = _config(tmp_path / "sph", model="vae_sph", steps=3)
    training.train(sph)
    # Learned scales: a calibrated one would move in the warm-up step.
    config = _config(
        tmp_path / "structured",
        steps=1,
        init_from=str(tmp_path / "sph"),
        likelihood=recipes.Likelihood(scales="learned"),
    )
    seen = {}
    training.train(config, callback=lambda step, model: seen.setdefault(step, model))
    sph_model = models.build_model(sph)
    latest = tf.train.latest_checkpoint(tmp_path / "sph" / "checkpoints")
    tf.train.Checkpoint(model=sph_model).read(latest).expect_partial()
    # One warm-up step trains only the structured branch: the rest is the sph's.
    for name in ("conv0", "conv1", "dense"):
        np.testing.assert_array_equal(
            getattr(seen[1].encoder, name).kernel,
            getattr(sph_model.encoder, name).kernel,
        )
    np.testing.assert_array_equal(
        seen[1].trunk.deconv0.kernel, sph_model.trunk.deconv0.kernel
    )
    np.testing.assert_array_equal(seen[1].y_log_scale, sph_model.y_log_scale)


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_matches_an_uninterrupted_run(tmp_path):
    steps = 120
    flags = ["--model=structured", f"--steps={steps}", "--checkpoint_every=20"]
    # Without the export at the end (a third of each run's time).
    flags += ["--pretrain_epochs=2", "--structured_warmup_epochs=2", "--noexport"]
    killed_dir = tmp_path / "killed"
    # A killed process leaves its temporary files (autograph's generated
    # code): in the test's folder, not in /tmp.
    process = _train_cli(
        [*flags, f"--model_dir={killed_dir}"], env=_env(TMPDIR=str(tmp_path))
    )
    index = killed_dir / "checkpoints" / "checkpoint"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if index.exists() and "ckpt-" in index.read_text():
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = tf.train.latest_checkpoint(killed_dir / "checkpoints")
    assert killed_at is not None and int(killed_at.rsplit("-", 1)[1]) < steps
    resumed = _train_cli([*flags, f"--model_dir={killed_dir}"])
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert "resuming from step" in output
    whole = _train_cli([*flags, f"--model_dir={tmp_path / 'whole'}"])
    output = whole.communicate(timeout=300)[0]
    assert whole.returncode == 0, output
    _assert_same_weights(
        _model_weights(killed_dir, steps),
        _model_weights(tmp_path / "whole", steps),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.slow
def test_planted_nan_stops_training_and_keeps_a_loadable_checkpoint(tmp_path):
    config = _config(tmp_path, model="vae_diag", steps=12, checkpoint_every=2)

    def plant(step, model):
        if step == 5:
            kernel = model.y_mean_head.kernel
            kernel.assign(tf.fill(kernel.shape, float("nan")))

    with pytest.raises(training.NonFiniteLossError) as error:
        training.train(config, callback=plant)
    message = str(error.value)
    assert "step 6" in message and "'nll'" in message and "step 4" in message
    latest = tf.train.latest_checkpoint(tmp_path / "checkpoints")
    assert latest.endswith("ckpt-4")
    model = models.build_model(config)
    tf.train.Checkpoint(model=model).read(latest).assert_existing_objects_matched()
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weights)


def _sharded_image_folders(root, count=48, batch=8, workers=2):
    """Writes `count` distinct images twice, for one device and for the workers.

    With shuffling off, worker `w` of `workers` batches images `w, w + workers,
    ...` (`tf.data` sharding), and the global batch of a step is the workers'
    batches in worker order. The single-device folder holds the same images
    in exactly that order, so both runs see the same global batches (and
    draw the same latent noise for each image).

    Returns:
      `(single_device_dataset, multi_worker_dataset)` names.
    """
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (count, 16, 16, 3), dtype=np.uint8)
    local = batch // workers
    order = [
        start + worker + workers * i
        for start in range(0, count, batch)
        for worker in range(workers)
        for i in range(local)
    ]
    assert sorted(order) == list(range(count))
    names = []
    for name, indices in (("single", order), ("workers", range(count))):
        # train/ and test/ subfolders: every file of train/ is trained on.
        for split in ("train", "test"):
            (root / name / split).mkdir(parents=True)
        Image.fromarray(images[0]).save(root / name / "test" / "0.png")
        for position, index in enumerate(indices):
            path = root / name / "train" / f"{position:03d}.png"
            Image.fromarray(images[index]).save(path)
        names.append(f"folder:{root / name}")
    return names


_MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from svae import config, training
strategy = training.make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
result = training.train(config.Config.from_json(sys.argv[1]), strategy)
print("RESULT", result["loss"], result["kl"])
"""


@pytest.mark.slow
def test_mirrored_on_two_cpus_matches_one_device(tmp_path):
    single = _config(tmp_path / "single", model="structured", steps=8, flip=False)
    single = config_lib.Config(**(single.__dict__ | dict(pretrain_epochs=0)))
    single_result = training.train(single)
    mirrored = config_lib.Config(
        **(single.__dict__ | dict(model_dir=str(tmp_path / "mirrored")))
    )
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED, mirrored.to_json()],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    loss, kl = (float(x) for x in line.split()[1:])
    np.testing.assert_allclose(
        [loss, kl], [single_result["loss"], single_result["kl"]], rtol=1e-4
    )
    _assert_same_weights(
        _model_weights(tmp_path / "single", 8),
        _model_weights(tmp_path / "mirrored", 8),
        rtol=1e-4,
        atol=1e-5,
    )


def _free_ports(count):
    """Returns `count` free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_with_two_local_workers_matches_one_device(tmp_path):
    # Distinct images: a wrong gradient scale or a wrong shard would show.
    single_data, workers_data = _sharded_image_folders(tmp_path / "images")
    flags = ["--model=vae_diag", "--steps=6", "--noflip", "--shuffle_buffer=0"]
    flags += ["--noexport"]
    single = _train_cli(
        [*flags, f"--dataset={single_data}", f"--model_dir={tmp_path / 'single'}"]
    )
    output = single.communicate(timeout=300)[0]
    assert single.returncode == 0, output
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {
            "cluster": {"worker": workers},
            "task": {"type": "worker", "index": index},
        }
        processes.append(
            _train_cli(
                [
                    *flags,
                    f"--dataset={workers_data}",
                    "--strategy=multi_worker",
                    f"--model_dir={tmp_path / 'mw'}",
                ],
                env=_env(TF_CONFIG=json.dumps(tf_config)),
            )
        )
    for process in processes:
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, output[-3000:]
    _assert_same_weights(
        _model_weights(tmp_path / "single", 6),
        _model_weights(tmp_path / "mw", 6),
        rtol=1e-4,
        atol=1e-5,
    )
    assert not (tmp_path / "mw" / "worker1_tmp").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "model,layout",
    [
        ("structured", "celeb_a"),
        ("supn", "lsun_church"),
        ("vae_sph", "lsun_church"),
        ("vae_diag", "celeb_a"),
        ("beta_vae_diag", "lsun_church"),
    ],
)
def test_every_variant_trains_from_the_command_line_on_the_papers_layouts(
    model, layout, tmp_path
):
    data_dir = tmp_path / "data"
    if layout == "celeb_a":
        fx.make_celeb_a(data_dir, partitions=(0,) * 16 + (2,) * 2)
    else:
        fx.make_lmdb(data_dir / "church_outdoor_train_lmdb", fx.lsun_values(16, 1))
    run = _train_cli(
        [
            f"--dataset={layout}",
            f"--data_dir={data_dir}",
            f"--model={model}",
            # 16 images, batches of 8: every phase of the schedule gets 2 steps.
            "--epochs=3",
            "--pretrain_epochs=1",
            "--structured_warmup_epochs=1",
            "--noexport",
            f"--model_dir={tmp_path / 'run'}",
        ]
    )
    output = run.communicate(timeout=300)[0]
    assert run.returncode == 0, output[-3000:]
    checkpoint = tf.train.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert checkpoint.endswith("ckpt-6"), output[-3000:]
    weights = _model_weights(tmp_path / "run")
    assert all(np.all(np.isfinite(value)) for value in weights.values())


def test_bad_init_from_fails_before_anything_is_written(tmp_path):
    sph = tmp_path / "sph"
    run = tmp_path / "run"
    structured = dict(model="structured", steps=2, latent_dim=4)
    with pytest.raises(ValueError, match="--init_from=.*missing is not a run"):
        training.train(_config(run, init_from=str(tmp_path / "missing"), **structured))
    assert not run.exists()
    # A vae_sph run without a checkpoint, and one of another latent_dim.
    runs.write_config(_config(sph, model="vae_sph", latent_dim=4), sph)
    with pytest.raises(ValueError, match="--init_from=.*sph has no checkpoint"):
        training.train(_config(run, init_from=str(sph), **structured))
    assert not run.exists()
    training.train(_config(sph, model="vae_sph", steps=1, latent_dim=4))
    wider = structured | dict(latent_dim=8)
    with pytest.raises(ValueError, match="same latent_dim.* run with latent_dim=4"):
        training.train(_config(run, init_from=str(sph), **wider))
    assert not run.exists()
    run.mkdir()  # An existing empty folder stays empty.
    with pytest.raises(ValueError, match="must be a vae_sph run with the same"):
        training.train(_config(run, init_from=str(sph), **wider))
    assert list(run.iterdir()) == []
    # The corrected retry is not refused as a different configuration.
    retry = _config(run, init_from=str(sph), **structured)
    assert training.train(retry)["step"] == 2


@pytest.mark.parametrize("model_dir", ["", " "])
def test_empty_model_dir_is_refused(tmp_path, monkeypatch, model_dir):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="--model_dir=.* is empty: pass a folder"):
        training.train(dataclasses.replace(_config(None, steps=1), model_dir=model_dir))
    assert list(tmp_path.iterdir()) == []


def test_empty_model_dir_flag_is_one_error_line(tmp_path):
    process = _train_cli(["--steps=1", "--model_dir=", "--noexport"], cwd=tmp_path)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 1
    assert (
        output.strip()
        .splitlines()[-1]
        .startswith("svae: error: --model_dir='' is empty")
    )
    assert list(tmp_path.iterdir()) == []


def test_tpu_strategy_without_a_tpu_is_a_clear_error():
    with pytest.raises(ValueError, match="--strategy=tpu found no TPU.*TPU_NAME"):
        training.make_strategy("tpu")


def test_missing_data_leaves_no_run_directory(tmp_path):
    model_dir = tmp_path / "run"
    config = _config(model_dir, dataset=f"folder:{tmp_path / 'nothing'}", steps=2)
    with pytest.raises(data.DatasetError, match="nothing"):
        training.train(config)
    assert not model_dir.exists()
    few = tmp_path / "few"
    few.mkdir()
    Image.new("RGB", (20, 20)).save(few / "one.png")
    config = _config(model_dir, dataset=f"folder:{few}", steps=2)
    with pytest.raises(ValueError, match="fewer than one batch"):
        training.train(config)
    assert not model_dir.exists()


@pytest.mark.slow
def test_cli_reports_a_bad_flag_combination_and_exits_1(tmp_path):
    process = _train_cli(["--model=vae_sph", "--beta=2", f"--model_dir={tmp_path}"])
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 1
    assert "svae: error: beta other than 1 is for --model=beta_vae_diag" in output


def _snapshot(model_dir):
    """`{relative path: (size, mtime)}` of every file in a run directory."""
    return {
        str(p.relative_to(model_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(pathlib.Path(model_dir).rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_a_finished_run_run_again_is_left_alone_and_exported_once(tmp_path, capsys):
    # Issue 25: every rerun of a finished run exported it again (export/2,
    # 3, ...). Now a finished run is exported only if its newest export is
    # missing or of an older checkpoint; nothing else is written.
    def run(steps, export):
        config = _config(tmp_path, model="vae_sph", latent_dim=4, filters=4)
        config = dataclasses.replace(config, steps=steps, export=export)
        return training.train(config)

    def exports():
        return sorted(p.name for p in (tmp_path / "export").glob("*"))

    run(2, export=False)
    result = run(2, export=True)  # Finished, never exported: exported.
    assert result["step"] == 2 and exports() == ["1"]
    before = _snapshot(tmp_path)
    capsys.readouterr()
    result = run(2, export=True)  # Finished, exported: left alone.
    assert result == {"model_dir": str(tmp_path), "step": 2}
    assert _snapshot(tmp_path) == before
    out = capsys.readouterr().out
    assert f"{tmp_path} is finished at step 2: nothing to train" in out
    assert f"{tmp_path / 'export' / '1'} is an export of step 2 already" in out
    # Longer --steps continue the run, as before; its export is then older
    # than its last checkpoint, and the next run exports it.
    assert run(3, export=False)["step"] == 3 and exports() == ["1"]
    assert run(3, export=True)["export"] == str(tmp_path / "export" / "2")
    before = _snapshot(tmp_path)
    assert "export" not in run(3, export=True)
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_fewer_steps_than_reached_are_refused_before_anything_is_written(tmp_path):
    # A shorter --steps once rewrote config.json, after which evaluate.py and
    # export.py skipped the run as "stopped at step 5 of 2".
    training.train(_config(tmp_path, model="vae_sph", steps=2, export=False))
    before = _snapshot(tmp_path)
    process = _train_cli(
        ["--model=vae_sph", "--steps=1", f"--model_dir={tmp_path}", "--noexport"]
    )
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 1, output
    errors = [line for line in output.splitlines() if line.startswith("svae: error:")]
    assert errors == [
        f"svae: error: {tmp_path} holds a run at step 2, and this command asks it "
        "to end at step 1: training does not go back. Pass --steps >= 2 (the "
        "same flags leave the run as it is), or use another --model_dir. Nothing "
        "was written."
    ]
    assert "Traceback" not in output
    assert _snapshot(tmp_path) == before


# train.py whose save of step 4 fills the disk: TensorFlow leaves the save's
# temporary folder and a partial index, then raises.
_FULL_DISK = """
import os, sys
import tensorflow as tf

save = tf.train.CheckpointManager.save

def full(self, checkpoint_number=None, **kwargs):
    if checkpoint_number < 4:
        return save(self, checkpoint_number=checkpoint_number, **kwargs)
    prefix = os.path.join(self.directory, f"ckpt-{checkpoint_number}")
    os.makedirs(prefix + "_temp")
    part = os.path.join(prefix + "_temp", "part-00000-of-00001.data-00000-of-00001")
    with open(part, "wb") as file:
        file.write(bytes(1000))
    with open(prefix + ".index", "wb") as file:
        file.write(bytes(10))
    raise tf.errors.ResourceExhaustedError(
        None, None, part + ".tempstate1; No space left on device"
    )

tf.train.CheckpointManager.save = full
from svae.cli import train
sys.argv[0] = "train.py"
train.run()
"""


@pytest.mark.slow
def test_full_disk_is_one_error_line_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    flags = [*TINY, "--model=vae_sph", "--steps=4", "--checkpoint_every=2"]
    flags += ["--noexport", f"--model_dir={run}"]
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, *flags],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "svae: error:" in line]
    checkpoints = run / "checkpoints"
    assert errors == [
        f"svae: error: No space left on device writing checkpoint 4 in "
        f"{checkpoints}. It was not kept. Free space and run the same command "
        f"again: the run resumes from its last checkpoint, step 2 in {checkpoints}."
    ]
    # Nothing half-written: the failed save's files are gone, ckpt-2 is whole.
    left = sorted(p.name for p in checkpoints.iterdir())
    assert [name for name in left if "ckpt-4" in name] == [], left
    assert runs.good_checkpoint(checkpoints) == str(checkpoints / "ckpt-2")
    assert not (run / runs.LOCK_FILE).exists()
    resumed = _train_cli(flags[len(TINY) :])
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert "resuming from step 2" in output
    assert runs.checkpoint_steps(checkpoints) == [4, 2]


def test_a_mixed_precision_run_trains_in_16_bits_and_serves_float32(tmp_path):
    # float16, the policy that needs loss scaling (bfloat16 runs through the
    # same code without it; svae.selfcheck checks its likelihood).
    precision = "mixed_float16"
    config = _config(tmp_path, steps=3, precision=precision, export=True)
    result = training.train(config)
    assert np.isfinite(result["loss"])
    model = models.build_model(config)
    assert model.trunk.dense.compute_dtype == precision.removeprefix("mixed_")
    assert model.precision_head.compute_dtype == "float32"
    optimizer = training.make_optimizer(config)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")
    loaded = tf.saved_model.load(str(tmp_path / "export" / "1"))
    decode = loaded.signatures["decode"]
    assert {spec.dtype for spec in decode.structured_input_signature[1].values()} == {
        tf.float32
    }
    outputs = decode(z=tf.zeros([2, config.latent_dim]))
    for name, value in outputs.items():
        assert value.dtype == tf.float32, name
        assert np.all(np.isfinite(value.numpy())), name
