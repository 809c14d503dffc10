"""What a source module gives `load`: one split of a data set, before decoding.

A source module (`sample_photos`, `folder`, `lsun`, `celeb_a`) defines
`open_split(request: Request) -> Source`; `svae.data.registry` maps data set
names to these functions.
"""

import dataclasses
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    from svae.data.decode import SkipLog


class DatasetError(ValueError):
    """A data set cannot be found, read or prepared as asked."""


@dataclasses.dataclass(frozen=True)
class Request:
    """The arguments of `load`; each source reads the ones it needs."""

    name: str  # As given: "celeb_a", "folder:PATH" or a folder's path.
    split: str
    data_dir: str | pathlib.Path | None
    image_size: int
    seed: int
    test_fraction: float
    crops_per_photo: int
    download: bool


@dataclasses.dataclass
class Source:
    """One split of a data set, before any decoding."""

    dataset: tf.data.Dataset  # uint8 images, decoded while iterated
    num_files: int  # files listed: an upper bound on the number of images
    skip_log: "SkipLog | None"
    description: str  # names the files and the split in messages
    # What the split is (data set, path, split, image size, options): a cache
    # of another identity is never used or removed for this one.
    identity: dict
    # Lists the files whose sizes and mtimes fingerprint it (when caching).
    stamp_paths: Callable[[], list]
    # Images made in memory (sample_photos): num_files is exact, never cached.
    in_memory: bool = False


def check_split(name: str, split: str, splits) -> None:
    """Raises DatasetError unless split is one of splits."""
    if split not in splits:
        raise DatasetError(
            f"Data set {name!r} has splits {', '.join(splits)}; got {split!r}."
        )


def existing_dir(data_dir, name: str, help_text: str) -> pathlib.Path:
    """Returns data_dir as a Path; raises DatasetError if None or missing."""
    if data_dir is None:
        raise DatasetError(f"{name} needs data_dir. {help_text}")
    path = pathlib.Path(data_dir).expanduser()
    if not path.is_dir():
        raise DatasetError(f"data_dir {str(path)!r} is not a folder. {help_text}")
    return path
