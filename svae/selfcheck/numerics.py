"""The distribution's float32 results against a float64 reference on the CPU.

The inputs are a batch of 2 random 12x12 Gaussians with the default
recipe's structure: `L^T = D (I + A)(I + B)` (`svae.factors`, the
"full_product" factor), `A` and `B` of the default `kernel_size` (3) and
`dominance`, so `L` links each pixel to half of its 5x5 neighbourhood (`K`
= 12 entries a column). The reference assembles `L^T` in numpy, in float64,
entry by entry from the convention (docs/distribution.md) and from the
float32 inputs themselves, so only the computation differs: dense
`slogdet`, solves and inverses (`Reference`).

Every tolerance is a floating-point error bound with `u = 2^-24` (float32's
unit roundoff), not a number fitted to this machine (docs/selfcheck.md):

- `log_prob`: a sum of `n = H W` terms, each from `K + 1` products:
  `|error| <= 2 (n + K + 4) u` times the sum of the terms' magnitudes.
- `sample`: `x = loc + L^{-T} eps` by substitution; a backward-stable solve
  makes `L^T (x - loc)` recover `eps` to `4 (K + 4) u` of
  `|L^T| (|x - loc| + |x|)`, whatever `L`'s conditioning.
- `marginal_variance`: squared norms of the columns of `L^{-1}`: relative
  error `4 (K + 4) u cond(L) + 2 n u`, `cond(L)` Skeel's condition number
  (from the reference).
- `conditional_mean`: conjugate gradients stopped at a relative residual of
  `1e-5` solve for the correction `loc_A - mean_A` on the unobserved pixels:
  its relative error is below `2 cond_2(Lambda_AA) (1e-5 + (K + 4) u)`.
- `sample_moments`: 1000 draws, whitened with the reference's `L^T`, have
  covariance `I`: every z-score of it is below 7.

Under XLA (`tf.function(jit_compile=True)`) each result is compared with the
eager one: both are within the tolerance of the truth, so they are within
twice the tolerance of each other.
"""

import dataclasses
import functools
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from svae import config as config_lib
from svae import factors
from svae.distributions import SparsePrecisionGaussian
from svae.selfcheck.report import Outcome, device_name

__all__ = ["Checks", "Params", "Reference", "make_params"]

U = 2.0**-24  # float32's unit roundoff.
BATCH, SIZE = 2, 12
SEED = 20180404  # The numpy seed of the inputs.
SAMPLE_SEED = (7, 11)  # The stateless seed of `sample`.
CG_TOLERANCE = 1e-5  # SparsePrecisionConditional's float32 default.
NUM_DRAWS = 1000
MAX_Z = 7.0


class Params(NamedTuple):
    """The float32 inputs: the distribution's parameters, a point, a mask."""

    loc: tf.Tensor
    log_diag: tf.Tensor
    off_diag: tf.Tensor
    factor_a: tf.Tensor
    factor_b: tf.Tensor
    x: tf.Tensor
    mask: tf.Tensor


def make_params(config=None) -> Params:
    """Random well-conditioned float32 inputs with `config`'s structure.

    `raw` at scale 0.5 keeps each factor's off-diagonal row mass about half
    the diagonal (`cond(L)` about 6): accuracy is checked, not the limits of
    float32. Half of the pixels are observed (`mask`), at `x`.
    """
    config = config or config_lib.Config()
    rng = np.random.default_rng(SEED)
    shape = (BATCH, SIZE, SIZE)
    k = config.kernel_size
    count = (k * k - 1) // 2
    raw = 0.5 * rng.standard_normal((*shape, 2 * count))
    log_diag = rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    loc = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    x = (loc + 0.5 * rng.standard_normal(shape)).astype(np.float32)
    mask = rng.uniform(size=shape) < 0.5
    first, second = factors.full_product_factors(
        tf.constant(raw, tf.float32), config.likelihood.dominance
    )
    off_diag = factors.compose_full_product(
        tf.constant(log_diag), first, second, k, config.dilation
    )
    return Params(
        *(tf.constant(v) for v in (loc, log_diag)),
        off_diag,
        first,
        second,
        tf.constant(x),
        tf.constant(mask),
    )


def distribution(params, config) -> SparsePrecisionGaussian:
    """The float32 distribution of `params`, with its factors."""
    return SparsePrecisionGaussian(
        params.loc,
        params.log_diag,
        params.off_diag,
        **config.structure.kwargs,
        factor_a=params.factor_a,
        factor_b=params.factor_b,
    )


def draw(seed, shape):
    """The standard normal draw of `SparsePrecisionGaussian.sample(seed=seed)`.

    Its `_sample_n` draws `eps` with `tf.random.stateless_normal(..., alg=
    "philox")` for `[n] + batch + event` and returns `loc + L^{-T} eps`.
    """
    noise = tf.random.stateless_normal(
        [1, *shape], seed, dtype=tf.float32, alg="philox"
    )
    return noise[0]


def _offsets(kernel_size, dilation):
    """`(dy, dx)` of a column's entries, written out from the convention."""
    r, d = (kernel_size - 1) // 2, dilation
    return [(0, d * b) for b in range(1, r + 1)] + [
        (d * a, d * b) for a in range(1, r + 1) for b in range(-r, r + 1)
    ]


def _unit_upper(rows, kernel_size, dilation):
    """Dense `[batch, n, n]` `I + A` from rows `[batch, H, W, K]` (float64):
    row `p` holds `rows[p, m]` at column `p + offset_m` inside the image."""
    batch, height, width, _ = rows.shape
    n = height * width
    dense = np.tile(np.eye(n), (batch, 1, 1))
    for m, (dy, dx) in enumerate(_offsets(kernel_size, dilation)):
        for i in range(height):
            for j in range(width):
                if 0 <= i + dy < height and 0 <= j + dx < width:
                    q = (i + dy) * width + j + dx
                    dense[:, i * width + j, q] = rows[:, i, j, m]
    return dense


class Reference:
    """The float64 dense truth for `Params`, computed with numpy (on the CPU)."""

    def __init__(self, params, config):
        p = {k: np.asarray(v, np.float64) for k, v in params._asdict().items()}
        k, d = config.kernel_size, config.dilation
        self.n = SIZE * SIZE
        self.loc = p["loc"].reshape(BATCH, -1)
        self.x = p["x"].reshape(BATCH, -1)
        self.log_diag = p["log_diag"].reshape(BATCH, -1)
        self.mask = p["mask"].reshape(BATCH, -1).astype(bool)
        diag = np.exp(p["log_diag"].reshape(BATCH, -1))
        # L^T = D (I + A)(I + B), from the factors the float32 inputs hold.
        self.upper = diag[:, :, None] * (
            _unit_upper(p["factor_a"], k, d) @ _unit_upper(p["factor_b"], k, d)
        )
        self.precision = np.swapaxes(self.upper, 1, 2) @ self.upper
        eye = np.eye(self.n)
        self.inverse = np.stack([np.linalg.solve(f.T, eye) for f in self.upper])
        # Lambda^{-1} = L^{-T} L^{-1}.
        self.covariance = np.swapaxes(self.inverse, 1, 2) @ self.inverse
        # Skeel's condition number of L, max over the batch.
        self.cond = max(
            (np.abs(inv) @ np.abs(f.T)).sum(axis=1).max()
            for inv, f in zip(self.inverse, self.upper, strict=True)
        )

    def log_prob(self):
        """`log N(x; loc, Lambda^{-1})` via `slogdet(Lambda)`, and the sum of
        the magnitudes of its terms."""
        residual = self.x - self.loc
        log_det = np.linalg.slogdet(self.precision)[1]
        quadratic = np.einsum("bi,bij,bj->b", residual, self.precision, residual)
        constant = 0.5 * self.n * np.log(2 * np.pi)
        scale = np.abs(self.log_diag).sum(axis=1) + 0.5 * quadratic + constant
        return 0.5 * log_det - 0.5 * quadratic - constant, scale

    def whiten(self, images):
        """`L^T (images - loc)` for `[..., batch, H, W]` images, flattened."""
        flat = np.asarray(images, np.float64).reshape(-1, BATCH, self.n)
        return np.einsum("bij,sbj->sbi", self.upper, flat - self.loc)

    def conditional_mean(self):
        """`loc_A - Lambda_AA^{-1} Lambda_AB (x_B - loc_B)`, and
        `cond_2(Lambda_AA)` (max over the batch)."""
        means, conds = [], []
        for b in range(BATCH):
            free, seen = ~self.mask[b], self.mask[b]
            lam = self.precision[b]
            gap = lam[np.ix_(free, seen)] @ (self.x[b, seen] - self.loc[b, seen])
            block = lam[np.ix_(free, free)]
            mean = self.x[b].copy()
            mean[free] = self.loc[b, free] - np.linalg.solve(block, gap)
            means.append(mean)
            conds.append(np.linalg.cond(block))
        return np.stack(means), max(conds)


@dataclasses.dataclass
class _Compared:
    """A float32 result reduced to its error against the reference."""

    error: float
    tolerance: float
    detail: str


class Checks:
    """The distribution's checks, sharing inputs, reference and eager results.

    Each public method is one check of the table: the eager float32 result
    against the reference (`log_prob`, `sample`, `sample_moments`,
    `conditional_mean`, `marginal_variance`), or the XLA result against the
    eager one (`xla(name)`).
    """

    COMPUTATIONS = ("log_prob", "sample", "conditional_mean", "marginal_variance")

    def __init__(self, config=None):
        self.config = config or config_lib.Config()
        self._eager = {}

    @functools.cached_property
    def params(self):
        return make_params(self.config)

    @functools.cached_property
    def reference(self):
        return Reference(self.params, self.config)

    @property
    def _k(self):
        """`K`: the entries of a column of `L`."""
        return (self.config.structure.kernel_size**2 - 1) // 2

    def compute(self, name, params):
        """Runs computation `name` on `params` (eagerly, or traced)."""
        dist = distribution(params, self.config)
        if name == "log_prob":
            return dist.log_prob(params.x)
        if name == "sample":
            return dist.sample(seed=SAMPLE_SEED), draw(SAMPLE_SEED, params.x.shape)
        if name == "conditional_mean":
            return dist.conditional(params.x, params.mask, CG_TOLERANCE).mean()
        return dist.marginal_variance(method="exact")

    def eager(self, name):
        """The eager result of `name` on the default device (computed once)."""
        if name not in self._eager:
            self._eager[name] = self.compute(name, self.params)
        return self._eager[name]

    def _compare(self, name, value, factor=1.0, against=None) -> _Compared:
        """`value`'s error against the reference (or against `against`)."""
        ref, k, n = self.reference, self._k, SIZE * SIZE
        if name == "log_prob":
            truth, scale = ref.log_prob()
            base = truth if against is None else np.asarray(against, np.float64)
            error = np.max(np.abs(np.asarray(value, np.float64) - base) / scale)
            tol = 2 * (n + k + 4) * U
            detail = "|log p - ref| / sum |terms|"
        elif name == "sample":
            x, eps = (np.asarray(v, np.float64) for v in value)
            white = ref.whiten(x)[0]
            base = eps.reshape(BATCH, n)
            if against is not None:
                base = ref.whiten(np.asarray(against[0], np.float64))[0]
            bound = np.einsum(
                "bij,bj->bi",
                np.abs(ref.upper),
                np.abs(x).reshape(BATCH, n) + np.abs(x.reshape(BATCH, n) - ref.loc),
            )
            error = np.max(np.abs(white - base) / bound)
            tol = 4 * (k + 4) * U
            detail = "|L^T(x - loc) - eps| / |L^T|(|x - loc| + |x|)"
        elif name == "marginal_variance":
            truth = np.diagonal(ref.covariance, axis1=1, axis2=2)
            base = truth if against is None else np.asarray(against, np.float64)
            got = np.asarray(value, np.float64).reshape(BATCH, n)
            error = np.max(np.abs(got - base.reshape(BATCH, n)) / truth)
            tol = 4 * (k + 4) * U * ref.cond + 2 * n * U
            detail = f"relative, cond(L) {ref.cond:.1f}"
        else:
            truth, cond = ref.conditional_mean()
            base = truth if against is None else np.asarray(against, np.float64)
            got = np.asarray(value, np.float64).reshape(BATCH, n)
            base = base.reshape(BATCH, n)
            # The correction the solve computes: loc - mean on the free pixels.
            correction = np.linalg.norm(np.where(ref.mask, 0, truth - ref.loc), axis=1)
            error = np.max(np.linalg.norm(got - base, axis=1) / correction)
            tol = 2 * cond * (CG_TOLERANCE + (k + 4) * U)
            detail = f"||mean - ref|| / ||loc - ref||_free, cond(Lambda_AA) {cond:.0f}"
        return _Compared(float(error), float(factor * tol), detail)

    def _device(self, value):
        first = value[0] if isinstance(value, tuple) else value
        return device_name(first.device)

    def check(self, name) -> Outcome:
        """Eager float32 `name` on the default device against the reference."""
        value = self.eager(name)
        compared = self._compare(name, value)
        return Outcome(
            compared.error,
            compared.tolerance,
            self._device(value),
            f"vs float64 CPU, {compared.detail}",
        )

    def xla(self, name) -> Outcome:
        """`name` under `tf.function(jit_compile=True)` against the eager result.

        If XLA draws other normals than the eager kernel (stateless RNGs may
        differ between implementations), `sample` is checked against its own
        draw instead of against the eager sample.
        """
        compiled = tf.function(
            functools.partial(self.compute, name), jit_compile=True, autograph=False
        )
        value = compiled(self.params)
        eager = self.eager(name)
        note = "vs eager"
        if name == "sample" and not np.array_equal(value[1], eager[1]):
            eager, note = None, "XLA's own draw (its RNG differs from the eager one)"
        compared = self._compare(name, value, factor=2.0, against=eager)
        return Outcome(
            compared.error,
            compared.tolerance,
            self._device(value),
            f"{note}, {compared.detail}",
        )

    def sample_moments(self) -> Outcome:
        """1000 draws whitened by the reference's `L^T`: covariance `I`.

        The largest of the z-scores of each entry of the whitened covariance
        (a standard error `1/sqrt(N)`, `sqrt(2/N)` on the diagonal), of the
        mean of its diagonal and of the mean of the draws; below 7 for a
        correct sampler whatever the draws (odds of about 1e-6 otherwise, and
        the seed is fixed).
        """
        dist = distribution(self.params, self.config)
        samples = dist.sample(NUM_DRAWS, seed=SAMPLE_SEED)
        white = self.reference.whiten(samples.numpy())  # [N, batch, n]
        count = NUM_DRAWS
        moments = np.einsum("sbi,sbj->bij", white, white) / count
        eye = np.eye(white.shape[-1])
        sd = np.where(eye > 0, np.sqrt(2.0 / count), np.sqrt(1.0 / count))
        total = white.size
        diagonal = np.diagonal(moments, axis1=1, axis2=2).mean()
        z = max(
            np.max(np.abs(moments - eye) / sd),
            abs(diagonal - 1.0) / np.sqrt(2.0 / total),
            abs(white.mean()) * np.sqrt(total),
        )
        return Outcome(
            float(z),
            MAX_Z,
            device_name(samples.device),
            f"max z-score of the whitened covariance, {count} draws",
        )
