"""Sparse lower-triangular precision factors of images, without dense matrices.

An image of `H x W` pixels is a vector in raster order, pixel `(i, j)` at index
`p = i * W + j`. A precision factor `L` (`Lambda = L L^T`) is lower-triangular
and links each pixel to the raster-later half of its `kernel_size x
kernel_size` neighbourhood (dilated by `dilation`):

```none
L[p, p] = exp(log_diag[..., i, j])
L[q, p] = off_diag[..., i, j, m]    q = (i + dy_m, j + dx_m), m-th offset
```

with the offsets of `neighbour_offsets`. Entries whose neighbour falls outside
the image are ignored. Every function here costs `O(H * W * K)` time and
memory, `K = (kernel_size**2 - 1) // 2`, except the `dense_*` helpers, which
exist for tests and small images.

The triangular solves are level-scheduled ("wavefront") substitutions: pixel
`(i, j)` only depends on pixels with a larger (for `L^T`) or smaller (for `L`)
level `t = (r + 1) * (i // d) + (j // d)`, `r = (kernel_size - 1) // 2`,
`d = dilation`, so all pixels of one level are solved at once. The image is
gathered into a skewed `[levels, lanes]` layout in which every neighbour sits
at a fixed (level, lane) shift, and one `tf.while_loop` of ordinary TF ops
walks the `~(r + 1) * H / d + W / d` levels: it runs on CPU, GPU and TPU,
under XLA, with gradients.
"""

import functools

import numpy as np
import tensorflow as tf

__all__ = [
    "neighbour_offsets",
    "num_off_diagonals",
    "off_diag_mask",
    "factor_matvec",
    "factor_transpose_matvec",
    "factor_solve",
    "factor_transpose_solve",
    "dense_factor",
]


def _check_structure(kernel_size, dilation):
    """Raises ValueError unless kernel_size is odd >= 3 and dilation >= 1."""
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, (int, np.integer))
        or kernel_size < 3
        or kernel_size % 2 != 1
    ):
        raise ValueError(
            f"kernel_size must be an odd integer >= 3 (3, 5, 7, ...), "
            f"got {kernel_size!r}."
        )
    if (
        isinstance(dilation, bool)
        or not isinstance(dilation, (int, np.integer))
        or dilation < 1
    ):
        raise ValueError(f"dilation must be an integer >= 1, got {dilation!r}.")


def neighbour_offsets(kernel_size=3, dilation=1):
    """Returns the `(dy, dx)` offsets linked to each pixel, in `off_diag` order.

    With `r = (kernel_size - 1) // 2` and `d = dilation`: first `(0, d), (0, 2d),
    ..., (0, r*d)`, then for `dy = d, 2d, ..., r*d` (outer loop) the offsets
    `(dy, dx)` for `dx = -r*d, ..., r*d` in steps of `d`. These are the pixels
    after `(i, j)` in raster order within the dilated neighbourhood.

    Args:
      kernel_size: odd neighbourhood size, >= 3.
      dilation: spacing between linked pixels, >= 1.

    Returns:
      A list of `(kernel_size**2 - 1) // 2` pairs of Python ints.
    """
    _check_structure(kernel_size, dilation)
    r, d = (kernel_size - 1) // 2, dilation
    offsets = [(0, k * d) for k in range(1, r + 1)]
    for a in range(1, r + 1):
        offsets.extend((a * d, b * d) for b in range(-r, r + 1))
    return offsets


def num_off_diagonals(kernel_size=3):
    """Returns `K = (kernel_size**2 - 1) // 2`, the off-diagonals per pixel."""
    _check_structure(kernel_size, 1)
    return (kernel_size**2 - 1) // 2


@functools.lru_cache(maxsize=64)
def _off_diag_mask_np(height, width, kernel_size, dilation):
    """Cached numpy `[H, W, K]` mask of the entries inside the image."""
    offsets = neighbour_offsets(kernel_size, dilation)
    i = np.arange(height)[:, None, None]
    j = np.arange(width)[None, :, None]
    dy = np.array([o[0] for o in offsets])
    dx = np.array([o[1] for o in offsets])
    inside = (i + dy < height) & (j + dx >= 0) & (j + dx < width)
    inside.setflags(write=False)
    return inside


def off_diag_mask(height, width, kernel_size=3, dilation=1, dtype=tf.float32):
    """Returns the `[H, W, K]` mask of `off_diag` entries that enter `L`.

    Args:
      height: image height `H`.
      width: image width `W`.
      kernel_size: odd neighbourhood size, >= 3.
      dilation: spacing between linked pixels, >= 1.
      dtype: dtype of the returned tensor.

    Returns:
      A `[H, W, K]` tensor, 1 where the m-th neighbour of pixel `(i, j)` lies
      inside the image and 0 where it is ignored.
    """
    return tf.constant(
        _off_diag_mask_np(height, width, kernel_size, dilation), dtype=dtype
    )


def _shift(x, dy, dx):
    """Returns `y[..., i, j] = x[..., i + dy, j + dx]`, zero outside `x`."""
    if dy == 0 and dx == 0:
        return x
    height, width = x.shape[-2], x.shape[-1]
    rank = len(x.shape)
    paddings = [[0, 0]] * (rank - 2) + [
        [max(-dy, 0), max(dy, 0)],
        [max(-dx, 0), max(dx, 0)],
    ]
    padded = tf.pad(x, paddings)
    top, left = max(dy, 0), max(dx, 0)
    return padded[..., top : top + height, left : left + width]


def _static_hw(log_diag):
    """Returns the static `(H, W)` of a `[..., H, W]` tensor, or raises."""
    height, width = log_diag.shape[-2], log_diag.shape[-1]
    if height is None or width is None:
        raise ValueError(
            "The image size (the last two dimensions of log_diag) must be known "
            f"statically; got shape {log_diag.shape}."
        )
    return int(height), int(width)


def factor_transpose_matvec(log_diag, off_diag, x, kernel_size=3, dilation=1):
    """Returns `L^T x` for images `x`, in `O(H * W * K)`.

    `(L^T x)[p] = exp(log_diag[p]) x[p] + sum_m off_diag[p, m] x[p + o_m]`, the
    quantity whose squared norm is the Mahalanobis term of the log-likelihood.

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      off_diag: `[..., H, W, K]` off-diagonal entries, see the module docstring.
      x: `[..., H, W]` images; batch dimensions broadcast with the parameters'.
      kernel_size: odd neighbourhood size, >= 3.
      dilation: spacing between linked pixels, >= 1.

    Returns:
      `[..., H, W]` tensor `L^T x`.
    """
    offsets = neighbour_offsets(kernel_size, dilation)
    y = tf.exp(log_diag) * x
    for m, (dy, dx) in enumerate(offsets):
        y = y + off_diag[..., m] * _shift(x, dy, dx)
    return y


def factor_matvec(log_diag, off_diag, x, kernel_size=3, dilation=1):
    """Returns `L x` for images `x`, in `O(H * W * K)`.

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      off_diag: `[..., H, W, K]` off-diagonal entries.
      x: `[..., H, W]` images; batch dimensions broadcast with the parameters'.
      kernel_size: odd neighbourhood size, >= 3.
      dilation: spacing between linked pixels, >= 1.

    Returns:
      `[..., H, W]` tensor `L x`.
    """
    offsets = neighbour_offsets(kernel_size, dilation)
    height, width = _static_hw(log_diag)
    # A product whose target falls outside the image must not wrap around.
    mask = off_diag_mask(height, width, kernel_size, dilation, off_diag.dtype)
    y = tf.exp(log_diag) * x
    for m, (dy, dx) in enumerate(offsets):
        y = y + _shift(off_diag[..., m] * mask[..., m] * x, -dy, -dx)
    return y


class _SkewPlan:
    """Static index maps between raster order and the wavefront layout."""

    def __init__(self, height, width, kernel_size, dilation):
        r, d = (kernel_size - 1) // 2, dilation
        slope = r + 1
        coarse_h, coarse_w = -(-height // d), -(-width // d)
        self.num_levels = slope * (coarse_h - 1) + coarse_w
        self.num_lanes = coarse_h * d * d
        num_pixels = height * width
        i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        level = slope * (i // d) + j // d
        lane = (i // d) * d * d + (i % d) * d + (j % d)
        # Cells of the skewed grid that hold no pixel read a zero at the
        # sentinel index `num_pixels`.
        gather = np.full((self.num_levels, self.num_lanes), num_pixels, np.int32)
        gather[level, lane] = (i * width + j).astype(np.int32)
        self.gather = gather
        self.scatter = (level * self.num_lanes + lane).reshape(-1).astype(np.int32)
        offsets = neighbour_offsets(kernel_size, dilation)
        self.level_shifts = [slope * (dy // d) + dx // d for dy, dx in offsets]
        self.lane_shifts = [(dy // d) * d * d for dy, dx in offsets]
        self.window = max(self.level_shifts)
        self.lane_pad = max(self.lane_shifts)


@functools.lru_cache(maxsize=64)
def _skew_plan(height, width, kernel_size, dilation):
    """Cached `_SkewPlan` for one image size and neighbourhood."""
    return _SkewPlan(height, width, kernel_size, dilation)


def _to_skewed(x, plan, fill):
    """Maps `[..., H, W]` to `[levels, ..., lanes]`, `fill` in empty cells."""
    flat = tf.reshape(x, tf.concat([tf.shape(x)[:-2], [-1]], 0))
    pad = [[0, 0]] * (len(x.shape) - 2) + [[0, 1]]
    flat = tf.pad(flat, pad, constant_values=tf.cast(fill, x.dtype))
    skewed = tf.gather(flat, plan.gather, axis=-1)  # [..., levels, lanes]
    rank = len(skewed.shape)
    return tf.transpose(skewed, [rank - 2] + list(range(rank - 2)) + [rank - 1])


def _from_skewed(skewed, plan, height, width):
    """Maps `[levels, ..., lanes]` back to `[..., H, W]`."""
    rank = len(skewed.shape)
    skewed = tf.transpose(skewed, list(range(1, rank - 1)) + [0, rank - 1])
    batch_shape = tf.shape(skewed)[:-2]
    flat = tf.reshape(skewed, tf.concat([batch_shape, [-1]], 0))
    pixels = tf.gather(flat, plan.scatter, axis=-1)
    return tf.reshape(pixels, tf.concat([batch_shape, [height, width]], 0))


def _wavefront(inv_diag, coeffs, rhs, plan, forward):
    """Level-scheduled substitution in the skewed layout.

    Solves `v[t] = (rhs[t] - sum_m coeffs[t, m] * v[t -+ s_m, lane -+ l_m]) *
    inv_diag[t]` for all levels, walking them forwards or backwards.

    Args:
      inv_diag: `[levels, ..., lanes]`, broadcastable to `rhs`.
      coeffs: `[levels, ..., lanes, K]`, broadcastable to `rhs[..., None]`.
      rhs: `[levels, ..., lanes]` right-hand side, with the full batch shape.
      plan: the `_SkewPlan`.
      forward: walk levels upwards (a solve with `L`) or downwards (`L^T`).

    Returns:
      `[levels, ..., lanes]` solution.
    """
    num_levels, num_lanes, pad = plan.num_levels, plan.num_lanes, plan.lane_pad
    rank = len(rhs.shape)
    lane_padding = [[0, 0]] * (rank - 2) + ([[pad, 0]] if forward else [[0, pad]])
    starts = [pad - s if forward else s for s in plan.lane_shifts]
    inv_diag_ta = tf.TensorArray(inv_diag.dtype, num_levels).unstack(inv_diag)
    coeffs_ta = tf.TensorArray(coeffs.dtype, num_levels).unstack(coeffs)
    rhs_ta = tf.TensorArray(rhs.dtype, num_levels).unstack(rhs)
    out_ta = tf.TensorArray(rhs.dtype, num_levels, element_shape=rhs.shape[1:])
    row = tf.pad(tf.zeros_like(rhs[0]), lane_padding)
    window = tf.stack([row] * plan.window)

    def body(step, window, out_ta):
        t = step if forward else num_levels - 1 - step
        neighbours = tf.stack(
            [
                window[s - 1, ..., start : start + num_lanes]
                for s, start in zip(plan.level_shifts, starts, strict=True)
            ],
            axis=-1,
        )
        coupling = tf.reduce_sum(coeffs_ta.read(t) * neighbours, axis=-1)
        value = (rhs_ta.read(t) - coupling) * inv_diag_ta.read(t)
        window = tf.concat([tf.pad(value, lane_padding)[None], window[:-1]], 0)
        return step + 1, window, out_ta.write(t, value)

    _, _, out_ta = tf.while_loop(
        lambda step, *_: step < num_levels,
        body,
        (tf.constant(0), window, out_ta),
        maximum_iterations=num_levels,
    )
    return out_ta.stack()


def _solve(log_diag, off_diag, rhs, kernel_size, dilation, transpose):
    """Shared body of `factor_solve` and `factor_transpose_solve`."""
    height, width = _static_hw(log_diag)
    plan = _skew_plan(height, width, kernel_size, dilation)
    batch_shape = tf.broadcast_dynamic_shape(
        tf.broadcast_dynamic_shape(tf.shape(rhs)[:-2], tf.shape(log_diag)[:-2]),
        tf.shape(off_diag)[:-3],
    )
    rhs = tf.broadcast_to(rhs, tf.concat([batch_shape, [height, width]], 0))
    if transpose:
        coeffs = off_diag
    else:
        # Row q of L holds off_diag[q - o_m, m]: gather it into q's place.
        mask = off_diag_mask(height, width, kernel_size, dilation, off_diag.dtype)
        coeffs = tf.stack(
            [
                _shift(off_diag[..., m] * mask[..., m], -dy, -dx)
                for m, (dy, dx) in enumerate(neighbour_offsets(kernel_size, dilation))
            ],
            axis=-1,
        )
    coeffs = tf.stack(
        [_to_skewed(coeffs[..., m], plan, 0.0) for m in range(coeffs.shape[-1])],
        axis=-1,
    )
    inv_diag = _to_skewed(tf.exp(-log_diag), plan, 1.0)
    solution = _wavefront(
        inv_diag, coeffs, _to_skewed(rhs, plan, 0.0), plan, forward=not transpose
    )
    return _from_skewed(solution, plan, height, width)


def factor_transpose_solve(log_diag, off_diag, rhs, kernel_size=3, dilation=1):
    """Returns `L^{-T} rhs` by a wavefront back-substitution.

    This is how `SparsePrecisionGaussian` samples: `x = loc + L^{-T} eps` has
    covariance `L^{-T} L^{-1} = Lambda^{-1}`.

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      off_diag: `[..., H, W, K]` off-diagonal entries.
      rhs: `[..., H, W]` right-hand sides; batch dimensions broadcast with the
        parameters'.
      kernel_size: odd neighbourhood size, >= 3.
      dilation: spacing between linked pixels, >= 1.

    Returns:
      `[..., H, W]` tensor `v` with `L^T v = rhs`.
    """
    return _solve(log_diag, off_diag, rhs, kernel_size, dilation, transpose=True)


def factor_solve(log_diag, off_diag, rhs, kernel_size=3, dilation=1):
    """Returns `L^{-1} rhs` by a wavefront forward substitution.

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      off_diag: `[..., H, W, K]` off-diagonal entries.
      rhs: `[..., H, W]` right-hand sides; batch dimensions broadcast with the
        parameters'.
      kernel_size: odd neighbourhood size, >= 3.
      dilation: spacing between linked pixels, >= 1.

    Returns:
      `[..., H, W]` tensor `u` with `L u = rhs`.
    """
    return _solve(log_diag, off_diag, rhs, kernel_size, dilation, transpose=False)


def dense_factor(log_diag, off_diag, kernel_size=3, dilation=1):
    """Returns the dense `[..., H*W, H*W]` factor `L`: `O((H*W)^2)` memory.

    For tests, figures and small images only. Each offset `(dy, dx)` is the
    `(dy * W + dx)`-th subdiagonal of `L` in raster order.

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      off_diag: `[..., H, W, K]` off-diagonal entries.
      kernel_size: odd neighbourhood size, >= 3.
      dilation: spacing between linked pixels, >= 1.

    Returns:
      `[..., H*W, H*W]` lower-triangular tensor.
    """
    height, width = _static_hw(log_diag)
    n = height * width
    batch_shape = tf.broadcast_dynamic_shape(
        tf.shape(log_diag)[:-2], tf.shape(off_diag)[:-3]
    )
    mask = off_diag_mask(height, width, kernel_size, dilation, off_diag.dtype)
    off_diag = tf.broadcast_to(
        off_diag * mask, tf.concat([batch_shape, tf.shape(mask)], 0)
    )
    log_diag = tf.broadcast_to(log_diag, tf.concat([batch_shape, [height, width]], 0))
    flat_shape = tf.concat([batch_shape, [n]], 0)
    factor = tf.linalg.diag(tf.exp(tf.reshape(log_diag, flat_shape)))
    for m, (dy, dx) in enumerate(neighbour_offsets(kernel_size, dilation)):
        k = dy * width + dx
        if k >= n:  # Every neighbour at this offset is below the image.
            continue
        column = tf.reshape(off_diag[..., m], flat_shape)[..., : n - k]
        factor = factor + tf.linalg.diag(column, k=-k, num_rows=n, num_cols=n)
    return factor
