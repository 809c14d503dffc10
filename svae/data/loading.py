"""`load`, `load_split`, `load_batch`: a data set's images by name (`svae.data`)."""

import tensorflow as tf

from svae.data import cache, info, registry
from svae.data import source as source_lib
from svae.data.pipeline import to_model_inputs
from svae.data.sample_photos import SAMPLE_CROPS_PER_PHOTO
from svae.data.source import DatasetError

__all__ = ["load", "load_batch", "load_split"]


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
