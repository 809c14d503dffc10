"""`python -m svae.data.prepare`: decodes a data set once into the prepared cache.

What `train.py`'s first start does before it trains, done ahead of time (on
another machine, or once before several runs share the cache):

    python -m svae.data.prepare --dataset=celeb_a --data_dir=DIR
        [--cache_dir=DIR] [--split=train,test] [--image_size=64]

Each split is loaded as `train.py`, `evaluate.py` and `sample.py` load it
(`svae.data.load` with a `cache_dir`), so they find it prepared when given
the same `--dataset`, `--data_dir`, `--cache_dir` and `--image_size`. Prints,
per split, the number of images, the files skipped and where the cache is;
a data set that cannot be prepared is one `svae: error: ...` line.
"""

import dataclasses

from absl import flags, logging

from svae import data
from svae.cli import common
from svae.fields import Range, check_fields, ranged

FLAGS = flags.FLAGS

# The image sizes train.py takes (svae.config.Config.image_size; the tests
# hold them equal): this range, and a power of 2. A cache of another size
# would never be read.
IMAGE_SIZES = Range(ge=8)


@dataclasses.dataclass
class PrepareConfig:
    """What `python -m svae.data.prepare` is asked; its flags fill it.

    `split` is a comma-separated list of at least one split; `image_size`
    one that `train.py` takes (`IMAGE_SIZES`, a power of 2); the other
    fields are the arguments of `prepare`.
    """

    dataset: str
    data_dir: str | None = None
    cache_dir: str | None = None
    split: str = "train"
    image_size: int = ranged(64, ge=IMAGE_SIZES.ge)
    progress: bool = True

    def __post_init__(self):
        """Checks each field; raises ValueError naming it."""
        check_fields(self)
        size = self.image_size
        if size & (size - 1):
            raise ValueError(
                f"image_size must be a power of 2 {IMAGE_SIZES}, as train.py's, "
                f"got {size}."
            )
        if not self.splits:
            raise ValueError(
                f"split must name at least one split (comma-separated, e.g. "
                f"train,test), got {self.split!r}."
            )

    @property
    def splits(self) -> list[str]:
        """The splits to prepare, in order."""
        return [split for split in self.split.split(",") if split]


def prepare(
    name: str,
    split: str,
    *,
    cache_dir,
    data_dir=None,
    image_size: int = 64,
    progress: bool = True,
) -> "data.SplitInfo":
    """Prepares one split of a data set in `cache_dir` (if not prepared yet).

    Args:
      name: the data set, see `svae.data.load`.
      split: the split to prepare.
      cache_dir: folder of prepared caches.
      data_dir: folder with the data set's files.
      image_size: side of the square images.
      progress: show a progress bar with an ETA while decoding.

    Returns:
      The split's `SplitInfo`, read from its prepared cache.

    Raises:
      DatasetError: no cache_dir, a data set made in memory (sample_photos),
        a split that cannot be loaded, or a cache_dir that cannot be written.
    """
    if not cache_dir:
        raise data.DatasetError("Preparing needs a cache_dir.")
    images = data.load(
        name,
        split,
        data_dir=data_dir,
        image_size=image_size,
        cache_dir=cache_dir,
        dtype="uint8",
        progress=progress,
    )
    found = data.split_info(images)
    if found.prepared and found.cache_file is None:
        raise data.DatasetError(
            f"{name} is made in memory at every start: nothing to prepare."
        )
    if found.cache_file is None:
        raise data.DatasetError(
            f"Cannot prepare {name} ({split}) in {cache_dir}: see the warning above."
        )
    return found


def _report(name: str, split: str, found: "data.SplitInfo") -> str:
    """Says what one prepared split holds and where."""
    npy = found.cache_file
    return (
        f"svae: {name} {split}: {found.num_images} images in {npy} "
        f"({npy.stat().st_size / 1e9:.2f} GB); {len(found.skipped_files)} files "
        f"skipped (listed in {npy.with_suffix('.json')})"
    )


HELPS = {
    "dataset": "Data set name (docs/data.md), or folder:PATH.",
    "data_dir": "Folder with the data set's files.",
    "cache_dir": (
        "Folder of prepared caches, default $SVAE_CACHE_DIR or ~/.cache/svae."
    ),
    "split": "Comma-separated splits (at least one).",
    "image_size": "Image side: a power of 2, as train.py's --image_size.",
    "progress": "Show a progress bar with an ETA while decoding.",
}


def define_flags(flag_values=FLAGS) -> None:
    """Defines the flags: one per `PrepareConfig` field; --dataset is required."""
    common.define_flags(
        PrepareConfig,
        HELPS,
        defaults={"cache_dir": data.default_cache_dir()},
        flag_values=flag_values,
    )
    flags.mark_flag_as_required("dataset", flag_values=flag_values)


def main() -> int:
    """Builds the options from the flags, prepares, prints what it did."""
    logging.set_verbosity(logging.WARNING)
    options = PrepareConfig(**{name: FLAGS[name].value for name in HELPS})
    for split in options.splits:
        found = prepare(
            options.dataset,
            split,
            cache_dir=options.cache_dir,
            data_dir=options.data_dir,
            image_size=options.image_size,
            progress=options.progress,
        )
        print(_report(options.dataset, split, found), flush=True)
    return 0


if __name__ == "__main__":
    common.run(main, define_flags, errors=lambda: (ValueError,))
