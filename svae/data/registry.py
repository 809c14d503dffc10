"""Data set names, each mapped to the source module that opens its splits.

A source module defines `open_split(request: svae.data.source.Request) ->
svae.data.source.Source`. To add a data set, write its module and add one
line to `SOURCES`.
"""

import os
from collections.abc import Callable

from svae.data import celeb_a, folder, lsun, sample_photos
from svae.data import source as source_lib

# Name -> open_split. A name ending in ":PATH" takes a path after its colon.
SOURCES: dict[str, Callable[[source_lib.Request], source_lib.Source]] = {
    "celeb_a": celeb_a.open_split,
    "lsun_church": lsun.open_split,
    "sample_photos": sample_photos.open_split,
    "folder:PATH": folder.open_split,
}
# The source of a name that is the path of an existing folder.
_BARE_PATH = "folder:PATH"

DATASET_NAMES = tuple(SOURCES)


def resolve(name: str) -> Callable[[source_lib.Request], source_lib.Source]:
    """Returns the `open_split` of a data set name.

    Args:
      name: a name of `SOURCES`, `prefix:PATH` for a name `prefix:PATH` of
        `SOURCES`, or the path of an existing folder.

    Raises:
      DatasetError: an unknown name; the message lists the valid ones.
    """
    prefix, colon, _ = name.partition(":")
    if colon and f"{prefix}:PATH" in SOURCES:
        return SOURCES[f"{prefix}:PATH"]
    if name in SOURCES:
        return SOURCES[name]
    if name and os.path.isdir(name):
        return SOURCES[_BARE_PATH]
    raise source_lib.DatasetError(
        f"Unknown data set {name!r}. Valid names: {', '.join(DATASET_NAMES)} "
        "(or the path of an existing folder)."
    )
