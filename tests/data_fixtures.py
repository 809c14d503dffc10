"""Builders of small data sets in the official layouts, for tests and benchmarks."""

import functools
import hashlib
import io
import pathlib
import zipfile

import numpy as np
from PIL import Image


def encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
    """Encodes a uint8 array (or a Pillow image) with Pillow."""
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Returns a smooth random uint8 RGB image (compresses like a photo)."""
    coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    return np.array(image)


def celeb_a_image(rng: np.random.Generator) -> np.ndarray:
    """Returns a 218x178 image: smooth outside the crop box, flat inside."""
    image = smooth_image(rng, 218, 178)
    image[40:188, 15:163] = rng.integers(30, 220, 3, dtype=np.uint8)
    return image


def make_celeb_a(
    root: pathlib.Path, partitions=(0,) * 6 + (1,) * 2 + (2,) * 3, zipped=False
) -> list[str]:
    """Writes img_align_celeba/ (or .zip) and list_eval_partition.txt.

    Returns:
      The image names in order.
    """
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(partitions))]
    files = {name: encode(celeb_a_image(rng), "JPEG", quality=95) for name in names}
    if zipped:
        with zipfile.ZipFile(root / "img_align_celeba.zip", "w") as archive:
            for name, data in files.items():
                archive.writestr(f"img_align_celeba/{name}", data)
    else:
        (root / "img_align_celeba").mkdir()
        for name, data in files.items():
            (root / "img_align_celeba" / name).write_bytes(data)
    lines = [f"{n} {p}" for n, p in zip(names, partitions, strict=True)]
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return names


def lsun_key(index: int) -> bytes:
    """Returns an LSUN-style key: a 40-digit hex id."""
    return hashlib.sha1(f"image{index}".encode()).hexdigest().encode()


def make_lmdb(
    path: pathlib.Path,
    values: list[bytes],
    first_index: int = 0,
    map_size: int = 64 * 2**20,
) -> list[bytes]:
    """Writes an LMDB folder (data.mdb, lock.mdb) of key -> encoded image.

    Returns:
      The keys in the database's (sorted) order.
    """
    import lmdb

    path.mkdir(parents=True)
    env = lmdb.open(str(path), map_size=map_size)
    keys = [lsun_key(first_index + i) for i in range(len(values))]
    with env.begin(write=True) as txn:
        for key, value in zip(keys, values, strict=True):
            txn.put(key, value)
    env.close()
    return sorted(keys)


def lsun_values(count: int, seed: int, size=(96, 64)) -> list[bytes]:
    """Returns `count` encoded images, alternately WebP and JPEG."""
    rng = np.random.default_rng(seed)
    values = []
    for index in range(count):
        pixels = smooth_image(rng, size[1], size[0])
        fmt = "WEBP" if index % 2 == 0 else "JPEG"
        values.append(encode(pixels, fmt, quality=90))
    return values


def make_jpeg_folder(root: pathlib.Path, count: int, size=(160, 120)) -> None:
    """Writes `count` smooth JPEGs into root, two levels deep."""
    rng = np.random.default_rng(2)
    for index in range(count):
        folder = root / f"part{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = smooth_image(rng, size[1], size[0])
        (folder / f"{index:05d}.jpg").write_bytes(encode(pixels, "JPEG", quality=90))


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    """Four colour photographs bundled with scikit-image (no download)."""
    import skimage.data

    names = ("astronaut", "coffee", "chelsea", "rocket")
    return tuple(getattr(skimage.data, name)()[..., :3] for name in names)


def photo_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Returns a crop of a real photograph (scikit-image's), resized to size.

    Real detail makes JPEG and WebP entropy decoding cost what it costs on
    real data sets; smooth_image compresses (and decodes) much faster.
    """
    photo = _photos()[rng.integers(len(_photos()))]
    photo_height, photo_width = photo.shape[:2]
    scale = rng.uniform(0.5, 1.0) * min(photo_height / height, photo_width / width)
    crop_height, crop_width = height * scale, width * scale
    top = rng.uniform(0, photo_height - crop_height)
    left = rng.uniform(0, photo_width - crop_width)
    image = Image.fromarray(photo).resize(
        (width, height),
        Image.Resampling.BICUBIC,
        box=(left, top, left + crop_width, top + crop_height),
    )
    return np.asarray(image)
