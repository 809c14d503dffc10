"""Decoding files with Pillow inside tf.data, and the log of skipped files.

`decoded_dataset(keys, read, decode, ...)` decodes files (or LMDB values) in
a parallel `tf.numpy_function`. A file that fails to decode (corrupt,
truncated, not an image, or too small) is skipped; at the end of the first
pass over the data the skipped files are reported once, as one absl warning
with their count and the first few paths (`SkipLog`).
"""

import functools
import io
import os
import threading
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image, UnidentifiedImageError

from svae.data.source import DatasetError

_PIL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_REPORT_PATHS = 5


class SkipError(Exception):
    """A file that is skipped, with the reason."""


class SkipLog:
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
        # (set by decoded_dataset).
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
        return "; ".join(f"{_printable(path)} ({reason})" for path, reason in items)

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


def _printable(path) -> str:
    """A file name as text every stream can write: bytes that are not UTF-8
    (`os.fsdecode`'s surrogates) as `\\xNN` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


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


def open_image(data: bytes) -> Image.Image:
    """Opens encoded image bytes; raises SkipError for anything but an image."""
    Image.init()
    try:
        return Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except UnidentifiedImageError as error:
        raise SkipError("not an image (unknown format)") from error
    except Exception as error:
        raise SkipError(f"corrupt or truncated: {_describe(error)}") from error


def load_pixels(image: Image.Image) -> Image.Image:
    """Decodes the pixels; raises SkipError for corrupt or truncated data."""
    try:
        image.load()
        return _pil_to_rgb(image)
    except Exception as error:
        raise SkipError(f"corrupt or truncated: {_describe(error)}") from error


def resize_center_crop(data: bytes, image_size: int) -> np.ndarray:
    """Decodes, resizes the shorter side to image_size and centre-crops."""
    image = open_image(data)
    width, height = image.size
    if min(width, height) < image_size:
        raise SkipError(f"smaller than {image_size}x{image_size}: {width}x{height}")
    # JPEG can decode at 1/2, 1/4 or 1/8 scale directly (DCT scaling); draft
    # picks the smallest scale that keeps both sides >= image_size.
    image.draft("RGB", (image_size, image_size))
    image = load_pixels(image)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    image = image.resize(
        (image_size, image_size),
        Image.Resampling.BICUBIC,
        box=(left, top, left + side, top + side),
    )
    return np.asarray(image, dtype=np.uint8)


def read_file(key: bytes) -> bytes:
    """Reads a whole file named by its fs-encoded path."""
    with open(os.fsdecode(key), "rb") as file:
        return file.read()


def _pixels_of(pixels: tf.Tensor, ok: tf.Tensor) -> tf.Tensor:
    """Returns the pixels of a (pixels, ok) pair."""
    return pixels


def _ok_of(pixels: tf.Tensor, ok: tf.Tensor) -> tf.Tensor:
    """Returns the ok flag of a (pixels, ok) pair."""
    return ok


def _never(pixels: tf.Tensor) -> tf.Tensor:
    """A filter predicate that drops everything."""
    return tf.constant(False)


def decoded_dataset(
    keys: list[bytes],
    read: Callable[[bytes], bytes],
    decode: Callable[[bytes], np.ndarray],
    shape: tuple[int, int, int],
    source: str,
) -> tuple[tf.data.Dataset, SkipLog]:
    """Decodes `keys` in parallel, skipping bad files and reporting them once.

    Args:
      keys: file paths (fs-encoded) or LMDB keys, in the data set's order.
      read: returns the encoded bytes of a key; OSError skips the key.
      decode: returns the uint8 `shape` image of encoded bytes; SkipError
        skips the key.
      shape: `[height, width, 3]` of a decoded image.
      source: names the files and the split in messages.

    Returns:
      The unbatched uint8 images (skipped files left out), and their log.
    """
    skip_log = SkipLog(source, len(keys))
    blank = np.zeros(shape, np.uint8)

    def decode_one(key: bytes) -> tuple[np.ndarray, np.bool_]:
        """Reads and decodes one key; a skipped key yields (blank, False)."""
        try:
            pixels = decode(read(key))
        except SkipError as skip:
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


def resized_dataset(
    keys: list[bytes], read: Callable[[bytes], bytes], image_size: int, source: str
) -> tuple[tf.data.Dataset, SkipLog]:
    """`decoded_dataset` of images resized (shorter side) and centre-cropped."""
    decode = functools.partial(resize_center_crop, image_size=image_size)
    return decoded_dataset(keys, read, decode, (image_size, image_size, 3), source)
