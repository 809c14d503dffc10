"""svae: VAEs with structured (sparse-precision Gaussian) residuals.

Reference implementation of Dorta, Vicente, Agapito, Campbell and Simpson,
"Training VAEs Under Structured Residuals" (2018).
"""

from svae import color, data, distributions, linalg
from svae.distributions import SparsePrecisionGaussian, neighbour_offsets

__version__ = "0.1.0"

__all__ = [
    "SparsePrecisionGaussian",
    "color",
    "data",
    "distributions",
    "linalg",
    "neighbour_offsets",
]
