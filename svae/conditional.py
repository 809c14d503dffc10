"""A `SparsePrecisionGaussian` conditioned on observed pixels (inpainting).

`SparsePrecisionGaussian.conditional(observed, mask)` returns it; its mean
and samples are computed through the sparse factor, without a dense matrix.
"""

import tensorflow as tf

from svae import linalg

__all__ = ["SparsePrecisionConditional"]


class SparsePrecisionConditional:
    """A `SparsePrecisionGaussian` conditioned on some observed pixels.

    With `A` the unobserved and `B` the observed pixels, the conditional of
    `x_A` given `x_B` is Gaussian with precision `Lambda_AA` and mean
    `loc_A - Lambda_AA^{-1} Lambda_AB (x_B - loc_B)`. Both `mean()` and
    `sample()` return full images in which observed pixels keep their values.
    No dense matrix is formed: `Lambda_AA` is applied through the sparse
    factor, its systems are solved by Jacobi-preconditioned conjugate
    gradients, and samples are drawn by "conditioning by kriging": a joint
    sample `x*` is corrected to `x*_A - Lambda_AA^{-1} Lambda_AB (x_B - x*_B)`,
    exactly distributed as the conditional (up to the solver's tolerance).
    """

    def __init__(
        self, distribution, observed, mask, tolerance=None, max_iterations=None
    ):
        """Builds the conditional; see `SparsePrecisionGaussian.conditional`."""
        self._distribution = distribution
        dtype = distribution.dtype
        self._observed = tf.convert_to_tensor(observed, dtype=dtype)
        self._mask = tf.convert_to_tensor(mask, dtype=tf.bool)
        image_shape = distribution.event_shape
        for arg, value in (("observed", self._observed), ("mask", self._mask)):
            if value.shape.rank is not None and (
                value.shape.rank < 2
                or not value.shape[-2:].is_compatible_with(image_shape)
            ):
                raise ValueError(
                    f"{arg} must have shape [..., {image_shape[0]}, "
                    f"{image_shape[1]}] like the distribution's images; got "
                    f"{value.shape}."
                )
        if tolerance is None:
            tolerance = 1e-10 if dtype == tf.float64 else 1e-5
        self._tolerance = tolerance
        self._max_iterations = max_iterations
        log_diag, off_diag = distribution.log_diag, distribution.off_diag
        self._preconditioner = linalg.precision_diag(
            tf.convert_to_tensor(log_diag),
            tf.convert_to_tensor(off_diag),
            distribution.kernel_size,
            distribution.dilation,
        )

    @property
    def distribution(self):
        """The unconditioned `SparsePrecisionGaussian`."""
        return self._distribution

    @property
    def observed(self):
        """`[..., H, W]` observed images."""
        return self._observed

    @property
    def mask(self):
        """`[..., H, W]` booleans, True where a pixel is observed."""
        return self._mask

    def solve(self, rhs):
        """Solves `Lambda_AA u = rhs_A` by conjugate gradients.

        Args:
          rhs: `[..., H, W]`; its values on observed pixels are ignored.

        Returns:
          `(u, relative_residual, iterations)`: `u` is zero on observed
          pixels; `relative_residual` `[...]`; `iterations` a scalar.
        """
        free = tf.cast(tf.logical_not(self._mask), self._distribution.dtype)

        def matvec(v):
            return free * self._distribution.precision_matvec(free * v)

        return linalg.conjugate_gradient(
            matvec,
            free * rhs,
            preconditioner=tf.where(
                self._mask,
                tf.ones_like(self._preconditioner),
                self._preconditioner,
            ),
            tolerance=self._tolerance,
            max_iterations=self._max_iterations,
        )

    def _correct(self, x):
        """Returns `x_A - Lambda_AA^{-1} Lambda_AB (observed_B - x_B)`, B kept."""
        observed_part = tf.where(self._mask, self._observed - x, tf.zeros_like(x))
        gap = self._distribution.precision_matvec(observed_part)
        correction, _, _ = self.solve(gap)
        return tf.where(self._mask, self._observed, x - correction)

    def mean(self):
        """Returns the conditional mean, `[..., H, W]`, observed pixels kept."""
        return self._correct(self._distribution.mean())

    def sample(self, sample_shape=(), seed=None):
        """Draws conditional samples, `sample_shape + [..., H, W]`.

        Args:
          sample_shape: number (or shape) of samples.
          seed: stateless seed; the same seed gives the same samples.

        Returns:
          Full images: observed pixels keep their values.
        """
        return self._correct(self._distribution.sample(sample_shape, seed=seed))
