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
rearranged into a skewed `[levels, lanes]` layout (`svae.wavefront`) with
about `W / (d * (r + 1))` lane blocks, in which every neighbour sits at a
level and lane shift that depend only on the level modulo `r + 1`, and one
`tf.while_loop` of ordinary TF ops walks the `~(r + 1) * H / d + W / d`
levels: it runs on CPU, GPU and TPU, under XLA, with gradients. By default a
solve is one XLA kernel (`svae.xla`) that moves the image in and out of the
layout by gathers; inside `svae.xla.portable()` it is portable ops that move
it by transposes. Either way its gradient is the other solve and `K`
products, not autodiff through the loop.
"""

import contextlib
import functools
import math

import numpy as np
import tensorflow as tf

from svae import wavefront, xla

__all__ = [
    "neighbour_offsets",
    "num_off_diagonals",
    "off_diag_mask",
    "factor_matvec",
    "factor_transpose_matvec",
    "factors_transpose_matvec",
    "shift",
    "factor_solve",
    "factor_transpose_solve",
    "dense_factor",
    "precision_diag",
    "inverse_precision_diag",
    "conjugate_gradient",
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


def shift(x, dy, dx):
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
    Its forward and backward passes are XLA kernels (`svae.xla`).

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      off_diag: `[..., H, W, K]` off-diagonal entries, see the module docstring.
      x: `[..., H, W]` images; batch dimensions broadcast with the parameters'.
      kernel_size: odd neighbourhood size, >= 3.
      dilation: spacing between linked pixels, >= 1.

    Returns:
      `[..., H, W]` tensor `L^T x`.
    """
    offsets = tuple(neighbour_offsets(kernel_size, dilation))
    compiled = xla.enabled()

    @tf.custom_gradient
    def matvec(log_diag, off_diag, x):
        def grad(upstream):
            if compiled:
                return _transpose_matvec_grad(upstream, log_diag, off_diag, x, offsets)
            # Without XLA, the gradient is faster through convolutions.
            return _transpose_matvec_grad_conv(
                upstream, log_diag, off_diag, x, kernel_size, dilation
            )

        return _transpose_matvec(log_diag, off_diag, x, offsets), grad

    return matvec(log_diag, off_diag, x)


def factors_transpose_matvec(log_diag, first, second, x, kernel_size=3, dilation=1):
    """Returns `L^T x` for `L^T = D (I + A)(I + B)` given in its factors.

    `D = diag(exp(log_diag))`; `A` and `B` unit-diagonal factors of the
    `kernel_size` neighbourhood, whose off-diagonal rows are `first` and
    `second` (`svae.factors.full_product_factors`): `(I + B) x`, then
    `(I + A)` of that, then `D`, as one XLA kernel with its gradient. It
    equals `factor_transpose_matvec` of the product's off-diagonals
    (`svae.factors.compose_full_product`) on the `2 kernel_size - 1`
    neighbourhood, without forming them.

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      first: `[..., H, W, K]` the rows of `A`, `neighbour_offsets` order.
      second: `[..., H, W, K]` the rows of `B`.
      x: `[..., H, W]` images.
      kernel_size: odd neighbourhood size of each factor, >= 3.
      dilation: spacing between linked pixels, >= 1.

    Returns:
      `[..., H, W]` tensor `L^T x`.
    """
    offsets = tuple(neighbour_offsets(kernel_size, dilation))
    return _factors_transpose_matvec(log_diag, first, second, x, offsets)


@xla.kernel
def _factors_transpose_matvec(log_diag, first, second, x, offsets):
    """`D (I + A)(I + B) x` by shifted products, factor by factor."""
    for factor in (second, first):
        y = x
        for m, (dy, dx) in enumerate(offsets):
            y = y + factor[..., m] * shift(x, dy, dx)
        x = y
    return tf.exp(log_diag) * x


@xla.kernel
def _transpose_matvec(log_diag, off_diag, x, offsets):
    """`L^T x` by K shifted products."""
    y = tf.exp(log_diag) * x
    for m, (dy, dx) in enumerate(offsets):
        y = y + off_diag[..., m] * shift(x, dy, dx)
    return y


@xla.kernel
def _transpose_matvec_grad(upstream, log_diag, off_diag, x, offsets):
    """Gradients of `_transpose_matvec` by shifted products (fused by XLA)."""
    scale = tf.exp(log_diag)
    d_log_diag = upstream * scale * x
    d_off_diag = tf.stack([upstream * shift(x, dy, dx) for dy, dx in offsets], -1)
    d_x = scale * upstream
    for m, (dy, dx) in enumerate(offsets):
        d_x = d_x + shift(off_diag[..., m] * upstream, -dy, -dx)
    return _sums_to_shapes((d_log_diag, d_off_diag, d_x), (log_diag, off_diag, x))


def _transpose_matvec_grad_conv(upstream, log_diag, off_diag, x, kernel_size, dilation):
    """Gradients of `_transpose_matvec` by convolutions, faster without XLA.

    Autodiff of the K slices of off_diag would write K full-size gradients;
    one convolution and one transposed convolution take all K at once.
    """
    scale = tf.exp(log_diag)
    d_log_diag = upstream * scale * x
    d_off_diag = upstream[..., None] * _neighbours(x, kernel_size, dilation)
    d_x = scale * upstream + _neighbours_transpose(
        off_diag * upstream[..., None], kernel_size, dilation
    )
    return _sums_to_shapes((d_log_diag, d_off_diag, d_x), (log_diag, off_diag, x))


def _sums_to_shapes(gradients, inputs):
    """Sums each broadcast gradient back to the shape of its input."""
    return tuple(
        _sum_to_shape(g, tf.shape(v)) for g, v in zip(gradients, inputs, strict=True)
    )


def _sum_to_shape(gradient, shape):
    """Sums a broadcast gradient back to the shape of its input."""
    _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(gradient), s1=shape)
    return tf.reshape(tf.reduce_sum(gradient, axes), shape)


@functools.lru_cache(maxsize=16)
def _neighbour_kernel(kernel_size, dilation):
    """One-hot `[k, k, 1, K]` kernel: channel m picks the m-th neighbour."""
    r = (kernel_size - 1) // 2
    offsets = neighbour_offsets(kernel_size, dilation)
    kernel = np.zeros((kernel_size, kernel_size, 1, len(offsets)), np.float32)
    for m, (dy, dx) in enumerate(offsets):
        kernel[r + dy // dilation, r + dx // dilation, 0, m] = 1.0
    kernel.setflags(write=False)
    return kernel


def _neighbours(x, kernel_size, dilation):
    """Returns `[..., H, W, K]`: channel m holds `x[..., i + dy_m, j + dx_m]`.

    Zero where the neighbour is outside the image. One convolution with
    one-hot kernels (dilated for `dilation > 1`).
    """
    height, width = x.shape[-2], x.shape[-1]
    kernel = tf.constant(_neighbour_kernel(kernel_size, dilation), dtype=x.dtype)
    images = tf.reshape(x, [-1, height, width, 1])
    neighbours = tf.nn.conv2d(images, kernel, 1, "SAME", dilations=dilation)
    shape = tf.concat([tf.shape(x), [kernel.shape[-1]]], 0)
    return tf.reshape(neighbours, shape)


def _neighbours_transpose(z, kernel_size, dilation):
    """Returns `sum_m z[..., i - dy_m, j - dx_m, m]`: `_neighbours`' adjoint.

    A transposed convolution; dilated ones have no CPU kernel in TF, so
    `dilation > 1` sums shifted channels instead.
    """
    offsets = neighbour_offsets(kernel_size, dilation)
    if dilation > 1:
        return tf.add_n(
            [shift(z[..., m], -dy, -dx) for m, (dy, dx) in enumerate(offsets)]
        )
    height, width = z.shape[-3], z.shape[-2]
    kernel = tf.constant(_neighbour_kernel(kernel_size, dilation), dtype=z.dtype)
    channels = tf.reshape(z, [-1, height, width, len(offsets)])
    images = tf.nn.conv2d_transpose(
        channels, kernel, tf.stack([tf.shape(channels)[0], height, width, 1]), 1
    )
    return tf.reshape(images, tf.shape(z)[:-1])


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
        y = y + shift(off_diag[..., m] * mask[..., m] * x, -dy, -dx)
    return y


def _row_entries(off_diag, kernel_size, dilation):
    """Returns `[..., H, W, K]` off-diagonals of `L` by row: `L[q, q - o_m]`.

    Row `q` of `L` holds `off_diag[q - o_m, m]`: each channel is moved into
    `q`'s place, zero where `q - o_m` is outside the image or its link is.
    """
    height, width = off_diag.shape[-3], off_diag.shape[-2]
    mask = off_diag_mask(height, width, kernel_size, dilation, off_diag.dtype)
    return tf.stack(
        [
            shift(off_diag[..., m] * mask[..., m], -dy, -dx)
            for m, (dy, dx) in enumerate(neighbour_offsets(kernel_size, dilation))
        ],
        axis=-1,
    )


def _solve(log_diag, off_diag, rhs, kernel_size, dilation, transpose):
    """Shared body of `factor_solve` and `factor_transpose_solve`."""
    compiled = xla.enabled()
    # Stopped, so that no tape asks the loop for its intermediates (an XLA
    # kernel cannot even hand them over): `_attach` gives the gradient.
    inputs = [tf.stop_gradient(v) for v in (log_diag, off_diag, rhs)]
    solution = _solution(*inputs, kernel_size, dilation, transpose, compiled)
    structure = (kernel_size, dilation, transpose, compiled)
    return _attach(solution, log_diag, off_diag, rhs, structure)


def _attach(solution, log_diag, off_diag, rhs, structure):
    """`solution`, the solve of the arguments, made differentiable in them.

    The gradient is another solve: for `v = L^{-T} b` (`transpose`) with
    upstream `g`, `u = L^{-1} g` is the gradient of `b`, and `-u v^T` that of
    `L^T`, read at `L`'s entries (for `v = L^{-1} b`, the same with `L^{-T}`
    and the roles of `u` and `v` swapped): a second pass instead of autodiff
    keeping every level's values. `v` is attached again inside, so that the
    gradient has gradients too.
    """
    kernel_size, dilation, transpose, compiled = structure

    @tf.custom_gradient
    def attach(log_diag, off_diag, rhs):
        def grad(upstream):
            with contextlib.nullcontext() if compiled else xla.portable():
                adjoint = _solve(
                    log_diag, off_diag, upstream, kernel_size, dilation, not transpose
                )
            value = _attach(solution, log_diag, off_diag, rhs, structure)
            before, after = (adjoint, value) if transpose else (value, adjoint)
            d_log_diag = -adjoint * value * tf.exp(log_diag)
            # L[p + o_m, p] = off_diag[p, m] meets before[p] and after[p + o_m].
            d_off_diag = -before[..., None] * _neighbours(after, kernel_size, dilation)
            return _sums_to_shapes(
                (d_log_diag, d_off_diag, adjoint), (log_diag, off_diag, rhs)
            )

        return tf.identity(solution), grad

    return attach(log_diag, off_diag, rhs)


def _solution(log_diag, off_diag, rhs, kernel_size, dilation, transpose, compiled):
    """The values of `_solve`, by XLA (`compiled`) or in portable ops."""
    height, width = _static_hw(log_diag)
    offsets = tuple(neighbour_offsets(kernel_size, dilation))
    batch_shape = tf.broadcast_dynamic_shape(
        tf.broadcast_dynamic_shape(tf.shape(rhs)[:-2], tf.shape(log_diag)[:-2]),
        tf.shape(off_diag)[:-3],
    )
    rhs = tf.broadcast_to(rhs, tf.concat([batch_shape, [height, width]], 0))
    if transpose:
        coeffs = off_diag
    else:
        coeffs = _row_entries(off_diag, kernel_size, dilation)
    structure = (height, width, offsets, dilation)
    if compiled:
        return _gathered_solve(log_diag, coeffs, rhs, structure, not transpose)
    return _skewed_solve(log_diag, coeffs, rhs, structure, not transpose)


@xla.kernel(batch_axes=(-3, -4, -3), output_axis=-3)
def _gathered_solve(log_diag, coeffs, rhs, structure, forward):
    """The solve in `svae.wavefront`'s gathered layout, as one XLA kernel.

    `coeffs` are the rows of `L` (or `L^T`) without the diagonal, `[...,
    H, W, K]`; `rhs` has the full batch shape. On a CPU the images are
    solved in several launches side by side (`svae.xla.cpu_parts`).
    """
    plan = wavefront.skew_plan(*structure)
    batch_rank = len(rhs.shape) - 2
    # Empty cells get a zero inverse diagonal, so their values are zero.
    inv_diag = tf.exp(-wavefront.gather_levels(log_diag, plan, batch_rank))
    solution = wavefront.walk_levels(
        wavefront.gather_levels(coeffs, plan, batch_rank, inner_rank=1),
        wavefront.gather_levels(rhs, plan, batch_rank),
        inv_diag * wavefront.cell_mask(plan, inv_diag.dtype),
        plan,
        forward,
    )
    return wavefront.scatter_levels(solution, plan)


def _skewed_solve(log_diag, coeffs, rhs, structure, forward):
    """The solve in `svae.wavefront`'s skewed layout, of portable TF ops."""
    plan = wavefront.skew_plan(*structure)
    batch_rank = len(rhs.shape) - 2
    # Divide the diagonal out once, before the sequential part.
    inv_diag = tf.exp(-log_diag)
    # K leads in the skewed layout, so that the loop sums K whole slices.
    coeffs = wavefront.to_skewed(
        coeffs * inv_diag[..., None], plan, batch_rank, inner_rank=1
    )
    rhs = wavefront.to_skewed(rhs * inv_diag, plan, batch_rank)
    solution = wavefront.substitute(coeffs, rhs, plan, forward)
    return wavefront.from_skewed(solution, plan)


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

    The arguments are `factor_transpose_solve`'s; returns the `[..., H, W]`
    tensor `u` with `L u = rhs`.
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


def precision_diag(log_diag, off_diag, kernel_size=3, dilation=1):
    """Returns the diagonal of `Lambda = L L^T` as `[..., H, W]` images.

    `Lambda[q, q]` is the squared norm of row `q` of `L`: its diagonal entry
    and the entries `off_diag[q - o_m, m]` of the pixels linked to it. The
    arguments are the factor's, as for `dense_factor`; returns `[..., H, W]`.
    """
    rows = _row_entries(off_diag, kernel_size, dilation)
    return tf.exp(2.0 * log_diag) + tf.reduce_sum(tf.square(rows), axis=-1)


def inverse_precision_diag(
    log_diag, off_diag, kernel_size=3, dilation=1, chunk_size=256
):
    """Returns `diag(Lambda^{-1})`, the exact marginal variances, `[..., H, W]`.

    `Lambda^{-1} = L^{-T} L^{-1}`, so the variance of pixel `p` is the squared
    norm of column `p` of `L^{-1}`: `chunk_size` columns at a time are solved
    with `factor_solve` against unit images. Exact, with memory
    `O(chunk_size * H * W)` per image but time `O((H * W)^2 * K)`: seconds
    per 64x64 image on a CPU, minutes at 256x256.

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      off_diag: `[..., H, W, K]` off-diagonal entries.
      kernel_size: odd neighbourhood size, >= 3.
      dilation: spacing between linked pixels, >= 1.
      chunk_size: unit images solved together.

    Returns:
      `[..., H, W]` tensor of variances.
    """
    height, width = _static_hw(log_diag)
    n = height * width
    chunk_size = min(chunk_size, n)
    num_chunks = math.ceil(n / chunk_size)
    batch_rank = max(len(log_diag.shape) - 2, len(off_diag.shape) - 3)
    dtype = log_diag.dtype

    def body(c, out_ta):
        pixels = c * chunk_size + tf.range(chunk_size)
        # Pixels past the last one give a zero image and are cut off below.
        units = tf.one_hot(pixels, n, dtype=dtype)
        units = tf.reshape(units, [chunk_size] + [1] * batch_rank + [height, width])
        columns = factor_solve(log_diag, off_diag, units, kernel_size, dilation)
        return c + 1, out_ta.write(c, tf.reduce_sum(tf.square(columns), [-2, -1]))

    out_ta = tf.TensorArray(dtype, num_chunks)
    _, out_ta = tf.while_loop(
        lambda c, _: c < num_chunks, body, (tf.constant(0), out_ta)
    )
    variances = out_ta.concat()[:n]  # [n, ...]
    variances = tf.transpose(variances, list(range(1, batch_rank + 1)) + [0])
    shape = tf.concat([tf.shape(variances)[:-1], [height, width]], 0)
    return tf.reshape(variances, shape)


def conjugate_gradient(
    matvec, rhs, preconditioner=None, tolerance=1e-6, max_iterations=None
):
    """Solves `A x = rhs` for a batch of SPD systems over images.

    Each image `rhs[..., :, :]` is its own system; all run in one loop until
    every one has `||rhs - A x|| <= tolerance * ||rhs||` or `max_iterations`.

    Args:
      matvec: function `[..., H, W] -> [..., H, W]` applying `A`.
      rhs: `[..., H, W]` right-hand sides.
      preconditioner: optional `[..., H, W]` positive diagonal approximating
        `A` (Jacobi preconditioning), broadcastable to `rhs`.
      tolerance: relative residual norm to reach.
      max_iterations: cap on the iterations; defaults to `H * W`.

    Returns:
      `(x, relative_residual, iterations)`: the `[..., H, W]` solution, the
      `[...]` relative residual norms reached and the scalar iteration count.
    """
    rhs = tf.convert_to_tensor(rhs)
    height, width = _static_hw(rhs)
    if max_iterations is None:
        max_iterations = height * width
    inverse = 1.0 / preconditioner if preconditioner is not None else None

    def dot(a, b):
        return tf.reduce_sum(a * b, axis=[-2, -1], keepdims=True)

    def precondition(r):
        return r * inverse if inverse is not None else r

    rhs_norm = tf.sqrt(dot(rhs, rhs))
    x = tf.zeros_like(rhs)
    r = rhs
    z = precondition(r)
    p = z
    rz = dot(r, z)

    def not_done(i, x, r, p, rz):
        residual = tf.sqrt(dot(r, r))
        return tf.logical_and(
            i < max_iterations, tf.reduce_any(residual > tolerance * rhs_norm)
        )

    def step(i, x, r, p, rz):
        ap = matvec(p)
        # Converged systems have rz = 0: divide_no_nan keeps them fixed.
        alpha = tf.math.divide_no_nan(rz, dot(p, ap))
        x = x + alpha * p
        r = r - alpha * ap
        z = precondition(r)
        rz_new = dot(r, z)
        p = z + tf.math.divide_no_nan(rz_new, rz) * p
        return i + 1, x, r, p, rz_new

    iterations, x, r, _, _ = tf.while_loop(
        not_done, step, (tf.constant(0), x, r, p, rz)
    )
    relative = tf.math.divide_no_nan(tf.sqrt(dot(r, r)), rhs_norm)
    return x, tf.squeeze(relative, [-2, -1]), iterations
