"""`python -m svae.selfcheck`: does svae compute correctly on this machine?

Checks the sparse-precision Gaussian's float32 results against a float64
reference, the XLA path against the eager one, the mixed-precision path, a
training step of every model and where the solve's ops run, on the default
device, in about a minute (docs/selfcheck.md).

The modules:

    command        the flags, the checks' registry and `run_selfcheck`
    numerics       the distribution's checks and their float64 reference
    model_checks   mixed precision, and one training step of each model
    devices        the machine's devices and versions, the ops' placement
    report         a check's outcome and result, the table, the JSON
"""

from svae.selfcheck.command import (
    GROUPS,
    SelfCheckConfig,
    check_names,
    registry,
    run_selfcheck,
)

__all__ = ["GROUPS", "SelfCheckConfig", "check_names", "registry", "run_selfcheck"]
