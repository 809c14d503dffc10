"""The prepared cache: a file-based split decoded once into a uint8 `.npy`.

`load_prepared(source, cache_dir, progress)` reads
`<cache_dir>/<name>-<split>-<size>px-<fingerprint>.npy` (uint8
`[N, size, size, 3]`, memory-mapped) beside its JSON manifest (source,
count, skipped files), and prepares it first when it is missing, damaged or
stale. Files are written under unique temp names, fsynced and renamed, so a
killed or concurrent preparation never leaves a partial cache; temp files
of dead writers (pid liveness) and older caches of the same split are
removed.
"""

import errno
import hashlib
import json
import os
import pathlib
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable

import numpy as np
import PIL
import tensorflow as tf
from absl import logging

from svae.config import CACHE_DIR_ENV
from svae.data import decode
from svae.data import source as source_lib
from svae.progress import Progress

# Bump CACHE_FORMAT_VERSION when decoding changes what a file becomes: every
# cache is then prepared again.
CACHE_FORMAT_VERSION = 1
_PREPARE_BATCH = 256
_READ_CHUNK = 256


def _fingerprint(source: source_lib.Source) -> str:
    """Hashes what the split is and the size and mtime of each of its files."""
    digest = hashlib.sha256()
    versions = {"format": CACHE_FORMAT_VERSION, "pillow": PIL.__version__}
    digest.update(json.dumps(source.identity | versions, sort_keys=True).encode())
    for path in source.stamp_paths():
        try:
            stat = os.stat(path)
            stamp = f"{stat.st_size} {stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        # The path's bytes on disk: a file name need not be UTF-8.
        digest.update(os.fsencode(f"{path}\0{stamp}\n"))
    return digest.hexdigest()


def _cache_prefix(identity: dict) -> str:
    """Names the cache files of a split: data set, folder name, split, size."""
    name = identity["name"]
    if name == "folder":
        name += "-" + re.sub(
            r"[^A-Za-z0-9_.]+", "_", pathlib.Path(identity["path"]).name
        )
    return f"{name}-{identity['split']}-{identity['image_size']}px-"


def _read_manifest(path: pathlib.Path) -> dict | None:
    """Returns a manifest's contents, or None if missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _open_prepared(npy: pathlib.Path, manifest: dict, shape) -> np.ndarray | None:
    """Memory-maps a prepared cache; None if it does not match its manifest."""
    try:
        array = np.load(npy, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if array.dtype != np.uint8 or array.shape != (manifest["count"], *shape):
        return None
    return array


def _array_dataset(array: np.ndarray) -> tf.data.Dataset:
    """Streams the images of a memory-mapped `[N, H, W, 3]` array, in order."""

    def read(start: np.int64) -> np.ndarray:
        """Copies one chunk out of the page cache."""
        return np.array(array[start : start + _READ_CHUNK])

    def read_map(start: tf.Tensor) -> tf.Tensor:
        """Wraps read as a graph op with a static image shape."""
        chunk = tf.numpy_function(read, [start], tf.uint8, stateful=False)
        return tf.ensure_shape(chunk, (None, *array.shape[1:]))

    starts = tf.data.Dataset.range(0, len(array), _READ_CHUNK)
    dataset = starts.map(
        read_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    ).unbatch()
    return dataset.apply(tf.data.experimental.assert_cardinality(len(array)))


def _pid_alive(pid: int) -> bool:
    """Whether a process of this machine with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_leftovers(folder: pathlib.Path, prefix: str, identity: dict, keep: str):
    """Removes older caches of the same split and temp files of dead writers."""
    # Temp names end in .<host>.<pid>.<random>.tmp; other hosts' stay.
    ours = re.compile(rf"\.{re.escape(socket.gethostname())}\.(\d+)\.\w+\.tmp$")
    for path in folder.glob(f".{prefix}*.tmp"):
        match = ours.search(path.name)
        if match and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
    for manifest_path in folder.glob(f"{prefix}*.json"):
        manifest = _read_manifest(manifest_path) or {}
        if manifest_path.stem != keep and manifest.get("identity") == identity:
            manifest_path.with_suffix(".npy").unlink(missing_ok=True)
            manifest_path.unlink(missing_ok=True)


def _write_atomically(path: pathlib.Path, write: Callable) -> None:
    """Calls write(file) on a unique temp file beside path, then renames it.

    A killed or failed writer leaves at most a temp file, never a partial
    `path`; concurrent writers each rename a complete file.
    """
    suffix = f".{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    temp = path.with_name(f".{path.name}{suffix}")
    try:
        with open(temp, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _write_images(source: source_lib.Source, file, shape, progress: bool) -> int:
    """Decodes every image of source into an open .npy file; returns the count."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (0, *shape)}

    def write_header(count: int) -> None:
        """Writes the header; its length does not depend on count."""
        file.seek(0)
        np.lib.format.write_array_header_1_0(file, header | {"shape": (count, *shape)})

    write_header(source.num_files)
    data_offset = file.tell()
    bar = None
    if progress:
        bar = Progress(source.num_files, "image")
    count = 0
    for batch in source.dataset.batch(_PREPARE_BATCH).as_numpy_iterator():
        file.write(batch.tobytes())
        count += len(batch)
        if bar is not None:
            done = count + len(source.skip_log.skipped if source.skip_log else ())
            bar.update(done, finalize=False)
    if bar is not None:
        bar.update(source.num_files, finalize=True)
    write_header(count)
    if file.tell() != data_offset:
        raise AssertionError("The .npy header changed length.")
    return count


def _prepare(
    source: source_lib.Source,
    folder: pathlib.Path,
    stem: str,
    fingerprint: str,
    progress,
) -> dict:
    """Decodes a split into folder/stem.npy and writes its manifest."""
    if source.skip_log is not None:
        source.skip_log.require_image()
    shape = source.dataset.element_spec.shape
    needed = source.num_files * shape.num_elements() + 4096
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"it needs {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB are free",
        )
    npy = folder / f"{stem}.npy"
    print(
        f"svae: preparing {source.description}: decoding {source.num_files} files "
        f"once into {npy} (later loads read it)",
        flush=True,
    )
    start = time.perf_counter()
    counted = {}

    def write(file) -> None:
        """Decodes into the temp file, turning a decoding failure into its error."""
        try:
            counted["count"] = _write_images(source, file, tuple(shape), progress)
        except tf.errors.OpError as error:
            message = error.message.partition("DatasetError: ")[2]
            if not message:
                raise
            raise source_lib.DatasetError(message.splitlines()[0]) from error

    _write_atomically(npy, write)
    skipped = source.skip_log.skipped if source.skip_log else {}
    manifest = {
        "format": CACHE_FORMAT_VERSION,
        "fingerprint": fingerprint,
        "identity": source.identity,
        "source": source.description,
        "count": counted["count"],
        "num_files": source.num_files,
        "shape": [counted["count"], *shape],
        "dtype": "uint8",
        "num_skipped": len(skipped),
        "skipped": skipped,
        "seconds": round(time.perf_counter() - start, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    text = json.dumps(manifest, indent=1).encode("utf-8")
    _write_atomically(folder / f"{stem}.json", lambda file: file.write(text))
    return manifest


def load_prepared(source: source_lib.Source, cache_dir, progress: bool):
    """Returns (uint8 images, skip log, `.npy` path) of the prepared cache of source.

    Prepares the cache first when it is missing, damaged or stale. When the
    cache folder cannot be written, warns and returns None: the caller
    decodes instead.
    """
    folder = pathlib.Path(cache_dir).expanduser()
    fingerprint = _fingerprint(source)
    prefix = _cache_prefix(source.identity)
    stem = prefix + fingerprint[:16]
    shape = tuple(source.dataset.element_spec.shape)
    manifest = _read_manifest(folder / f"{stem}.json")
    array = None
    found = manifest is not None and manifest.get("fingerprint") == fingerprint
    if found:
        array = _open_prepared(folder / f"{stem}.npy", manifest, shape)
        if array is None:
            logging.warning(
                "The prepared cache %s is damaged: preparing it again.",
                folder / f"{stem}.npy",
            )
    if array is None:
        found = False
        try:
            manifest = _prepare(source, folder, stem, fingerprint, progress)
        except OSError as error:
            logging.warning(
                "Cannot write the prepared cache of %s to %s (%s). Decoding it "
                "without a cache instead, again at every start. Pass a writable "
                "--cache_dir (or set %s), or --cache_dir= to decode without a "
                "cache and silence this.",
                source.description,
                folder,
                error,
                CACHE_DIR_ENV,
            )
            return None
        try:
            _remove_leftovers(folder, prefix, source.identity, keep=stem)
        except OSError as error:
            logging.warning("Cannot clean up %s: %s", folder, error)
        array = _open_prepared(folder / f"{stem}.npy", manifest, shape)
        if array is None:
            raise source_lib.DatasetError(
                f"The prepared cache {folder / stem}.npy vanished."
            )
    skip_log = decode.SkipLog(
        f"{source.description}, prepared in {folder}", manifest["num_files"]
    )
    for path, reason in manifest["skipped"].items():
        skip_log.skip(path, reason)
    skip_log.decoded()
    if found:  # The preparing pass has reported its skipped files itself.
        skip_log.finish()
    return _array_dataset(array), skip_log, folder / f"{stem}.npy"
