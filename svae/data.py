"""Input pipelines: data sets by name, and the training pipeline in YCbCr.

`load(name, split, ...)` returns an unbatched `tf.data.Dataset` of float32 RGB
images `[image_size, image_size, 3]` in [0, 1] (multiples of 1/255), in a
fixed order. `training_pipeline(dataset, batch_size, ...)` shuffles, flips,
converts to the model's representation (see `svae.color`), batches, caches
and shards it. Element of a training batch, a dict:

    {"y":    float32 [batch, height, width],
     "cbcr": float32 [batch, height / chroma_factor, width / chroma_factor, 2]
             (color="ycbcr" only),
     "rgb":  float32 [batch, height, width, 3]}   # for metrics in RGB

Files are decoded with Pillow inside a parallel `tf.numpy_function`. A file
that fails to decode (corrupt, truncated, not an image, or too small) is
skipped; at the end of the first pass over the data the skipped files are
reported once, as one absl warning with their count and the first few paths.
If no file of a split decodes, `load` raises a `DatasetError` naming the
source and the first files with their reasons (it decodes files in order
until one does before any tf.data op runs, so the error comes without
TensorFlow's logs of a failed op).

With `cache_dir`, `load` decodes a file-based split once into a prepared
cache, a uint8 `[N, S, S, 3]` `.npy` with a JSON manifest in `cache_dir`, and
later loads read that file instead of decoding (see `load`).
"""

import dataclasses
import errno
import functools
import hashlib
import io
import json
import math
import os
import pathlib
import re
import shutil
import socket
import threading
import time
import uuid
import weakref
import zipfile
from collections.abc import Callable

import numpy as np
import PIL
import tensorflow as tf
from absl import logging
from PIL import Image, UnidentifiedImageError

from svae import color as color_lib
from svae.progress import Progress

CELEB_A_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
LSUN_URLS = ("http://dl.yf.io/lsun/", "https://github.com/fyu/lsun")
DATASET_NAMES = ("celeb_a", "lsun_church", "sample_photos", "folder:PATH")

# Larsen et al. (2016): rows 40:188 and columns 15:163 of the 178x218 image.
CELEB_A_CROP_ROWS = (40, 188)
CELEB_A_CROP_COLS = (15, 163)
CELEB_A_BLUR_SIGMA = 0.76
_CELEB_A_PARTITIONS = {"train": 0, "validation": 1, "test": 2}
_CELEB_A_MANUAL_FILES = (
    "img_align_celeba.zip",
    "list_eval_partition.txt",
    "list_attr_celeba.txt",
    "list_landmarks_align_celeba.txt",
)
_LSUN_FOLDERS = {
    "train": "church_outdoor_train_lmdb",
    "test": "church_outdoor_val_lmdb",
}

# Photographs bundled in scikit-image's wheel (no download), split by
# photograph. The stereo pair stays in one split: its views nearly coincide.
SAMPLE_PHOTOS = {
    "train": (
        "astronaut",
        "chelsea",
        "rocket",
        "motorcycle_left",
        "motorcycle_right",
        "hubble_deep_field",
        "retina",
        "camera",
        "grass",
        "brick",
        "coins",
        "moon",
    ),
    "test": ("coffee", "immunohistochemistry", "gravel", "clock"),
}
SAMPLE_CROPS_PER_PHOTO = 512

_PIL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_REPORT_PATHS = 5
_DEFAULT_CACHE_BUDGET = 4 * 2**30

# The prepared cache (see load's cache_dir). Bump CACHE_FORMAT_VERSION when
# decoding changes what a file becomes: every cache is then prepared again.
CACHE_FORMAT_VERSION = 1
CACHE_DIR_ENV = "SVAE_CACHE_DIR"
_PREPARE_BATCH = 256
_READ_CHUNK = 256

# For the data sets load() returns (weak keys: no data set is kept alive):
# an upper bound on the number of images, for training_pipeline's
# cache="auto", and the log of skipped files, for skipped_files().
_SIZE_HINTS: "weakref.WeakKeyDictionary[tf.data.Dataset, int]" = (
    weakref.WeakKeyDictionary()
)
_SKIP_LOGS: "weakref.WeakKeyDictionary[tf.data.Dataset, _SkipLog]" = (
    weakref.WeakKeyDictionary()
)
# The data sets whose images are already decoded (sample_photos, a prepared
# cache), with their exact number of images; see prepared_size().
_PREPARED: "weakref.WeakKeyDictionary[tf.data.Dataset, int]" = (
    weakref.WeakKeyDictionary()
)


class DatasetError(ValueError):
    """A data set cannot be found, read or prepared as asked."""


class _SkipError(Exception):
    """A file that is skipped, with the reason."""


class _SkipLog:
    """Collects the files skipped while decoding one split; reports them once."""

    def __init__(self, source: str, total: int):
        """Starts an empty log for `total` files of `source`."""
        self._source = source
        self._total = total
        self._lock = threading.Lock()
        self._skipped: dict[str, str] = {}
        self._reported = 0
        self._any_decoded = False
        # Decodes files in order until one does; returns whether one did
        # (set by _decoded_dataset).
        self.probe: Callable[[], bool] | None = None

    def skip(self, path: str, reason: str) -> None:
        """Records one skipped file."""
        with self._lock:
            self._skipped.setdefault(path, reason)

    def decoded(self) -> None:
        """Records that at least one file decoded."""
        self._any_decoded = True

    @property
    def skipped(self) -> dict[str, str]:
        """The skipped files so far, path to reason, in order of discovery."""
        with self._lock:
            return dict(self._skipped)

    def _first(self) -> str:
        """Lists the first few skipped files with their reasons."""
        items = list(self._skipped.items())[:_REPORT_PATHS]
        return "; ".join(f"{path} ({reason})" for path, reason in items)

    def require_image(self) -> None:
        """Raises DatasetError now, in Python, if no file decodes at all.

        Called before the first pass: the same error raised inside tf.data
        reaches the caller too, but after TensorFlow has logged the failed
        op's Python traceback twice.
        """
        if not self._any_decoded and self.probe is not None and not self.probe():
            self.finish()

    def finish(self) -> None:
        """Reports new skipped files, or raises if nothing decoded at all."""
        with self._lock:
            if not self._any_decoded:
                raise DatasetError(
                    f"No image of {self._source} could be read: all "
                    f"{self._total} files were skipped. First: {self._first()}."
                )
            if len(self._skipped) > self._reported:
                logging.warning(
                    "Skipped %d of %d files of %s (corrupt, truncated, not an "
                    "image, or smaller than needed). First: %s",
                    len(self._skipped),
                    self._total,
                    self._source,
                    self._first(),
                )
                self._reported = len(self._skipped)


def _describe(error: Exception) -> str:
    """Formats an exception as 'Type: message' for the skipped-file report."""
    return f"{type(error).__name__}: {error}"


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    """Converts any Pillow mode to 8-bit RGB (alpha composited over white)."""
    if image.mode.startswith("I") or image.mode == "F":
        # Pillow clips these modes to 8 bits on convert(); rescale 16 bits.
        scale = 1.0 if image.mode == "F" else 1.0 / 257.0
        values = np.asarray(image, dtype=np.float64) * scale
        gray = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _open_image(data: bytes) -> Image.Image:
    """Opens encoded image bytes; raises _SkipError for anything but an image."""
    Image.init()
    try:
        return Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except UnidentifiedImageError as error:
        raise _SkipError("not an image (unknown format)") from error
    except Exception as error:
        raise _SkipError(f"corrupt or truncated: {_describe(error)}") from error


def _load_pixels(image: Image.Image) -> Image.Image:
    """Decodes the pixels; raises _SkipError for corrupt or truncated data."""
    try:
        image.load()
        return _pil_to_rgb(image)
    except Exception as error:
        raise _SkipError(f"corrupt or truncated: {_describe(error)}") from error


def _resize_center_crop(data: bytes, image_size: int) -> np.ndarray:
    """Decodes, resizes the shorter side to image_size and centre-crops."""
    image = _open_image(data)
    width, height = image.size
    if min(width, height) < image_size:
        raise _SkipError(f"smaller than {image_size}x{image_size}: {width}x{height}")
    # JPEG can decode at 1/2, 1/4 or 1/8 scale directly (DCT scaling); draft
    # picks the smallest scale that keeps both sides >= image_size.
    image.draft("RGB", (image_size, image_size))
    image = _load_pixels(image)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    image = image.resize(
        (image_size, image_size),
        Image.Resampling.BICUBIC,
        box=(left, top, left + side, top + side),
    )
    return np.asarray(image, dtype=np.uint8)


def _celeb_a_crop(data: bytes) -> np.ndarray:
    """Decodes an aligned CelebA image and cuts Larsen et al.'s 148x148 box."""
    image = _open_image(data)
    width, height = image.size
    if width < CELEB_A_CROP_COLS[1] or height < CELEB_A_CROP_ROWS[1]:
        raise _SkipError(f"smaller than the crop box: {width}x{height}")
    image = _load_pixels(image)
    box = (
        CELEB_A_CROP_COLS[0],
        CELEB_A_CROP_ROWS[0],
        CELEB_A_CROP_COLS[1],
        CELEB_A_CROP_ROWS[1],
    )
    return np.asarray(image.crop(box), dtype=np.uint8)


def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """Returns the `[size, size]` Gaussian blur with a symmetric boundary."""
    radius = max(1, math.ceil(3.0 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    matrix = np.zeros((size, size))
    for i in range(size):
        for offset, tap in zip(range(-radius, radius + 1), taps, strict=True):
            j = (i + offset) % (2 * size)
            matrix[i, j if j < size else 2 * size - 1 - j] += tap
    return matrix


def _bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Returns the `[size_out, size_in]` bilinear resize (half-pixel centres)."""
    coords = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
    coords = np.clip(coords, 0.0, size_in - 1.0)
    lower = np.floor(coords).astype(int)
    upper = np.minimum(lower + 1, size_in - 1)
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), lower), 1.0 - (coords - lower))
    np.add.at(matrix, (np.arange(size_out), upper), coords - lower)
    return matrix


@functools.lru_cache(maxsize=8)
def _celeb_a_resize_matrix(image_size: int) -> np.ndarray:
    """Returns the blur-then-bilinear `[image_size, 148]` resize matrix."""
    side = CELEB_A_CROP_ROWS[1] - CELEB_A_CROP_ROWS[0]
    blur = _gaussian_matrix(side, CELEB_A_BLUR_SIGMA)
    return (_bilinear_matrix(side, image_size) @ blur).astype(np.float32)


def celeb_a_preprocess(aligned, image_size: int = 64) -> tf.Tensor:
    """Crops, blurs and resizes aligned CelebA images as Larsen et al. (2016).

    The 148x148 box at rows 40:188, columns 15:163, a Gaussian blur of sigma
    0.76 against aliasing, then a bilinear resize; rounded to 8 bits like the
    other sources, so the result is exact in uint8.

    Args:
      aligned: uint8 `[..., 218, 178, 3]` aligned images, or already cut
        `[..., 148, 148, 3]` boxes.
      image_size: output side.

    Returns:
      uint8 `[..., image_size, image_size, 3]`.
    """
    aligned = tf.convert_to_tensor(aligned)
    side = CELEB_A_CROP_ROWS[1] - CELEB_A_CROP_ROWS[0]
    if aligned.shape[-3] != side or aligned.shape[-2] != side:
        aligned = aligned[
            ...,
            CELEB_A_CROP_ROWS[0] : CELEB_A_CROP_ROWS[1],
            CELEB_A_CROP_COLS[0] : CELEB_A_CROP_COLS[1],
            :,
        ]
    matrix = tf.constant(_celeb_a_resize_matrix(image_size))
    pixels = tf.cast(aligned, tf.float32)
    pixels = tf.einsum("ih,...hwc->...iwc", matrix, pixels)
    pixels = tf.einsum("jw,...iwc->...ijc", matrix, pixels)
    return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)


def _pixels_of(pixels: tf.Tensor, ok: tf.Tensor) -> tf.Tensor:
    """Returns the pixels of a (pixels, ok) pair."""
    return pixels


def _ok_of(pixels: tf.Tensor, ok: tf.Tensor) -> tf.Tensor:
    """Returns the ok flag of a (pixels, ok) pair."""
    return ok


def _never(pixels: tf.Tensor) -> tf.Tensor:
    """A filter predicate that drops everything."""
    return tf.constant(False)


def _decoded_dataset(
    keys: list[bytes],
    read: Callable[[bytes], bytes],
    decode: Callable[[bytes], np.ndarray],
    shape: tuple[int, int, int],
    source: str,
) -> tuple[tf.data.Dataset, "_SkipLog"]:
    """Decodes `keys` in parallel, skipping bad files and reporting them once."""
    skip_log = _SkipLog(source, len(keys))
    blank = np.zeros(shape, np.uint8)

    def decode_one(key: bytes) -> tuple[np.ndarray, np.bool_]:
        """Reads and decodes one key; a skipped key yields (blank, False)."""
        try:
            pixels = decode(read(key))
        except _SkipError as skip:
            skip_log.skip(os.fsdecode(key), str(skip))
            return blank, np.False_
        except OSError as error:
            skip_log.skip(os.fsdecode(key), f"unreadable: {error}")
            return blank, np.False_
        skip_log.decoded()
        return pixels, np.True_

    skip_log.probe = lambda: any(decode_one(key)[1] for key in keys)

    def decode_map(key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Wraps decode_one as a graph op with static output shapes."""
        pixels, ok = tf.numpy_function(
            decode_one, [key], (tf.uint8, tf.bool), stateful=False
        )
        return tf.ensure_shape(pixels, shape), tf.ensure_shape(ok, [])

    def finish(_: np.int64) -> np.ndarray:
        """Runs once the last file of a pass is decoded."""
        skip_log.finish()
        return blank

    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(keys, tf.string))
    dataset = dataset.map(
        decode_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    dataset = dataset.filter(_ok_of).map(_pixels_of)
    # An empty, stateful tail: it runs only once every file has been decoded.
    tail = tf.data.Dataset.range(1).map(
        lambda index: tf.ensure_shape(
            tf.numpy_function(finish, [index], tf.uint8, stateful=True), shape
        )
    )
    dataset = dataset.concatenate(tail.filter(_never))
    return dataset, skip_log


@dataclasses.dataclass
class _Source:
    """One split of a file-based data set, before any decoding."""

    dataset: tf.data.Dataset  # uint8 images, decoded while iterated
    num_files: int
    skip_log: "_SkipLog | None"
    description: str  # names the files and the split in messages
    # What the split is (data set, path, split, image size, options): a cache
    # of another identity is never used or removed for this one.
    identity: dict
    # Lists the files whose sizes and mtimes fingerprint it (when caching).
    stamp_paths: Callable[[], list]


def _finish(
    dataset: tf.data.Dataset,
    num_files: int,
    skip_log: "_SkipLog | None",
    dtype: tf.DType,
    prepared: bool,
) -> tf.data.Dataset:
    """Maps uint8 images to `dtype` (float32 in [0, 1]) and registers metadata."""
    if dtype == tf.float32:
        dataset = dataset.map(
            lambda pixels: tf.cast(pixels, tf.float32) / 255.0,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    _SIZE_HINTS[dataset] = num_files
    if skip_log is not None:
        _SKIP_LOGS[dataset] = skip_log
    if prepared:
        _PREPARED[dataset] = num_files
    return dataset


def size_hint(dataset: tf.data.Dataset) -> int | None:
    """Returns the number of images of a data set of load(), or an upper bound.

    Exact where tf.data knows the cardinality; for file-based sources, whose
    bad files are skipped while decoding, the number of files listed (an upper
    bound); None for anything else.

    Args:
      dataset: a data set returned by load().

    Returns:
      An int, or None.
    """
    cardinality = tf.get_static_value(dataset.cardinality())
    if cardinality is not None and cardinality >= 0:
        return int(cardinality)
    return _SIZE_HINTS.get(dataset)


def prepared_size(dataset: tf.data.Dataset) -> int | None:
    """Returns the number of images of a data set of load() that needs no decoding.

    Args:
      dataset: a data set returned by load().

    Returns:
      The exact number of images for sample_photos (held in memory) and for a
      split read from a prepared cache; None when iterating decodes files.
    """
    return _PREPARED.get(dataset)


def skipped_files(dataset: tf.data.Dataset) -> dict[str, str]:
    """Returns the files skipped so far while iterating a data set of load().

    Args:
      dataset: a data set returned by load().

    Returns:
      Path (or LMDB key) to the reason it was skipped, in order of discovery;
      empty for sources without files (sample_photos, TFDS). For a split read
      from a prepared cache: the files skipped when it was prepared.
    """
    skip_log = _SKIP_LOGS.get(dataset)
    return {} if skip_log is None else skip_log.skipped


def _check_split(name: str, split: str, splits) -> None:
    """Raises DatasetError unless split is one of splits."""
    if split not in splits:
        raise DatasetError(
            f"Data set {name!r} has splits {', '.join(splits)}; got {split!r}."
        )


def _existing_dir(data_dir, name: str, help_text: str) -> pathlib.Path:
    """Returns data_dir as a Path; raises DatasetError if None or missing."""
    if data_dir is None:
        raise DatasetError(f"{name} needs data_dir. {help_text}")
    path = pathlib.Path(data_dir).expanduser()
    if not path.is_dir():
        raise DatasetError(f"data_dir {str(path)!r} is not a folder. {help_text}")
    return path


# ---------------------------------------------------------------- sample_photos


@functools.lru_cache(maxsize=1)
def _sample_photo_arrays() -> dict[str, np.ndarray]:
    """Loads the bundled scikit-image photographs as uint8 RGB arrays."""
    import skimage.data

    photos = {}
    left, right, _ = skimage.data.stereo_motorcycle()
    photos["motorcycle_left"], photos["motorcycle_right"] = left, right
    for names in SAMPLE_PHOTOS.values():
        for name in names:
            if name not in photos:
                photos[name] = getattr(skimage.data, name)()
    for name, photo in photos.items():
        photo = np.asarray(photo, dtype=np.uint8)
        photos[name] = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
    return photos


def random_crops(photo: np.ndarray, image_size: int, count: int, rng) -> np.ndarray:
    """Returns uint8 `[count, image_size, image_size, 3]` random crops of a photo.

    Each crop is a square of random side between `image_size` and the photo's
    shorter side (log-uniform) at a random position, resized to `image_size`
    with Pillow's antialiased bicubic filter.

    Args:
      photo: uint8 `[height, width, 3]`, both sides at least `image_size`.
      image_size: side of the crops.
      count: number of crops.
      rng: a `numpy.random.Generator`.
    """
    height, width = photo.shape[:2]
    image = Image.fromarray(photo)
    max_scale = math.log(min(height, width) / image_size)
    crops = []
    for _ in range(count):
        side = image_size * math.exp(rng.uniform(0.0, max_scale))
        left = rng.uniform(0.0, width - side)
        top = rng.uniform(0.0, height - side)
        crop = image.resize(
            (image_size, image_size),
            Image.Resampling.BICUBIC,
            box=(left, top, left + side, top + side),
        )
        crops.append(np.asarray(crop, dtype=np.uint8))
    return np.stack(crops)


def _sample_photos(split: str, image_size: int, seed: int, crops_per_photo: int):
    """Returns uint8 `[n, image_size, image_size, 3]` random crops of photos."""
    crops = []
    for index, name in enumerate(SAMPLE_PHOTOS[split]):
        photo = _sample_photo_arrays()[name]
        if min(photo.shape[:2]) < image_size:
            continue
        rng = np.random.default_rng([seed, index, 0 if split == "train" else 1])
        crops.append(random_crops(photo, image_size, crops_per_photo, rng))
    if not crops:
        raise DatasetError(
            f"image_size {image_size} is larger than every sample photograph."
        )
    return np.concatenate(crops)


# ----------------------------------------------------------------------- folder


def _list_images(root: pathlib.Path) -> list[str]:
    """Lists the files under root (hidden ones excluded), sorted, relative."""
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                path = pathlib.Path(directory, name)
                files.append(path.relative_to(root).as_posix())
    return sorted(files)


def _hash_fraction(relative_path: str) -> float:
    """Maps a path to a fixed number in [0, 1), independent of any seed."""
    digest = hashlib.sha1(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def folder_files(root, split: str, test_fraction: float = 0.1) -> list[pathlib.Path]:
    """Returns the files of one split of an image folder, sorted.

    With `train/` and `test/` subfolders (and optionally `validation/`), each
    split is its subfolder. Otherwise a file is in the test split when a hash
    of its path relative to root falls below `test_fraction`, so the split is
    stable as files are added and does not depend on any seed.

    Args:
      root: the folder.
      split: "train", "test", or "validation" (subfolder layout only).
      test_fraction: fraction of files in the test split (hash layout).

    Returns:
      Absolute paths of the split's files.
    """
    root = pathlib.Path(root).expanduser().resolve()
    if (root / "train").is_dir() and (root / "test").is_dir():
        splits = ("train", "validation", "test")
        if not (root / "validation").is_dir():
            splits = ("train", "test")
        _check_split(f"folder:{root}", split, splits)
        return [root / split / f for f in _list_images(root / split)]
    _check_split(f"folder:{root}", split, ("train", "test"))
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    return [
        root / f
        for f in _list_images(root)
        if (_hash_fraction(f) < test_fraction) == (split == "test")
    ]


def _read_file(key: bytes) -> bytes:
    """Reads a whole file named by its fs-encoded path."""
    with open(os.fsdecode(key), "rb") as file:
        return file.read()


def _load_folder(root: pathlib.Path, split: str, image_size: int, test_fraction):
    """Builds the uint8 data set of an image folder."""
    if not root.is_dir():
        raise DatasetError(f"Image folder {str(root)!r} does not exist.")
    files = folder_files(root, split, test_fraction)
    if not files:
        raise DatasetError(f"No files in split {split!r} of image folder {root}.")
    decode = functools.partial(_resize_center_crop, image_size=image_size)
    description = f"folder:{root} ({split})"
    dataset, skip_log = _decoded_dataset(
        [os.fsencode(f) for f in files],
        _read_file,
        decode,
        (image_size, image_size, 3),
        description,
    )
    identity = {
        "name": "folder",
        "path": str(root.resolve()),
        "split": split,
        "image_size": image_size,
        "test_fraction": test_fraction,
    }
    return _Source(dataset, len(files), skip_log, description, identity, lambda: files)


# ------------------------------------------------------------------ lsun_church


def _lsun_help() -> str:
    """Says which LSUN files to place where."""
    return (
        "lsun_church expects data_dir to hold the official LSUN church_outdoor "
        "LMDB folders church_outdoor_train_lmdb/ and church_outdoor_val_lmdb/ "
        "(each with data.mdb). Get church_outdoor_train_lmdb.zip and "
        f"church_outdoor_val_lmdb.zip from {LSUN_URLS[0]} (or run `python "
        f"download.py -c church_outdoor` from {LSUN_URLS[1]}) and unzip them "
        "into data_dir. TFDS 'lsun' is not supported: it needs tensorflow-io, "
        "which does not load with TensorFlow >= 2.18."
    )


class _LmdbReader:
    """Reads values of a read-only LMDB database from any thread."""

    def __init__(self, path: pathlib.Path):
        """Opens the database at path read-only, without locking."""
        import lmdb

        try:
            self._env = lmdb.open(
                str(path),
                readonly=True,
                lock=False,
                readahead=False,
                meminit=False,
                max_readers=256,
            )
        except lmdb.Error as error:
            message = f"Cannot open LMDB {path}: {error}. {_lsun_help()}"
            raise DatasetError(message) from error

    @classmethod
    @functools.cache
    def shared(cls, path: pathlib.Path) -> "_LmdbReader":
        """Returns the reader of path; LMDB allows one open per process."""
        return cls(path)

    def keys(self) -> list[bytes]:
        """Returns every key, in the database's (sorted) order."""
        with self._env.begin() as txn:
            return list(txn.cursor().iternext(keys=True, values=False))

    def read(self, key: bytes) -> bytes:
        """Returns the value of key; a missing key is an unreadable file."""
        with self._env.begin() as txn:
            value = txn.get(key)
        if value is None:
            raise OSError("key not found")
        return value


def _load_lsun(data_dir, split: str, image_size: int):
    """Builds the uint8 data set of LSUN church_outdoor from its LMDB folders."""
    _check_split("lsun_church", split, ("train", "test"))
    root = _existing_dir(data_dir, "lsun_church", _lsun_help())
    path = root / _LSUN_FOLDERS[split]
    if not (path / "data.mdb").is_file():
        raise DatasetError(f"Missing {path / 'data.mdb'}. {_lsun_help()}")
    reader = _LmdbReader.shared(path.resolve())
    keys = reader.keys()
    if not keys:
        raise DatasetError(f"LMDB {path} is empty. {_lsun_help()}")
    decode = functools.partial(_resize_center_crop, image_size=image_size)
    description = f"LMDB {path}"
    dataset, skip_log = _decoded_dataset(
        keys, reader.read, decode, (image_size, image_size, 3), description
    )
    identity = {
        "name": "lsun_church",
        "path": str(path.resolve()),
        "split": split,
        "image_size": image_size,
    }
    stamps = [path / "data.mdb"]
    return _Source(dataset, len(keys), skip_log, description, identity, lambda: stamps)


# ---------------------------------------------------------------------- celeb_a


def _celeb_a_help() -> str:
    """Says which CelebA files to place where."""
    return (
        "celeb_a expects data_dir to hold the official aligned CelebA files: "
        "img_align_celeba/ (the folder of 000001.jpg ...) or "
        "img_align_celeba.zip, and list_eval_partition.txt. Download "
        "'Align&Cropped Images' and 'Eval/list_eval_partition.txt' from the "
        f"Google Drive or Baidu links on {CELEB_A_URL}. A TFDS data_dir where "
        "celeb_a is prepared works too."
    )


def _read_partition(path: pathlib.Path, split: str) -> list[str]:
    """Returns the image names of one split of list_eval_partition.txt."""
    wanted = str(_CELEB_A_PARTITIONS[split])
    names = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DatasetError(
                f"{path}:{number}: expected '<name>.jpg <0|1|2>', got {line!r}."
            )
        if fields[1] == wanted:
            names.append(fields[0])
    return names


class _ZipReader:
    """Reads members of a zip file, one open handle per thread."""

    def __init__(self, path: pathlib.Path):
        """Indexes the members of the zip at path by base name."""
        self._path = path
        self._local = threading.local()
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (OSError, zipfile.BadZipFile) as error:
            message = f"Cannot read {path}: {error}. {_celeb_a_help()}"
            raise DatasetError(message) from error
        self.members = {posix.rsplit("/", 1)[-1]: posix for posix in names}

    def read(self, key: bytes) -> bytes:
        """Returns the bytes of the member named key (a base name)."""
        archive = getattr(self._local, "archive", None)
        if archive is None:
            archive = self._local.archive = zipfile.ZipFile(self._path)
        member = self.members.get(key.decode())
        if member is None:
            raise OSError("not in the zip")
        try:
            return archive.read(member)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as error:
            raise OSError(str(error)) from error


def _celeb_a_tfds(data_dir: pathlib.Path, download: bool):
    """Returns the TFDS celeb_a builder if prepared (or downloaded), else None."""
    if not download and not (data_dir / "celeb_a").is_dir():
        return None
    import tensorflow_datasets as tfds

    builder = tfds.builder("celeb_a", data_dir=str(data_dir))
    if builder.is_prepared():
        return builder
    if not download:
        return None
    manual_dir = data_dir / "downloads" / "manual"
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        )
    except Exception as error:
        raise DatasetError(
            f"TFDS could not download and prepare celeb_a ({type(error).__name__}: "
            f"{error}). Google Drive often refuses these downloads. Place "
            f"{', '.join(_CELEB_A_MANUAL_FILES)} (from {CELEB_A_URL}) in TFDS's "
            f"manual_dir {manual_dir} and retry, or point data_dir at a folder "
            "with img_align_celeba.zip and list_eval_partition.txt, which svae "
            "reads directly."
        ) from error
    return builder


def _celeb_a_files(root: pathlib.Path):
    """Finds (partition file, image folder or zip) in root or its manual_dir."""
    for folder in (root, root / "downloads" / "manual"):
        partition = folder / "list_eval_partition.txt"
        for images in (folder / "img_align_celeba", folder / "img_align_celeba.zip"):
            if partition.is_file() and images.exists():
                return partition, images
    return None


def _load_celeb_a(data_dir, split: str, image_size: int, download: bool):
    """Builds the uint8 data set of CelebA (TFDS if prepared, else the files)."""
    _check_split("celeb_a", split, tuple(_CELEB_A_PARTITIONS))
    root = _existing_dir(data_dir, "celeb_a", _celeb_a_help())
    builder = _celeb_a_tfds(root, download=False)
    files = None if builder else _celeb_a_files(root)
    if builder is None and files is None:
        builder = _celeb_a_tfds(root, download)
        if builder is None:
            raise DatasetError(
                f"No CelebA files under {root}: looked for list_eval_partition.txt "
                "with img_align_celeba/ or img_align_celeba.zip in it and in "
                f"{root / 'downloads' / 'manual'}, and for TFDS data in "
                f"{root / 'celeb_a'}. {_celeb_a_help()}"
            )
    identity = {"name": "celeb_a", "split": split, "image_size": image_size}
    if builder is not None:
        dataset = builder.as_dataset(split=split, shuffle_files=False)
        dataset = dataset.map(
            lambda example: celeb_a_preprocess(example["image"], image_size),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        tfds_dir = root / "celeb_a"  # Its files, all versions, fingerprint it.
        return _Source(
            dataset,
            builder.info.splits[split].num_examples,
            None,
            f"TFDS celeb_a {tfds_dir} ({split})",
            identity | {"path": str(tfds_dir.resolve())},
            lambda: sorted(p for p in tfds_dir.rglob("*") if p.is_file()),
        )
    partition, images = files
    names = _read_partition(partition, split)
    if not names:
        raise DatasetError(f"{partition} lists no image for split {split!r}.")
    if images.is_dir():

        def read(key: bytes) -> bytes:
            """Reads one image of the img_align_celeba folder."""
            return _read_file(os.fsencode(images / key.decode()))

        stamps = [partition] + [images / name for name in names]
    else:
        read = _ZipReader(images).read
        stamps = [partition, images]
    side = CELEB_A_CROP_ROWS[1] - CELEB_A_CROP_ROWS[0]
    description = f"{images} ({split})"
    dataset, skip_log = _decoded_dataset(
        [n.encode() for n in names], read, _celeb_a_crop, (side, side, 3), description
    )
    dataset = dataset.map(
        lambda box: celeb_a_preprocess(box, image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    identity |= {"path": str(images.resolve())}
    return _Source(dataset, len(names), skip_log, description, identity, lambda: stamps)


# --------------------------------------------------------------- prepared cache


def default_cache_dir() -> str:
    """Returns `$SVAE_CACHE_DIR`, else `~/.cache/svae`: the command lines' default."""
    return os.environ.get(CACHE_DIR_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "svae"
    )


def _fingerprint(source: _Source) -> str:
    """Hashes what the split is and the size and mtime of each of its files."""
    digest = hashlib.sha256()
    versions = {"format": CACHE_FORMAT_VERSION, "pillow": PIL.__version__}
    digest.update(json.dumps(source.identity | versions, sort_keys=True).encode())
    for path in source.stamp_paths():
        try:
            stat = os.stat(path)
            stamp = f"{stat.st_size} {stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{path}\0{stamp}\n".encode())
    return digest.hexdigest()


def _cache_prefix(identity: dict) -> str:
    """Names the cache files of a split: data set, folder name, split, size."""
    name = identity["name"]
    if name == "folder":
        name += "-" + re.sub(
            r"[^A-Za-z0-9_.]+", "_", pathlib.Path(identity["path"]).name
        )
    return f"{name}-{identity['split']}-{identity['image_size']}px-"


def _read_manifest(path: pathlib.Path) -> dict | None:
    """Returns a manifest's contents, or None if missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _open_prepared(npy: pathlib.Path, manifest: dict, shape) -> np.ndarray | None:
    """Memory-maps a prepared cache; None if it does not match its manifest."""
    try:
        array = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if array.dtype != np.uint8 or array.shape != (manifest["count"], *shape):
        return None
    return array


def _array_dataset(array: np.ndarray) -> tf.data.Dataset:
    """Streams the images of a memory-mapped `[N, H, W, 3]` array, in order."""

    def read(start: np.int64) -> np.ndarray:
        """Copies one chunk out of the page cache."""
        return np.array(array[start : start + _READ_CHUNK])

    def read_map(start: tf.Tensor) -> tf.Tensor:
        """Wraps read as a graph op with a static image shape."""
        chunk = tf.numpy_function(read, [start], tf.uint8, stateful=False)
        return tf.ensure_shape(chunk, (None, *array.shape[1:]))

    starts = tf.data.Dataset.range(0, len(array), _READ_CHUNK)
    dataset = starts.map(
        read_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    ).unbatch()
    return dataset.apply(tf.data.experimental.assert_cardinality(len(array)))


def _pid_alive(pid: int) -> bool:
    """Whether a process of this machine with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_leftovers(folder: pathlib.Path, prefix: str, identity: dict, keep: str):
    """Removes older caches of the same split and temp files of dead writers."""
    # Temp names end in .<host>.<pid>.<random>.tmp; other hosts' stay.
    ours = re.compile(rf"\.{re.escape(socket.gethostname())}\.(\d+)\.\w+\.tmp$")
    for path in folder.glob(f".{prefix}*.tmp"):
        match = ours.search(path.name)
        if match and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
    for manifest_path in folder.glob(f"{prefix}*.json"):
        manifest = _read_manifest(manifest_path) or {}
        if manifest_path.stem != keep and manifest.get("identity") == identity:
            manifest_path.with_suffix(".npy").unlink(missing_ok=True)
            manifest_path.unlink(missing_ok=True)


def _write_atomically(path: pathlib.Path, write: Callable) -> None:
    """Calls write(file) on a unique temp file beside path, then renames it.

    A killed or failed writer leaves at most a temp file, never a partial
    `path`; concurrent writers each rename a complete file.
    """
    suffix = f".{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    temp = path.with_name(f".{path.name}{suffix}")
    try:
        with open(temp, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _write_images(source: _Source, file, shape, progress: bool) -> int:
    """Decodes every image of source into an open .npy file; returns the count."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (0, *shape)}

    def write_header(count: int) -> None:
        """Writes the header; its length does not depend on count."""
        file.seek(0)
        np.lib.format.write_array_header_1_0(file, header | {"shape": (count, *shape)})

    write_header(source.num_files)
    data_offset = file.tell()
    bar = None
    if progress:
        bar = Progress(source.num_files, "image")
    count = 0
    for batch in source.dataset.batch(_PREPARE_BATCH).as_numpy_iterator():
        file.write(batch.tobytes())
        count += len(batch)
        if bar is not None:
            done = count + len(source.skip_log.skipped if source.skip_log else ())
            bar.update(done, finalize=False)
    if bar is not None:
        bar.update(source.num_files, finalize=True)
    write_header(count)
    if file.tell() != data_offset:
        raise AssertionError("The .npy header changed length.")
    return count


def _prepare(
    source: _Source, folder: pathlib.Path, stem: str, fingerprint: str, progress
) -> dict:
    """Decodes a split into folder/stem.npy and writes its manifest."""
    if source.skip_log is not None:
        source.skip_log.require_image()
    shape = source.dataset.element_spec.shape
    needed = source.num_files * shape.num_elements() + 4096
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"it needs {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB are free",
        )
    npy = folder / f"{stem}.npy"
    print(
        f"svae: preparing {source.description}: decoding {source.num_files} files "
        f"once into {npy} (later loads read it)",
        flush=True,
    )
    start = time.perf_counter()
    counted = {}

    def write(file) -> None:
        """Decodes into the temp file, turning a decoding failure into its error."""
        try:
            counted["count"] = _write_images(source, file, tuple(shape), progress)
        except tf.errors.OpError as error:
            message = error.message.partition("DatasetError: ")[2]
            if not message:
                raise
            raise DatasetError(message.splitlines()[0]) from error

    _write_atomically(npy, write)
    skipped = source.skip_log.skipped if source.skip_log else {}
    manifest = {
        "format": CACHE_FORMAT_VERSION,
        "fingerprint": fingerprint,
        "identity": source.identity,
        "source": source.description,
        "count": counted["count"],
        "num_files": source.num_files,
        "shape": [counted["count"], *shape],
        "dtype": "uint8",
        "num_skipped": len(skipped),
        "skipped": skipped,
        "seconds": round(time.perf_counter() - start, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    text = json.dumps(manifest, indent=1).encode("utf-8")
    _write_atomically(folder / f"{stem}.json", lambda file: file.write(text))
    return manifest


def _load_prepared(source: _Source, cache_dir, progress: bool):
    """Returns (uint8 images, skip log) of the prepared cache of source.

    Prepares the cache first when it is missing, damaged or stale. When the
    cache folder cannot be written, warns and returns None: the caller
    decodes instead.
    """
    folder = pathlib.Path(cache_dir).expanduser()
    fingerprint = _fingerprint(source)
    prefix = _cache_prefix(source.identity)
    stem = prefix + fingerprint[:16]
    shape = tuple(source.dataset.element_spec.shape)
    manifest = _read_manifest(folder / f"{stem}.json")
    array = None
    found = manifest is not None and manifest.get("fingerprint") == fingerprint
    if found:
        array = _open_prepared(folder / f"{stem}.npy", manifest, shape)
        if array is None:
            logging.warning(
                "The prepared cache %s is damaged: preparing it again.",
                folder / f"{stem}.npy",
            )
    if array is None:
        found = False
        try:
            manifest = _prepare(source, folder, stem, fingerprint, progress)
        except OSError as error:
            logging.warning(
                "Cannot write the prepared cache of %s to %s (%s). Decoding it "
                "without a cache instead, again at every start. Pass a writable "
                "--cache_dir (or set %s), or --cache_dir= to decode without a "
                "cache and silence this.",
                source.description,
                folder,
                error,
                CACHE_DIR_ENV,
            )
            return None
        try:
            _remove_leftovers(folder, prefix, source.identity, keep=stem)
        except OSError as error:
            logging.warning("Cannot clean up %s: %s", folder, error)
        array = _open_prepared(folder / f"{stem}.npy", manifest, shape)
        if array is None:
            raise DatasetError(f"The prepared cache {folder / stem}.npy vanished.")
    skip_log = _SkipLog(
        f"{source.description}, prepared in {folder}", manifest["num_files"]
    )
    for path, reason in manifest["skipped"].items():
        skip_log.skip(path, reason)
    skip_log.decoded()
    if found:  # The preparing pass has reported its skipped files itself.
        skip_log.finish()
    return _array_dataset(array), skip_log


# ------------------------------------------------------------------------- load


def load(
    name: str,
    split: str,
    *,
    data_dir=None,
    image_size: int = 64,
    seed: int = 0,
    test_fraction: float = 0.1,
    crops_per_photo: int = SAMPLE_CROPS_PER_PHOTO,
    download: bool = False,
    cache_dir=None,
    dtype="float32",
    progress: bool = True,
) -> tf.data.Dataset:
    """Returns a data set by name as unbatched RGB images.

    Names: "celeb_a", "lsun_church", "sample_photos", and "folder:PATH" (or
    the path of an existing folder). The order is fixed; only sample_photos
    depends on `seed` (the crops); file-based splits never do.

    With `cache_dir`, a file-based split is decoded once into a prepared
    cache in that folder: `<name>-<split>-<size>px-<fingerprint>.npy` (uint8
    `[N, size, size, 3]`, 12 KiB per 64x64 image) and a `.json` manifest
    (source, count, skipped files). Later loads read the `.npy` (memory
    mapped) and decode nothing. The fingerprint covers the data set, split,
    image size, resolved path, each file's size and mtime (the LMDB or zip
    file's for those), the Pillow version and CACHE_FORMAT_VERSION, so a
    changed source is prepared again (and its older cache removed). Files
    are written to unique temp names and renamed, so a killed or concurrent
    preparation never leaves a partial cache. If `cache_dir` cannot be
    written (permissions, read-only, too little free space), a warning says
    so and the split is decoded while iterated, as without `cache_dir`.
    sample_photos is never cached (it is made in memory in seconds).

    Args:
      name: the data set.
      split: "train" or "test" ("validation" for celeb_a, and for folders
        with a `validation/` subfolder).
      data_dir: folder with the data set's files (celeb_a, lsun_church).
      image_size: side of the square images.
      seed: seed of sample_photos' random crops.
      test_fraction: test fraction of a folder without train/test subfolders.
      crops_per_photo: sample_photos crops per photograph.
      download: celeb_a only: let TFDS download and prepare it into data_dir
        when neither TFDS data nor the official files are there.
      cache_dir: folder of prepared caches; None or "" decodes while iterated.
      dtype: "float32" (in [0, 1], multiples of 1/255) or "uint8".
      progress: show a progress bar with an ETA while preparing a cache.

    Returns:
      A `tf.data.Dataset` of `dtype` `[image_size, image_size, 3]`.

    Raises:
      DatasetError: unknown name or split, missing or mismatched files; no
        file of the split decodes.
    """
    dtype = tf.as_dtype(dtype)
    if dtype not in (tf.float32, tf.uint8):
        raise DatasetError(f"dtype must be float32 or uint8, got {dtype.name}.")
    if image_size < 1:
        raise DatasetError(f"image_size must be positive, got {image_size}.")
    if name == "sample_photos":
        _check_split(name, split, tuple(SAMPLE_PHOTOS))
        crops = _sample_photos(split, image_size, seed, crops_per_photo)
        dataset = tf.data.Dataset.from_tensor_slices(crops)
        return _finish(dataset, len(crops), None, dtype, prepared=True)
    if name == "celeb_a":
        source = _load_celeb_a(data_dir, split, image_size, download)
    elif name == "lsun_church":
        source = _load_lsun(data_dir, split, image_size)
    elif name.startswith("folder:") or (name and os.path.isdir(name)):
        root = pathlib.Path(name.removeprefix("folder:")).expanduser()
        source = _load_folder(root, split, image_size, test_fraction)
    else:
        raise DatasetError(
            f"Unknown data set {name!r}. Valid names: {', '.join(DATASET_NAMES)} "
            "(or the path of an existing folder)."
        )
    prepared = _load_prepared(source, cache_dir, progress) if cache_dir else None
    if prepared is None:
        if source.skip_log is not None:
            source.skip_log.require_image()
        return _finish(
            source.dataset, source.num_files, source.skip_log, dtype, prepared=False
        )
    dataset, skip_log = prepared
    return _finish(dataset, len(dataset), skip_log, dtype, prepared=True)


def load_split(config, split: str, dtype="float32") -> tf.data.Dataset:
    """Returns a run's images of `split`: `load` with the run's config.

    Args:
      config: an `svae.config.Config` (its `dataset`, `data_dir` and
        `cache_dir` may be overridden with `dataclasses.replace`).
      split: `"train"`, `"test"` or `"validation"`.
      dtype: see `load`.

    Returns:
      The unbatched RGB `tf.data.Dataset` of `load`: read from the run's
      prepared cache (`config.cache_dir`), which is prepared on first use,
      for file-based data sets.
    """
    return load(
        config.dataset,
        split,
        data_dir=config.data_dir,
        image_size=config.image_size,
        seed=config.seed,
        crops_per_photo=config.crops_per_photo,
        cache_dir=config.cache_dir,
        dtype=dtype,
        progress=config.progress,
    )


def load_batch(config, split: str, num: int) -> dict:
    """Returns the first `num` images of a run's split as one model-input batch.

    Args:
      config: an `svae.config.Config`.
      split: `"train"`, `"test"` or `"validation"`.
      num: number of images (fewer if the split has fewer).

    Returns:
      `to_model_inputs`' dict for the run's colour model.
    """
    rgb = next(iter(load_split(config, split).batch(num)))
    return to_model_inputs(rgb, config.color, config.chroma_factor)


# ------------------------------------------------------------ training pipeline


def _to_uint8(images: tf.Tensor) -> tf.Tensor:
    """Quantises [0, 1] images to uint8; exact for load()'s k/255 values."""
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)


def to_model_inputs(rgb, color: str = "ycbcr", chroma_factor: int = 4) -> dict:
    """Converts RGB images to the model's batch structure.

    Args:
      rgb: float `[..., height, width, 3]` in [0, 1].
      color: "ycbcr" (Y and downsampled CbCr) or "gray" (Y alone).
      chroma_factor: downsampling factor of Cb and Cr.

    Returns:
      {"y": `[..., H, W]`, "cbcr": `[..., H/f, W/f, 2]` (ycbcr only),
      "rgb": `[..., H, W, 3]`}.
    """
    rgb = tf.convert_to_tensor(rgb)
    if color == "gray":
        return {"y": color_lib.to_gray(rgb), "rgb": rgb}
    if color != "ycbcr":
        raise ValueError(f"color must be 'ycbcr' or 'gray', got {color!r}.")
    y, cbcr = color_lib.split_ycbcr(rgb, chroma_factor)
    return {"y": y, "cbcr": cbcr, "rgb": rgb}


def training_pipeline(
    dataset: tf.data.Dataset,
    batch_size: int,
    *,
    seed: int = 0,
    flip: bool = True,
    shuffle_buffer: int | None = 10_000,
    cache: bool | str = "auto",
    color: str = "ycbcr",
    chroma_factor: int = 4,
    drop_remainder: bool = True,
    input_context: tf.distribute.InputContext | None = None,
    cache_budget_bytes: int = _DEFAULT_CACHE_BUDGET,
) -> tf.data.Dataset:
    """Shuffles, flips, converts, batches, caches and shards images.

    Order: shard (one pipeline's share), cache (as uint8, 4x smaller than
    float32), shuffle, batch, flip and convert per batch (vectorised),
    prefetch. Deterministic for a given seed; each iteration (epoch) reshuffles
    and redraws the flips.

    Args:
      dataset: unbatched `[H, W, 3]` images as from load(): float32 in [0, 1]
        (quantised to uint8 first), or uint8 (used as they are).
      batch_size: global batch size; with input_context, split per replica.
      seed: seed of the shuffle and the flips.
      flip: random left-right flips (the paper's augmentation).
      shuffle_buffer: shuffle buffer size; None or 0 to keep the order.
      cache: True (in memory), False, a file path prefix (on disk), or "auto":
        in memory when the data set is known to fit in cache_budget_bytes.
      color: "ycbcr" or "gray", see to_model_inputs.
      chroma_factor: downsampling factor of Cb and Cr.
      drop_remainder: drop the last partial batch (keep shapes static).
      input_context: from `strategy.distribute_datasets_from_function`; the
        pipeline keeps shard `input_pipeline_id` of `num_input_pipelines` and
        batches `get_per_replica_batch_size(batch_size)`.
      cache_budget_bytes: memory allowed for cache="auto".

    Returns:
      A `tf.data.Dataset` of dicts, see to_model_inputs (with a batch axis).
    """
    if color not in ("ycbcr", "gray"):
        raise ValueError(f"color must be 'ycbcr' or 'gray', got {color!r}.")
    image_shape = dataset.element_spec.shape
    num_images = size_hint(dataset)
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        dataset = dataset.shard(num_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        seed = seed * 1_000_003 + input_context.input_pipeline_id
        if num_images is not None:
            num_images = -(-num_images // num_pipelines)
    if dataset.element_spec.dtype != tf.uint8:
        dataset = dataset.map(_to_uint8, num_parallel_calls=tf.data.AUTOTUNE)
    if cache == "auto":
        cache = num_images is not None and (
            num_images * image_shape.num_elements() <= cache_budget_bytes
        )
    if isinstance(cache, str):
        dataset = dataset.cache(cache)
    elif cache:
        dataset = dataset.cache()
    if shuffle_buffer:
        dataset = dataset.shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    def convert(images: tf.Tensor, flip_seed: tf.Tensor | None = None) -> dict:
        """Flips some images of a batch and converts them to model inputs."""
        if flip_seed is not None:
            seed_pair = tf.stack([flip_seed, tf.constant(seed, tf.int64)])
            coins = tf.random.stateless_uniform(tf.shape(images)[:1], seed=seed_pair)
            # One gather of columns, reversed where flipped, on uint8: 6x
            # faster on CPU than selecting from a reversed float copy.
            columns = tf.range(tf.shape(images)[2])
            columns = tf.where(coins[:, None] < 0.5, columns[None, ::-1], columns)
            images = tf.gather(images, columns, axis=2, batch_dims=1)
        rgb = tf.cast(images, tf.float32) / 255.0
        return to_model_inputs(rgb, color, chroma_factor)

    if flip:
        flip_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(dataset, flip_seeds)
    dataset = dataset.map(
        convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    options = tf.data.Options()
    options.deterministic = True
    if input_context is not None:
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF
        )
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
