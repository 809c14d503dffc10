"""Tests of svae.color against Pillow, BT.601's coefficients, scipy and tf.image."""

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from PIL import Image

from svae import color

# ITU-R BT.601 / JFIF full-range coefficients as published (JPEG File
# Interchange Format 1.02, section 7), written out independently here.
_FORWARD = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.1687, -0.3313, 0.5],
        [0.5, -0.4187, -0.0813],
    ]
)
_INVERSE = np.array(
    [
        [1.0, 0.0, 1.402],
        [1.0, -0.34414, -0.71414],
        [1.0, 1.772, 0.0],
    ]
)


def _random(shape, dtype=np.float64, seed=0):
    """Returns uniform [0, 1) values of a shape and dtype."""
    return np.random.default_rng(seed).random(shape).astype(dtype)


def test_matches_pillow_ycbcr_on_uint8_images():
    """Pillow's convert('YCbCr') agrees to within its 8-bit fixed-point rounding."""
    pixels = np.random.default_rng(1).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    reference = np.asarray(Image.fromarray(pixels).convert("YCbCr"), np.float64)
    ours = color.rgb_to_ycbcr(pixels / 255.0).numpy() * 255.0
    np.testing.assert_allclose(ours, reference, atol=1.05)
    assert np.abs(ours - reference).mean() < 0.5


def test_matches_published_bt601_coefficients():
    """Forward and inverse agree with the published (rounded) JFIF matrices."""
    rgb = _random((16, 16, 3))
    expected = rgb @ _FORWARD.T + [0.0, 0.5, 0.5]
    ycbcr = color.rgb_to_ycbcr(rgb).numpy()
    np.testing.assert_allclose(ycbcr, expected, atol=2e-4)
    expected_rgb = (ycbcr - [0.0, 0.5, 0.5]) @ _INVERSE.T
    np.testing.assert_allclose(color.ycbcr_to_rgb(ycbcr), expected_rgb, atol=2e-4)


@pytest.mark.parametrize(
    "rgb, ycbcr",
    [
        ((0.0, 0.0, 0.0), (0.0, 0.5, 0.5)),
        ((1.0, 1.0, 1.0), (1.0, 0.5, 0.5)),
        ((1.0, 0.0, 0.0), (0.299, 0.331264, 1.0)),
        ((0.0, 0.0, 1.0), (0.114, 1.0, 0.418688)),
    ],
)
def test_known_colours(rgb, ycbcr):
    """Black, white, red and blue map to their textbook YCbCr values."""
    got = color.rgb_to_ycbcr(np.array(rgb)[None, None]).numpy()[0, 0]
    np.testing.assert_allclose(got, ycbcr, atol=1e-12)


@pytest.mark.parametrize("dtype, atol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_round_trip_is_exact(dtype, atol, batch):
    """ycbcr_to_rgb inverts rgb_to_ycbcr to float tolerance, any batch shape."""
    rgb = _random((*batch, 8, 6, 3), dtype)
    ycbcr = color.rgb_to_ycbcr(rgb)
    assert ycbcr.dtype == dtype and ycbcr.shape == rgb.shape
    np.testing.assert_allclose(color.ycbcr_to_rgb(ycbcr), rgb, atol=atol)


def test_to_gray_is_luma():
    """to_gray returns the Y channel without a channel axis."""
    rgb = _random((2, 8, 8, 3))
    np.testing.assert_allclose(
        color.to_gray(rgb), color.rgb_to_ycbcr(rgb)[..., 0], atol=1e-15
    )
    assert color.to_gray(rgb).shape == (2, 8, 8)


def test_integer_input_becomes_float32():
    """Integer tensors are promoted to float32 rather than truncated."""
    assert color.rgb_to_ycbcr(np.ones((2, 2, 3), np.int32)).dtype == tf.float32


@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_matches_scipy_blur_then_block_mean(factor):
    """Gaussian blur (symmetric edges) then block mean, as scipy computes it."""
    chroma = _random((2, 32, 24, 2), seed=3)
    sigma = color.chroma_blur_sigma(factor)
    blurred = scipy.ndimage.gaussian_filter(
        chroma, sigma=(0, sigma, sigma, 0), mode="reflect", truncate=3.0
    )
    expected = blurred.reshape(2, 32 // factor, factor, 24 // factor, factor, 2)
    expected = expected.mean(axis=(2, 4))
    got = color.downsample_chroma(chroma, factor)
    assert got.shape == (2, 32 // factor, 24 // factor, 2)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_upsample_bilinear_matches_tf_image_resize():
    """Bilinear upsampling equals tf.image.resize (half-pixel centres)."""
    chroma = _random((3, 16, 12, 2), np.float32, seed=4)
    expected = tf.image.resize(chroma, (64, 48), method="bilinear")
    got = color.upsample_chroma(chroma, 4)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_upsample_nearest_repeats_blocks():
    """Nearest upsampling repeats each sample over its factor x factor block."""
    chroma = _random((5, 4, 2), seed=5)
    expected = np.repeat(np.repeat(chroma, 4, axis=0), 4, axis=1)
    np.testing.assert_array_equal(color.upsample_chroma(chroma, 4, "nearest"), expected)


def test_chroma_path_keeps_flat_and_smooth_chroma():
    """Down then up is exact for flat chroma and close for smooth chroma."""
    flat = np.full((64, 64, 2), 0.3)
    np.testing.assert_allclose(
        color.upsample_chroma(color.downsample_chroma(flat)), flat, atol=1e-12
    )
    rows, cols = np.meshgrid(
        np.linspace(0, 1, 64), np.linspace(0, 1, 64), indexing="ij"
    )
    smooth = np.stack([0.5 + 0.2 * np.sin(2 * rows), 0.5 + 0.2 * cols], -1)
    back = color.upsample_chroma(color.downsample_chroma(smooth)).numpy()
    assert np.abs(back - smooth)[8:-8, 8:-8].max() < 0.01
    assert np.abs(back - smooth).max() < 0.05


def _smooth_chroma(size=64):
    """Returns `[size, size, 2]` chroma varying smoothly: a wave and a blob."""
    rows, cols = np.meshgrid(
        np.arange(size) / size, np.arange(size) / size, indexing="ij"
    )
    return np.stack(
        [
            0.5 + 0.2 * np.sin(2 * np.pi * rows) * np.cos(np.pi * cols),
            0.5 + 0.3 * np.exp(-((rows - 0.4) ** 2 + (cols - 0.6) ** 2) / 0.045),
        ],
        -1,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_smooth_upsampling_recovers_chroma_far_better_than_nearest(dtype):
    """Down then bilinear up is less than 0.6x nearest's error on smooth chroma."""
    smooth = _smooth_chroma().astype(dtype)
    low = color.downsample_chroma(smooth, 4)
    errors = {
        method: np.sqrt(np.mean((color.upsample_chroma(low, 4, method) - smooth) ** 2))
        for method in ("bilinear", "nearest")
    }
    # Measured: 0.0049 against 0.0110; the rest is the blur before downsampling.
    assert errors["bilinear"] < 0.6 * errors["nearest"], errors


def test_bilinear_upsampling_is_centred_on_the_blocks():
    """Each low-res sample sits at the centre of the block it averages.

    A linear ramp survives down- and upsampling exactly wherever the blur
    does not reach the border: a half-pixel misalignment (or corner-aligned
    interpolation) would shift it by a fraction of its slope per pixel.
    """
    rows, cols = np.meshgrid(np.arange(64.0), np.arange(64.0), indexing="ij")
    ramp = np.stack([0.2 + 0.008 * rows, 0.7 - 0.005 * cols + 0.003 * rows], -1)
    low = color.downsample_chroma(ramp, 4)
    # Blocks 2..13 are blurred (radius 5) inside the image; pixels 10..53 lie
    # between the centres (4j + 1.5) of two of them.
    inner = slice(10, 54)
    back = color.upsample_chroma(low, 4).numpy()
    np.testing.assert_allclose(back[inner, inner], ramp[inner, inner], atol=1e-12)
    nearest = color.upsample_chroma(low, 4, "nearest").numpy()
    assert np.abs(nearest - ramp)[inner, inner].max() > 0.01


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_constant_chroma_stays_exactly_constant(dtype, factor, method):
    """Upsampling constant chroma gives the constant to the bit, eager and XLA."""
    values = np.random.default_rng(factor).random((64, 1, 1, 2)).astype(dtype)
    chroma = np.broadcast_to(values, (64, 8, 6, 2))
    expected = np.broadcast_to(values, (64, 8 * factor, 6 * factor, 2))
    np.testing.assert_array_equal(
        color.upsample_chroma(chroma, factor, method), expected
    )
    compiled = tf.function(
        lambda c: color.upsample_chroma(c, factor, method), jit_compile=True
    )
    np.testing.assert_array_equal(compiled(tf.constant(chroma)), expected)


@pytest.mark.parametrize("dtype, maxulp", [(np.float32, 4), (np.float64, 16)])
def test_constant_colour_survives_the_chroma_path(dtype, maxulp):
    """Flat colour split and merged again is that colour, to float rounding."""
    values = np.random.default_rng(7).random((16, 1, 1, 3)).astype(dtype)
    rgb = np.broadcast_to(values, (16, 32, 32, 3))
    back = color.merge_to_rgb(*color.split_ycbcr(rgb), clip=True).numpy()
    assert back.dtype == dtype
    # The downsampling's Gaussian taps round; the upsampling adds nothing.
    np.testing.assert_allclose(back, rgb, rtol=0, atol=maxulp * np.finfo(dtype).eps)
    # Shown as 8-bit pixels, every pixel of an image is the same.
    pixels = np.round(back * 255.0)
    np.testing.assert_array_equal(pixels, np.broadcast_to(pixels[:, :1, :1], rgb.shape))


def test_bilinear_stays_within_its_samples_and_rgb_within_range():
    """No overshoot: upsampled chroma within its samples' range; RGB in [0, 1]."""
    rng = np.random.default_rng(8)
    # Extreme chroma: every sample at 0 or 1, the sharpest colour edges.
    chroma = rng.integers(0, 2, (4, 8, 8, 2)).astype(np.float32)
    up = color.upsample_chroma(chroma, 4).numpy()
    assert up.min() >= 0.0 and up.max() <= 1.0
    assert len(np.unique(up)) > 2  # Interpolated, not repeated.
    y = rng.uniform(-0.3, 1.3, (4, 32, 32)).astype(np.float32)
    rgb = color.merge_to_rgb(y, chroma, 4, clip=True).numpy()
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert rgb.min() == 0.0 and rgb.max() == 1.0  # Clipping had work to do.


def test_a_non_finite_chroma_sample_spoils_only_its_neighbourhood():
    """An inf sample reaches the pixels between it and its neighbours only."""
    chroma = np.full((1, 8, 8, 1), 0.5, np.float32)
    chroma[0, 3, 4, 0] = np.inf
    up = color.upsample_chroma(chroma, 4).numpy()[0, ..., 0]
    bad_rows, bad_cols = np.nonzero(~np.isfinite(up))
    # Block 3 covers pixels 12..15; interpolation reaches 2 pixels past it
    # on each side, the centres of the neighbouring blocks.
    assert bad_rows.min() >= 10 and bad_rows.max() <= 17
    assert bad_cols.min() >= 14 and bad_cols.max() <= 21


def test_split_and_merge_shapes_and_grayscale():
    """split gives [.., H, W] and [.., H/4, W/4, 2]; merge(y) alone is gray."""
    rgb = _random((2, 64, 64, 3), np.float32)
    y, cbcr = color.split_ycbcr(rgb)
    assert y.shape == (2, 64, 64) and cbcr.shape == (2, 16, 16, 2)
    rgb_back = color.merge_to_rgb(y, cbcr)
    assert rgb_back.shape == rgb.shape and rgb_back.dtype == tf.float32
    gray = color.merge_to_rgb(y).numpy()
    np.testing.assert_allclose(gray, np.repeat(y.numpy()[..., None], 3, -1), atol=1e-6)


def test_merge_recovers_photo_up_to_chroma_detail():
    """A real photograph survives the 4x chroma reduction with small RGB error."""
    import skimage.data

    photo = skimage.data.astronaut()[100:228:2, 150:278:2] / 255.0
    back = color.merge_to_rgb(*color.split_ycbcr(photo), clip=True).numpy()
    assert back.min() >= 0.0 and back.max() <= 1.0
    assert np.abs(back - photo).mean() < 0.02
    # Luma carries the detail: Y is untouched by the chroma path.
    np.testing.assert_allclose(
        color.to_gray(color.merge_to_rgb(*color.split_ycbcr(photo))),
        color.to_gray(photo),
        atol=1e-12,
    )


def test_runs_under_xla_like_eager():
    """The whole path compiles with XLA and matches eager execution."""
    rgb = tf.constant(_random((2, 32, 32, 3), np.float32))

    @tf.function(jit_compile=True)
    def round_trip(images):
        """Splits and merges images."""
        return color.merge_to_rgb(*color.split_ycbcr(images))

    np.testing.assert_allclose(
        round_trip(rgb), color.merge_to_rgb(*color.split_ycbcr(rgb)), atol=1e-6
    )


def test_gradients_flow_through_merge():
    """merge_to_rgb is differentiable in y and cbcr (for RGB-space losses)."""
    y = tf.Variable(_random((1, 16, 16), np.float32))
    cbcr = tf.Variable(_random((1, 4, 4, 2), np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(color.merge_to_rgb(y, cbcr) ** 2)
    grad_y, grad_cbcr = tape.gradient(loss, [y, cbcr])
    assert np.all(np.isfinite(grad_y)) and np.abs(grad_cbcr).sum() > 0


def test_rejects_sizes_not_divisible_by_factor():
    """A chroma size that the factor does not divide is a clear error."""
    with pytest.raises(ValueError, match="not divisible by factor 4"):
        color.downsample_chroma(np.zeros((10, 12, 2)), 4)
