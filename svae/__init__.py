"""svae: VAEs with structured (sparse-precision Gaussian) residuals.

Reference implementation of Dorta, Vicente, Agapito, Campbell and Simpson,
"Training VAEs Under Structured Residuals" (2018).
"""

__version__ = "0.1.0"
