"""The Gaussian over images with a sparse precision factor (paper, sec. 4, 4.4)."""

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import (
    assert_util,
    dtype_util,
    parameter_properties,
    reparameterization,
    samplers,
    tensor_util,
)
from tensorflow_probability.python.internal import (
    prefer_static as ps,
)

from svae import linalg
from svae.conditional import SparsePrecisionConditional
from svae.linalg import neighbour_offsets, num_off_diagonals

tfd = tfp.distributions

__all__ = [
    "SparsePrecisionConditional",
    "SparsePrecisionGaussian",
    "Structure",
    "neighbour_offsets",
    "num_off_diagonals",
]


@dataclasses.dataclass(frozen=True)
class Structure:
    """The sparsity pattern of a precision factor `L`, carried as one value.

    Each pixel is linked to the raster-later half of its `kernel_size x
    kernel_size` neighbourhood, dilated by `dilation` (`svae.linalg`). The
    distribution (`SparsePrecisionGaussian.structure`), the heads, the models
    and the likelihood helpers pass it whole, so that neither half can be
    forgotten.
    """

    kernel_size: int = 3
    dilation: int = 1

    @property
    def kwargs(self) -> dict:
        """`{"kernel_size", "dilation"}`: the keywords of `svae.linalg` and
        `svae.distributions.SparsePrecisionGaussian`."""
        return {"kernel_size": self.kernel_size, "dilation": self.dilation}


class SparsePrecisionGaussian(tfd.AutoCompositeTensorDistribution):
    """Gaussian over `[H, W]` images whose precision is `L L^T`, `L` sparse.

    The residual model of Dorta et al. (2018): each pixel's column of the
    lower-triangular precision factor `L` is non-zero only at the pixel and at
    the raster-later half of its `kernel_size x kernel_size` neighbourhood
    (spaced by `dilation`). The covariance `(L L^T)^{-1}` is dense, so the
    residuals are correlated over the whole image, yet every operation here
    costs `O(H * W * K)`, `K = (kernel_size**2 - 1) // 2`.

    #### Mathematical Details

    With pixel index `p = i * W + j` (raster order) and the m-th offset
    `(dy_m, dx_m)` of `neighbour_offsets(kernel_size, dilation)`:

    ```none
    L[p, p] = exp(log_diag[..., i, j])
    L[q, p] = off_diag[..., i, j, m],   q = (i + dy_m, j + dx_m)
    ```

    Entries whose neighbour falls outside the image are ignored. The density is

    ```none
    log p(x) = sum(log_diag) - 0.5 ||L^T (x - loc)||^2 - 0.5 H W log(2 pi)
    ```

    where `L^T (x - loc)` is a sum of `K + 1` shifted products. Samples are
    `x = loc + L^{-T} eps`, `eps ~ N(0, I)`, by a level-scheduled
    back-substitution (`svae.linalg.factor_transpose_solve`), fully
    reparameterized. The entropy is
    `0.5 H W (1 + log(2 pi)) - sum(log_diag)`.

    #### Examples

    ```python
    import tensorflow as tf
    from svae.distributions import SparsePrecisionGaussian

    loc = tf.zeros([2, 64, 64])                  # batch of 2 images
    log_diag = tf.fill([2, 64, 64], 2.0)         # L[p, p] = e^2
    off_diag = tf.fill([2, 64, 64, 4], -3.0)     # kernel_size=3: K=4
    dist = SparsePrecisionGaussian(loc, log_diag, off_diag)
    x = dist.sample(seed=[1, 2])                 # [2, 64, 64]
    dist.log_prob(x)                             # [2]
    ```

    #### References

    [1]: Garoe Dorta, Sara Vicente, Lourdes Agapito, Neill D. F. Campbell,
         Ivor Simpson. Training VAEs Under Structured Residuals. 2018.
         https://arxiv.org/abs/1804.01050
    [2]: Garoe Dorta, Sara Vicente, Lourdes Agapito, Neill D. F. Campbell,
         Ivor Simpson. Structured Uncertainty Prediction Networks. CVPR 2018.
    """

    def __init__(
        self,
        loc,
        log_diag,
        off_diag,
        kernel_size=3,
        dilation=1,
        validate_args=False,
        allow_nan_stats=True,
        name="SparsePrecisionGaussian",
        factor_a=None,
        factor_b=None,
    ):
        """Builds the distribution.

        Args:
          loc: `[..., H, W]` mean image.
          log_diag: `[..., H, W]` log of the diagonal of the factor `L`.
          off_diag: `[..., H, W, K]` off-diagonal entries of `L`,
            `K = (kernel_size**2 - 1) // 2`, ordered as `neighbour_offsets`.
          kernel_size: odd neighbourhood size, >= 3 (a Python int).
          dilation: spacing between linked pixels, >= 1 (a Python int).
          validate_args: check shapes and finiteness (costs time).
          allow_nan_stats: TFP's flag; statistics here are always defined.
          name: name prefixed to the ops this distribution creates.
          factor_a, factor_b: None, or `L` in factors, `L^T = D (I + A)(I +
            B)` (`svae.factors.full_product_off_diag`): `[..., H, W, k]` the
            off-diagonal rows of `I + A` and `I + B`, each a factor of the
            `(kernel_size + 1) // 2` neighbourhood, and `off_diag` their
            product. `log_prob` and `whiten` then apply the two factors one
            after the other, which costs less than `L` whole; the caller
            keeps `off_diag` equal to their product.

        Raises:
          ValueError: for a `kernel_size` or `dilation` of the wrong kind, or
            parameters whose static shapes do not fit together.
        """
        parameters = dict(locals())
        linalg.neighbour_offsets(kernel_size, dilation)  # Validates both.
        with tf.name_scope(name) as name:
            dtype = dtype_util.common_dtype(
                [loc, log_diag, off_diag], dtype_hint=tf.float32
            )
            self._loc = tensor_util.convert_nonref_to_tensor(
                loc, dtype=dtype, name="loc"
            )
            self._log_diag = tensor_util.convert_nonref_to_tensor(
                log_diag, dtype=dtype, name="log_diag"
            )
            self._off_diag = tensor_util.convert_nonref_to_tensor(
                off_diag, dtype=dtype, name="off_diag"
            )
            self._kernel_size = int(kernel_size)
            self._dilation = int(dilation)
            self._factor_a = self._factor_b = None
            if (factor_a is None) != (factor_b is None):
                raise ValueError("Pass both factor_a and factor_b, or neither.")
            if factor_a is not None:
                linalg.neighbour_offsets((kernel_size + 1) // 2, dilation)
                self._factor_a = tensor_util.convert_nonref_to_tensor(
                    factor_a, dtype=dtype, name="factor_a"
                )
                self._factor_b = tensor_util.convert_nonref_to_tensor(
                    factor_b, dtype=dtype, name="factor_b"
                )
            super().__init__(
                dtype=dtype,
                reparameterization_type=reparameterization.FULLY_REPARAMETERIZED,
                validate_args=validate_args,
                allow_nan_stats=allow_nan_stats,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(
            loc=parameter_properties.ParameterProperties(event_ndims=2),
            log_diag=parameter_properties.ParameterProperties(event_ndims=2),
            off_diag=parameter_properties.ParameterProperties(
                event_ndims=3,
                default_constraining_bijector_fn=parameter_properties.BIJECTOR_NOT_IMPLEMENTED,
            ),
            factor_a=parameter_properties.ParameterProperties(
                event_ndims=3,
                default_constraining_bijector_fn=parameter_properties.BIJECTOR_NOT_IMPLEMENTED,
            ),
            factor_b=parameter_properties.ParameterProperties(
                event_ndims=3,
                default_constraining_bijector_fn=parameter_properties.BIJECTOR_NOT_IMPLEMENTED,
            ),
        )

    @property
    def loc(self):
        """`[..., H, W]` mean image."""
        return self._loc

    @property
    def log_diag(self):
        """`[..., H, W]` log of the diagonal of the precision factor `L`."""
        return self._log_diag

    @property
    def off_diag(self):
        """`[..., H, W, K]` off-diagonal entries of `L`."""
        return self._off_diag

    @property
    def kernel_size(self):
        """Odd neighbourhood size of the sparsity pattern."""
        return self._kernel_size

    @property
    def dilation(self):
        """Spacing between linked pixels."""
        return self._dilation

    @property
    def structure(self):
        """The sparsity pattern as one value, a `Structure`."""
        return Structure(self._kernel_size, self._dilation)

    def _image_shape(self):
        """Static `[H, W]` broadcast from the three parameters."""
        shape = tf.broadcast_static_shape(
            self._loc.shape[-2:], self._log_diag.shape[-2:]
        )
        return tf.broadcast_static_shape(shape, self._off_diag.shape[-3:-1])

    def _event_shape(self):
        return self._image_shape()

    def _event_shape_tensor(self):
        shape = self._image_shape()
        if shape.is_fully_defined():
            return tf.constant(shape.as_list(), dtype=tf.int32)
        return tf.broadcast_dynamic_shape(
            tf.broadcast_dynamic_shape(
                tf.shape(self._loc)[-2:], tf.shape(self._log_diag)[-2:]
            ),
            tf.shape(self._off_diag)[-3:-1],
        )

    def _params(self):
        """The parameters as tensors, each once."""
        return (
            tf.convert_to_tensor(self._loc),
            tf.convert_to_tensor(self._log_diag),
            tf.convert_to_tensor(self._off_diag),
        )

    def _structure(self):
        """`(kernel_size, dilation)` keyword arguments for `svae.linalg`."""
        return dict(kernel_size=self._kernel_size, dilation=self._dilation)

    def _num_pixels(self):
        """`H * W` as a Python int."""
        height, width = self._image_shape().as_list()
        return height * width

    def _sample_n(self, n, seed=None):
        loc, log_diag, off_diag = self._params()
        shape = ps.concat(
            [[n], self._batch_shape_tensor(), self._event_shape_tensor()], axis=0
        )
        # Philox explicitly: "auto_select" picks ThreeFry under XLA, which is
        # 30x slower on CPU.
        eps = tf.random.stateless_normal(
            shape, seed=samplers.sanitize_seed(seed), dtype=self.dtype, alg="philox"
        )
        return loc + linalg.factor_transpose_solve(
            log_diag, off_diag, eps, **self._structure()
        )

    def _whitened(self, log_diag, off_diag, residual):
        """`L^T residual`: with `L` whole, or its two factors one after the other."""
        if self._factor_a is None:
            return linalg.factor_transpose_matvec(
                log_diag, off_diag, residual, **self._structure()
            )
        return linalg.factors_transpose_matvec(
            log_diag,
            tf.convert_to_tensor(self._factor_a),
            tf.convert_to_tensor(self._factor_b),
            residual,
            kernel_size=(self._kernel_size + 1) // 2,
            dilation=self._dilation,
        )

    def _log_prob(self, x):
        loc, log_diag, off_diag = self._params()
        whitened = self._whitened(log_diag, off_diag, x - loc)
        log_det = tf.reduce_sum(log_diag, axis=[-2, -1])
        mahalanobis = tf.reduce_sum(tf.square(whitened), axis=[-2, -1])
        log_normalizer = tf.constant(
            0.5 * self._num_pixels() * np.log(2.0 * np.pi), dtype=self.dtype
        )
        return log_det - 0.5 * mahalanobis - log_normalizer

    def _entropy(self):
        log_det = tf.reduce_sum(self._log_diag, axis=[-2, -1])
        constant = 0.5 * self._num_pixels() * (1.0 + np.log(2.0 * np.pi))
        entropy = tf.constant(constant, dtype=self.dtype) - log_det
        return tf.broadcast_to(entropy, self._batch_shape_tensor())

    def _mean(self):
        shape = ps.concat([self._batch_shape_tensor(), self._event_shape_tensor()], 0)
        return tf.broadcast_to(self._loc, shape)

    _mode = _mean

    def whiten(self, x, name="whiten"):
        """Returns `L^T (x - loc)`, the residual mapped to white noise.

        Args:
          x: `[..., H, W]` images.
          name: name scope of the ops.

        Returns:
          `[..., H, W]` tensor, distributed `N(0, I)` when `x` is a sample.
        """
        with self._name_and_control_scope(name):
            loc, log_diag, off_diag = self._params()
            x = tf.convert_to_tensor(x, dtype=self.dtype)
            return self._whitened(log_diag, off_diag, x - loc)

    def precision_matvec(self, v, name="precision_matvec"):
        """Returns `Lambda v = L (L^T v)` in `O(H * W * K)`.

        Args:
          v: `[..., H, W]` images.
          name: name scope of the ops.

        Returns:
          `[..., H, W]` tensor.
        """
        with self._name_and_control_scope(name):
            _, log_diag, off_diag = self._params()
            v = tf.convert_to_tensor(v, dtype=self.dtype)
            structure = self._structure()
            return linalg.factor_matvec(
                log_diag,
                off_diag,
                linalg.factor_transpose_matvec(log_diag, off_diag, v, **structure),
                **structure,
            )

    def off_diagonal_ratio(self, name="off_diagonal_ratio"):
        """Returns `sum_m |off_diag[p, m]| / exp(log_diag[p])` per pixel `p`.

        The off-diagonal mass of column `p` of `L` (row `p` of `L^T`) against
        its diagonal, over the entries inside the image. Where it is below 1
        at every pixel, `L^T` is strictly diagonally dominant and sampling's
        back-substitution cannot amplify the noise: `||L^{-T}||_inf <=
        1 / min_p exp(log_diag[p]) (1 - ratio[p])` (Varah's bound). Ratios
        above 1 over large regions let `L^{-T} eps` grow along the solve.

        Returns:
          `[..., H, W]` tensor.
        """
        with self._name_and_control_scope(name):
            _, log_diag, off_diag = self._params()
            height, width = self._image_shape().as_list()
            mask = linalg.off_diag_mask(
                height, width, dtype=self.dtype, **self._structure()
            )
            return tf.reduce_sum(tf.abs(off_diag) * mask, axis=-1) / tf.exp(log_diag)

    def marginal_variance(
        self, method="exact", num_samples=1000, seed=None, name="marginal_variance"
    ):
        """Returns the per-pixel variances `diag(Lambda^{-1})`, `[..., H, W]`.

        Args:
          method: `"exact"`: squared column norms of `L^{-1}` by wavefront
            solves against unit images, `O((H*W)^2 * K)` time but no dense
            matrix (`svae.linalg.inverse_precision_diag`); `"sample"`: the
            mean of `(x - loc)^2` over `num_samples` samples, unbiased with a
            relative standard error of `sqrt(2 / num_samples)`.
          num_samples: samples for `method="sample"`.
          seed: stateless seed for `method="sample"`.
          name: name scope of the ops.

        Returns:
          `[..., H, W]` tensor of variances.

        Raises:
          ValueError: for an unknown `method`.
        """
        if method not in ("exact", "sample"):
            raise ValueError(f'method must be "exact" or "sample", got {method!r}.')
        with self._name_and_control_scope(name):
            loc, log_diag, off_diag = self._params()
            if method == "sample":
                x = self.sample(num_samples, seed=seed)
                return tf.reduce_mean(tf.square(x - loc), axis=0)
            variance = linalg.inverse_precision_diag(
                log_diag, off_diag, **self._structure()
            )
            return tf.broadcast_to(variance, self._mean().shape)

    def conditional(
        self, observed, mask, tolerance=None, max_iterations=None, name="conditional"
    ):
        """Returns the Gaussian of the unobserved pixels given the observed ones.

        Args:
          observed: `[..., H, W]` images; only the values where `mask` is
            True are used.
          mask: `[..., H, W]` booleans, True where a pixel is observed.
          tolerance: relative residual of the conjugate-gradient solves;
            defaults to 1e-5 in float32 and 1e-10 in float64.
          max_iterations: cap on conjugate-gradient iterations; defaults to
            the number of unobserved pixels' upper bound `H * W`.
          name: name scope of the ops.

        Returns:
          A `SparsePrecisionConditional` with `mean()` and `sample(n, seed)`
          over the full image.
        """
        with self._name_and_control_scope(name):
            return SparsePrecisionConditional(
                self, observed, mask, tolerance, max_iterations
            )

    def precision_factor(self, name="precision_factor"):
        """Returns the dense `[..., H*W, H*W]` factor `L`: `O((H*W)^2)` memory.

        For small images only (tests, figures).
        """
        with self._name_and_control_scope(name):
            _, log_diag, off_diag = self._params()
            factor = linalg.dense_factor(log_diag, off_diag, **self._structure())
            n = self._num_pixels()
            shape = ps.concat([self._batch_shape_tensor(), [n, n]], 0)
            return tf.broadcast_to(factor, shape)

    def precision(self, name="precision"):
        """Returns the dense `[..., H*W, H*W]` precision `L L^T`: `O((H*W)^2)`."""
        with self._name_and_control_scope(name):
            factor = self.precision_factor()
            return tf.linalg.matmul(factor, factor, adjoint_b=True)

    def covariance(self, name="covariance"):
        """Returns the dense `[..., H*W, H*W]` covariance: `O((H*W)^3)` time.

        Computed as `L^{-T} L^{-1}` with dense triangular solves; for small
        images only.
        """
        with self._name_and_control_scope(name):
            factor = self.precision_factor()
            eye = tf.eye(self._num_pixels(), dtype=self.dtype)
            inverse = tf.linalg.triangular_solve(factor, eye, lower=True)
            return tf.linalg.matmul(inverse, inverse, adjoint_a=True)

    def _default_event_space_bijector(self):
        return tfp.bijectors.Identity(validate_args=self.validate_args)

    def _parameter_control_dependencies(self, is_init):
        kernel_size = self._kernel_size
        num_off = num_off_diagonals(kernel_size)
        if is_init:
            off_shape = self._off_diag.shape
            if off_shape.rank is not None and off_shape.rank < 3:
                raise ValueError(
                    "off_diag must have shape [..., H, W, K]; got rank "
                    f"{off_shape.rank} ({off_shape})."
                )
            if off_shape.rank is not None and off_shape[-1] not in (None, num_off):
                raise ValueError(
                    f"off_diag must have shape [..., H, W, {num_off}] for "
                    f"kernel_size={kernel_size}; got {off_shape}."
                )
            for name in ("loc", "log_diag"):
                shape = getattr(self, "_" + name).shape
                if shape.rank is not None and shape.rank < 2:
                    raise ValueError(
                        f"{name} must have shape [..., H, W]; got {shape}."
                    )
            try:
                image_shape = self._image_shape()
                self._batch_shape()
            except ValueError as e:
                raise ValueError(
                    "loc [..., H, W], log_diag [..., H, W] and off_diag "
                    "[..., H, W, K] must have broadcastable shapes; got "
                    f"loc.shape={self._loc.shape}, "
                    f"log_diag.shape={self._log_diag.shape}, "
                    f"off_diag.shape={self._off_diag.shape}."
                ) from e
            if not image_shape.is_fully_defined():
                raise ValueError(
                    "The image size [H, W] must be known statically; got loc, "
                    f"log_diag, off_diag shapes {self._loc.shape}, "
                    f"{self._log_diag.shape}, {self._off_diag.shape}."
                )
        if not self.validate_args:
            return []
        assertions = []
        for name in ("loc", "log_diag", "off_diag"):
            value = getattr(self, "_" + name)
            if is_init != tensor_util.is_ref(value):
                assertions.append(
                    assert_util.assert_finite(
                        value, message=f"Argument `{name}` must be finite."
                    )
                )
        if is_init != tensor_util.is_ref(self._off_diag):
            assertions.append(
                assert_util.assert_equal(
                    tf.shape(self._off_diag)[-1],
                    num_off,
                    message=(
                        f"off_diag must have shape [..., H, W, {num_off}] for "
                        f"kernel_size={kernel_size}."
                    ),
                )
            )
        return assertions

    def _sample_control_dependencies(self, x):
        if not self.validate_args:
            return []
        return [
            assert_util.assert_equal(
                tf.shape(x)[-2:],
                self._event_shape_tensor(),
                message="Argument `x` must have shape [..., H, W] matching the "
                "distribution's event shape.",
            )
        ]
