"""What `load` knows about each data set it returns, found again after `.map()`.

`load` attaches a `SplitInfo` (number of images, whether they are decoded
already, skipped files) to the `tf.data.Dataset` it returns. `split_info`
finds it from that data set or from one made from it by transformations
that keep one element per image (`map`, `prefetch`, `cache`,
`with_options`), so `size_hint(load(...).map(augment))` still knows the
number of images; `take`, `filter`, `batch` and the like change the count
and lose it.
"""

import dataclasses
import pathlib
import weakref

import tensorflow as tf

from svae.data import decode

# tf.data's classes of the transformations that keep one element per element.
_SAME_COUNT = frozenset(
    {
        "_MapDataset",
        "_ParallelMapDataset",
        "_PrefetchDataset",
        "CacheDataset",
        "_OptionsDataset",
    }
)
# The data sets load() returned (weak keys: no data set is kept alive).
_ATTACHED: "weakref.WeakKeyDictionary[tf.data.Dataset, SplitInfo]" = (
    weakref.WeakKeyDictionary()
)


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """What is known about a split that `load` returned."""

    # Exact when prepared; else the number of files listed, an upper bound
    # (bad files are skipped while decoding).
    num_images: int
    # The images need no decoding: sample_photos, or a prepared cache.
    prepared: bool
    skip_log: decode.SkipLog | None = None
    # The prepared cache's `.npy` the images are read from, if any.
    cache_file: pathlib.Path | None = None

    @property
    def skipped_files(self) -> dict[str, str]:
        """Path (or LMDB key) to the reason it was skipped, so far."""
        return {} if self.skip_log is None else self.skip_log.skipped


def attach(dataset: tf.data.Dataset, info: SplitInfo) -> tf.data.Dataset:
    """Records `info` as what is known about `dataset`; returns `dataset`."""
    _ATTACHED[dataset] = info
    return dataset


def split_info(dataset: tf.data.Dataset) -> SplitInfo | None:
    """Returns what `load` knows about a data set it returned, or None.

    Args:
      dataset: a data set returned by `load`, or made from one by `map`,
        `prefetch`, `cache` or `with_options`.

    Returns:
      Its `SplitInfo`; None for any other data set.
    """
    while dataset not in _ATTACHED:
        if type(dataset).__name__ not in _SAME_COUNT:
            return None
        # tf.data's own record of the data sets a transformation reads.
        (dataset,) = dataset._inputs()
    return _ATTACHED[dataset]


def size_hint(dataset: tf.data.Dataset) -> int | None:
    """Returns the number of images of a data set of load(), or an upper bound.

    Exact where tf.data knows the cardinality; for file-based sources, whose
    bad files are skipped while decoding, the number of files listed (an upper
    bound); None for anything else.

    Args:
      dataset: a data set returned by load() (or mapped, see `split_info`).

    Returns:
      An int, or None.
    """
    cardinality = tf.get_static_value(dataset.cardinality())
    if cardinality is not None and cardinality >= 0:
        return int(cardinality)
    info = split_info(dataset)
    return None if info is None else info.num_images


def prepared_size(dataset: tf.data.Dataset) -> int | None:
    """Returns the number of images of a data set of load() that needs no decoding.

    Args:
      dataset: a data set returned by load() (or mapped, see `split_info`).

    Returns:
      The exact number of images for sample_photos (held in memory) and for a
      split read from a prepared cache; None when iterating decodes files.
    """
    info = split_info(dataset)
    return info.num_images if info is not None and info.prepared else None


def skipped_files(dataset: tf.data.Dataset) -> dict[str, str]:
    """Returns the files skipped so far while iterating a data set of load().

    Args:
      dataset: a data set returned by load() (or mapped, see `split_info`).

    Returns:
      Path (or LMDB key) to the reason it was skipped, in order of discovery;
      empty for sources without files (sample_photos, TFDS). For a split read
      from a prepared cache: the files skipped when it was prepared.
    """
    info = split_info(dataset)
    return {} if info is None else info.skipped_files
