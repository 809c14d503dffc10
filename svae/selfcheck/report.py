"""The self-check's results: one row per check, timed, as a table or JSON.

A check is a function of no arguments that returns an `Outcome` (its
error, the tolerance it must stay within, where it ran, what it saw) or
raises; `run_check` times it and turns an exception into a FAIL whose
message is the exception's first line, so that one broken check never hides
the others.
"""

import dataclasses
import json
import math
import time

__all__ = [
    "Outcome",
    "Result",
    "device_name",
    "row",
    "run_check",
    "table_header",
    "to_json",
]

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"

# Column widths of the table (the result column takes the rest of the line).
_WIDTHS = (22, 8)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a check measured.

    Attributes:
      error: the measured error, in the check's own unit (`detail` says it).
      tolerance: the check passes when `error <= tolerance` (and both are
        finite).
      device: where the checked computation ran (`device_name`).
      detail: what was compared, and in which unit.
      skipped: the reason the check could not run on this machine, or "".
      data: extra values for the JSON report.
    """

    error: float = 0.0
    tolerance: float = 0.0
    device: str = ""
    detail: str = ""
    skipped: str = ""
    data: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Result:
    """One row of the report: a check's name, group, outcome and time."""

    name: str
    group: str
    status: str
    device: str
    error: float | None
    tolerance: float | None
    detail: str
    milliseconds: float
    data: dict = dataclasses.field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Whether the check failed (a skipped check did not)."""
        return self.status == FAIL

    def to_dict(self) -> dict:
        """The result as JSON-ready values (a NaN error becomes None)."""
        values = dataclasses.asdict(self)
        for key in ("error", "tolerance"):
            if values[key] is not None and not math.isfinite(values[key]):
                values[key] = str(values[key])
        return values


def device_name(device) -> str:
    """`CPU:0` from `/job:localhost/replica:0/task:0/device:CPU:0` (or "")."""
    return str(device or "").rpartition("device:")[2]


def run_check(name, group, function) -> Result:
    """Runs one check, timing it; an exception is a FAIL naming it."""
    start = time.perf_counter()
    try:
        outcome = function()
    except Exception as e:  # A check that breaks is a failed check.
        message = (str(e).strip().splitlines() or [""])[0]
        outcome = None
        error = f"{type(e).__name__}: {message}"[:300]
    milliseconds = 1000.0 * (time.perf_counter() - start)
    if outcome is None:
        return Result(name, group, FAIL, "", None, None, error, milliseconds)
    if outcome.skipped:
        status = SKIP
        error = tolerance = None
        detail = outcome.skipped
    else:
        error, tolerance = float(outcome.error), float(outcome.tolerance)
        ok = math.isfinite(error) and error <= tolerance
        status = PASS if ok else FAIL
        detail = outcome.detail
    return Result(
        name,
        group,
        status,
        outcome.device,
        error,
        tolerance,
        detail,
        milliseconds,
        dict(outcome.data),
    )


def _format(value) -> str:
    """A number for the table: 3 significant digits, small ones as 1.2e-05."""
    if value == 0 or 0.01 <= abs(value) < 1e4:
        return f"{value:.3g}"
    return f"{value:.1e}"


def table_header() -> str:
    """The table's header line."""
    name, device = _WIDTHS
    return f"{'check':<{name}} {'device':<{device}} {'time ms':>8}  result"


def row(result: Result) -> str:
    """One line of the table: check, device, time, PASS/FAIL/SKIP with the
    error against the tolerance, and what was compared."""
    name, device = _WIDTHS
    head = (
        f"{result.name:<{name}} {result.device or '-':<{device}} "
        f"{result.milliseconds:>8.0f}  {result.status}"
    )
    if result.error is None:
        return f"{head}  {result.detail}"
    relation = "<=" if result.status == PASS else "vs tolerance"
    return (
        f"{head}  {_format(result.error)} {relation} {_format(result.tolerance)}"
        f"  ({result.detail})"
    )


def to_json(results, environment, seconds) -> str:
    """The whole report as indented JSON."""
    failed = [r.name for r in results if r.failed]
    return json.dumps(
        {
            "passed": not failed,
            "failed": failed,
            "seconds": seconds,
            "environment": environment,
            "checks": [r.to_dict() for r in results],
        },
        indent=2,
    )
