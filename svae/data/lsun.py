"""`lsun_church`: LSUN church_outdoor, read from its official LMDB folders.

Values are WebP (some JPEG) images, read with the `lmdb` package and decoded
with Pillow; each is resized so its shorter side is `image_size` and
centre-cropped. TFDS's `lsun` needs tensorflow-io, which does not load with
TensorFlow >= 2.18.
"""

import functools
import pathlib

from svae.data import decode
from svae.data import source as source_lib

LSUN_URLS = ("http://dl.yf.io/lsun/", "https://github.com/fyu/lsun")
_LSUN_FOLDERS = {
    "train": "church_outdoor_train_lmdb",
    "test": "church_outdoor_val_lmdb",
}


def _lsun_help() -> str:
    """Says which LSUN files to place where."""
    return (
        "lsun_church expects data_dir to hold the official LSUN church_outdoor "
        "LMDB folders church_outdoor_train_lmdb/ and church_outdoor_val_lmdb/ "
        "(each with data.mdb). Get church_outdoor_train_lmdb.zip and "
        f"church_outdoor_val_lmdb.zip from {LSUN_URLS[0]} (or run `python "
        f"download.py -c church_outdoor` from {LSUN_URLS[1]}) and unzip them "
        "into data_dir. TFDS 'lsun' is not supported: it needs tensorflow-io, "
        "which does not load with TensorFlow >= 2.18."
    )


class _LmdbReader:
    """Reads values of a read-only LMDB database from any thread."""

    def __init__(self, path: pathlib.Path):
        """Opens the database at path read-only, without locking."""
        import lmdb

        try:
            self._env = lmdb.open(
                str(path),
                readonly=True,
                lock=False,
                readahead=False,
                meminit=False,
                max_readers=256,
            )
        except lmdb.Error as error:
            message = f"Cannot open LMDB {path}: {error}. {_lsun_help()}"
            raise source_lib.DatasetError(message) from error

    @classmethod
    @functools.cache
    def shared(cls, path: pathlib.Path) -> "_LmdbReader":
        """Returns the reader of path; LMDB allows one open per process."""
        return cls(path)

    def keys(self) -> list[bytes]:
        """Returns every key, in the database's (sorted) order."""
        with self._env.begin() as txn:
            return list(txn.cursor().iternext(keys=True, values=False))

    def read(self, key: bytes) -> bytes:
        """Returns the value of key; a missing key is an unreadable file."""
        with self._env.begin() as txn:
            value = txn.get(key)
        if value is None:
            raise OSError("key not found")
        return value


def open_split(request: source_lib.Request) -> source_lib.Source:
    """Lists the keys of the split's LMDB; values are decoded while iterated."""
    split, image_size = request.split, request.image_size
    source_lib.check_split("lsun_church", split, ("train", "test"))
    root = source_lib.existing_dir(request.data_dir, "lsun_church", _lsun_help())
    path = root / _LSUN_FOLDERS[split]
    if not (path / "data.mdb").is_file():
        raise source_lib.DatasetError(f"Missing {path / 'data.mdb'}. {_lsun_help()}")
    reader = _LmdbReader.shared(path.resolve())
    keys = reader.keys()
    if not keys:
        raise source_lib.DatasetError(f"LMDB {path} is empty. {_lsun_help()}")
    description = f"LMDB {path}"
    dataset, skip_log = decode.resized_dataset(
        keys, reader.read, image_size, description
    )
    identity = {
        "name": "lsun_church",
        "path": str(path.resolve()),
        "split": split,
        "image_size": image_size,
    }
    stamps = [path / "data.mdb"]
    return source_lib.Source(
        dataset, len(keys), skip_log, description, identity, lambda: stamps
    )
