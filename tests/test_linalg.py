"""Tests of svae.linalg against dense numpy / TF linear algebra."""

import contextlib

import dense_reference
import numpy as np
import pytest
import tensorflow as tf

from svae import linalg, wavefront, xla

STRUCTURES = [(3, 1), (5, 1), (3, 2), (5, 2), (7, 1)]


def _random_factor(rng, batch, height, width, kernel_size, dtype=np.float64):
    """Well-conditioned random `(log_diag, off_diag)`."""
    k = linalg.num_off_diagonals(kernel_size)
    log_diag = 0.3 * rng.standard_normal(batch + (height, width))
    off_diag = 0.3 * rng.standard_normal(batch + (height, width, k))
    return tf.constant(log_diag, dtype), tf.constant(off_diag, dtype)


def test_neighbour_offsets_follow_the_documented_order():
    assert linalg.neighbour_offsets(3, 1) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    assert linalg.neighbour_offsets(5, 2)[:3] == [(0, 2), (0, 4), (2, -4)]
    for kernel_size, dilation in STRUCTURES + [(9, 3)]:
        offsets = linalg.neighbour_offsets(kernel_size, dilation)
        assert offsets == dense_reference.offsets_from_definition(kernel_size, dilation)
        assert len(offsets) == linalg.num_off_diagonals(kernel_size)
        # Every linked pixel comes later in raster order: L is lower-triangular.
        assert all(dy > 0 or (dy == 0 and dx > 0) for dy, dx in offsets)


@pytest.mark.parametrize("kernel_size", [1, 2, 4, 0, -3, 3.0, True])
def test_bad_kernel_size_is_a_clear_error(kernel_size):
    with pytest.raises(ValueError, match="kernel_size must be an odd integer >= 3"):
        linalg.neighbour_offsets(kernel_size, 1)


@pytest.mark.parametrize("dilation", [0, -1, 1.5])
def test_bad_dilation_is_a_clear_error(dilation):
    with pytest.raises(ValueError, match="dilation must be an integer >= 1"):
        linalg.neighbour_offsets(3, dilation)


@pytest.mark.parametrize("kernel_size,dilation", STRUCTURES)
def test_off_diag_mask_marks_entries_inside_the_image(kernel_size, dilation):
    height, width = 6, 7
    mask = linalg.off_diag_mask(height, width, kernel_size, dilation).numpy()
    expected = np.zeros_like(mask)
    for _, _, i, j, m in dense_reference.factor_entries(
        height, width, kernel_size, dilation
    ):
        expected[i, j, m] = 1
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("kernel_size,dilation", STRUCTURES)
def test_dense_factor_matches_the_definition(kernel_size, dilation):
    rng = np.random.default_rng(0)
    log_diag, off_diag = _random_factor(rng, (2,), 5, 7, kernel_size)
    expected = dense_reference.dense_factor(log_diag, off_diag, kernel_size, dilation)
    actual = linalg.dense_factor(log_diag, off_diag, kernel_size, dilation)
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kernel_size,dilation", STRUCTURES)
@pytest.mark.parametrize("height,width", [(5, 7), (8, 3), (1, 6), (6, 1)])
def test_products_and_solves_match_dense_linear_algebra(
    kernel_size, dilation, height, width
):
    rng = np.random.default_rng(1)
    log_diag, off_diag = _random_factor(rng, (3,), height, width, kernel_size)
    x = tf.constant(rng.standard_normal((3, height, width)))
    dense = dense_reference.dense_factor(log_diag, off_diag, kernel_size, dilation)
    x_flat = tf.reshape(x, [3, -1, 1])

    def image(v):
        return tf.reshape(v, [3, height, width])

    structure = dict(kernel_size=kernel_size, dilation=dilation)
    np.testing.assert_allclose(
        linalg.factor_transpose_matvec(log_diag, off_diag, x, **structure),
        image(tf.linalg.matmul(dense, x_flat, adjoint_a=True)),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        linalg.factor_matvec(log_diag, off_diag, x, **structure),
        image(tf.linalg.matmul(dense, x_flat)),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        linalg.factor_transpose_solve(log_diag, off_diag, x, **structure),
        image(tf.linalg.triangular_solve(dense, x_flat, lower=True, adjoint=True)),
        rtol=1e-9,
        atol=1e-10,
    )
    np.testing.assert_allclose(
        linalg.factor_solve(log_diag, off_diag, x, **structure),
        image(tf.linalg.triangular_solve(dense, x_flat, lower=True)),
        rtol=1e-9,
        atol=1e-10,
    )


def test_solves_broadcast_extra_right_hand_side_dimensions():
    rng = np.random.default_rng(2)
    log_diag, off_diag = _random_factor(rng, (2,), 4, 5, 3)
    rhs = tf.constant(rng.standard_normal((6, 2, 4, 5)))
    solved = linalg.factor_transpose_solve(log_diag, off_diag, rhs)
    assert solved.shape == (6, 2, 4, 5)
    for k in range(6):
        np.testing.assert_allclose(
            solved[k], linalg.factor_transpose_solve(log_diag, off_diag, rhs[k])
        )


@pytest.mark.parametrize("transpose", [True, False])
def test_solve_gradients_match_dense_solve(transpose):
    rng = np.random.default_rng(3)
    log_diag, off_diag = _random_factor(rng, (2,), 4, 6, 5)
    rhs = tf.constant(rng.standard_normal((2, 4, 6)))
    weights = tf.constant(rng.standard_normal((2, 4, 6)))
    solve = linalg.factor_transpose_solve if transpose else linalg.factor_solve

    with tf.GradientTape(persistent=True) as tape:
        tape.watch([log_diag, off_diag, rhs])
        ours = tf.reduce_sum(weights * solve(log_diag, off_diag, rhs, 5, 1))
        dense = dense_reference.dense_factor(log_diag, off_diag, 5, 1)
        theirs = tf.linalg.triangular_solve(
            dense, tf.reshape(rhs, [2, -1, 1]), lower=True, adjoint=transpose
        )
        theirs = tf.reduce_sum(weights * tf.reshape(theirs, [2, 4, 6]))
    for param in (log_diag, off_diag, rhs):
        np.testing.assert_allclose(
            tape.gradient(ours, param), tape.gradient(theirs, param), atol=1e-9
        )


@pytest.mark.slow
def test_solve_compiles_with_xla_and_agrees_with_graph_mode():
    rng = np.random.default_rng(4)
    log_diag, off_diag = _random_factor(rng, (2,), 9, 11, 3, np.float32)
    rhs = tf.constant(rng.standard_normal((2, 9, 11)), tf.float32)

    def loss_and_grads(log_diag, off_diag, rhs):
        with tf.GradientTape() as tape:
            tape.watch([log_diag, off_diag])
            v = linalg.factor_transpose_solve(log_diag, off_diag, rhs)
            loss = tf.reduce_sum(v**2)
        return v, tape.gradient(loss, [log_diag, off_diag])

    v_xla, g_xla = tf.function(loss_and_grads, jit_compile=True)(
        log_diag, off_diag, rhs
    )
    v_graph, g_graph = tf.function(loss_and_grads)(log_diag, off_diag, rhs)
    np.testing.assert_allclose(v_xla, v_graph, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_xla, g_graph, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_unknown_image_size_is_a_clear_error():
    fn = tf.function(
        linalg.factor_transpose_solve,
        input_signature=[
            tf.TensorSpec([None, None]),
            tf.TensorSpec([None, None, 4]),
            tf.TensorSpec([None, None]),
        ],
    )
    with pytest.raises(ValueError, match="must be known statically"):
        fn.get_concrete_function()


@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (5, 2), (7, 1), (3, 3)])
def test_solves_on_a_larger_odd_sized_image(kernel_size, dilation):
    # Many lane blocks, loop iterations and dummy levels, and sizes that are
    # multiples of neither the dilation nor the slope.
    rng = np.random.default_rng(5)
    height, width = 37, 29
    log_diag, off_diag = _random_factor(rng, (), height, width, kernel_size)
    off_diag = off_diag / kernel_size  # Keeps the 1073-pixel solve well-posed.
    x = tf.constant(rng.standard_normal((2, height, width)))
    dense = dense_reference.dense_factor(log_diag, off_diag, kernel_size, dilation)
    structure = dict(kernel_size=kernel_size, dilation=dilation)
    for solve, adjoint in [
        (linalg.factor_transpose_solve, True),
        (linalg.factor_solve, False),
    ]:
        expected = tf.linalg.triangular_solve(
            tf.broadcast_to(dense, [2, height * width, height * width]),
            tf.reshape(x, [2, -1, 1]),
            lower=True,
            adjoint=adjoint,
        )
        np.testing.assert_allclose(
            solve(log_diag, off_diag, x, **structure),
            tf.reshape(expected, [2, height, width]),
            rtol=1e-8,
            atol=1e-10,
        )


def _xla_function_count(function, *args):
    """Functions marked for XLA compilation in the graph `function` traces."""
    graph = tf.function(function).get_concrete_function(*args).graph
    library = graph.as_graph_def().library.function
    return sum(bool(f.attr["_XlaMustCompile"].b) for f in library)


def test_kernels_compile_with_xla_unless_portable_or_turned_off(monkeypatch):
    log_diag, off_diag = tf.zeros([2, 4, 5]), tf.zeros([2, 4, 5, 4])
    x = tf.ones([2, 4, 5])

    def matvec(x):
        return linalg.factor_transpose_matvec(log_diag, off_diag, x)

    assert _xla_function_count(matvec, x) >= 1
    with xla.portable():
        assert _xla_function_count(matvec, x) == 0
    monkeypatch.setenv(xla.ENV_VAR, "0")
    assert _xla_function_count(matvec, x) == 0
    np.testing.assert_allclose(matvec(x), np.exp(0.0) * np.ones([2, 4, 5]))


def _kernels(compiled):
    """The XLA kernels (the default) or the portable ones."""
    return contextlib.nullcontext() if compiled else xla.portable()


def _dense_solve(log_diag, off_diag, rhs, kernel_size, dilation, transpose):
    """`L^{-T} rhs` (or `L^{-1} rhs`) by a dense triangular solve."""
    dense = dense_reference.dense_factor(log_diag, off_diag, kernel_size, dilation)
    batch = tf.broadcast_static_shape(dense.shape[:-2], rhs.shape[:-2])
    n = dense.shape[-1]
    solved = tf.linalg.triangular_solve(
        tf.broadcast_to(dense, batch + [n, n]),
        tf.broadcast_to(tf.reshape(rhs, rhs.shape[:-2] + [n, 1]), batch + [n, 1]),
        lower=True,
        adjoint=transpose,
    )
    return tf.reshape(solved, batch + rhs.shape[-2:])


# (kernel_size, dilation, height, width, rhs batch, log_diag batch, off batch):
# widths that are no multiple of the lane blocks, one-pixel images, and batch
# shapes that broadcast against each other.
SOLVE_CASES = [
    (3, 1, 9, 11, (2,), (2,), (2,)),
    (5, 1, 7, 13, (3, 2), (2,), (1, 2)),
    (3, 2, 10, 7, (2, 1), (3,), ()),
    (5, 2, 9, 9, (), (), ()),
    (7, 1, 5, 6, (2,), (), (2,)),
    (3, 3, 8, 1, (2,), (2,), (2,)),
    (3, 1, 1, 6, (), (), ()),
]


@pytest.mark.parametrize("compiled", [True, False], ids=["xla", "portable"])
@pytest.mark.parametrize("transpose", [True, False], ids=["transpose", "forward"])
@pytest.mark.parametrize("case", SOLVE_CASES)
def test_both_forms_of_the_solve_match_dense_solves_and_gradients(
    case, transpose, compiled
):
    kernel_size, dilation, height, width, rhs_batch, diag_batch, off_batch = case
    rng = np.random.default_rng(6)
    k = linalg.num_off_diagonals(kernel_size)
    log_diag = tf.constant(0.3 * rng.standard_normal(diag_batch + (height, width)))
    off_diag = tf.constant(
        0.3 * rng.standard_normal(off_batch + (height, width, k)) / kernel_size
    )
    rhs = tf.constant(rng.standard_normal(rhs_batch + (height, width)))
    solve = linalg.factor_transpose_solve if transpose else linalg.factor_solve
    structure = dict(kernel_size=kernel_size, dilation=dilation)
    with _kernels(compiled), tf.GradientTape(persistent=True) as tape:
        tape.watch([log_diag, off_diag, rhs])
        ours = solve(log_diag, off_diag, rhs, **structure)
        theirs = _dense_solve(log_diag, off_diag, rhs, **structure, transpose=transpose)
        weights = tf.constant(rng.standard_normal(theirs.shape))
        ours_loss = tf.reduce_sum(weights * ours)
        theirs_loss = tf.reduce_sum(weights * theirs)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-10)
    for param in (log_diag, off_diag, rhs):
        ours_grad = tape.gradient(ours_loss, param)
        assert ours_grad.shape == param.shape
        np.testing.assert_allclose(
            ours_grad, tape.gradient(theirs_loss, param), rtol=1e-8, atol=1e-9
        )


@pytest.mark.parametrize("compiled", [True, False], ids=["xla", "portable"])
def test_solve_in_float32_and_its_second_derivative(compiled):
    rng = np.random.default_rng(7)
    log_diag, off_diag = _random_factor(rng, (2,), 6, 9, 5, np.float32)
    off_diag = off_diag / 5.0
    rhs = tf.constant(rng.standard_normal((2, 6, 9)), tf.float32)
    with _kernels(compiled):
        ours = linalg.factor_transpose_solve(log_diag, off_diag, rhs, 5, 2)
    assert ours.dtype == tf.float32
    np.testing.assert_allclose(
        ours,
        _dense_solve(log_diag, off_diag, rhs, 5, 2, transpose=True),
        rtol=1e-4,
        atol=1e-5,
    )
    # The gradient is itself a solve: it has a gradient, as the dense one.
    log_diag, off_diag, rhs = (
        tf.cast(v, tf.float64) for v in (log_diag, off_diag, rhs)
    )
    results = []
    for solve in (linalg.factor_transpose_solve, _dense_solve):
        extra = {} if solve is linalg.factor_transpose_solve else {"transpose": True}
        with _kernels(compiled), tf.GradientTape() as outer:
            outer.watch(off_diag)
            with tf.GradientTape() as inner:
                inner.watch(log_diag)
                v = solve(log_diag, off_diag, rhs, 5, 2, **extra)
                loss = tf.reduce_sum(v**2)
            inner_grad = tf.reduce_sum(inner.gradient(loss, log_diag) ** 2)
        results.append(outer.gradient(inner_grad, off_diag))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kernel_size,dilation", STRUCTURES)
def test_gathered_layout_is_the_skewed_layout(kernel_size, dilation):
    rng = np.random.default_rng(8)
    height, width = 7, 10
    offsets = tuple(linalg.neighbour_offsets(kernel_size, dilation))
    plan = wavefront.skew_plan(height, width, offsets, dilation)
    x = tf.constant(rng.standard_normal((3, height, width, 2)))
    skewed = wavefront.to_skewed(x, plan, 1, inner_rank=1)  # [levels, 2, 3, lanes]
    gathered = wavefront.gather_levels(
        x, plan, 1, inner_rank=1
    )  # [3, levels, lanes, 2]
    mask = wavefront.cell_mask(plan, x.dtype)[..., None]
    np.testing.assert_array_equal(gathered * mask, tf.transpose(skewed, [2, 0, 3, 1]))
    # Every pixel has one cell, and scatter_levels reads it back.
    assert sorted(plan.cells[plan.cells >= 0]) == list(range(height * width))
    np.testing.assert_array_equal(
        wavefront.scatter_levels(gathered[..., 0], plan), x[..., 0]
    )


def test_solves_are_xla_kernels_unless_portable():
    log_diag, off_diag = tf.zeros([2, 4, 5]), tf.zeros([2, 4, 5, 4])

    def solve(x):
        return linalg.factor_transpose_solve(log_diag, off_diag, x)

    x = tf.ones([2, 4, 5])
    assert _xla_function_count(solve, x) >= 1
    with xla.portable():
        assert _xla_function_count(solve, x) == 0
        np.testing.assert_allclose(solve(x), x)
