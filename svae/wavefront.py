"""The wavefront layout of the triangular solves of `svae.linalg`.

Pixel `(i, j)` of a factor with `r = (kernel_size - 1) // 2` and dilation `d`
depends only on pixels of a larger (for `L^T`) or smaller (for `L`) level
`t = (r + 1) * (i // d) + (j // d)`. `to_skewed` rearranges an image (pads,
reshapes and transposes; no gathers) into a `[levels, lanes]` layout in which
every neighbour sits at a level and lane shift that depend only on the level
modulo `r + 1`; `substitute` walks the levels in one `tf.while_loop` of
ordinary TF ops (CPU, GPU, TPU, XLA, with gradients); `from_skewed` undoes
the layout. `svae.linalg.factor_solve` and `factor_transpose_solve` are the
public entry points.
"""

import functools
import math

import tensorflow as tf

__all__ = ["UNROLL", "SkewPlan", "from_skewed", "skew_plan", "substitute", "to_skewed"]

# Levels solved per while-loop iteration: the best measured on CPU, in graph
# mode and under XLA (benchmarks/bench_distribution.py).
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


@functools.lru_cache(maxsize=64)
def skew_plan(height, width, offsets, dilation):
    """Cached `SkewPlan` for one image size and neighbourhood.

    Args:
      height, width: the image's size.
      offsets: the tuple of `(dy, dx)` links, `svae.linalg.neighbour_offsets`.
      dilation: their spacing.
    """
    return SkewPlan(height, width, offsets, dilation)


def to_skewed(x, plan, batch_rank, inner_rank=0):
    """Maps `[..., H, W, *inner]` to `[levels, *inner, ..., lanes]`.

    Only pads, reshapes and transposes (no gathers): lane block `l` is shifted
    by `l` diagonals by re-reading its padded rows with a stride one shorter.
    Empty cells hold zeros. The batch dimensions are left-padded with ones to
    `batch_rank`, so that tensors of different batch ranks broadcast.
    """
    d, ch, nb, slope = plan.dilation, plan.coarse_h, plan.blocks, plan.slope
    b = batch_rank
    rank = len(x.shape)
    shape = tf.shape(x)
    inner = shape[rank - inner_rank :]
    ones = tf.ones([b - (rank - inner_rank - 2)], tf.int32)
    lead = shape[: rank - inner_rank - 2]
    x = tf.reshape(x, tf.concat([ones, lead, [plan.height, plan.width], inner], 0))
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
    num_lanes, pad, slope = plan.num_lanes, plan.lane_pad, plan.slope
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
            neighbours = tf.stack(
                [
                    window[s - 1][..., pad + shift : pad + shift + num_lanes]
                    for s, shift in zip(plan.level_shifts, shifts[residue], strict=True)
                ],
            )
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
