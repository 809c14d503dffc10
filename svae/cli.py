"""What the four scripts share: flag ranges, flags-only command lines, app.run.

`train.py`, `evaluate.py`, `sample.py` and `export.py` end in `cli.run(main)`:
absl parses the flags, and a value outside its range (`bound_flags`: the
`svae.config.ranged` fields of the script's config dataclass) or a
positional argument is a usage error before `main` runs: `FATAL Flags
parsing error: ...` on stderr, exit status 1, nothing done.
"""

import functools
import os
import sys
import textwrap

from absl import app, flags

from svae import config as config_lib

__all__ = ["bound_flags", "parse_flags", "run"]


def _check(allowed: config_lib.Range, value) -> bool:
    """Validates one flag value; raises flags.ValidationError naming the range."""
    # None is the default of a flag that was not given (absl parses no None).
    if value is None or value in allowed:
        return True
    raise flags.ValidationError(allowed.error(value))


def bound_flags(cls=None, *, ranges=None, flag_values=flags.FLAGS) -> None:
    """Makes the flags named like `ranged` fields of `cls` reject other values.

    Each such flag gets an absl validator, run when the flags are parsed, and
    its range at the end of its help (`--helpfull` shows it).

    Args:
      cls: a dataclass with `svae.config.ranged` fields (`Config`,
        `EvalConfig`, `SampleConfig`); fields that are no flag are skipped.
      ranges: `{flag name: svae.config.Range}` of flags that are no field.
      flag_values: the `absl.flags.FlagValues` holding the flags.
    """
    table = config_lib.field_ranges(cls) if cls is not None else {}
    for name, allowed in (table | (ranges or {})).items():
        if name not in flag_values:
            continue
        flag_values[name].help += f" Must be {allowed}."
        flags.register_validator(
            name, functools.partial(_check, allowed), flag_values=flag_values
        )


def parse_flags(argv, flag_values=flags.FLAGS) -> list[str]:
    """Parses the flags of `argv`; any other argument is a usage error.

    The scripts take flags only: a stray word (`train.py foo`, or a flag
    without its dashes) would otherwise be ignored.

    Returns:
      `[argv[0]]`, what `app.run` passes to `main`.
    """
    try:
        rest = flag_values(argv)
        if len(rest) > 1:
            stray = rest[1:]
            meant = [
                f"--{word.lstrip('-')}"
                for word in stray
                if word.partition("=")[0].lstrip("-") in flag_values
            ]
            hint = f" (did you mean {' '.join(meant)}?)" if meant else ""
            raise flags.Error(
                f"unexpected argument(s) {' '.join(map(repr, stray))}{hint}: "
                f"{os.path.basename(argv[0])} takes flags only (--name=value)."
            )
    except flags.Error as error:
        # absl's own format (app.parse_flags_with_usage).
        message = str(error)
        if "\n" in message:
            message = "\n" + textwrap.indent(message, "  ")
        else:
            message = " " + message
        sys.stderr.write(f"FATAL Flags parsing error:{message}\n")
        sys.stderr.write("Pass --helpshort or --helpfull to see help on flags.\n")
        sys.exit(1)
    return rest


def run(main) -> None:
    """`app.run(main)` with `parse_flags`: the scripts' entry point."""
    app.run(main, flags_parser=parse_flags)
