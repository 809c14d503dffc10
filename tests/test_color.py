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
