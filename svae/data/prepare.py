"""`python -m svae.data.prepare`: decodes a data set once into the prepared cache.

What `train.py`'s first start does before it trains, done ahead of time (on
another machine, or once before several runs share the cache):

    python -m svae.data.prepare --dataset=celeb_a --data_dir=DIR \
        [--cache_dir=DIR] [--split=train,test] [--image_size=64]

Each split is loaded as `train.py`, `evaluate.py` and `sample.py` load it
(`svae.data.load` with a `cache_dir`), so they find it prepared when given
the same `--dataset`, `--data_dir`, `--cache_dir` and `--image_size`. Prints,
per split, the number of images, the files skipped and where the cache is.
"""

import argparse
import sys

from svae import data


def prepare(
    name: str,
    split: str,
    *,
    cache_dir,
    data_dir=None,
    image_size: int = 64,
    progress: bool = True,
) -> data.SplitInfo:
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


def _report(name: str, split: str, found: data.SplitInfo) -> str:
    """Says what one prepared split holds and where."""
    npy = found.cache_file
    return (
        f"svae: {name} {split}: {found.num_images} images in {npy} "
        f"({npy.stat().st_size / 1e9:.2f} GB); {len(found.skipped_files)} files "
        f"skipped (listed in {npy.with_suffix('.json')})"
    )


def main(argv=None) -> int:
    """Command-line entry: parses the flags, prepares, prints what it did."""
    parser = argparse.ArgumentParser(
        prog="python -m svae.data.prepare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dataset", required=True, help="Data set name.")
    parser.add_argument("--data_dir", default=None, help="Its files' folder.")
    parser.add_argument(
        "--cache_dir",
        default=data.default_cache_dir(),
        help="Folder of prepared caches (default $SVAE_CACHE_DIR or ~/.cache/svae).",
    )
    parser.add_argument("--split", default="train", help="Comma-separated splits.")
    parser.add_argument("--image_size", type=int, default=64, help="Image side.")
    parser.add_argument(
        "--noprogress", dest="progress", action="store_false", help="No ETA bar."
    )
    options = vars(parser.parse_args(argv))
    name, splits = options.pop("dataset"), options.pop("split")
    try:
        for split in filter(None, splits.split(",")):
            print(_report(name, split, prepare(name, split, **options)), flush=True)
    except data.DatasetError as error:
        print(f"svae: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
