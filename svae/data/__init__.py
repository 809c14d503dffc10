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
later loads read that file instead of decoding (see `load`);
`python -m svae.data.prepare` does it ahead of time.

The modules:

    registry       data set name -> the source module that opens its splits
    source         what a source gives load(): `Source`, `DatasetError`
    sample_photos, folder, lsun, celeb_a
                   the sources, one module each
    decode         Pillow decoding in tf.data, the log of skipped files
    cache          the prepared cache
    info           what load() knows of a split (size_hint, skipped_files)
    pipeline       training_pipeline, to_model_inputs
    prepare        `python -m svae.data.prepare`
"""

import tensorflow as tf

from svae.config import CACHE_DIR_ENV, default_cache_dir
from svae.data import cache, info, registry
from svae.data import source as source_lib
from svae.data.cache import CACHE_FORMAT_VERSION
from svae.data.celeb_a import (
    CELEB_A_BLUR_SIGMA,
    CELEB_A_CROP_COLS,
    CELEB_A_CROP_ROWS,
    CELEB_A_URL,
    celeb_a_preprocess,
)
from svae.data.folder import folder_files
from svae.data.info import (
    SplitInfo,
    prepared_size,
    size_hint,
    skipped_files,
    split_info,
)
from svae.data.lsun import LSUN_URLS
from svae.data.pipeline import to_model_inputs, training_pipeline
from svae.data.registry import DATASET_NAMES
from svae.data.sample_photos import (
    SAMPLE_CROPS_PER_PHOTO,
    SAMPLE_PHOTOS,
    random_crops,
)
from svae.data.source import DatasetError

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_FORMAT_VERSION",
    "CELEB_A_BLUR_SIGMA",
    "CELEB_A_CROP_COLS",
    "CELEB_A_CROP_ROWS",
    "CELEB_A_URL",
    "DATASET_NAMES",
    "LSUN_URLS",
    "SAMPLE_CROPS_PER_PHOTO",
    "SAMPLE_PHOTOS",
    "DatasetError",
    "SplitInfo",
    "celeb_a_preprocess",
    "default_cache_dir",
    "folder_files",
    "load",
    "load_batch",
    "load_split",
    "prepared_size",
    "random_crops",
    "size_hint",
    "skipped_files",
    "split_info",
    "to_model_inputs",
    "training_pipeline",
]


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
    the path of an existing folder); see `svae.data.registry`. The order is
    fixed; only sample_photos depends on `seed` (the crops); file-based
    splits never do.

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

    What is known about the split (number of images, skipped files, the
    cache file) is `split_info(dataset)`, also after `dataset.map(...)`.

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
    request = source_lib.Request(
        name=name,
        split=split,
        data_dir=data_dir,
        image_size=image_size,
        seed=seed,
        test_fraction=test_fraction,
        crops_per_photo=crops_per_photo,
        download=download,
    )
    source = registry.resolve(name)(request)
    prepared = None
    if cache_dir and not source.in_memory:
        prepared = cache.load_prepared(source, cache_dir, progress)
    if prepared is None:
        if source.skip_log is not None:
            source.skip_log.require_image()
        dataset = source.dataset
        found = info.SplitInfo(source.num_files, source.in_memory, source.skip_log)
    else:
        dataset, skip_log, cache_file = prepared
        found = info.SplitInfo(len(dataset), True, skip_log, cache_file)
    if dtype == tf.float32:
        dataset = dataset.map(
            lambda pixels: tf.cast(pixels, tf.float32) / 255.0,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return info.attach(dataset, found)


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
