"""Tests of svae.xla: its split agrees with tf.split, values and gradients."""

import contextlib
import logging

import numpy as np
import pytest
import tensorflow as tf

from svae import xla


def _loss_and_grad(split, value, sizes, axis):
    """A loss that weighs every part differently, and its gradient."""
    with tf.GradientTape() as tape:
        tape.watch(value)
        parts = split(value, sizes, axis)
        # The last part is unused: its gradient is zeros.
        loss = sum(
            (i + 1.0) * tf.reduce_sum(tf.square(part))
            for i, part in enumerate(parts[:-1])
        )
    return parts, tape.gradient(loss, value)


@pytest.mark.parametrize("compiled", [True, False], ids=["xla", "portable"])
@pytest.mark.parametrize(
    "shape, sizes, axis",
    [([2, 5, 4, 6], [1, 1, 4], -1), ([3, 7], [2, 5], 1), ([4, 3], [1, 3], 0)],
)
def test_split_matches_tf_split_and_its_gradient(shape, sizes, axis, compiled):
    rng = np.random.default_rng(0)
    value = tf.constant(rng.normal(size=shape))
    mode = contextlib.nullcontext() if compiled else xla.portable()
    with mode:
        parts, grad = tf.function(_loss_and_grad, autograph=False)(
            xla.split, value, sizes, axis
        )
    want_parts, want_grad = _loss_and_grad(
        lambda v, s, a: tf.split(v, s, a), value, sizes, axis
    )
    assert len(parts) == len(sizes)
    for got, want in zip(parts, want_parts, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12)
    unused = range(shape[axis] - sizes[-1], shape[axis])
    assert np.all(np.take(grad.numpy(), unused, axis) == 0)


def test_split_is_an_xla_kernel_unless_portable(monkeypatch):
    value = tf.ones([2, 3, 4])

    def split(value):
        return xla.split(value, [1, 3])

    graph = tf.function(split).get_concrete_function(value).graph
    library = graph.as_graph_def().library.function
    assert any(f.attr["_XlaMustCompile"].b for f in library)
    with xla.portable():
        graph = tf.function(split).get_concrete_function(value).graph
    assert not any(
        f.attr["_XlaMustCompile"].b for f in graph.as_graph_def().library.function
    )


def test_split_into_one_part_is_the_value():
    value = tf.ones([2, 3])
    assert xla.split(value, [3])[0] is value


def test_cpu_parts_follow_the_cores_the_batch_and_the_environment(monkeypatch):
    monkeypatch.delenv(xla.PARTS_ENV_VAR, raising=False)
    monkeypatch.setattr(xla.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(xla, "_accelerated", lambda: False)
    assert xla.cpu_parts(64) == 2 * xla.PARTS_PER_CORE
    assert xla.cpu_parts(3) == 3
    monkeypatch.setenv(xla.PARTS_ENV_VAR, "5")
    assert xla.cpu_parts(64) == 5 and xla.cpu_parts(2) == 2
    monkeypatch.setenv(xla.PARTS_ENV_VAR, "1")
    assert xla.cpu_parts(64) == 1
    monkeypatch.delenv(xla.PARTS_ENV_VAR)
    monkeypatch.setattr(xla, "_accelerated", lambda: True)
    assert xla.cpu_parts(64) == 1


def _solve_and_grads(log_diag, off_diag, rhs):
    """`L^{-T} rhs` (a batched kernel, as `sample` runs it) and its gradients."""
    from svae import linalg

    with tf.GradientTape() as tape:
        tape.watch([log_diag, off_diag, rhs])
        solution = linalg.factor_transpose_solve(log_diag, off_diag, rhs)
        loss = tf.reduce_sum(tf.sin(solution))
    return (solution, *tape.gradient(loss, [log_diag, off_diag, rhs]))


@pytest.mark.parametrize("batched", [True, False], ids=["batch", "broadcast"])
def test_a_kernel_in_parts_gives_one_launchs_values(monkeypatch, batched):
    rng = np.random.default_rng(1)
    batch = 5  # Three parts of 2, 2 and 1 images.
    shape = (batch,) if batched else ()
    log_diag = tf.constant(0.2 * rng.normal(size=(*shape, 6, 7)), tf.float32)
    off_diag = tf.constant(0.2 * rng.normal(size=(*shape, 6, 7, 4)), tf.float32)
    rhs = tf.constant(rng.normal(size=(batch, 6, 7)), tf.float32)
    results, ops = {}, {}
    for parts in ("1", "3"):
        monkeypatch.setenv(xla.PARTS_ENV_VAR, parts)
        fn = tf.function(_solve_and_grads)
        graph = fn.get_concrete_function(log_diag, off_diag, rhs).graph
        ops[parts] = {op.type for op in graph.get_operations()}
        results[parts] = fn(log_diag, off_diag, rhs)
    for one, three in zip(results["1"], results["3"], strict=True):
        np.testing.assert_array_equal(one, three)
    assert "SplitV" not in ops["1"]
    # A parameter without the batch axis (broadcast to every image): one launch.
    assert ("SplitV" in ops["3"]) == batched


def test_kernels_traced_for_several_shapes_do_not_warn_of_retracing():
    """Each shape or static argument is a trace of its own, by design."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)

    def plain_square(value):
        return value * value

    def kernel_square(value):
        return value * value

    plain = tf.function(plain_square, jit_compile=True, autograph=False)
    kernel = xla.kernel(kernel_square)
    try:
        for traced in (plain, kernel):
            for size in range(1, 8):
                traced(tf.ones([size, 3]))
    finally:
        logger.removeHandler(handler)
    retraced = [r.getMessage() for r in records if "retracing" in r.getMessage()]
    # The plain tf.function warns, so the check can fail; the kernel does not.
    assert any("plain_square" in message for message in retraced)
    assert not any("kernel_square" in message for message in retraced)
