"""What the four scripts share: flags from dataclasses, ranges, errors, app.run.

Each script module (`svae.cli.train`, `evaluate`, `sample`, `export`)
defines its flags in a `define_flags(flag_values)` function, most of them
with `define_flags` here from the fields of its config dataclass (`Config`,
`EvalConfig`, `SampleConfig`): a flag per field, of the field's type, with
its default and its range. `run(main, define_flags, errors)` is every
script's entry point: absl parses the flags, and a value outside its range
(`bound_flags`: the `svae.fields.ranged` fields of the dataclass) or a
positional argument is a usage error before `main` runs: `FATAL Flags
parsing error: ...` on stderr, exit status 1, nothing done. An exception of
`errors` raised by `main` is one `svae: error: ...` line, exit status 1, and
so is a full disk (`svae.files.is_no_space`) in any script.
"""

import dataclasses
import functools
import os
import sys
import textwrap
import types
import typing

from absl import app, flags

from svae import fields as fields_lib

__all__ = [
    "bound_flags",
    "define_flags",
    "model_dir_or_newest",
    "parse_flags",
    "run",
]

# The flags that `define_flags` defines belong to the script module calling
# it (absl's key flags: what `--help` lists), not to this one.
flags.disclaim_key_flags()

_DEFINE = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
    # A tuple field is a comma-separated list flag (`--models=a,b`).
    tuple: flags.DEFINE_list,
}


def _check(allowed: fields_lib.Range, value) -> bool:
    """Validates one flag value; raises flags.ValidationError naming the range."""
    # None is the default of a flag that was not given (absl parses no None).
    if value is None or value in allowed:
        return True
    raise flags.ValidationError(allowed.error(value))


def bound_flags(cls=None, *, ranges=None, flag_values=flags.FLAGS) -> None:
    """Makes the flags named like `ranged` fields of `cls` reject other values.

    Each such flag gets an absl validator, run when the flags are parsed, and
    its range at the end of its help (`--help` shows it).

    Args:
      cls: a dataclass with `svae.fields.ranged` fields (`Config`,
        `EvalConfig`, `SampleConfig`); fields that are no flag are skipped.
      ranges: `{flag name: svae.fields.Range}` of flags that are no field.
      flag_values: the `absl.flags.FlagValues` holding the flags.
    """
    table = fields_lib.field_ranges(cls) if cls is not None else {}
    for name, allowed in (table | (ranges or {})).items():
        if name not in flag_values:
            continue
        flag_values[name].help += f" Must be {allowed}."
        flags.register_validator(
            name, functools.partial(_check, allowed), flag_values=flag_values
        )


def define_flags(
    cls, helps, *, enums=None, defaults=None, flag_values=flags.FLAGS
) -> None:
    """Defines one flag per field of the dataclass `cls`, bounded by its range.

    Each flag has its field's name, type (`bool`, `int`, `float`, `str`, or
    `tuple`: a comma-separated list; optional or not) and default (a field
    without one: None), then `bound_flags` adds the field's range. A field
    added to `cls` without a help here is an error when the script starts
    (and in the tests).

    Args:
      cls: the script's config dataclass.
      helps: `{field name: help}`, one for every field.
      enums: `{field name: allowed values}` of string flags that are enums.
      defaults: `{field name: default}` where the flag's default is not the
        field's.
      flag_values: the `absl.flags.FlagValues` to define them in.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if helps.keys() != fields.keys():
        missing = ", ".join(sorted(fields.keys() - helps.keys())) or "none"
        unknown = ", ".join(sorted(helps.keys() - fields.keys())) or "none"
        raise ValueError(
            f"The flags of {cls.__name__} need a help for each field "
            f"(missing: {missing}; no such field: {unknown})."
        )
    enums, defaults = enums or {}, defaults or {}
    hints = typing.get_type_hints(cls)
    for name, field in fields.items():
        default = field.default
        if default is dataclasses.MISSING:
            default = None
        default = defaults.get(name, default)
        # `int | None` is an integer flag whose default may be None.
        kinds = typing.get_args(hints[name]) or (hints[name],)
        kind = next(k for k in kinds if k is not types.NoneType)
        if name in enums:
            flags.DEFINE_enum(
                name, default, list(enums[name]), helps[name], flag_values=flag_values
            )
        else:
            if kind is tuple and default is not None:
                default = list(default)  # absl's list flags take lists.
            _DEFINE[kind](name, default, helps[name], flag_values=flag_values)
    bound_flags(cls, flag_values=flag_values)


def model_dir_or_newest(model_dir) -> str:
    """Returns `--model_dir`, or else the newest finished run under `runs/`.

    The newest run (`svae.runs.newest_run`) is announced on stdout, the
    script's first line: `svae: using the newest finished run runs/...`.

    Raises:
      svae.runs.RunError: no `--model_dir` and no finished run.
    """
    if model_dir:
        return model_dir
    from svae import runs

    path = runs.newest_run()
    print(f"svae: using the newest finished run {path}", flush=True)
    return str(path)


def _program(path) -> str:
    """The command's name in messages: `train.py`, or `python -m svae.demo`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    origin = getattr(spec, "origin", None)
    if origin and os.path.realpath(origin) == os.path.realpath(path):
        return "python -m " + spec.name.removesuffix(".__main__")
    return os.path.basename(path)


def parse_flags(argv, flag_values=flags.FLAGS) -> list[str]:
    """Parses the flags of `argv`; any other argument is a usage error.

    The scripts take flags only: a stray word (`train.py foo`, or a flag
    without its dashes) would otherwise be ignored. `--help` and its kin
    exit with status 0 (absl's exit 1).

    Returns:
      `[argv[0]]`, what `app.run` passes to `main`.
    """
    try:
        try:
            rest = flag_values(argv)
        except SystemExit as done:
            # absl's --help, --helpshort, --helpfull and --helpxml print the
            # help, then exit with status 1 (bad flags raise flags.Error):
            # help that was asked for is a success.
            sys.exit(0 if done.code == 1 else done.code)
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
                f"{_program(argv[0])} takes flags only (--name=value)."
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


def run(main, define, errors=None) -> None:
    """A script's entry point: defines its flags, parses them, runs `main`.

    `--help` lists the script's flags and starts with its module's docstring
    (unless the program run, `__main__`, has a docstring of its own): absl
    shows the flags and docstring of the program run, which is a wrapper
    (`train.py`) or a console script (`svae-train`), not the script module.
    TensorFlow is imported after the flags are parsed
    (`svae.cli.quiet_tensorflow`), so `define` must not need it.

    Args:
      main: `main()` of the script: reads `flags.FLAGS`, returns the exit
        status (None: 0).
      define: `define(flag_values)`, which defines the script's flags.
      errors: `errors()` returns the exception types that `main` raises for
        bad input (a function: their modules may import TensorFlow); each is
        one `svae: error: <message>` line on stderr and exit status 1.
        None: none.
    """
    define(flags.FLAGS)
    module = define.__module__
    for flag in flags.FLAGS.get_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    program = sys.modules["__main__"]
    if not program.__doc__:
        program.__doc__ = sys.modules[module].__doc__

    def guarded(argv):
        del argv  # parse_flags leaves only the program name.
        from svae.cli import quiet_tensorflow

        quiet_tensorflow()
        import tensorflow as tf

        from svae import files

        bad_input = errors() if errors else ()
        try:
            return main()
        except bad_input as e:
            print(f"svae: error: {e}", file=sys.stderr)
            return 1
        except (OSError, tf.errors.OpError) as e:
            # A full disk anywhere: every write of svae is atomic, so what
            # is on disk is whole; one line says so.
            if not files.is_no_space(e):
                raise
            print(
                f"svae: error: {e}. What was written before is whole; free "
                "space and run the same command again.",
                file=sys.stderr,
            )
            return 1

    app.run(guarded, flags_parser=parse_flags)
