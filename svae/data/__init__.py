"""Input pipelines: data sets by name, and the training pipeline in YCbCr.

`load(name, split, ...)` returns an unbatched `tf.data.Dataset` of float32 RGB
images `[image_size, image_size, 3]` in [0, 1] (multiples of 1/255), in a
fixed order. `training_pipeline(dataset, batch_size, ...)` shuffles, flips,
converts to the model's representation (see `svae.color`), batches, caches
and shards it. Element of a training batch, a dict:

    {"y":    float32 [batch, height, width],
     "cbcr": float32 [batch, height / chroma_factor, width / chroma_factor, 2]
             (color="ycbcr" only),
     "rgb":  float32 [batch, height, width, 3]}   # for metrics in RGB

Files are decoded with Pillow inside a parallel `tf.numpy_function`. A file
that fails to decode (corrupt, truncated, not an image, or too small) is
skipped; at the end of the first pass over the data the skipped files are
reported once, as one absl warning with their count and the first few paths.
If no file of a split decodes, `load` raises a `DatasetError` naming the
source and the first files with their reasons (it decodes files in order
until one does before any tf.data op runs, so the error comes without
TensorFlow's logs of a failed op).

With `cache_dir`, `load` decodes a file-based split once into a prepared
cache, a uint8 `[N, S, S, 3]` `.npy` with a JSON manifest in `cache_dir`, and
later loads read that file instead of decoding (see `load`);
`python -m svae.data.prepare` does it ahead of time.

The modules:

    loading        load, load_split, load_batch
    registry       data set name -> the source module that opens its splits
    source         what a source gives load(): `Source`, `DatasetError`
    sample_photos, folder, lsun, celeb_a
                   the sources, one module each
    decode         Pillow decoding in tf.data, the log of skipped files
    cache          the prepared cache
    info           what load() knows of a split (size_hint, skipped_files)
    pipeline       training_pipeline, to_model_inputs
    prepare        `python -m svae.data.prepare`
"""

from svae import lazy
from svae.config import CACHE_DIR_ENV, default_cache_dir

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_FORMAT_VERSION",
    "CELEB_A_BLUR_SIGMA",
    "CELEB_A_CROP_COLS",
    "CELEB_A_CROP_ROWS",
    "CELEB_A_URL",
    "DATASET_NAMES",
    "LSUN_URLS",
    "SAMPLE_CROPS_PER_PHOTO",
    "SAMPLE_PHOTOS",
    "DatasetError",
    "SplitInfo",
    "celeb_a_preprocess",
    "default_cache_dir",
    "folder_files",
    "load",
    "load_batch",
    "load_split",
    "prepared_size",
    "random_crops",
    "size_hint",
    "skipped_files",
    "split_info",
    "to_model_inputs",
    "training_pipeline",
]

# The modules that define the names of `__all__`: imported on first use, so
# that importing `svae.data` (as `python -m svae.data.prepare` does before its
# flags are parsed) does not import TensorFlow (svae.cli).
_MODULES = (
    "loading",
    "info",
    "source",
    "cache",
    "pipeline",
    "registry",
    "sample_photos",
    "celeb_a",
    "folder",
    "lsun",
)

__getattr__ = lazy.module_getattr(
    __name__, __all__, _MODULES, submodules=(*_MODULES, "decode", "prepare")
)
