"""Writing a run's files: whole or not at all, readable by others, disk full named.

- `write_atomically` and `write_json` (strict JSON: no `NaN`) write a file
  beside its target and rename it into place, so a reader sees the old file
  or the new one, never half of one.
- `scratch_dir` makes the folder an export is written in before it is
  renamed into place.
- Both are created as `open` and `mkdir` create files, with mode 0666 / 0777
  less the umask (0644 / 0755 under umask 022): `tempfile`'s are 0600 /
  0700, which a server running as another user (TF Serving) cannot read once
  renamed into place.
- `on_full_disk` turns "No space left on device", as Python (`OSError`) or
  TensorFlow (`ResourceExhaustedError`) raises it, into a `NoSpaceError`
  whose message says what was being written, what was kept and what to do:
  the scripts print it as one `svae: error:` line.
"""

import contextlib
import errno
import json
import math
import os
import pathlib
import secrets

import tensorflow as tf

__all__ = [
    "NoSpaceError",
    "is_no_space",
    "on_full_disk",
    "scratch_dir",
    "strict",
    "write_atomically",
    "write_json",
]

# "No space left on device", as the OS and TensorFlow's messages spell it.
_NO_SPACE = os.strerror(errno.ENOSPC)


class NoSpaceError(OSError):
    """A write that failed on a full disk; the message says what to do."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def is_no_space(error: BaseException) -> bool:
    """Whether `error` is a full disk not yet turned into a `NoSpaceError`.

    TensorFlow raises `ResourceExhaustedError` for a full disk and for
    exhausted memory alike: only its message tells them apart.
    """
    if isinstance(error, NoSpaceError):
        return False
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return isinstance(error, tf.errors.OpError) and _NO_SPACE in str(error)


@contextlib.contextmanager
def on_full_disk(what: str, then):
    """Raises a `NoSpaceError` for a full disk inside the block.

    Its message: `No space left on device writing <what>. <then()>`.

    Args:
      what: what was being written, and where.
      then: a function returning what was kept and what to do (called when
        the disk was full, after the block's own clean-up ran).
    """
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        if not is_no_space(error):
            raise
        raise NoSpaceError(f"{_NO_SPACE} writing {what}. {then()}") from error


def _fresh(parent, prefix: str, make) -> pathlib.Path:
    """Makes `parent/<prefix><random>` with `make(path)`; returns the path."""
    while True:
        path = pathlib.Path(parent) / f"{prefix}{secrets.token_hex(4)}"
        try:
            make(path)
        except FileExistsError:
            continue
        return path


def scratch_dir(parent, prefix: str) -> pathlib.Path:
    """Makes a new folder `parent/<prefix><random>`, mode 0777 less the umask."""
    return _fresh(parent, prefix, lambda path: os.mkdir(path, 0o777))


def write_atomically(path, text: str) -> None:
    """Writes `text` to `path` (UTF-8) through a file beside it: all or nothing.

    The file is made with mode 0666 less the umask, as `open` makes it.
    """
    path = pathlib.Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    descriptors = []
    temporary = _fresh(
        path.parent,
        f".{path.name}.",
        lambda name: descriptors.append(os.open(name, flags, 0o666)),
    )
    try:
        with os.fdopen(descriptors[0], "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def strict(value):
    """Returns `value` with non-finite floats (anywhere inside) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return value


def write_json(path, value, indent: int = 2) -> None:
    """Writes strict JSON (`NaN`, `inf` as null) atomically: all or nothing."""
    text = json.dumps(strict(value), indent=indent, allow_nan=False) + "\n"
    write_atomically(path, text)
