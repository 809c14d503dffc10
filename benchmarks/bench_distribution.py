"""Benchmark: SparsePrecisionGaussian against dense and banded references.

Prints, for each image size and batch, the time and peak memory of
`log_prob` and `sample` of `svae.distributions.SparsePrecisionGaussian`
(kernel_size=3, float32), each three ways: "svae", a `tf.function` as the
training, evaluation and sampling code calls them (with svae's XLA kernels,
`svae.xla`, as by default); "svae (XLA)", the whole call under
`jit_compile=True`; "svae (portable)", a `tf.function` traced inside
`svae.xla.portable()`, as exported for TF Serving. Beside them, in the same
run:

- `log_prob` of TFP's `MultivariateNormalPrecisionFactorLinearOperator` with the
  dense factor `L` (where it fits in memory);
- the sampling solve `L^{-T} eps` by a dense `tf.linalg.triangular_solve` and by
  `tf.linalg.banded_triangular_solve`.

Then, for each size at batch 64, `sample` over `log_prob` (svae's default
path) in paired rounds: one process alternates the two (a few calls of each
per round, the order swapped every round) and prints the median and
quartiles of the per-round ratios, which a slow spell of the machine moves
less than the ratio of two separate cases' medians.

Each case runs in a fresh subprocess so that its peak memory (growth of the
resident set from before the inputs are built to the end of the timed calls,
read from /proc/self/status VmHWM) is its own. Dense references that do not fit
in a 2 GiB working set are processed in chunks of images, each chunk's `L`
built untimed; the reported time is the sum over chunks and the memory that of
one chunk. Times are medians of repeated calls after one warm-up call.

    python benchmarks/bench_distribution.py            # the whole table
    python benchmarks/bench_distribution.py --quick    # 32x32 and 64x64 only
"""

import argparse
import json
import os
import subprocess
import sys
import time

KERNEL_SIZE = 3
DENSE_CHUNK_BYTES = 2 * 1024**3
# Rounds of the paired sample / log_prob comparison, and calls of each a round.
PAIRED_ROUNDS = 21
PAIRED_CALLS = 5
# svae's cases, each as a tf.function, under jit_compile and portable.
SVAE_OPS = tuple(
    op + mode for op in ("log_prob", "sample") for mode in ("", "_xla", "_portable")
)


def _rss_kib(field):
    """Returns a memory field of /proc/self/status in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _median_time(fn, min_seconds=1.0, max_reps=20):
    """Median wall time of `fn()` over repeated calls, after one warm-up."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (
        len(times) < 3 or time.perf_counter() - start < min_seconds
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def _paired_ratios(first, second, rounds=PAIRED_ROUNDS, calls=PAIRED_CALLS):
    """Per-round `time(first) / time(second)`, alternating which runs first."""
    first(), second()
    ratios = []
    for round_ in range(rounds):
        times = {}
        order = (first, second) if round_ % 2 == 0 else (second, first)
        for fn in order:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[fn] = time.perf_counter() - t0
        ratios.append(times[first] / times[second])
    return sorted(ratios)


def _band_matrix(linalg, tf, log_diag, off_diag, width):
    """`[B, W + 2, n]` bands of L in banded_triangular_solve's lower layout."""
    n = log_diag.shape[-2] * width
    batch = log_diag.shape[0]
    mask = linalg.off_diag_mask(log_diag.shape[-2], width, KERNEL_SIZE, 1)
    off_diag = off_diag * mask
    rows = [tf.exp(tf.reshape(log_diag, [batch, n]))]
    by_distance = {}
    for m, (dy, dx) in enumerate(linalg.neighbour_offsets(KERNEL_SIZE, 1)):
        by_distance[dy * width + dx] = tf.reshape(off_diag[..., m], [batch, n])
    for k in range(1, width + 2):
        column = by_distance.get(k, tf.zeros([batch, n]))
        # Row k holds the k-th subdiagonal L[p + k, p], padded on the left.
        rows.append(tf.pad(column[:, : n - k], [[0, 0], [k, 0]]))
    return tf.stack(rows, axis=1)


def run_case(op, size, batch):
    """Measures one case in this process; returns a dict for the table."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability as tfp

    from svae import linalg, xla
    from svae.distributions import SparsePrecisionGaussian

    rss_before = _rss_kib("VmRSS")
    rng = np.random.default_rng(0)
    k = linalg.num_off_diagonals(KERNEL_SIZE)
    n = size * size
    loc = tf.constant(rng.standard_normal((batch, size, size)), tf.float32)
    log_diag = tf.constant(0.1 * rng.standard_normal((batch, size, size)), tf.float32)
    off_diag = tf.constant(
        0.1 * rng.standard_normal((batch, size, size, k)), tf.float32
    )
    x = tf.constant(rng.standard_normal((batch, size, size)), tf.float32)
    chunk = batch
    if op.startswith("dense"):
        chunk = max(1, min(batch, DENSE_CHUNK_BYTES // (n * n * 4)))

    ratios = None
    # svae's own ops, "paired" alternating two of them.
    svae_op = op.startswith(("log_prob", "sample", "paired"))
    if svae_op:
        dist = SparsePrecisionGaussian(loc, log_diag, off_diag, KERNEL_SIZE)
        jit = op.endswith("_xla")
        calls = {
            "log_prob": tf.function(lambda: dist.log_prob(x), jit_compile=jit),
            "sample": tf.function(lambda: dist.sample(seed=[1, 2]), jit_compile=jit),
        }
    if op == "paired":
        sample, log_prob = calls["sample"], calls["log_prob"]
        ratios = _paired_ratios(lambda: sample().numpy(), lambda: log_prob().numpy())
        seconds = 0.0
    elif svae_op:
        fn = calls["log_prob" if op.startswith("log_prob") else "sample"]
        if op.endswith("_portable"):
            with xla.portable():
                fn.get_concrete_function()  # Traced without the kernels.
        seconds = _median_time(lambda: fn().numpy())
    elif op == "banded_solve":
        bands = _band_matrix(linalg, tf, log_diag, off_diag, size)
        rhs = tf.reshape(x, [batch, n, 1])
        fn = tf.function(
            lambda: tf.linalg.banded_triangular_solve(
                bands, rhs, lower=True, adjoint=True
            )
        )
        # The band layout is this benchmark's own: check it solves L^T v = x.
        ours = linalg.factor_transpose_solve(log_diag[:1], off_diag[:1], x[:1])
        np.testing.assert_allclose(
            tf.reshape(fn()[:1], [1, size, size]), ours, rtol=1e-3, atol=1e-3
        )
        seconds = _median_time(lambda: fn().numpy())
    elif op in ("dense_log_prob", "dense_solve"):
        seconds = 0.0
        for start in range(0, batch, chunk):
            part = slice(start, start + chunk)
            factor = linalg.dense_factor(log_diag[part], off_diag[part], KERNEL_SIZE)
            if op == "dense_log_prob":
                ref = tfp.experimental.distributions
                dist = ref.MultivariateNormalPrecisionFactorLinearOperator(
                    loc=tf.reshape(loc[part], [-1, n]),
                    precision_factor=tf.linalg.LinearOperatorLowerTriangular(factor),
                )
                x_flat = tf.reshape(x[part], [-1, n])
                fn = tf.function(lambda d=dist, v=x_flat: d.log_prob(v))
            else:
                rhs = tf.reshape(x[part], [-1, n, 1])
                fn = tf.function(
                    lambda f=factor, r=rhs: tf.linalg.triangular_solve(
                        f, r, lower=True, adjoint=True
                    )
                )
            seconds += _median_time(lambda f=fn: f().numpy(), min_seconds=0.3)
            del factor, fn
    else:
        raise ValueError(f"unknown op {op!r}")
    return {
        "op": op,
        "size": size,
        "batch": batch,
        "chunk": chunk,
        "seconds": seconds,
        "peak_mib": (_rss_kib("VmHWM") - rss_before) / 1024,
        "ratios": ratios,
    }


def _subprocess_case(op, size, batch):
    """Runs `run_case` in a fresh interpreter; returns its dict or None."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, __file__, "--case", f"{op},{size},{batch}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        print(f"  {op} {size}x{size} b{batch} failed: {tail[0]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _dense_fits(size):
    """Dense references run where one image's factor fits the chunk budget."""
    return (size * size) ** 2 * 4 <= DENSE_CHUNK_BYTES // 2


def main():
    """Runs every case and prints the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help="internal: op,size,batch")
    parser.add_argument("--quick", action="store_true", help="32 and 64 only")
    args = parser.parse_args()
    if args.case:
        op, size, batch = args.case.split(",")
        print(json.dumps(run_case(op, int(size), int(batch))))
        return
    sizes = [32, 64] if args.quick else [32, 64, 128, 256]
    ops = [
        *SVAE_OPS[:3],
        "dense_log_prob",
        *SVAE_OPS[3:],
        "dense_solve",
        "banded_solve",
    ]
    results = {}
    for size in sizes:
        for batch in (16, 64):
            for op in ops:
                if op.startswith("dense") and not _dense_fits(size):
                    continue
                if op.startswith("dense") and size >= 128 and batch > 16:
                    continue  # Minutes per case: batch 16 shows the trend.
                print(f"measuring {op} {size}x{size} batch {batch}", file=sys.stderr)
                results[op, size, batch] = _subprocess_case(op, size, batch)
    for size in sizes:
        print(f"measuring sample / log_prob paired {size}x{size}", file=sys.stderr)
        results["paired", size, 64] = _subprocess_case("paired", size, 64)
    _print_tables(results, sizes)


def _cell(result):
    """Formats time and memory of one case."""
    if result is None:
        return "-"
    return f"{result['seconds'] * 1e3:.2f} ms / {result['peak_mib']:.0f} MiB"


def _ratio(results, slow, fast, size, batch):
    """`slow / fast` time ratio, or '-'."""
    a, b = results.get((slow, size, batch)), results.get((fast, size, batch))
    if a is None or b is None:
        return "-"
    return f"{a['seconds'] / b['seconds']:.1f}x"


def _fastest(results, ops, size, batch):
    """The op among `ops` with the smallest measured time (missing: slowest)."""
    return min(
        ops,
        key=lambda op: (results.get((op, size, batch)) or {}).get(
            "seconds", float("inf")
        ),
    )


def _print_tables(results, sizes):
    """Prints the Markdown tables of the log_prob and sample comparisons."""
    print("\n### log_prob (time / peak memory; kernel_size=3, float32)\n")
    print(
        "| size | batch | svae | svae (XLA) | svae (portable) | dense TFP "
        "| dense / svae best |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        for batch in (16, 64):
            best = _fastest(results, ("log_prob", "log_prob_xla"), size, batch)
            dense = results.get(("dense_log_prob", size, batch))
            note = f" (chunks of {dense['chunk']})" if dense else ""
            print(
                f"| {size}x{size} | {batch}"
                f" | {_cell(results.get(('log_prob', size, batch)))}"
                f" | {_cell(results.get(('log_prob_xla', size, batch)))}"
                f" | {_cell(results.get(('log_prob_portable', size, batch)))}"
                f" | {_cell(dense)}{note}"
                f" | {_ratio(results, 'dense_log_prob', best, size, batch)} |"
            )
    print("\n### sample (time / peak memory; one sample per batch element)\n")
    print(
        "| size | batch | svae | svae (XLA) | svae (portable) | dense solve "
        "| banded solve | dense / svae best | banded / svae best |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        for batch in (16, 64):
            best = _fastest(results, ("sample", "sample_xla"), size, batch)
            dense = results.get(("dense_solve", size, batch))
            note = f" (chunks of {dense['chunk']})" if dense else ""
            print(
                f"| {size}x{size} | {batch}"
                f" | {_cell(results.get(('sample', size, batch)))}"
                f" | {_cell(results.get(('sample_xla', size, batch)))}"
                f" | {_cell(results.get(('sample_portable', size, batch)))}"
                f" | {_cell(dense)}{note}"
                f" | {_cell(results.get(('banded_solve', size, batch)))}"
                f" | {_ratio(results, 'dense_solve', best, size, batch)}"
                f" | {_ratio(results, 'banded_solve', best, size, batch)} |"
            )
    print(
        f"\n### sample / log_prob, paired rounds (batch 64, {PAIRED_ROUNDS} rounds "
        f"of {PAIRED_CALLS} calls each)\n"
    )
    print("| size | median | quartiles |")
    print("|---|---|---|")
    for size in sizes:
        result = results.get(("paired", size, 64))
        if result is None:
            print(f"| {size}x{size} | - | - |")
            continue
        ratios = result["ratios"]
        quartile = len(ratios) // 4
        print(
            f"| {size}x{size} | {ratios[len(ratios) // 2]:.2f}x"
            f" | {ratios[quartile]:.2f}-{ratios[-1 - quartile]:.2f}x |"
        )
    print("\n### scaling of svae with the number of pixels (batch 64)\n")
    print("| op | " + " | ".join(f"{s}x{s}" for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    base = sizes[0]
    for op in SVAE_OPS:
        cells = []
        ref = results.get((op, base, 64))
        for size in sizes:
            r = results.get((op, size, 64))
            if r is None or ref is None:
                cells.append("-")
                continue
            per_pixel = r["seconds"] / (size * size * 64) * 1e9
            growth = r["seconds"] / ref["seconds"]
            pixels = (size / base) ** 2
            cells.append(
                f"{per_pixel:.1f} ns/px ({growth:.0f}x time, {pixels:.0f}x px)"
            )
        print(f"| {op} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
