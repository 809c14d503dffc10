"""Dataclass fields with a type and a range, checked when the value is built.

`ranged(default, ge=..., le=...)` declares a field; `check_fields(instance)`
in `__post_init__` converts each value to its field's builtin type and checks
its range; `svae.cli.bound_flags` gives each flag of such a field the same
range. Used by the run configs (`svae.config`) and the likelihood's options
(`svae.recipes`).
"""

import dataclasses
import math
import numbers
import os
import typing

__all__ = ["Range", "check_fields", "field_ranges", "ranged"]


@dataclasses.dataclass(frozen=True)
class Range:
    """The allowed values of a numeric field: bounds, or a set of choices.

    `ge`, `le` are inclusive bounds, `gt`, `lt` exclusive ones; None leaves
    that side open. `note` says why, after the error message.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    note: str = ""

    def __contains__(self, value) -> bool:
        """Whether `value` is allowed."""
        if self.choices is not None:
            return value in self.choices
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def __str__(self) -> str:
        """Says what is allowed: ">= 1", "> 0", "in (0, 1)", "one of 3, 5, 7"."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        low = ("[", ">=", self.ge) if self.ge is not None else ("(", ">", self.gt)
        high = ("]", "<=", self.le) if self.le is not None else (")", "<", self.lt)
        if low[2] is not None and high[2] is not None:
            return f"in {low[0]}{low[2]}, {high[2]}{high[0]}"
        if low[2] is not None:
            return f"{low[1]} {low[2]}"
        if high[2] is not None:
            return f"{high[1]} {high[2]}"
        return "any value"

    def error(self, value) -> str:
        """The message for a value that is not allowed: "must be >= 1, got 0"."""
        note = f": {self.note}" if self.note else ""
        return f"must be {self}, got {value!r}{note}"


_RANGE = "svae.range"


def ranged(default, **allowed) -> typing.Any:
    """A dataclass field whose values must lie in `Range(**allowed)` (None too,
    if the field's type allows it); `check_fields` and `svae.cli.bound_flags`
    read it."""
    return dataclasses.field(default=default, metadata={_RANGE: Range(**allowed)})


def field_ranges(cls) -> dict[str, Range]:
    """Returns `{name: range}` of the `ranged` fields of a dataclass."""
    return {
        f.name: f.metadata[_RANGE]
        for f in dataclasses.fields(cls)
        if _RANGE in f.metadata
    }


_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a finite number",
    str: "a string",
}


def _typed(field: dataclasses.Field, value, error: type[Exception]):
    """Returns `value` as the builtin type of `field`, or raises `error`."""
    kinds = typing.get_args(field.type) or (field.type,)
    optional = type(None) in kinds
    kind = next((k for k in kinds if k is not type(None)), None)
    if kind not in _TYPE_NAMES or (value is None and optional):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if kind is int:
            return int(value)
    if kind is float and isinstance(value, numbers.Real):
        if not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    if kind is str and isinstance(value, str | os.PathLike):
        if isinstance(os.fspath(value), str):
            return os.fspath(value)
    expected = _TYPE_NAMES[kind] + (" or None" if optional else "")
    raise error(f"{field.name} must be {expected}, got {value!r}.")


def check_fields(instance, error: type[Exception] = ValueError) -> None:
    """Checks each field of a dataclass against its type and its `ranged` range.

    Numbers become the field's builtin type (an integer given for a float
    field becomes a float, numpy scalars Python numbers) and paths of string
    fields strings, so that the instance writes as JSON.

    Raises:
      error: a value of another type, or outside its field's range; the
        message names the field, what it must be and the value.
    """
    for field in dataclasses.fields(instance):
        value = _typed(field, getattr(instance, field.name), error)
        allowed = field.metadata.get(_RANGE)
        if allowed is not None and value is not None and value not in allowed:
            raise error(f"{field.name} {allowed.error(value)}.")
        object.__setattr__(instance, field.name, value)
