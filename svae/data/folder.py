"""`folder:PATH` (or a folder's path): every image file under a folder.

Each image is resized so its shorter side is `image_size` and centre-cropped.
Splits: the `train/`, `test/` (and `validation/`) subfolders if there are
any, else a hash of each file's relative path.
"""

import hashlib
import os
import pathlib

from svae.data import decode
from svae.data import source as source_lib


def _list_images(root: pathlib.Path) -> list[str]:
    """Lists the files under root (hidden ones excluded), sorted, relative."""
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                path = pathlib.Path(directory, name)
                files.append(path.relative_to(root).as_posix())
    return sorted(files)


def _hash_fraction(relative_path: str) -> float:
    """Maps a path to a fixed number in [0, 1), independent of any seed.

    The hash is of the path's bytes on disk (`os.fsencode`): the UTF-8 of a
    UTF-8 name, and the raw bytes of a name that is not UTF-8.
    """
    digest = hashlib.sha1(os.fsencode(relative_path)).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def folder_files(root, split: str, test_fraction: float = 0.1) -> list[pathlib.Path]:
    """Returns the files of one split of an image folder, sorted.

    With `train/` and `test/` subfolders (and optionally `validation/`), each
    split is its subfolder. Otherwise a file is in the test split when a hash
    of its path relative to root falls below `test_fraction`, so the split is
    stable as files are added and does not depend on any seed.

    Args:
      root: the folder.
      split: "train", "test", or "validation" (subfolder layout only).
      test_fraction: fraction of files in the test split (hash layout).

    Returns:
      Absolute paths of the split's files.
    """
    root = pathlib.Path(root).expanduser().resolve()
    if (root / "train").is_dir() and (root / "test").is_dir():
        splits = ("train", "validation", "test")
        if not (root / "validation").is_dir():
            splits = ("train", "test")
        source_lib.check_split(f"folder:{root}", split, splits)
        return [root / split / f for f in _list_images(root / split)]
    source_lib.check_split(f"folder:{root}", split, ("train", "test"))
    if not 0.0 < test_fraction < 1.0:
        raise source_lib.DatasetError(
            f"test_fraction must be in (0, 1), got {test_fraction}."
        )
    return [
        root / f
        for f in _list_images(root)
        if (_hash_fraction(f) < test_fraction) == (split == "test")
    ]


def open_split(request: source_lib.Request) -> source_lib.Source:
    """Lists the split's files; they are decoded while iterated."""
    root = pathlib.Path(request.name.removeprefix("folder:")).expanduser()
    split, image_size = request.split, request.image_size
    if not root.is_dir():
        raise source_lib.DatasetError(f"Image folder {str(root)!r} does not exist.")
    files = folder_files(root, split, request.test_fraction)
    if not files:
        raise source_lib.DatasetError(
            f"No files in split {split!r} of image folder {root}."
        )
    description = f"folder:{root} ({split})"
    dataset, skip_log = decode.resized_dataset(
        [os.fsencode(f) for f in files], decode.read_file, image_size, description
    )
    identity = {
        "name": "folder",
        "path": str(root.resolve()),
        "split": split,
        "image_size": image_size,
        "test_fraction": request.test_fraction,
    }
    return source_lib.Source(
        dataset, len(files), skip_log, description, identity, lambda: files
    )
