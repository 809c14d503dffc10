"""Tests of the prepared cache of svae.data.load (cache_dir) and its users."""

import logging
import os
import pathlib
import shutil
import subprocess
import sys
import threading

import data_fixtures as fx
import numpy as np
import pytest
import tensorflow as tf
import tiny

from svae import config as config_lib
from svae import data, evaluation, fields
from svae.data import decode, prepare

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 32


def _images(dataset) -> np.ndarray:
    """Materialises an unbatched data set as a numpy array."""
    return np.stack(list(dataset.as_numpy_iterator()))


def _folder(root: pathlib.Path, count: int = 8) -> str:
    """A folder with train/ (count JPEGs and a bad file) and test/."""
    fx.make_jpeg_folder(root / "train", count)
    fx.make_jpeg_folder(root / "test", 2)
    (root / "train" / "bad.jpg").write_bytes(b"not an image")
    return f"folder:{root}"


def _lsun(root: pathlib.Path) -> str:
    """An LSUN church_outdoor layout (train only) with a corrupt value."""
    values = fx.lsun_values(6, seed=4) + [b"corrupt"]
    fx.make_lmdb(root / "church_outdoor_train_lmdb", values)
    return "lsun_church"


def _celeb_a(root: pathlib.Path, zipped: bool) -> str:
    """A CelebA layout, as a folder or a zip."""
    fx.make_celeb_a(root, zipped=zipped)
    return "celeb_a"


SOURCES = {
    "folder": lambda root: (_folder(root), None),
    "lsun_church": lambda root: (_lsun(root), root),
    "celeb_a folder": lambda root: (_celeb_a(root, False), root),
    "celeb_a zip": lambda root: (_celeb_a(root, True), root),
}


def _load(name, data_dir, cache_dir, **kwargs):
    """load() of the train split at SIZE."""
    return data.load(
        name, "train", data_dir=data_dir, image_size=SIZE, cache_dir=cache_dir, **kwargs
    )


def _count_decodes(monkeypatch) -> list:
    """Counts the images Pillow opens from now on."""
    calls, original = [], decode.open_image

    def counting(encoded):
        """Records one decode and decodes."""
        calls.append(1)
        return original(encoded)

    monkeypatch.setattr(decode, "open_image", counting)
    return calls


def _run(command: list[str], env: dict) -> subprocess.CompletedProcess:
    """Runs a command line of svae; asserts that it succeeds."""
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def _cache_files(cache_dir: pathlib.Path) -> list[str]:
    """Every file in the cache folder, temp files included."""
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


@pytest.mark.parametrize("kind", list(SOURCES))
def test_prepared_cache_equals_decoding_and_is_read_without_decoding(
    kind, tmp_path, monkeypatch, caplog
):
    """Same images as decoding; the second load decodes nothing, reports skips."""
    name, data_dir = SOURCES[kind](tmp_path / "data")
    if name.startswith("folder:"):
        data_dir = None
    cache = tmp_path / "cache"
    decoded = _images(_load(name, data_dir, None))
    calls = _count_decodes(monkeypatch)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        first = _load(name, data_dir, cache, dtype="uint8")
    skipped_first = [r for r in caplog.records if "Skipped" in r.getMessage()]
    assert calls and data.prepared_size(first) == len(decoded)
    np.testing.assert_array_equal(_images(first), np.round(decoded * 255))
    assert [pathlib.Path(p).suffix for p in _cache_files(cache)] == [".json", ".npy"]
    calls.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        second = _load(name, data_dir, cache)
        images = _images(second)
    skipped_second = [r for r in caplog.records if "Skipped" in r.getMessage()]
    assert not calls
    assert second.element_spec.dtype == tf.float32
    np.testing.assert_array_equal(images, decoded)
    has_bad_file = kind in ("folder", "lsun_church")
    assert len(skipped_first) == len(skipped_second) == int(has_bad_file)
    assert len(data.skipped_files(second)) == int(has_bad_file)
    if has_bad_file:
        assert "Skipped 1 of" in skipped_second[0].getMessage()


def test_changed_source_prepares_again_and_removes_the_old_cache(tmp_path):
    """Adding or modifying a file re-prepares; one cache per split remains."""
    name = _folder(tmp_path / "data", count=6)
    cache = tmp_path / "cache"
    first = _images(_load(name, None, cache, dtype="uint8"))
    fx.make_jpeg_folder(tmp_path / "more", 1, size=(40, 40))
    (tmp_path / "more" / "part0" / "00000.jpg").rename(
        tmp_path / "data" / "train" / "zzz.jpg"
    )
    added = _images(_load(name, None, cache, dtype="uint8"))
    assert len(added) == len(first) + 1
    np.testing.assert_array_equal(added[:-1], first)
    changed = tmp_path / "data" / "train" / "zzz.jpg"
    changed.write_bytes(fx.encode(np.zeros((40, 40, 3), np.uint8), "PNG"))
    modified = _images(_load(name, None, cache, dtype="uint8"))
    assert modified[-1].max() == 0 and added[-1].max() > 0
    assert len(_cache_files(cache)) == 2  # One .npy and its .json.
    # Another split has a cache of its own.
    test = data.load(name, "test", image_size=SIZE, cache_dir=cache)
    assert len(_images(test)) == 2 and len(_cache_files(cache)) == 4


def test_failed_or_killed_preparation_leaves_no_cache_that_is_used(
    tmp_path, monkeypatch
):
    """An exception mid-way leaves nothing; a dead writer's temp file goes."""
    name = _folder(tmp_path / "data", count=12)
    cache = tmp_path / "cache"
    original, calls = decode.open_image, []

    def failing(encoded):
        """Decodes a few images, then fails like a crash would."""
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("simulated crash")
        return original(encoded)

    monkeypatch.setattr(decode, "open_image", failing)
    with pytest.raises(tf.errors.OpError, match="simulated crash"):
        _load(name, None, cache)
    assert _cache_files(cache) == []
    monkeypatch.setattr(decode, "open_image", original)
    # A writer killed before its rename leaves a temp file; a live one's stays.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    prefix = f".folder-data-train-{SIZE}px-0123456789abcdef.npy"
    host = __import__("socket").gethostname()
    dead_temp = cache / f"{prefix}.{host}.{int(dead.stdout)}.0badc0de.tmp"
    live_temp = cache / f"{prefix}.{host}.{os.getpid()}.0badc0de.tmp"
    for temp in (dead_temp, live_temp):
        temp.write_bytes(b"partial")
    images = _images(_load(name, None, cache))
    assert not dead_temp.exists() and live_temp.exists()
    live_temp.unlink()
    # A .npy without its manifest (killed between the renames) is not used.
    (npy,) = cache.glob("*.npy")
    npy.with_suffix(".json").unlink()
    npy.write_bytes(b"damaged")
    np.testing.assert_array_equal(_images(_load(name, None, cache)), images)


def test_no_image_decodes_is_a_dataset_error_and_no_cache(tmp_path):
    """A split of bad files only: the DatasetError of decoding, nothing cached."""
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "test").mkdir()
    (tmp_path / "data" / "train" / "a.jpg").write_bytes(b"junk")
    with pytest.raises(data.DatasetError, match="No image of folder"):
        _load(f"folder:{tmp_path / 'data'}", None, tmp_path / "cache")
    assert _cache_files(tmp_path / "cache") == []


def test_unwritable_cache_dir_warns_and_decodes(tmp_path, monkeypatch, caplog):
    """A cache folder that cannot be made, or is full: a warning, then decoding."""
    name = _folder(tmp_path / "data", count=4)
    decoded = _images(_load(name, None, None))
    (tmp_path / "a_file").write_text("x")
    with caplog.at_level(logging.WARNING):
        dataset = _load(name, None, tmp_path / "a_file" / "cache")
    assert data.prepared_size(dataset) is None
    np.testing.assert_array_equal(_images(dataset), decoded)
    (message,) = [r.getMessage() for r in caplog.records if "Cannot" in r.getMessage()]
    assert "Cannot write the prepared cache of folder:" in message
    assert "--cache_dir" in message and "SVAE_CACHE_DIR" in message
    caplog.clear()
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10})
    )
    with caplog.at_level(logging.WARNING):
        dataset = _load(name, None, tmp_path / "full")
    assert data.prepared_size(dataset) is None
    assert any("GB are free" in r.getMessage() for r in caplog.records)
    assert _cache_files(tmp_path / "full") == []


def test_concurrent_preparations_leave_one_valid_cache(tmp_path):
    """Two writers at once: both get the images, one cache, no temp files."""
    name = _folder(tmp_path / "data", count=10)
    cache = tmp_path / "cache"
    results = [None, None]

    def prepare(index):
        """Loads (and prepares) the split in a thread."""
        results[index] = _images(_load(name, None, cache, progress=False))

    threads = [threading.Thread(target=prepare, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    np.testing.assert_array_equal(results[0], results[1])
    assert len(_cache_files(cache)) == 2


def test_pipeline_on_uint8_equals_pipeline_on_float():
    """training_pipeline gives the same batches for uint8 and k/255 float input."""
    pixels = np.random.default_rng(3).integers(0, 256, (24, 16, 16, 3), np.uint8)
    context = tf.distribute.InputContext(2, 1, 2)
    for kwargs in ({}, {"color": "gray", "flip": False}, {"input_context": context}):
        batches = []
        for images in (pixels, pixels.astype(np.float32) / 255.0):
            dataset = tf.data.Dataset.from_tensor_slices(images)
            pipeline = data.training_pipeline(dataset, 4, seed=5, **kwargs)
            batches.append(list(pipeline.as_numpy_iterator()))
        assert len(batches[0]) == len(batches[1]) > 0
        for left, right in zip(*batches, strict=True):
            for key in left:
                np.testing.assert_array_equal(left[key], right[key])


def test_evaluation_load_split_uses_the_runs_cache_dir(tmp_path):
    """load_split reads the test split through the run's cache_dir."""
    name = _folder(tmp_path / "data", count=2)
    config = config_lib.Config(
        dataset=name, image_size=SIZE, cache_dir=str(tmp_path / "cache")
    )
    images = evaluation.load_split(config, "test")
    assert data.prepared_size(images) == 2
    assert "cache_dir" in config_lib.RESUMABLE_FIELDS


@pytest.mark.slow
def test_train_py_prepares_once_then_reuses_the_cache(tmp_path):
    """train.py on a folder: the first run prepares, a resumed run reads it."""
    name = _folder(tmp_path / "data", count=16)
    cache = tmp_path / "cache"
    env = tiny.script_env()
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        f"--dataset={name}",
        "--model=vae_diag",
        "--image_size=16",
        "--latent_dim=4",
        "--batch_size=8",
        "--noprogress",
        "--noexport",
        f"--model_dir={tmp_path / 'run'}",
    ]
    first = _run([*command, "--steps=2", f"--cache_dir={cache}"], env)
    assert "svae: preparing folder:" in first.stdout
    assert "Skipped 1 of 17 files" in first.stderr
    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(stamps) == 2
    # The default cache_dir: $SVAE_CACHE_DIR.
    second = _run([*command, "--steps=4"], env | {"SVAE_CACHE_DIR": str(cache)})
    assert "svae: preparing" not in second.stdout
    assert "svae: resuming from step 2" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    assert config_lib.load(tmp_path / "run").cache_dir == str(cache)


@pytest.mark.slow
def test_prepare_command_prepares_what_train_py_reads(tmp_path, monkeypatch):
    """`python -m svae.data.prepare`: the caches load_split then reads as is."""
    name = _folder(tmp_path / "data", count=4)
    cache = tmp_path / "cache"
    env = tiny.script_env()
    command = [sys.executable, "-m", "svae.data.prepare", f"--dataset={name}"]
    flags = [f"--cache_dir={cache}", "--split=train,test", f"--image_size={SIZE}"]
    result = _run([*command, *flags, "--noprogress"], env)
    assert "svae: preparing folder:" in result.stdout
    assert f"{name} train: 4 images in {cache}" in result.stdout
    assert f"{name} test: 2 images" in result.stdout
    assert "1 files skipped" in result.stdout and "Skipped 1 of 5" in result.stderr
    assert len(_cache_files(cache)) == 4
    calls = _count_decodes(monkeypatch)
    config = config_lib.Config(dataset=name, image_size=SIZE, cache_dir=str(cache))
    assert data.prepared_size(data.load_split(config, "train")) == 4
    assert data.prepared_size(data.load_split(config, "test")) == 2
    assert not calls


def test_prepare_refuses_what_it_cannot_prepare(tmp_path):
    """In-memory data, no cache_dir, an unwritable one, no such split: errors."""
    name = _folder(tmp_path / "data", count=2)
    (tmp_path / "a_file").write_text("x")
    cache = str(tmp_path / "cache")
    for dataset, kwargs, message in (
        ("sample_photos", {"cache_dir": cache}, "nothing to prepare"),
        (name, {"cache_dir": ""}, "needs a cache_dir"),
        (name, {"cache_dir": str(tmp_path / "a_file")}, "see the warning above"),
        (name, {"cache_dir": cache, "split": "validation"}, "has splits train, test"),
    ):
        split = kwargs.pop("split", "train")
        with pytest.raises(data.DatasetError, match=message):
            prepare.prepare(dataset, split, image_size=SIZE, progress=False, **kwargs)
    assert _cache_files(tmp_path / "cache") == []


@pytest.mark.slow
def test_prepare_command_says_what_it_cannot_prepare_in_one_line(tmp_path):
    """An error of the data set: one `svae: error:` line, exit status 1."""
    name = _folder(tmp_path / "data", count=2)
    result = subprocess.run(
        [sys.executable, "-m", "svae.data.prepare", f"--dataset={name}"]
        + ["--cache_dir=", "--noprogress"],
        env=tiny.script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if "svae: error" in line]
    assert errors == ["svae: error: Preparing needs a cache_dir."], result.stderr
    assert "Traceback" not in result.stderr


def test_prepare_options_are_checked():
    """The options of the command: a range, and the splits of a comma list."""
    with pytest.raises(ValueError, match="image_size must be >= 8, got 0"):
        prepare.PrepareConfig(dataset="x", image_size=0)
    assert prepare.PrepareConfig(dataset="x", split="train,,test").splits == [
        "train",
        "test",
    ]
    for split in (",", "", ",,"):
        with pytest.raises(ValueError, match="split must name at least one split"):
            prepare.PrepareConfig(dataset="x", split=split)


def test_prepare_takes_the_image_sizes_train_py_takes():
    """Another size would make a cache that no run ever reads."""
    for size in range(1, 300):
        try:
            config_lib.Config(image_size=size, color="gray")
            trains = True
        except ValueError:
            trains = False
        try:
            prepare.PrepareConfig(dataset="x", image_size=size)
            prepares = True
        except ValueError as error:
            prepares = False
            assert f"got {size}" in str(error) and "image_size must be" in str(error)
        assert prepares == trains, size
    assert prepare.IMAGE_SIZES == fields.field_ranges(config_lib.Config)["image_size"]
    ranges = fields.field_ranges(prepare.PrepareConfig)
    assert ranges["image_size"] == prepare.IMAGE_SIZES


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag, message",
    [
        ("--split=,", "svae: error: split must name at least one split"),
        ("--image_size=15", "svae: error: image_size must be a power of 2 >= 8"),
        ("--image_size=3", "FATAL Flags parsing error: flag --image_size=3: must be"),
    ],
)
def test_prepare_command_refuses_what_no_run_reads_in_one_line(tmp_path, flag, message):
    """No split, or a size train.py never takes: one line, exit 1, no cache."""
    name = _folder(tmp_path / "data", count=2)
    cache = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, "-m", "svae.data.prepare", f"--dataset={name}"]
        + [f"--cache_dir={cache}", "--noprogress", flag],
        env=tiny.script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and result.stdout == "", result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith(message[:12])]
    assert line.startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert not cache.exists()


def _non_utf8_folder(root: pathlib.Path) -> tuple[str, str, str]:
    """A folder split by the hash of the paths: 6 JPEGs, and in the train split
    a PNG of 7s and a file that is no image, both named by non-UTF-8 bytes.

    Returns:
      The data set's name, and the paths of those two files as Python names
      them (`os.fsdecode`: surrogate escapes).
    """
    fx.make_jpeg_folder(root, 6)
    image = str(root / os.fsdecode(b"image\xff.png"))
    junk = str(root / os.fsdecode(b"junk\xfe.jpg"))
    try:
        pathlib.Path(image).write_bytes(
            fx.encode(np.full((40, 40, 3), 7, np.uint8), "PNG")
        )
    except OSError as error:  # File systems that take UTF-8 names only.
        pytest.skip(f"no non-UTF-8 file names here: {error}")
    pathlib.Path(junk).write_bytes(b"not an image")
    return f"folder:{root}", image, junk


def test_file_names_that_are_not_utf8_are_read_and_prepared(tmp_path):
    """The hash split and the cache take them; junk is skipped by its name."""
    name, image, junk = _non_utf8_folder(tmp_path / "data")
    train = [str(f) for f in data.folder_files(tmp_path / "data", "train")]
    assert len(train) == 8 and image in train and junk in train
    cache = tmp_path / "cache"
    decoded = _images(_load(name, None, None, dtype="uint8"))
    assert len(decoded) == 7 and (decoded == 7).all(axis=(1, 2, 3)).sum() == 1
    for _ in range(2):  # Prepared, then read from the cache.
        dataset = _load(name, None, cache, dtype="uint8")
        assert data.prepared_size(dataset) == 7
        np.testing.assert_array_equal(_images(dataset), decoded)
        skipped = data.skipped_files(dataset)
        assert list(skipped) == [junk] and "not an image" in skipped[junk]
    assert len(_cache_files(cache)) == 2


@pytest.mark.slow
def test_prepare_command_on_file_names_that_are_not_utf8(tmp_path):
    """`python -m svae.data.prepare`: the images read, the junk named, exit 0."""
    name, _, _ = _non_utf8_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    result = _run(
        [sys.executable, "-m", "svae.data.prepare", f"--dataset={name}"]
        + [f"--cache_dir={cache}", f"--image_size={SIZE}", "--noprogress"],
        tiny.script_env(),
    )
    assert f"{name} train: 7 images" in result.stdout, result.stdout
    assert "1 files skipped" in result.stdout
    (warning,) = [x for x in result.stderr.splitlines() if "Skipped 1 of 8" in x]
    # The undecodable byte named as an escape, which any stream can write.
    assert "junk\\xfe.jpg (not an image" in warning, warning
    assert len(_cache_files(cache)) == 2
