"""The maps that keep a precision factor `L` stable (the likelihood's `factor`).

A head predicts `log_diag` (`[..., H, W]`) and unconstrained off-diagonal
parameters `raw` (`[..., H, W, K]`, `svae.linalg.neighbour_offsets` order).
With `a[p, m] = off_diag[p, m] / L_pp`, `L^T = D (I + A)`:

- "free" (the paper's): `off_diag = raw`. Nothing keeps `L^{-T} eps` from
  growing geometrically along the back-substitution.
- "bounded" (`bounded_off_diag`): each row of `A` in the open L1 ball of
  radius `dominance < 1`, so `L^T` is strictly diagonally dominant and
  `||L^{-T}||_inf <= 1 / (min_p L_pp (1 - dominance))` (Varah).
- "product" (`product_off_diag`): `L^T = D (I + R)(I + V)`, a row and a
  column autoregression, each dominant, which together hold the strong
  correlations of smooth residuals that one dominant factor cannot; their
  product is separable.
- "full_product" (`full_product_factors`, `compose_full_product`): `L^T =
  D (I + A)(I + B)`, two dominant half-plane factors, whose `L` has the
  `2 kernel_size - 1` neighbourhood (`structure_kernel`) and holds
  correlations in every direction.

The log-determinant is `sum log_diag` under every map, and the dominant
maps scale with the diagonal, so a global scale of `L` is `log_diag`'s
offset alone. Each map runs as one XLA computation (`svae.xla.kernel`).
"""

import tensorflow as tf

from svae import xla
from svae.linalg import neighbour_offsets, num_off_diagonals, shift

__all__ = [
    "bounded_off_diag",
    "compose_full_product",
    "full_product_factors",
    "full_product_off_diag",
    "product_off_diag",
    "raw_size",
    "structure_kernel",
]


def structure_kernel(factor, kernel_size):
    """The neighbourhood of `L` that `factor` fills from factors of `kernel_size`.

    "full_product" multiplies two factors of `kernel_size`: `L` links each
    pixel to the raster-later half of its `2 kernel_size - 1` neighbourhood;
    the other maps keep `kernel_size`.
    """
    return 2 * kernel_size - 1 if factor == "full_product" else kernel_size


def raw_size(factor, kernel_size):
    """The unconstrained parameters per pixel that `factor` maps to `L`'s."""
    count = num_off_diagonals(kernel_size)
    return 2 * count if factor == "full_product" else count


def bounded_off_diag(log_diag, raw, dominance):
    """Maps unconstrained `raw` `[..., K]` into the dominance ball of `L`'s column.

    Returns `exp(log_diag) * dominance * raw / (1 + sum |raw|)`: the column's
    off-diagonal L1 norm is below `dominance * exp(log_diag)` (see
    `svae.heads.PrecisionHead`).

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      raw: `[..., H, W, K]` unconstrained off-diagonal parameters.
      dominance: bound of the off-diagonal mass relative to the diagonal, < 1.

    Returns:
      `[..., H, W, K]` off-diagonal entries of `L`.
    """
    return _bounded(log_diag, raw, float(dominance))


@xla.kernel
def _bounded(log_diag, raw, dominance):
    """`bounded_off_diag` as one XLA loop, forward and backward."""
    return _ball(raw, dominance) * tf.exp(log_diag)[..., None]


def _ball(raw, radius):
    """Maps `[..., n]` onto the open L1 ball of `radius`: `r raw / (1 + |raw|_1)`."""
    norm = 1.0 + tf.reduce_sum(tf.abs(raw), axis=-1, keepdims=True)
    return raw * (radius / norm)


def product_off_diag(log_diag, raw, dominance, kernel_size=3, dilation=1):
    """Off-diagonals of `L^T = D (I + R)(I + V)`, two dominant factors.

    `R` links each pixel to the pixels right of it in its row (offsets
    `(0, dx)`), `V` to those below it and not right of it (`(dy, dx)`,
    `dy > 0`, `dx <= 0`); each row of each factor has off-diagonal mass
    below `dominance` (`_ball`), so `||L^{-T}||_inf <= 1 / (min_p L_pp (1 -
    dominance)^2)`. The product fills the rest of the neighbourhood
    (`dx > 0` below: `R V`), and it holds the separable fields a single
    dominant factor cannot, like `(1 - a S_right)(1 - b S_down)` with `a, b`
    near 1 (smooth residuals; `bounded_off_diag` caps the sum of the four
    coefficients at 1, about `a + b + ab` here). The raw channels at
    `dx > 0` below are unused.

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      raw: `[..., H, W, K]` unconstrained parameters, `neighbour_offsets`
        order.
      dominance: bound of each factor's off-diagonal row mass, < 1.
      kernel_size: neighbourhood size of `L`.
      dilation: spacing of the neighbourhood.

    Returns:
      `[..., H, W, K]` off-diagonal entries of `L`.
    """
    return _product(log_diag, raw, float(dominance), int(kernel_size), int(dilation))


@xla.kernel
def _product(log_diag, raw, dominance, kernel_size, dilation):
    """`product_off_diag` as one XLA computation, forward and backward.

    As separate TF ops its slices, pads and stack, and their gradients, would
    each be a pass over `[batch, H, W, K]`. Inside, the `K` channels are
    planes `[K, ..., H, W]` (one transpose in, one out): XLA's CPU loops run
    faster over planes than over a channel-last tensor's interleaved
    channels.
    """
    offsets = neighbour_offsets(kernel_size, dilation)
    index = {offset: m for m, offset in enumerate(offsets)}
    rank = raw.shape.rank
    planes = tf.transpose(raw, [rank - 1, *range(rank - 1)])
    rows = [m for m, (dy, _) in enumerate(offsets) if dy == 0]
    below = [m for m, (dy, dx) in enumerate(offsets) if dy > 0 and dx <= 0]
    right = _planar_ball([planes[m] for m in rows], dominance)
    lower = _planar_ball([planes[m] for m in below], dominance)
    coeffs = [tf.zeros_like(log_diag)] * len(offsets)
    for i, m in enumerate(rows):
        coeffs[m] = right[i]
    for j, m in enumerate(below):
        coeffs[m] = lower[j]
    width = raw.shape[-2]
    pad = [[0, 0]] * (log_diag.shape.rank - 1)
    for i, m in enumerate(rows):
        right_by = offsets[m][1]
        for j, n in enumerate(below):
            dy, dx = offsets[n]
            target = index.get((dy, dx + right_by))
            if target is not None:
                # V's entry at the pixel `right_by` to the right (zero beyond
                # the edge).
                moved = tf.pad(
                    lower[j][..., right_by:], pad + [[0, min(right_by, width)]]
                )
                coeffs[target] = coeffs[target] + right[i] * moved
    diag = tf.exp(log_diag)
    stacked = tf.stack([coeff * diag for coeff in coeffs], 0)
    return tf.transpose(stacked, [*range(1, rank), 0])


def full_product_off_diag(log_diag, raw, dominance, kernel_size=3, dilation=1):
    """Off-diagonals of `L^T = D (I + A)(I + B)`, two dominant half-plane factors.

    `A` and `B` each link every pixel to the raster-later half of its
    `kernel_size` neighbourhood, with the row's off-diagonal mass below
    `dominance` (`_ball`), so `||L^{-T}||_inf <= 1 / (min_p L_pp (1 -
    dominance)^2)`. Their product links each pixel to the raster-later half
    of its `2 kernel_size - 1` neighbourhood (the offsets `a + b`, with
    `A`'s entry at the pixel and `B`'s at the pixel `a` further on). It
    holds the separable fields of `product_off_diag` (`A` a row, `B` a
    column autoregression) and the diagonal and isotropic correlations a
    separable field lacks. `full_product_factors` and `compose_full_product`
    are its two halves: the likelihood whitens with the factors, one after
    the other, and only sampling and conditioning need `L` itself.

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L`.
      raw: `[..., H, W, 2 K]` unconstrained parameters, `K =
        num_off_diagonals(kernel_size)`: `A`'s, then `B`'s, each in
        `neighbour_offsets(kernel_size, dilation)` order.
      dominance: bound of each factor's off-diagonal row mass, < 1.
      kernel_size: neighbourhood size of each factor.
      dilation: spacing of the neighbourhood.

    Returns:
      `[..., H, W, K']` off-diagonal entries of `L`, `K' =
      num_off_diagonals(2 kernel_size - 1)`, in `neighbour_offsets(2
      kernel_size - 1, dilation)` order.
    """
    first, second = full_product_factors(raw, dominance)
    return compose_full_product(log_diag, first, second, kernel_size, dilation)


def full_product_factors(raw, dominance):
    """The unit-diagonal factors `(A, B)` of `full_product_off_diag`.

    Args:
      raw: `[..., H, W, 2 K]` unconstrained parameters, `A`'s then `B`'s.
      dominance: bound of each factor's off-diagonal row mass, < 1.

    Returns:
      `(A, B)`, each `[..., H, W, K]`: the off-diagonal entries of the rows
      of `I + A` and `I + B`, each row in the open L1 ball of `dominance`.
    """
    return _factors(raw, float(dominance))


@xla.kernel
def _factors(raw, dominance):
    """`full_product_factors` as one XLA computation."""
    count = raw.shape[-1] // 2
    return _ball(raw[..., :count], dominance), _ball(raw[..., count:], dominance)


def compose_full_product(log_diag, first, second, kernel_size=3, dilation=1):
    """The off-diagonals of `L^T = D (I + A)(I + B)` from its factors.

    Args:
      log_diag: `[..., H, W]` log of the diagonal of `L` (of `D`).
      first: `[..., H, W, K]` the rows of `A` (`full_product_factors`).
      second: `[..., H, W, K]` the rows of `B`.
      kernel_size: neighbourhood size of each factor.
      dilation: spacing of the neighbourhood.

    Returns:
      `[..., H, W, K']`, as `full_product_off_diag`.
    """
    return _compose(log_diag, first, second, int(kernel_size), int(dilation))


@xla.kernel
def _compose(log_diag, first, second, kernel_size, dilation):
    """`compose_full_product` as one XLA computation (planes, as `_product`)."""
    inner = neighbour_offsets(kernel_size, dilation)
    outer = neighbour_offsets(2 * kernel_size - 1, dilation)
    rank = first.shape.rank
    order = [rank - 1, *range(rank - 1)]
    first = tf.unstack(tf.transpose(first, order))
    second = tf.unstack(tf.transpose(second, order))
    terms = {offset: [] for offset in outer}
    for m, offset in enumerate(inner):
        terms[offset] += [first[m], second[m]]
    for i, (ay, ax) in enumerate(inner):
        for j, (by, bx) in enumerate(inner):
            moved = shift(second[j], ay, ax)
            terms[ay + by, ax + bx].append(first[i] * moved)
    diag = tf.exp(log_diag)
    stacked = tf.stack(
        [
            tf.add_n(terms[offset]) * diag if terms[offset] else tf.zeros_like(diag)
            for offset in outer
        ],
        0,
    )
    return tf.transpose(stacked, [*range(1, rank), 0])


def _planar_ball(planes, radius):
    """`_ball` of the vectors whose entries are the `planes`, plane by plane.

    A list, not a gather and a reduction over a leading axis, which XLA
    fuses less well forward and backward.
    """
    scale = radius / (1.0 + tf.add_n([tf.abs(plane) for plane in planes]))
    return [plane * scale for plane in planes]
