"""svae: VAEs with structured (sparse-precision Gaussian) residuals.

Reference implementation of Dorta, Vicente, Agapito, Campbell and Simpson,
"Training VAEs Under Structured Residuals" (2018).

The names below are imported on first use, so that `import svae.cli.train`
(a console script) does not import TensorFlow: the command lines parse their
flags first, then import it with its C++ logging quieted (`svae.cli`).
"""

import importlib

__version__ = "0.1.0"

__all__ = [
    "SparsePrecisionGaussian",
    "color",
    "data",
    "distributions",
    "layers",
    "linalg",
    "losses",
    "neighbour_offsets",
]

_SUBMODULES = frozenset(
    {"color", "data", "distributions", "layers", "linalg", "losses"}
)
_FROM_DISTRIBUTIONS = frozenset({"SparsePrecisionGaussian", "neighbour_offsets"})


def __getattr__(name):
    """Imports the submodules and names of `__all__` when first used."""
    if name in _SUBMODULES:
        return importlib.import_module(f"svae.{name}")
    if name in _FROM_DISTRIBUTIONS:
        return getattr(importlib.import_module("svae.distributions"), name)
    raise AttributeError(f"module 'svae' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
