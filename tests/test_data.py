"""Tests of svae.data on fixtures built in the official layouts."""

import hashlib
import io
import logging
import socket
import sys
import types
import zipfile

import data_fixtures as fx
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from PIL import Image

from svae import color, data
from svae.data import decode, registry, sample_photos, source

SIZE = 32


def _images(dataset) -> np.ndarray:
    """Materialises an unbatched data set as a numpy array."""
    return np.stack(list(dataset.as_numpy_iterator()))


def _digests(images: np.ndarray) -> set[bytes]:
    """Hashes each image, to compare sets of images across splits."""
    return {hashlib.sha1(np.ascontiguousarray(i).tobytes()).digest() for i in images}


def _assert_images(images: np.ndarray, count: int, size: int = SIZE) -> None:
    """Checks the shape, dtype and [0, 1] range of loaded images."""
    assert images.shape == (count, size, size, 3)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_allclose(images * 255.0, np.round(images * 255.0), atol=1e-3)


def _skip_warnings(caplog) -> list[str]:
    """Returns the skipped-file warnings logged so far."""
    return [r.getMessage() for r in caplog.records if "Skipped" in r.getMessage()]


# ---------------------------------------------------------------- sample_photos


@pytest.fixture(scope="module")
def photos():
    """Loads both sample_photos splits once (8 crops per photograph)."""
    return {
        split: _images(data.load("sample_photos", split, image_size=SIZE, seed=3))
        for split in ("train", "test")
    }


def test_sample_photos_loads_without_network(monkeypatch):
    """Every bundled photograph loads with sockets disabled: no download."""

    def no_network(*args, **kwargs):
        """Fails any attempt to open a socket."""
        raise AssertionError("sample_photos tried to use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    sample_photos.photo_arrays.cache_clear()
    photos = sample_photos.photo_arrays()
    assert set(photos) == set(sum(data.SAMPLE_PHOTOS.values(), ()))
    for photo in photos.values():
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
        assert min(photo.shape[:2]) >= 256


@pytest.mark.slow
def test_sample_photos_shapes_sizes_and_determinism(photos):
    """Thousands of train crops by default; a seed fixes them, another differs."""
    per_photo = data.SAMPLE_CROPS_PER_PHOTO
    for split, images in photos.items():
        _assert_images(images, per_photo * len(data.SAMPLE_PHOTOS[split]))
    assert len(photos["train"]) >= 5000
    small = data.load(
        "sample_photos", "train", image_size=SIZE, seed=3, crops_per_photo=4
    )
    by_photo = photos["train"].reshape(-1, per_photo, SIZE, SIZE, 3)
    np.testing.assert_array_equal(
        _images(small).reshape(-1, 4, SIZE, SIZE, 3), by_photo[:, :4]
    )
    again = _images(data.load("sample_photos", "test", image_size=SIZE, seed=3))
    np.testing.assert_array_equal(again, photos["test"])
    other = data.load("sample_photos", "test", image_size=SIZE, seed=4)
    assert not np.array_equal(_images(other), photos["test"])


def test_sample_photos_split_by_photograph(photos):
    """No photograph (and no stereo view of one) is in both splits."""
    train, test = (set(data.SAMPLE_PHOTOS[s]) for s in ("train", "test"))
    assert not train & test
    assert {"motorcycle_left", "motorcycle_right"} <= train
    assert not _digests(photos["train"]) & _digests(photos["test"])
    arrays = sample_photos.photo_arrays()
    assert len({arrays[n].tobytes() for n in train | test}) == len(train | test)


# ----------------------------------------------------------------------- folder


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """An image folder with every supported format, mode, size, and bad files.

    Returns:
      (root, {relative path: expected constant RGB or None for bad files}).
    """
    root = tmp_path_factory.mktemp("mixed")
    (root / "sub" / "deeper").mkdir(parents=True)
    flat = {"rgb": (200, 40, 90), "gray": 120}
    expected = {}

    def put(name, image, fmt, value, **options):
        """Writes one image and records the colour it must load as."""
        (root / name).write_bytes(fx.encode(image, fmt, **options))
        expected[name] = value

    rgb = Image.new("RGB", (90, 70), flat["rgb"])
    put("a.jpg", rgb, "JPEG", flat["rgb"], quality=100)
    put("sub/b.png", rgb, "PNG", flat["rgb"])
    put("sub/c.webp", rgb, "WEBP", flat["rgb"], lossless=True)
    put("sub/deeper/d.bmp", rgb, "BMP", flat["rgb"])
    put("e_gray.png", Image.new("L", (64, 80), flat["gray"]), "PNG", (120,) * 3)
    put("f_palette.png", rgb.convert("P"), "PNG", flat["rgb"])
    transparent = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    put("g_rgba.png", transparent, "PNG", (255, 255, 255))
    sixteen = Image.fromarray(np.full((40, 60), 40000, np.uint16))
    put("h_16bit.png", sixteen, "PNG", (156, 156, 156))
    rgb16 = np.full((40, 60, 3), (40000, 10000, 65535), np.uint16)
    (root / "h_rgb16.png").write_bytes(tf.io.encode_png(rgb16).numpy())
    expected["h_rgb16.png"] = (156, 39, 255)
    frames = [Image.new("RGB", (48, 48), c) for c in ((10, 200, 30), (250, 0, 0))]
    buffer = fx.encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    (root / "i_anim.gif").write_bytes(buffer)
    expected["i_anim.gif"] = (10, 200, 30)
    put("j_big.jpg", Image.new("RGB", (1200, 900), flat["rgb"]), "JPEG", flat["rgb"])
    put("k_cmyk.jpg", rgb.convert("CMYK"), "JPEG", flat["rgb"], quality=100)
    good = (root / "a.jpg").read_bytes()
    (root / "bad_truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "bad_random.png").write_bytes(np.random.default_rng(0).bytes(500))
    (root / "bad_notes.txt").write_text("not an image")
    put("bad_small.png", Image.new("RGB", (20, 50), flat["rgb"]), "PNG", None)
    (root / ".hidden.jpg").write_bytes(b"ignored")
    for name in ("bad_truncated.jpg", "bad_random.png", "bad_notes.txt"):
        expected[name] = None
    return root, expected


def test_folder_decodes_every_format_and_mode(mixed_folder, caplog):
    """Formats and modes load as their colour; bad files are skipped, reported."""
    root, expected = mixed_folder
    caplog.set_level(logging.WARNING)
    loaded, skipped = {}, {}
    for split in ("train", "test"):
        caplog.clear()
        files = data.folder_files(root, split, test_fraction=0.3)
        dataset = data.load(f"folder:{root}", split, image_size=SIZE, test_fraction=0.3)
        images = _images(dataset)
        _images(dataset)
        good = [f for f in files if expected[f.relative_to(root).as_posix()]]
        assert len(images) == len(good)
        names = (f.relative_to(root).as_posix() for f in good)
        loaded.update(zip(names, images, strict=True))
        split_skipped = data.skipped_files(dataset)
        skipped.update(split_skipped)
        warnings = _skip_warnings(caplog)
        assert len(warnings) == (1 if split_skipped else 0)
        if split_skipped:
            assert warnings[0].startswith(
                f"Skipped {len(split_skipped)} of {len(files)} files of folder:"
            )
            assert all(path in warnings[0] for path in split_skipped)
    assert sorted(loaded) == sorted(n for n, v in expected.items() if v)
    for name, image in loaded.items():
        np.testing.assert_allclose(
            image.reshape(-1, 3).mean(0) * 255, expected[name], atol=3, err_msg=name
        )
    assert sorted(skipped) == sorted(
        str(root / n) for n, v in expected.items() if not v
    )
    assert "truncated" in skipped[str(root / "bad_truncated.jpg")].lower()
    assert "not an image" in skipped[str(root / "bad_notes.txt")]
    assert "smaller than 32x32: 20x50" in skipped[str(root / "bad_small.png")]


def test_folder_hash_split_is_disjoint_stable_and_seed_free(mixed_folder):
    """train and test partition the files; the split ignores the seed."""
    root, expected = mixed_folder
    train = data.folder_files(root, "train", 0.3)
    test = data.folder_files(root, "test", 0.3)
    assert not set(train) & set(test)
    assert sorted(f.relative_to(root).as_posix() for f in train + test) == sorted(
        expected
    )
    assert 0 < len(test) < len(train)
    assert data.folder_files(root, "test", 0.3) == test


def test_folder_with_train_test_subfolders_and_bare_path(tmp_path):
    """train/ and test/ subfolders define the split; a bare path works."""
    fx.make_jpeg_folder(tmp_path / "train", 5)
    fx.make_jpeg_folder(tmp_path / "test", 2)
    train = _images(data.load(str(tmp_path), "train", image_size=SIZE))
    test = _images(data.load(f"folder:{tmp_path}", "test", image_size=SIZE))
    _assert_images(train, 5)
    _assert_images(test, 2)
    with pytest.raises(data.DatasetError, match="has splits train, test"):
        data.load(str(tmp_path), "validation")


def test_folder_resizes_shorter_side_and_crops_centre(tmp_path):
    """A wide image keeps its centre square: the white band, not the black sides."""
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, 100:200] = 255
    pixels[:, 100:104] = (255, 0, 0)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "train" / "wide.png").write_bytes(fx.encode(pixels, "PNG"))
    tall = fx.encode(pixels.transpose(1, 0, 2), "PNG")
    (tmp_path / "test" / "tall.png").write_bytes(tall)
    images = [
        _images(data.load(str(tmp_path), s, image_size=SIZE)) for s in ("train", "test")
    ]
    images = np.concatenate(images) * 255
    assert len(images) == 2
    for image in images:
        red = image[..., 0] - image[..., 1]
        band = red.mean(axis=0) if red.mean(axis=0).max() > 100 else red.mean(axis=1)
        assert band[0] > 200 and band[3:].max() < 60
        assert (image[..., 1][2:-2, 2:-2] > 250).mean() > 0.8


def test_folder_errors(tmp_path):
    """A missing folder, an empty one and one with no image are errors."""
    with pytest.raises(data.DatasetError, match="does not exist"):
        data.load(f"folder:{tmp_path / 'nope'}", "train")
    with pytest.raises(data.DatasetError, match="No files in split 'train'"):
        data.load(f"folder:{tmp_path}", "train")
    for index in range(4):
        (tmp_path / f"junk{index}.txt").write_text("x")
    # Raised by load itself, in Python: not inside tf.data, where TensorFlow
    # would log the failed op's traceback first.
    with pytest.raises(data.DatasetError, match="No image of folder.*junk0.txt"):
        data.load(str(tmp_path), "train", test_fraction=0.01)


# ------------------------------------------------------------------ lsun_church


@pytest.fixture(scope="module")
def lsun_dir(tmp_path_factory):
    """LSUN church_outdoor train/val LMDBs of WebP and JPEG, one corrupt value.

    Returns:
      (root, {key: value} of the validation LMDB).
    """
    root = tmp_path_factory.mktemp("lsun")
    train_values = fx.lsun_values(9, seed=0)
    train_values[4] = train_values[4][:40]
    fx.make_lmdb(root / "church_outdoor_train_lmdb", train_values)
    val_values = fx.lsun_values(4, 1)
    val_keys = fx.make_lmdb(root / "church_outdoor_val_lmdb", val_values, 100)
    keys = [fx.lsun_key(100 + i) for i in range(4)]
    return root, {k: dict(zip(keys, val_values, strict=True))[k] for k in val_keys}


def test_lsun_reads_webp_and_jpeg_and_skips_corrupt(lsun_dir, caplog):
    """Both splits load from their LMDB; a corrupt value is reported by key."""
    lsun_dir, _ = lsun_dir
    caplog.set_level(logging.WARNING)
    train = data.load("lsun_church", "train", data_dir=lsun_dir, image_size=SIZE)
    test = data.load("lsun_church", "test", data_dir=lsun_dir, image_size=SIZE)
    train_images, test_images = _images(train), _images(test)
    _assert_images(train_images, 8)
    _assert_images(test_images, 4)
    assert not _digests(train_images) & _digests(test_images)
    assert list(data.skipped_files(train)) == [fx.lsun_key(4).decode()]
    (warning,) = _skip_warnings(caplog)
    assert "Skipped 1 of 9" in warning and fx.lsun_key(4).decode() in warning
    again = _images(
        data.load("lsun_church", "train", data_dir=lsun_dir, image_size=SIZE)
    )
    np.testing.assert_array_equal(again, train_images)


def test_lsun_crop_matches_reference(lsun_dir):
    """Each image matches Pillow's shorter-side resize and centre crop."""
    lsun_dir, values = lsun_dir
    dataset = data.load("lsun_church", "test", data_dir=lsun_dir, image_size=SIZE)
    for image, value in zip(_images(dataset), values.values(), strict=True):
        reference = Image.open(io.BytesIO(value)).convert("RGB")
        width, height = reference.size
        scaled = reference.resize(
            (round(width * SIZE / height), SIZE), Image.Resampling.BICUBIC
        )
        left = (scaled.width - SIZE) // 2
        reference = np.asarray(scaled.crop((left, 0, left + SIZE, SIZE))) / 255.0
        assert np.abs(image - reference).mean() < 1.5 / 255


def test_lsun_errors(tmp_path):
    """Missing data_dir, missing folders and the validation split are errors."""
    for data_dir in (None, tmp_path / "nope", tmp_path):
        with pytest.raises(data.DatasetError) as error:
            data.load("lsun_church", "train", data_dir=data_dir)
        message = str(error.value)
        for text in (
            "church_outdoor_train_lmdb",
            "church_outdoor_val_lmdb",
            "http://dl.yf.io/lsun/",
            "download.py -c church_outdoor",
            "https://github.com/fyu/lsun",
            "tensorflow-io",
        ):
            assert text in message
    with pytest.raises(data.DatasetError, match="splits train, test; got 'validation'"):
        data.load("lsun_church", "validation", data_dir=tmp_path)


# ---------------------------------------------------------------------- celeb_a


def test_celeb_a_crop_box_on_a_known_pattern():
    """Exactly rows 40:188, columns 15:163 survive; any shift shows the border."""
    image = np.zeros((218, 178, 3), np.uint8)
    image[40:188, 15:163] = 255
    np.testing.assert_array_equal(data.celeb_a_preprocess(image, 64), 255)
    for rows, cols in (
        (slice(41, 189), slice(15, 163)),
        (slice(40, 188), slice(14, 162)),
    ):
        shifted = np.zeros_like(image)
        shifted[rows, cols] = 255
        assert data.celeb_a_preprocess(shifted, 64).numpy().min() < 255


def test_celeb_a_blur_and_resize_match_scipy_and_tf_image():
    """Gaussian sigma 0.76 (scipy) then bilinear resize (tf.image), within 1/255."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
    box = image[40:188, 15:163].astype(np.float64)
    blurred = scipy.ndimage.gaussian_filter(box, (0.76, 0.76, 0), mode="reflect")
    expected = tf.image.resize(blurred, (64, 64), method="bilinear").numpy()
    got = data.celeb_a_preprocess(image, 64).numpy().astype(np.float64)
    assert np.abs(got - expected).max() <= 0.5 + 1e-3


@pytest.fixture(scope="module")
def celeb_a_dirs(tmp_path_factory):
    """CelebA in the folder layout (with bad files) and in the zip layout."""
    folder = tmp_path_factory.mktemp("celeb_folder")
    fx.make_celeb_a(folder)
    zipped = tmp_path_factory.mktemp("celeb_zip")
    fx.make_celeb_a(zipped, zipped=True)
    return folder, zipped


def test_celeb_a_official_splits_folder_and_zip(celeb_a_dirs):
    """Official partitions 0/1/2; zip and folder give identical images."""
    folder, zipped = celeb_a_dirs
    counts = {"train": 6, "validation": 2, "test": 3}
    seen = []
    for split, count in counts.items():
        from_folder = _images(
            data.load("celeb_a", split, data_dir=folder, image_size=SIZE)
        )
        from_zip = _images(
            data.load("celeb_a", split, data_dir=zipped, image_size=SIZE)
        )
        _assert_images(from_folder, count)
        np.testing.assert_array_equal(from_folder, from_zip)
        seen.append(_digests(from_folder))
    assert sum(map(len, seen)) == len(set().union(*seen)) == 11
    # The fixture is flat inside the crop box: the crop keeps nothing else.
    assert from_folder.std(axis=(1, 2)).max() < 2 / 255


def test_celeb_a_skips_bad_and_missing_files(tmp_path, caplog):
    """Truncated, too small and missing images are skipped and reported once."""
    caplog.set_level(logging.WARNING)
    names = fx.make_celeb_a(tmp_path, partitions=(0,) * 5)
    images = tmp_path / "img_align_celeba"
    data_bytes = (images / names[0]).read_bytes()
    (images / names[0]).write_bytes(data_bytes[: len(data_bytes) // 3])
    (images / names[1]).write_bytes(
        fx.encode(np.zeros((150, 150, 3), np.uint8), "JPEG")
    )
    (images / names[2]).unlink()
    dataset = data.load("celeb_a", "train", data_dir=tmp_path, image_size=SIZE)
    _assert_images(_images(dataset), 2)
    _images(dataset)
    skipped = data.skipped_files(dataset)
    assert sorted(skipped) == sorted(names[:3])
    assert "smaller than the crop box: 150x150" in skipped[names[1]]
    (warning,) = _skip_warnings(caplog)
    assert warning.startswith("Skipped 3 of 5 files")


def test_celeb_a_errors(tmp_path):
    """No data_dir, wrong layout, bad partition file: errors that say what to get."""
    for data_dir in (None, tmp_path):
        with pytest.raises(data.DatasetError) as error:
            data.load("celeb_a", "train", data_dir=data_dir)
        for text in (
            "img_align_celeba.zip",
            "list_eval_partition.txt",
            "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
        ):
            assert text in str(error.value)
    (tmp_path / "img_align_celeba").mkdir()
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg train\n")
    with pytest.raises(data.DatasetError, match=r"list_eval_partition.txt:1: expected"):
        data.load("celeb_a", "train", data_dir=tmp_path)


def _fake_tfds(monkeypatch, builder) -> None:
    """Installs a stand-in tensorflow_datasets module whose builder() is given."""
    module = types.SimpleNamespace(
        builder=lambda name, data_dir: builder,
        download=types.SimpleNamespace(DownloadConfig=lambda **kw: kw),
    )
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)


def test_celeb_a_prefers_prepared_tfds(tmp_path, monkeypatch, celeb_a_dirs):
    """A prepared TFDS celeb_a under data_dir wins over the official files."""
    aligned = np.zeros((3, 218, 178, 3), np.uint8)
    aligned[:, 40:188, 15:163] = (10, 20, 30)

    class Prepared:
        """A prepared builder serving three aligned images."""

        info = types.SimpleNamespace(
            splits={"test": types.SimpleNamespace(num_examples=3)}
        )

        def is_prepared(self):
            """Says the data is there."""
            return True

        def as_dataset(self, split, shuffle_files):
            """Returns the examples as TFDS would."""
            assert split == "test" and not shuffle_files
            return tf.data.Dataset.from_tensor_slices({"image": aligned})

    (tmp_path / "celeb_a").mkdir()
    fx.make_celeb_a(tmp_path)
    _fake_tfds(monkeypatch, Prepared())
    images = _images(data.load("celeb_a", "test", data_dir=tmp_path, image_size=SIZE))
    np.testing.assert_allclose(
        images * 255, np.broadcast_to((10, 20, 30), images.shape)
    )


def test_celeb_a_failed_tfds_download_points_at_manual_dir(tmp_path, monkeypatch):
    """A refused download becomes a DatasetError naming manual_dir and files."""

    class Refusing:
        """A builder whose download fails like Google Drive's quota page."""

        def is_prepared(self):
            """Says nothing is prepared."""
            return False

        def download_and_prepare(self, download_config):
            """Fails as TFDS does on a bad checksum."""
            raise RuntimeError("NonMatchingChecksumError: quota exceeded")

    _fake_tfds(monkeypatch, Refusing())
    with pytest.raises(data.DatasetError) as error:
        data.load("celeb_a", "train", data_dir=tmp_path, download=True)
    message = str(error.value)
    assert str(tmp_path / "downloads" / "manual") in message
    for name in ("img_align_celeba.zip", "list_eval_partition.txt", "quota exceeded"):
        assert name in message


# ------------------------------------------------------------------------ names


def test_unknown_name_and_split_list_the_valid_ones():
    """An unknown name lists every valid name; a bad split lists the splits."""
    with pytest.raises(data.DatasetError) as error:
        data.load("imagenet", "train")
    for name in ("celeb_a", "lsun_church", "sample_photos", "folder:PATH"):
        assert name in str(error.value)
    with pytest.raises(data.DatasetError, match="splits train, test; got 'val'"):
        data.load("sample_photos", "val")
    assert issubclass(data.DatasetError, ValueError)


def test_registry_resolves_names_paths_and_a_new_source(tmp_path, monkeypatch):
    """Names and folder paths resolve; a new source is one open_split and a line."""
    assert registry.resolve("celeb_a") is data.celeb_a.open_split
    assert registry.resolve(f"folder:{tmp_path / 'nope'}") is data.folder.open_split
    assert registry.resolve(str(tmp_path)) is data.folder.open_split
    rng = np.random.default_rng(5)
    encoded = {
        f"{index}.png".encode(): fx.encode(fx.smooth_image(rng, 40, 50), "PNG")
        for index in range(3)
    }
    encoded[b"bad.png"] = b"not an image"

    def open_split(request):
        """A source of four in-memory files, one of them bad."""
        source.check_split(request.name, request.split, ("train",))
        dataset, skip_log = decode.decoded_dataset(
            list(encoded),
            encoded.__getitem__,
            lambda value: decode.resize_center_crop(value, request.image_size),
            (request.image_size, request.image_size, 3),
            "tiny",
        )
        identity = {"name": "tiny", "split": "train", "image_size": SIZE}
        return source.Source(dataset, 4, skip_log, "tiny", identity, list)

    monkeypatch.setitem(registry.SOURCES, "tiny", open_split)
    decoded = data.load("tiny", "train", image_size=SIZE)
    cached = data.load("tiny", "train", image_size=SIZE, cache_dir=tmp_path)
    np.testing.assert_array_equal(_images(cached), _images(decoded))
    assert data.prepared_size(cached) == 3 and data.size_hint(decoded) == 4
    assert list(data.skipped_files(cached)) == ["bad.png"]
    with pytest.raises(data.DatasetError, match="has splits train; got 'test'"):
        data.load("tiny", "test")


# ------------------------------------------------------------ training pipeline


@pytest.fixture(scope="module")
def small_images():
    """Twenty distinct 32x32 images, as load() returns them."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (20, SIZE, SIZE, 3), dtype=np.uint8)
    return pixels.astype(np.float32) / 255.0


def _batches(pipeline) -> list[dict]:
    """Materialises a pipeline as a list of numpy dicts."""
    return list(pipeline.as_numpy_iterator())


def test_pipeline_structure_and_conversion(small_images):
    """Batches hold y, cbcr and rgb, consistent with svae.color."""
    dataset = tf.data.Dataset.from_tensor_slices(small_images)
    batches = _batches(data.training_pipeline(dataset, 8, flip=False))
    assert len(batches) == 2
    batch = batches[0]
    assert set(batch) == {"y", "cbcr", "rgb"}
    assert batch["y"].shape == (8, SIZE, SIZE) and batch["y"].dtype == np.float32
    assert batch["cbcr"].shape == (8, SIZE // 4, SIZE // 4, 2)
    assert batch["rgb"].shape == (8, SIZE, SIZE, 3)
    y, cbcr = color.split_ycbcr(batch["rgb"])
    np.testing.assert_allclose(batch["y"], y, atol=1e-6)
    np.testing.assert_allclose(batch["cbcr"], cbcr, atol=1e-6)
    assert _digests(batch["rgb"]) <= _digests(small_images)
    gray = _batches(data.training_pipeline(dataset, 5, color="gray", chroma_factor=2))
    assert set(gray[0]) == {"y", "rgb"} and len(gray) == 4
    np.testing.assert_allclose(gray[0]["y"], color.to_gray(gray[0]["rgb"]), atol=1e-6)
    with pytest.raises(ValueError, match="color must be"):
        data.training_pipeline(dataset, 4, color="rgb")


def test_pipeline_is_deterministic_and_flips(small_images):
    """Same seed, same batches; another seed differs; flips are mirror images."""
    dataset = tf.data.Dataset.from_tensor_slices(small_images)

    def run(seed):
        """Returns the rgb of one epoch for a seed."""
        pipeline = data.training_pipeline(dataset, 4, seed=seed, drop_remainder=False)
        return np.concatenate([b["rgb"] for b in _batches(pipeline)])

    first, second, other = run(1), run(1), run(2)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    originals, mirrors = _digests(small_images), _digests(small_images[:, :, ::-1])
    digests = [_digests(image[None]).pop() for image in first]
    flipped = sum(d in mirrors for d in digests)
    assert sum(d in originals for d in digests) + flipped == len(small_images) == 20
    assert 0 < flipped < 20


def test_pipeline_reshuffles_each_epoch(small_images):
    """A second pass over the same pipeline has another order."""
    dataset = tf.data.Dataset.from_tensor_slices(small_images)
    pipeline = data.training_pipeline(dataset, 20, flip=False)
    first, second = (_batches(pipeline)[0]["rgb"] for _ in range(2))
    assert _digests(first) == _digests(second)
    assert not np.array_equal(first, second)


def test_pipeline_shards_with_input_context(small_images):
    """Two input pipelines: per-replica batches, disjoint shards covering all."""
    dataset = tf.data.Dataset.from_tensor_slices(small_images)
    shards = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        pipeline = data.training_pipeline(
            dataset, 10, input_context=context, flip=False, seed=5
        )
        batches = _batches(pipeline)
        assert [b["rgb"].shape[0] for b in batches] == [5, 5]
        shards.append(_digests(np.concatenate([b["rgb"] for b in batches])))
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == _digests(small_images)


def test_pipeline_caches_to_file_and_auto(small_images, tmp_path):
    """cache=path writes a tf.data cache; auto keeps results identical."""
    dataset = tf.data.Dataset.from_tensor_slices(small_images)
    prefix = str(tmp_path / "cache")
    on_disk = _batches(data.training_pipeline(dataset, 4, cache=prefix, seed=3))
    assert list(tmp_path.glob("cache*"))
    auto = _batches(data.training_pipeline(dataset, 4, seed=3))
    for left, right in zip(on_disk, auto, strict=True):
        np.testing.assert_array_equal(left["rgb"], right["rgb"])


def test_pipeline_on_a_real_source_end_to_end(tmp_path):
    """folder: -> training_pipeline runs, with a zip of folders untouched."""
    fx.make_jpeg_folder(tmp_path, 12)
    with zipfile.ZipFile(tmp_path / "part0" / "stray.zip", "w") as archive:
        archive.writestr("x.txt", "x")
    dataset = data.load(str(tmp_path), "train", image_size=SIZE, test_fraction=0.2)
    batches = _batches(data.training_pipeline(dataset, 3))
    train_files = data.folder_files(tmp_path, "train", 0.2)
    assert (
        len(batches) == (len(train_files) - 1) // 3
        if any(f.name == "stray.zip" for f in train_files)
        else len(train_files) // 3
    )
    assert all(b["y"].shape == (3, SIZE, SIZE) for b in batches)
    stray = [str(f) for f in train_files if f.name == "stray.zip"]
    assert list(data.skipped_files(dataset)) == stray


def test_pipeline_auto_cache_keeps_decoded_images(tmp_path):
    """cache="auto" serves epoch 2 from memory; over budget, it decodes again."""
    fx.make_jpeg_folder(tmp_path / "train", 6)
    fx.make_jpeg_folder(tmp_path / "test", 1)
    counts = {}
    for budget in (2**30, 0):
        dataset = data.load(str(tmp_path), "train", image_size=SIZE)
        pipeline = data.training_pipeline(dataset, 2, cache_budget_bytes=budget)
        first = len(_batches(pipeline))
        for path in (tmp_path / "train").rglob("*.jpg"):
            path.rename(path.with_suffix(".moved"))
        counts[budget] = (first, len(_batches(pipeline)))
        for path in (tmp_path / "train").rglob("*.moved"):
            path.rename(path.with_suffix(".jpg"))
    assert counts == {2**30: (3, 3), 0: (3, 0)}


def test_size_hint_is_exact_or_the_number_of_files(lsun_dir):
    """size_hint: the file count before skipping; exact where tf.data knows."""
    lsun_dir, _ = lsun_dir
    train = data.load("lsun_church", "train", data_dir=lsun_dir, image_size=SIZE)
    assert data.size_hint(train) == 9  # 9 values, one of them corrupt.
    assert len(_images(train)) == 8
    assert data.size_hint(train.take(3)) is None  # Not a data set of load().
    sample = data.load("sample_photos", "test", image_size=SIZE, crops_per_photo=2)
    assert data.size_hint(sample) == len(_images(sample)) == 8


def test_what_load_knows_survives_map(lsun_dir):
    """size_hint, skipped_files, prepared_size: kept by map, lost by take/batch."""
    lsun_dir, _ = lsun_dir
    train = data.load("lsun_church", "train", data_dir=lsun_dir, image_size=SIZE)
    mapped = train.map(lambda image: 1.0 - image).prefetch(2).cache()
    assert len(_images(mapped)) == 8
    assert data.split_info(mapped) is data.split_info(train)
    assert data.size_hint(mapped) == 9 and data.prepared_size(mapped) is None
    assert list(data.skipped_files(mapped)) == [fx.lsun_key(4).decode()]
    assert data.size_hint(mapped.batch(2)) is None
    assert data.skipped_files(mapped.filter(lambda image: True)) == {}
    sample = data.load("sample_photos", "test", image_size=SIZE, crops_per_photo=2)
    options = tf.data.Options()
    options.deterministic = True
    flipped = sample.map(tf.image.flip_left_right).with_options(options)
    assert data.prepared_size(flipped) == data.size_hint(flipped) == 8
