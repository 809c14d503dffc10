"""`sample_photos`: random crops of the photographs shipped with scikit-image.

No download: the photographs are inside scikit-image's wheel. The split is by
photograph, so test crops come from photographs the training set never saw.
The crops are made in memory (seconds) and never cached.
"""

import functools
import math

import numpy as np
import tensorflow as tf
from PIL import Image

from svae.data import source as source_lib

# Photographs bundled in scikit-image's wheel (no download), split by
# photograph. The stereo pair stays in one split: its views nearly coincide.
SAMPLE_PHOTOS = {
    "train": (
        "astronaut",
        "chelsea",
        "rocket",
        "motorcycle_left",
        "motorcycle_right",
        "hubble_deep_field",
        "retina",
        "camera",
        "grass",
        "brick",
        "coins",
        "moon",
    ),
    "test": ("coffee", "immunohistochemistry", "gravel", "clock"),
}
SAMPLE_CROPS_PER_PHOTO = 512


@functools.lru_cache(maxsize=1)
def photo_arrays() -> dict[str, np.ndarray]:
    """Loads the bundled scikit-image photographs as uint8 RGB arrays."""
    import skimage.data

    photos = {}
    left, right, _ = skimage.data.stereo_motorcycle()
    photos["motorcycle_left"], photos["motorcycle_right"] = left, right
    for names in SAMPLE_PHOTOS.values():
        for name in names:
            if name not in photos:
                photos[name] = getattr(skimage.data, name)()
    for name, photo in photos.items():
        photo = np.asarray(photo, dtype=np.uint8)
        photos[name] = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
    return photos


def random_crops(photo: np.ndarray, image_size: int, count: int, rng) -> np.ndarray:
    """Returns uint8 `[count, image_size, image_size, 3]` random crops of a photo.

    Each crop is a square of random side between `image_size` and the photo's
    shorter side (log-uniform) at a random position, resized to `image_size`
    with Pillow's antialiased bicubic filter.

    Args:
      photo: uint8 `[height, width, 3]`, both sides at least `image_size`.
      image_size: side of the crops.
      count: number of crops.
      rng: a `numpy.random.Generator`.
    """
    height, width = photo.shape[:2]
    image = Image.fromarray(photo)
    max_scale = math.log(min(height, width) / image_size)
    crops = []
    for _ in range(count):
        side = image_size * math.exp(rng.uniform(0.0, max_scale))
        left = rng.uniform(0.0, width - side)
        top = rng.uniform(0.0, height - side)
        crop = image.resize(
            (image_size, image_size),
            Image.Resampling.BICUBIC,
            box=(left, top, left + side, top + side),
        )
        crops.append(np.asarray(crop, dtype=np.uint8))
    return np.stack(crops)


def _crops(split: str, image_size: int, seed: int, crops_per_photo: int):
    """Returns uint8 `[n, image_size, image_size, 3]` random crops of photos."""
    crops = []
    for index, name in enumerate(SAMPLE_PHOTOS[split]):
        photo = photo_arrays()[name]
        if min(photo.shape[:2]) < image_size:
            continue
        rng = np.random.default_rng([seed, index, 0 if split == "train" else 1])
        crops.append(random_crops(photo, image_size, crops_per_photo, rng))
    if not crops:
        raise source_lib.DatasetError(
            f"image_size {image_size} is larger than every sample photograph."
        )
    return np.concatenate(crops)


def open_split(request: source_lib.Request) -> source_lib.Source:
    """Makes the crops of one split in memory; they depend only on the seed."""
    source_lib.check_split(request.name, request.split, tuple(SAMPLE_PHOTOS))
    crops = _crops(
        request.split, request.image_size, request.seed, request.crops_per_photo
    )
    identity = {
        "name": "sample_photos",
        "split": request.split,
        "image_size": request.image_size,
        "seed": request.seed,
        "crops_per_photo": request.crops_per_photo,
    }
    return source_lib.Source(
        tf.data.Dataset.from_tensor_slices(crops),
        len(crops),
        None,
        f"sample_photos ({request.split})",
        identity,
        list,
        in_memory=True,
    )
