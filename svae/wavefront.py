"""The wavefront layout of the triangular solves of `svae.linalg`.

Pixel `(i, j)` of a factor with `r = (kernel_size - 1) // 2` and dilation `d`
depends only on pixels of a larger (for `L^T`) or smaller (for `L`) level
`t = (r + 1) * (i // d) + (j // d)`. A skewed `[levels, lanes]` layout puts
every neighbour at a level and lane shift that depend only on the level
modulo `r + 1`, and one `tf.while_loop` of ordinary TF ops (CPU, GPU, TPU,
XLA, with gradients) walks the levels. The layout comes in two forms, one
for each way `svae.linalg` runs a solve (`svae.xla.enabled()`):

- As an XLA kernel (the default): `gather_levels` moves an image into
  `[batch, levels, lanes, K]` by one gather of whole pixels, batch outermost
  and a pixel's K coefficients innermost as in the image; `walk_levels`
  reads a level by a dynamic slice; `scatter_levels` moves the solution back
  by one gather. XLA compiles each gather into one pass in the output's
  order, where it runs the other form's transposes element by element on one
  thread, several times slower than the loop itself.
- In portable ops (`svae.xla.portable()`): `to_skewed` rearranges the image
  by pads, reshapes and transposes into `[levels, K, batch, lanes]`, which
  TensorFlow's multithreaded transposes do faster than its gathers, and
  `substitute` reads a level from a `TensorArray`; `from_skewed` undoes the
  layout.

`svae.linalg.factor_solve` and `factor_transpose_solve` are the public entry
points.
"""

import functools
import math

import numpy as np
import tensorflow as tf

__all__ = [
    "UNROLL",
    "SkewPlan",
    "cell_mask",
    "from_skewed",
    "gather_levels",
    "scatter_levels",
    "skew_plan",
    "substitute",
    "to_skewed",
    "walk_levels",
]

# Levels `substitute` solves per while-loop iteration: the best measured on
# CPU (benchmarks/bench_distribution.py). `walk_levels` solves one diagonal of
# `r + 1` levels: more per iteration measured slower under XLA.
UNROLL = 8


class SkewPlan:
    """Sizes and shifts of the wavefront layout of one image and structure.

    On the coarse grid of one dilation phase, pixel `(a, c)` (row, column) has
    level `t = slope * a + c`, `slope = r + 1`: every neighbour it depends on
    has a larger level. Column `c = slope * l + p` goes to lane block `l`, so
    level `t = slope * (a + l) + p` holds the pixels of lanes `l` with
    `a = t // slope - l`: `ceil(W / (d * slope))` lane blocks, each of the
    `d * d` dilation phases side by side. A neighbour `(a + k1, c + k2)` of a
    pixel at level `t` is `slope * k1 + k2` levels on and
    `floor((t % slope + k2) / slope)` lane blocks over: the shift depends on
    the level only through `t % slope`.
    """

    def __init__(self, height, width, offsets, dilation):
        d = dilation
        r = max(dy for dy, _ in offsets) // d
        self.height, self.width, self.dilation = height, width, d
        self.slope = slope = r + 1
        self.coarse_h = math.ceil(height / d)
        self.blocks = math.ceil(math.ceil(width / d) / slope)
        self.diagonals = self.coarse_h + self.blocks - 1
        self.num_levels = self.diagonals * slope
        self.phases = d * d
        self.num_lanes = self.blocks * self.phases
        offsets = [(dy // d, dx // d) for dy, dx in offsets]
        self.level_shifts = [slope * k1 + k2 for k1, k2 in offsets]
        self.window = max(self.level_shifts)
        # Lane shifts by residue p = t % slope, for L^T (neighbours later) and
        # for L (neighbours earlier), in lanes.
        self.later_lane_shifts = [
            [((p + k2) // slope) * self.phases for _, k2 in offsets]
            for p in range(slope)
        ]
        self.earlier_lane_shifts = [
            [((p - k2) // slope) * self.phases for _, k2 in offsets]
            for p in range(slope)
        ]
        self.lane_pad = self.phases

    @functools.cached_property
    def cells(self):
        """`[levels, lanes]` raster index of each cell's pixel; -1 if empty.

        Level `t = slope * q + p`, lane `l * phases + u * d + w` holds pixel
        `(d * (q - l) + u, d * (slope * l + p) + w)` where that is inside the
        image: the layout of `to_skewed`.
        """
        d, slope = self.dilation, self.slope
        t = np.arange(self.num_levels)[:, None, None, None]
        lane_block = np.arange(self.blocks)[None, :, None, None]
        u = np.arange(d)[None, None, :, None]
        w = np.arange(d)[None, None, None, :]
        row = t // slope - lane_block
        i, j = d * row + u, d * (slope * lane_block + t % slope) + w
        inside = (row >= 0) & (i < self.height) & (j < self.width)
        cells = np.where(inside, i * self.width + j, -1)
        cells = cells.reshape(self.num_levels, self.num_lanes).astype(np.int32)
        cells.setflags(write=False)
        return cells

    @functools.cached_property
    def places(self):
        """`[H * W]` index of each pixel's cell in the flattened layout."""
        flat = self.cells.reshape(-1)
        places = np.empty(self.height * self.width, np.int32)
        places[flat[flat >= 0]] = np.flatnonzero(flat >= 0)
        places.setflags(write=False)
        return places


@functools.lru_cache(maxsize=64)
def skew_plan(height, width, offsets, dilation):
    """Cached `SkewPlan` for one image size and neighbourhood.

    Args:
      height, width: the image's size.
      offsets: the tuple of `(dy, dx)` links, `svae.linalg.neighbour_offsets`.
      dilation: their spacing.
    """
    return SkewPlan(height, width, offsets, dilation)


def _leading_ones(x, batch_rank, inner_rank):
    """Left-pads `[..., H, W, *inner]` to `batch_rank` batch dimensions.

    With ones, so that tensors of different batch ranks broadcast.
    """
    rank = len(x.shape)
    shape = tf.shape(x)
    lead = rank - inner_rank - 2
    ones = tf.ones([batch_rank - lead], tf.int32)
    return tf.reshape(x, tf.concat([ones, shape], 0))


def to_skewed(x, plan, batch_rank, inner_rank=0):
    """Maps `[..., H, W, *inner]` to `[levels, *inner, ..., lanes]`.

    Only pads, reshapes and transposes (no gathers): lane block `l` is shifted
    by `l` diagonals by re-reading its padded rows with a stride one shorter.
    Empty cells hold zeros. The batch dimensions are left-padded with ones to
    `batch_rank`, so that tensors of different batch ranks broadcast.
    """
    d, ch, nb, slope = plan.dilation, plan.coarse_h, plan.blocks, plan.slope
    b = batch_rank
    x = _leading_ones(x, batch_rank, inner_rank)
    inner = tf.shape(x)[b + 2 :]
    keep = [[0, 0]]
    pad_h, pad_w = ch * d - plan.height, nb * slope * d - plan.width
    x = tf.pad(x, keep * b + [[0, pad_h], [0, pad_w]] + keep * inner_rank)
    batch_shape = tf.shape(x)[:b]
    x = tf.reshape(x, tf.concat([batch_shape, [ch, d, nb, slope, d], inner], 0))
    # [..., a, u, l, p, w, *inner] -> [*inner, ..., p, u, w, l, a].
    inner_axes = [b + 5 + k for k in range(inner_rank)]
    batch_axes = list(range(b))
    x = tf.transpose(x, inner_axes + batch_axes + [b + 3, b + 1, b + 4, b + 2, b])
    prefix = tf.concat([inner, batch_shape], 0)
    n = inner_rank + b
    row = ch + nb
    x = tf.reshape(x, tf.concat([prefix, [slope * plan.phases, nb, ch]], 0))
    x = tf.pad(x, keep * (n + 2) + [[0, row - ch]])
    x = tf.reshape(x, tf.concat([prefix, [slope * plan.phases, nb * row]], 0))
    x = x[(slice(None),) * (n + 1) + (slice(0, nb * (row - 1)),)]
    x = tf.reshape(x, tf.concat([prefix, [slope, plan.phases, nb, plan.diagonals]], 0))
    # [*prefix, p, uw, l, q] -> [q, p, *prefix, l, uw]: level t = slope * q + p.
    x = tf.transpose(x, [n + 3, n] + list(range(n)) + [n + 2, n + 1])
    return tf.reshape(x, tf.concat([[plan.num_levels], prefix, [plan.num_lanes]], 0))


def from_skewed(skewed, plan):
    """Maps `[levels, ..., lanes]` back to `[..., H, W]`: `_to_skewed`'s inverse."""
    d, ch, nb, slope = plan.dilation, plan.coarse_h, plan.blocks, plan.slope
    b = len(skewed.shape) - 2
    batch_shape = tf.shape(skewed)[1:-1]
    x = tf.reshape(
        skewed,
        tf.concat([[plan.diagonals, slope], batch_shape, [nb, plan.phases]], 0),
    )
    # [q, p, ..., l, uw] -> [..., p, uw, l, q].
    x = tf.transpose(x, list(range(2, b + 2)) + [1, b + 3, b + 2, 0])
    x = tf.reshape(
        x, tf.concat([batch_shape, [slope * plan.phases, nb * plan.diagonals]], 0)
    )
    x = tf.pad(x, [[0, 0]] * (b + 1) + [[0, nb]])
    x = tf.reshape(x, tf.concat([batch_shape, [slope, d, d, nb, ch + nb]], 0))
    x = x[..., :ch]
    # [..., p, u, w, l, a] -> [..., a, u, l, p, w] -> [..., H, W].
    x = tf.transpose(x, list(range(b)) + [b + 4, b + 1, b + 3, b, b + 2])
    x = tf.reshape(x, tf.concat([batch_shape, [ch * d, nb * slope * d]], 0))
    return x[..., : plan.height, : plan.width]


def gather_levels(x, plan, batch_rank, inner_rank=0):
    """Maps `[..., H, W, *inner]` to `[*batch, levels, lanes, *inner]`.

    One gather of whole pixels, each with its `inner` values. Empty cells
    hold the values of pixel 0, for the caller to mask (`cell_mask`). The
    batch dimensions are left-padded with ones to `batch_rank`, as in
    `to_skewed`.
    """
    x = _leading_ones(x, batch_rank, inner_rank)
    return _gather_rows(x, np.maximum(plan.cells, 0), batch_rank, inner_rank)


def cell_mask(plan, dtype):
    """`[levels, lanes]` 1 at the cells of `gather_levels` that hold a pixel."""
    return tf.constant(plan.cells >= 0, dtype)


def scatter_levels(x, plan):
    """Maps `[*batch, levels, lanes]` back to `[*batch, H, W]`: one gather."""
    places = plan.places.reshape(plan.height, plan.width)
    return _gather_rows(x, places, len(x.shape) - 2, inner_rank=0)


def _gather_rows(x, index, batch_rank, inner_rank):
    """Gathers the rows `index` (numpy) of every image of `x`.

    `x` is `[*batch, *rows, *inner]`; its rows are numbered in raster order
    and the result is `[*batch, *index.shape, *inner]`. The gather runs along
    the leading axis of `x` flattened, so that XLA copies each row in the
    output's order; along a later axis it would gather across the batch
    and transpose after.
    """
    shape = tf.shape(x)
    batch_shape = shape[:batch_rank]
    inner = shape[len(x.shape) - inner_rank :]
    rows = math.prod(x.shape[batch_rank : len(x.shape) - inner_rank])
    starts = tf.range(tf.reduce_prod(batch_shape)) * rows
    flat_index = tf.reshape(starts[:, None] + index.reshape(1, -1), [-1])
    values = tf.gather(tf.reshape(x, tf.concat([[-1], inner], 0)), flat_index)
    return tf.reshape(values, tf.concat([batch_shape, index.shape, inner], 0))


def _neighbours(window, plan, shifts):
    """The K neighbour slices of a level from the window of earlier steps.

    `window[s - 1]` is the level `s` steps back along the walk, its last axis
    (lanes) padded by `plan.lane_pad` on both sides; `shifts` are the level's
    lane shifts, one per neighbour, in `plan.level_shifts` order.
    """
    pad, num_lanes = plan.lane_pad, plan.num_lanes
    return [
        window[s - 1][..., pad + shift : pad + shift + num_lanes]
        for s, shift in zip(plan.level_shifts, shifts, strict=True)
    ]


def walk_levels(coeffs, rhs, inv_diag, plan, forward):
    """Level-scheduled substitution in the layout of `gather_levels`.

    Computes `v[t] = inv_diag[t] * (rhs[t] - sum_m coeffs[t, ..., m] * v[t -+
    s_m, lane + shift_m(t % slope)])`, one diagonal of `slope` levels per
    loop iteration, so that `t % slope` and every slice are static. Each
    level is read from the batch-outermost inputs by a dynamic slice
    (`tf.gather` of one index); XLA compiles a level into a few fused passes
    over its `[batch, lanes]` cells. The diagonal is divided out here rather
    than into the coefficients beforehand: that would be one more pass over
    them, the largest input.

    Args:
      coeffs: `[..., levels, lanes, K]`, batch broadcastable to `rhs`'s.
      rhs: `[..., levels, lanes]` right-hand side, with the full batch shape.
      inv_diag: `[..., levels, lanes]` inverse diagonal, zero in empty cells.
      plan: the `SkewPlan`.
      forward: walk levels upwards (a solve with `L`) or downwards (`L^T`).

    Returns:
      `[..., levels, lanes]` solution.
    """
    slope, num_levels = plan.slope, plan.num_levels
    batch_rank = len(rhs.shape) - 2
    lane_padding = [[0, 0]] * batch_rank + [[plan.lane_pad, plan.lane_pad]]
    shifts = plan.earlier_lane_shifts if forward else plan.later_lane_shifts
    out_ta = tf.TensorArray(rhs.dtype, num_levels)
    empty = tf.pad(tf.zeros_like(rhs[..., 0, :]), lane_padding)

    def body(diagonal, out_ta, *window):
        for p in range(slope) if forward else reversed(range(slope)):
            t = slope * diagonal + p
            neighbours = tf.stack(_neighbours(window, plan, shifts[p]), -1)
            coupling = tf.reduce_sum(
                tf.gather(coeffs, t, axis=batch_rank) * neighbours, axis=-1
            )
            value = tf.gather(inv_diag, t, axis=batch_rank) * (
                tf.gather(rhs, t, axis=batch_rank) - coupling
            )
            window = (tf.pad(value, lane_padding),) + window[:-1]
            out_ta = out_ta.write(t, value)
        step = 1 if forward else -1
        return (diagonal + step, out_ta) + window

    start = 0 if forward else plan.diagonals - 1
    loop_vars = (tf.constant(start), out_ta) + (empty,) * plan.window
    outputs = tf.while_loop(
        lambda *_: True, body, loop_vars, maximum_iterations=plan.diagonals
    )
    solution = outputs[1].stack()  # [levels, ..., lanes]
    return tf.transpose(solution, list(range(1, batch_rank + 1)) + [0, batch_rank + 1])


def substitute(coeffs, rhs, plan, forward, unroll=UNROLL):
    """Level-scheduled substitution in the skewed layout.

    Computes, level by level, `v[t] = rhs[t] - sum_m coeffs[t, m] * v[t -+ s_m,
    lane + shift_m(t % slope)]` (the diagonal already divided out), walking the
    levels forwards or backwards. A sliding window of the last `max(s_m)`
    levels is carried as separate loop variables, so a level costs about
    `K + 8` ops; `unroll` levels (a multiple of `slope`) run per iteration,
    which also makes `t % slope`, and so every slice, static.

    Args:
      coeffs: `[levels, K, ..., lanes]`, broadcastable to `rhs[:, None]`.
      rhs: `[levels, ..., lanes]` right-hand side, with the full batch shape.
      plan: the `SkewPlan`.
      forward: walk levels upwards (a solve with `L`) or downwards (`L^T`).
      unroll: levels per loop iteration, rounded up to a multiple of `slope`.

    Returns:
      `[levels, ..., lanes]` solution.
    """
    pad, slope = plan.lane_pad, plan.slope
    batch_rank = len(rhs.shape) - 2
    lane_padding = [[0, 0]] * batch_rank + [[pad, pad]]
    shifts = plan.earlier_lane_shifts if forward else plan.later_lane_shifts
    unroll = -(-unroll // slope) * slope
    # Levels are padded to a multiple of the unroll factor (itself a multiple
    # of slope) with dummy levels walked last, which no real level depends on.
    num_levels = -(-plan.num_levels // unroll) * unroll
    extra = num_levels - plan.num_levels
    level_padding = [[0, extra] if forward else [extra, 0]]
    coeffs = tf.pad(coeffs, level_padding + [[0, 0]] * (len(coeffs.shape) - 1))
    rhs = tf.pad(rhs, level_padding + [[0, 0]] * (len(rhs.shape) - 1))
    coeffs_ta = tf.TensorArray(coeffs.dtype, num_levels).unstack(coeffs)
    rhs_ta = tf.TensorArray(rhs.dtype, num_levels).unstack(rhs)
    out_ta = tf.TensorArray(rhs.dtype, num_levels, element_shape=rhs.shape[1:])
    empty = tf.pad(tf.zeros_like(rhs[0]), lane_padding)

    def body(step, out_ta, *window):
        for k in range(unroll):
            # Original level index modulo slope, known statically.
            residue = (k if forward else num_levels - 1 - k - extra) % slope
            t = step * unroll + k
            t = t if forward else num_levels - 1 - t
            neighbours = tf.stack(_neighbours(window, plan, shifts[residue]))
            coupling = tf.reduce_sum(coeffs_ta.read(t) * neighbours, axis=0)
            value = rhs_ta.read(t) - coupling
            window = (tf.pad(value, lane_padding),) + window[:-1]
            out_ta = out_ta.write(t, value)
        return (step + 1, out_ta) + window

    loop_vars = (tf.constant(0), out_ta) + (empty,) * plan.window
    outputs = tf.while_loop(
        lambda step, *_: step < num_levels // unroll,
        body,
        loop_vars,
        maximum_iterations=num_levels // unroll,
    )
    solution = outputs[1].stack()
    return solution[: plan.num_levels] if forward else solution[extra:]
