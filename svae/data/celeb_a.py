"""`celeb_a`: aligned CelebA, cut as in Larsen et al. (2016).

Read from the official files (`img_align_celeba/` or `img_align_celeba.zip`
and `list_eval_partition.txt`), or from a prepared TFDS `celeb_a`. Each image:
the 148x148 box at rows 40:188, columns 15:163, a Gaussian blur, a bilinear
resize to `image_size`, rounded to 8 bits.
"""

import functools
import math
import os
import pathlib
import threading
import zipfile

import numpy as np
import tensorflow as tf

from svae.data import decode
from svae.data import source as source_lib

CELEB_A_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
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


def _celeb_a_crop(data: bytes) -> np.ndarray:
    """Decodes an aligned CelebA image and cuts Larsen et al.'s 148x148 box."""
    image = decode.open_image(data)
    width, height = image.size
    if width < CELEB_A_CROP_COLS[1] or height < CELEB_A_CROP_ROWS[1]:
        raise decode.SkipError(f"smaller than the crop box: {width}x{height}")
    image = decode.load_pixels(image)
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
            raise source_lib.DatasetError(
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
            raise source_lib.DatasetError(message) from error
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
        raise source_lib.DatasetError(
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


def _tfds_source(builder, root: pathlib.Path, split: str, identity: dict):
    """The split of a prepared TFDS celeb_a, preprocessed while iterated."""
    image_size = identity["image_size"]
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    dataset = dataset.map(
        lambda example: celeb_a_preprocess(example["image"], image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    tfds_dir = root / "celeb_a"  # Its files, all versions, fingerprint it.
    return source_lib.Source(
        dataset,
        builder.info.splits[split].num_examples,
        None,
        f"TFDS celeb_a {tfds_dir} ({split})",
        identity | {"path": str(tfds_dir.resolve())},
        lambda: sorted(p for p in tfds_dir.rglob("*") if p.is_file()),
    )


def open_split(request: source_lib.Request) -> source_lib.Source:
    """Opens CelebA's split: TFDS if prepared, else the official files."""
    split, image_size = request.split, request.image_size
    source_lib.check_split("celeb_a", split, tuple(_CELEB_A_PARTITIONS))
    root = source_lib.existing_dir(request.data_dir, "celeb_a", _celeb_a_help())
    builder = _celeb_a_tfds(root, download=False)
    files = None if builder else _celeb_a_files(root)
    if builder is None and files is None:
        builder = _celeb_a_tfds(root, request.download)
        if builder is None:
            raise source_lib.DatasetError(
                f"No CelebA files under {root}: looked for list_eval_partition.txt "
                "with img_align_celeba/ or img_align_celeba.zip in it and in "
                f"{root / 'downloads' / 'manual'}, and for TFDS data in "
                f"{root / 'celeb_a'}. {_celeb_a_help()}"
            )
    identity = {"name": "celeb_a", "split": split, "image_size": image_size}
    if builder is not None:
        return _tfds_source(builder, root, split, identity)
    partition, images = files
    names = _read_partition(partition, split)
    if not names:
        raise source_lib.DatasetError(
            f"{partition} lists no image for split {split!r}."
        )
    if images.is_dir():

        def read(key: bytes) -> bytes:
            """Reads one image of the img_align_celeba folder."""
            return decode.read_file(os.fsencode(images / key.decode()))

        stamps = [partition] + [images / name for name in names]
    else:
        read = _ZipReader(images).read
        stamps = [partition, images]
    side = CELEB_A_CROP_ROWS[1] - CELEB_A_CROP_ROWS[0]
    description = f"{images} ({split})"
    dataset, skip_log = decode.decoded_dataset(
        [n.encode() for n in names], read, _celeb_a_crop, (side, side, 3), description
    )
    dataset = dataset.map(
        lambda box: celeb_a_preprocess(box, image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    identity |= {"path": str(images.resolve())}
    return source_lib.Source(
        dataset, len(names), skip_log, description, identity, lambda: stamps
    )
