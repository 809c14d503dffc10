"""Dense references built straight from the documented convention.

Independent of `svae.linalg`: the factor is assembled entry by entry from the
definition in docs/distribution.md, with `tf.scatter_nd`, so gradients flow through it.
"""

import numpy as np
import tensorflow as tf


def offsets_from_definition(kernel_size, dilation):
    """The `(dy, dx)` list, written out from docs/distribution.md's definition."""
    r, d = (kernel_size - 1) // 2, dilation
    row_zero = [(0, d * k) for k in range(1, r + 1)]
    rows_below = [(d * a, d * b) for a in range(1, r + 1) for b in range(-r, r + 1)]
    return row_zero + rows_below


def factor_entries(height, width, kernel_size, dilation):
    """Lists `(row, col, m)` of every off-diagonal entry inside the image."""
    entries = []
    for i in range(height):
        for j in range(width):
            p = i * width + j
            for m, (dy, dx) in enumerate(
                offsets_from_definition(kernel_size, dilation)
            ):
                ii, jj = i + dy, j + dx
                if 0 <= ii < height and 0 <= jj < width:
                    entries.append((ii * width + jj, p, i, j, m))
    return entries


def dense_factor(log_diag, off_diag, kernel_size, dilation):
    """Dense `[..., n, n]` factor from `[..., H, W]`, `[..., H, W, K]` tensors."""
    log_diag = tf.convert_to_tensor(log_diag)
    off_diag = tf.convert_to_tensor(off_diag, dtype=log_diag.dtype)
    height, width = log_diag.shape[-2:]
    n = height * width
    batch = tf.broadcast_static_shape(log_diag.shape[:-2], off_diag.shape[:-3])
    log_diag = tf.broadcast_to(log_diag, batch + [height, width])
    off_diag = tf.broadcast_to(off_diag, batch + off_diag.shape[-3:])
    entries = factor_entries(height, width, kernel_size, dilation)
    rows = [e[0] for e in entries] + list(range(n))
    cols = [e[1] for e in entries] + list(range(n))
    diag = tf.exp(tf.reshape(log_diag, batch + [n]))
    if entries:
        # Move the parameter axes first to pick every listed entry at once.
        rank = len(batch)
        params = tf.transpose(off_diag, [rank, rank + 1, rank + 2] + list(range(rank)))
        picked = tf.gather_nd(params, [e[2:] for e in entries])
        picked = tf.transpose(picked, list(range(1, rank + 1)) + [0])
        values = tf.concat([picked, diag], axis=-1)
    else:
        values = diag
    # scatter_nd works on leading indices: move the entries axis first.
    values = tf.transpose(values, [len(batch)] + list(range(len(batch))))
    indices = np.stack([rows, cols], axis=-1)
    dense = tf.scatter_nd(indices, values, [n, n] + batch)
    rank = len(batch) + 2
    return tf.transpose(dense, list(range(2, rank)) + [0, 1])
