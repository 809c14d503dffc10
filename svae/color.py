"""YCbCr colour space and the chroma path of the paper (section 4.1).

One implementation, in TensorFlow ops, shared by the input pipeline, the
model's outputs, evaluation (MSE in RGB) and figures. Every function takes
images shaped `[..., height, width, channels]` with any number of leading
batch dimensions, in float32 or float64, and runs eagerly, inside
`tf.function` and under XLA.

Colour space: full-range YCbCr of JPEG/JFIF (ITU-R BT.601 luma weights), with
every channel in [0, 1] for RGB in [0, 1] and Cb, Cr centred at 0.5:

    Y  =  0.299    R + 0.587    G + 0.114    B
    Cb = -0.168736 R - 0.331264 G + 0.5      B + 0.5
    Cr =  0.5      R - 0.418688 G - 0.081312 B + 0.5

The inverse is the exact matrix inverse (not the rounded published one), so a
round trip is exact up to float rounding.

Chroma path: Cb and Cr are blurred and downsampled by an integer factor
(4 in the paper: 64x64 -> 16x16) and upsampled back for display and RGB
metrics. Both resamplings are separable linear maps, cheap and
differentiable: the downsampling two small matrix products, the upsampling
two gathers and a linear interpolation. Every RGB image svae shows or serves
(figures, TensorBoard, the SavedModel's `*_rgb` outputs) and the RGB MSE
upsample the chroma bilinearly (`merge_to_rgb`'s default); only the encoder's
input repeats it ("nearest", `svae.models`).
"""

import functools
import math

import numpy as np
import tensorflow as tf

_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float64,
)
_YCBCR_OFFSET = np.array([0.0, 0.5, 0.5], dtype=np.float64)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def _float_tensor(x, name: str) -> tf.Tensor:
    """Converts x to a float tensor, keeping float64 and promoting the rest."""
    x = tf.convert_to_tensor(x, name=name)
    if x.dtype not in (tf.float32, tf.float64):
        x = tf.cast(x, tf.float32)
    return x


def rgb_to_ycbcr(rgb) -> tf.Tensor:
    """Converts RGB in [0, 1] to full-range YCbCr in [0, 1].

    Args:
      rgb: float `[..., height, width, 3]` RGB values in [0, 1].

    Returns:
      `[..., height, width, 3]` Y, Cb, Cr of the same dtype.
    """
    rgb = _float_tensor(rgb, "rgb")
    matrix = tf.constant(_RGB_TO_YCBCR, dtype=rgb.dtype)
    offset = tf.constant(_YCBCR_OFFSET, dtype=rgb.dtype)
    return tf.einsum("...c,dc->...d", rgb, matrix) + offset


def ycbcr_to_rgb(ycbcr) -> tf.Tensor:
    """Converts full-range YCbCr back to RGB; the exact inverse of rgb_to_ycbcr.

    Args:
      ycbcr: float `[..., height, width, 3]` Y, Cb, Cr.

    Returns:
      `[..., height, width, 3]` RGB of the same dtype, not clipped.
    """
    ycbcr = _float_tensor(ycbcr, "ycbcr")
    matrix = tf.constant(_YCBCR_TO_RGB, dtype=ycbcr.dtype)
    offset = tf.constant(_YCBCR_OFFSET, dtype=ycbcr.dtype)
    return tf.einsum("...c,dc->...d", ycbcr - offset, matrix)


def to_gray(rgb) -> tf.Tensor:
    """Returns the luma Y of RGB images, the grayscale representation.

    Args:
      rgb: float `[..., height, width, 3]` RGB values in [0, 1].

    Returns:
      `[..., height, width]` Y in [0, 1].
    """
    rgb = _float_tensor(rgb, "rgb")
    weights = tf.constant(_RGB_TO_YCBCR[0], dtype=rgb.dtype)
    return tf.einsum("...c,c->...", rgb, weights)


def chroma_blur_sigma(factor: int) -> float:
    """Returns the Gaussian pre-blur sigma used before area downsampling.

    Args:
      factor: the chroma downsampling factor.

    Returns:
      `(factor - 1) / 2`, the anti-aliasing sigma of scikit-image's rescale.
    """
    return max(0.0, (factor - 1) / 2.0)


def _reflect(index: int, size: int) -> int:
    """Maps an index outside [0, size) back inside by symmetric reflection."""
    period = 2 * size
    index %= period
    return index if index < size else period - 1 - index


@functools.lru_cache(maxsize=64)
def _downsample_matrix(size: int, factor: int) -> np.ndarray:
    """Returns the `[size // factor, size]` blur-then-area-average matrix."""
    sigma = chroma_blur_sigma(factor)
    blur = np.zeros((size, size))
    if sigma == 0.0:
        blur = np.eye(size)
    else:
        radius = math.ceil(3.0 * sigma)
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        taps /= taps.sum()
        for i in range(size):
            for offset, tap in zip(range(-radius, radius + 1), taps, strict=True):
                blur[i, _reflect(i + offset, size)] += tap
    area = np.kron(np.eye(size // factor), np.full((1, factor), 1.0 / factor))
    return area @ blur


@functools.lru_cache(maxsize=64)
def _interpolation(size: int, factor: int, method: str) -> tuple:
    """Returns `(lower, upper, frac)`, each `[size * factor]`, of one axis.

    Output pixel i is `x[lower] + frac * (x[upper] - x[lower])`.
    """
    out = np.arange(size * factor)
    if method == "nearest":
        return out // factor, out // factor, np.zeros(out.shape)
    # Half-pixel centres: low-res sample j sits at the centre of its block,
    # (j + 0.5) * factor in pixel units, where the blur and block mean of
    # downsample_chroma put it.
    coords = np.clip((out + 0.5) / factor - 0.5, 0.0, size - 1.0)
    lower = np.floor(coords).astype(int)
    upper = np.minimum(lower + 1, size - 1)
    return lower, upper, coords - lower


def _interpolate_axis(images: tf.Tensor, axis: int, size: int, factor: int, method):
    """Interpolates `[..., H, W, C]` images along axis -3 (H) or -2 (W)."""
    lower, upper, frac = _interpolation(size, factor, method)
    low = tf.gather(images, lower, axis=axis)
    if not frac.any():
        return low
    high = tf.gather(images, upper, axis=axis)
    frac = tf.constant(frac.reshape([-1] + [1] * (-axis - 1)), dtype=images.dtype)
    # As a step from one sample towards the next rather than a weighted sum:
    # equal neighbours give exactly their value (constant chroma stays
    # constant to the bit), and a non-finite sample spoils only its neighbours.
    return low + frac * (high - low)


def _static_hw(images: tf.Tensor, name: str) -> tuple[int, int]:
    """Returns the static height and width of `[..., H, W, C]` images."""
    if images.shape.rank is not None and images.shape.rank < 3:
        raise ValueError(f"{name} must be [..., height, width, channels].")
    height, width = images.shape[-3], images.shape[-2]
    if height is None or width is None:
        raise ValueError(f"{name} needs a static height and width, got {images.shape}.")
    return height, width


def _apply_separable(images: tf.Tensor, rows: np.ndarray, cols: np.ndarray):
    """Applies `rows @ image @ cols^T` to every channel of `[..., H, W, C]`."""
    rows = tf.constant(rows, dtype=images.dtype)
    cols = tf.constant(cols, dtype=images.dtype)
    images = tf.einsum("ih,...hwc->...iwc", rows, images)
    return tf.einsum("jw,...iwc->...ijc", cols, images)


def downsample_chroma(chroma, factor: int = 4) -> tf.Tensor:
    """Blurs and downsamples chroma channels by an integer factor.

    A Gaussian blur (sigma = (factor - 1) / 2, symmetric boundary) followed by
    an area average over `factor x factor` blocks. The area average alone is a
    box filter whose side lobes let chroma detail above the new Nyquist
    frequency alias into the low-resolution image; the Gaussian suppresses
    them, as scikit-image's `rescale(anti_aliasing=True)` does. The symmetric
    boundary keeps edges unbiased (zero padding would pull them towards 0,
    not the neutral 0.5).

    Args:
      chroma: float `[..., height, width, channels]`, height and width static
        and divisible by `factor`.
      factor: integer downsampling factor; 1 returns the input.

    Returns:
      `[..., height // factor, width // factor, channels]`, same dtype.
    """
    chroma = _float_tensor(chroma, "chroma")
    height, width = _static_hw(chroma, "chroma")
    if factor < 1 or height % factor or width % factor:
        raise ValueError(
            f"Chroma size {height}x{width} is not divisible by factor {factor}."
        )
    if factor == 1:
        return chroma
    return _apply_separable(
        chroma, _downsample_matrix(height, factor), _downsample_matrix(width, factor)
    )


def upsample_chroma(chroma, factor: int = 4, method: str = "bilinear") -> tf.Tensor:
    """Upsamples chroma channels by an integer factor.

    Bilinear (default) interpolates between the low-resolution samples placed
    at the centres of their `factor x factor` blocks (half-pixel centres, as
    `tf.image.resize`), clamping at the border: smooth colour with no block
    edges, as image viewers and JPEG decoders show chroma. Each pixel lies
    between its two nearest samples on each axis, so the result never leaves
    the samples' range (bicubic would overshoot at colour edges and need
    clipping) and constant chroma stays exactly constant.
    "nearest" repeats each sample over its block, which shows as colour
    blocks: only the encoder's input uses it.

    Args:
      chroma: float `[..., height, width, channels]` with static height, width.
      factor: integer upsampling factor; 1 returns the input.
      method: "bilinear" or "nearest".

    Returns:
      `[..., height * factor, width * factor, channels]`, same dtype.
    """
    chroma = _float_tensor(chroma, "chroma")
    height, width = _static_hw(chroma, "chroma")
    if method not in ("bilinear", "nearest"):
        raise ValueError(f"method must be 'bilinear' or 'nearest', got {method!r}.")
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}.")
    if factor == 1:
        return chroma
    chroma = _interpolate_axis(chroma, -3, height, factor, method)
    return _interpolate_axis(chroma, -2, width, factor, method)


def split_ycbcr(rgb, chroma_factor: int = 4) -> tuple[tf.Tensor, tf.Tensor]:
    """Splits RGB images into the model's representation: Y and reduced CbCr.

    Args:
      rgb: float `[..., height, width, 3]` RGB in [0, 1].
      chroma_factor: downsampling factor of Cb and Cr.

    Returns:
      `(y, cbcr)`: `y` is `[..., height, width]`, `cbcr` is
      `[..., height // chroma_factor, width // chroma_factor, 2]`.
    """
    ycbcr = rgb_to_ycbcr(rgb)
    return ycbcr[..., 0], downsample_chroma(ycbcr[..., 1:], chroma_factor)


def merge_to_rgb(
    y, cbcr=None, chroma_factor: int = 4, method: str = "bilinear", clip: bool = False
) -> tf.Tensor:
    """Reassembles RGB images from Y and reduced CbCr (or Y alone).

    Args:
      y: float `[..., height, width]` luma.
      cbcr: float `[..., height // chroma_factor, width // chroma_factor, 2]`,
        or None for grayscale (Cb = Cr = 0.5, so R = G = B = Y).
      chroma_factor: upsampling factor of Cb and Cr.
      method: chroma interpolation, "bilinear" or "nearest".
      clip: whether to clip the result to [0, 1] (for display).

    Returns:
      `[..., height, width, 3]` RGB, same dtype as `y`.
    """
    y = _float_tensor(y, "y")
    if cbcr is None:
        cbcr_full = tf.fill(tf.concat([tf.shape(y), [2]], 0), tf.constant(0.5, y.dtype))
    else:
        cbcr_full = upsample_chroma(
            tf.cast(_float_tensor(cbcr, "cbcr"), y.dtype), chroma_factor, method
        )
    rgb = ycbcr_to_rgb(tf.concat([y[..., tf.newaxis], cbcr_full], axis=-1))
    return tf.clip_by_value(rgb, 0.0, 1.0) if clip else rgb
