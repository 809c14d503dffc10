"""svae: VAEs with structured (sparse-precision Gaussian) residuals.

Reference implementation of Dorta, Vicente, Agapito, Campbell and Simpson,
"Training VAEs Under Structured Residuals" (2018).

The names below are imported on first use, so that `import svae.cli.train`
(a console script) does not import TensorFlow: the command lines parse their
flags first, then import it with its C++ logging quieted (`svae.cli`).
"""

from svae import lazy

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

__getattr__ = lazy.module_getattr(
    __name__,
    __all__,
    ["distributions"],
    submodules=["color", "data", "distributions", "layers", "linalg", "losses"],
)


def __dir__():
    return sorted(set(globals()) | set(__all__))
