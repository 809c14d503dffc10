"""The command lines: `svae-train`, `svae-evaluate`, `svae-sample`, `svae-export`.

One module per script (`svae.cli.train`, `evaluate`, `sample`, `export`)
holds its flags and `main`; its `run()` is the console script's entry point
and what `python train.py` (a two-line wrapper) calls. `svae.cli.common`
holds what they share (flags from the config dataclasses, their ranges, the
error handler, `app.run`).

A script imports TensorFlow only once its flags are parsed: `--help` and a
bad flag answer without it, in a fraction of a second. `run` then calls
`quiet_tensorflow`, which imports TensorFlow with its C++ start-up lines
filtered; `svae` imports its submodules lazily for that, and the script
modules import the TensorFlow parts of svae inside `main`.
"""

import os
import re
import sys
import tempfile

__all__ = [
    "bound_flags",
    "define_flags",
    "model_dir_or_newest",
    "parse_flags",
    "quiet_tensorflow",
    "run",
]

# A line of TensorFlow's C++ logging: absl's format (`I0000 00:00:1796146732.12
#   7378 port.cc:153] ...`, seconds since 1970 until absl is initialised) or
# TensorFlow's own (`2026-01-01 10:00:00.000000: W tensorflow/...cc:12] ...`);
# the group that matched is the severity.
_LOG_LINE = re.compile(
    rb"^(?:([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) \S+:\d+\])"
)
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def _shown(line: bytes, level: int) -> bool:
    """Whether `TF_CPP_MIN_LOG_LEVEL=level` lets a line of stderr through."""
    if line.startswith(_ABSL_PREAMBLE):
        return level < _SEVERITY[b"W"]
    match = _LOG_LINE.match(line)
    if match is None:
        return True  # Not a log line: Python's output, a traceback.
    return _SEVERITY[match.group(1) or match.group(2)] >= level


def quiet_tensorflow() -> None:
    """Imports TensorFlow with its C++ logging at `TF_CPP_MIN_LOG_LEVEL`.

    Unless the user set `TF_CPP_MIN_LOG_LEVEL`, it is set to 3 (errors too
    are hidden: on a machine without an NVIDIA driver `failed call to cuInit`
    is one at every start) or, where an NVIDIA driver is loaded, to 2 (CUDA's
    errors say why a GPU goes unused). `TF_CPP_MIN_LOG_LEVEL=0` shows all.

    TensorFlow's libraries log a few lines while they are imported (`oneDNN
    custom operations are on`, `Could not find cuda drivers`) before their
    logging reads the variable, so these are filtered here by the same
    level: stderr (file descriptor 2) goes to a temporary file during the
    import, and the lines the level lets through are written back. A failed
    import writes back every line. Nothing is done once TensorFlow is
    imported (a library or a test imported it first).
    """
    if "tensorflow" in sys.modules:
        return
    default = "2" if os.path.isdir("/proc/driver/nvidia") else "3"
    setting = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", default)
    try:
        level = int(setting)
    except ValueError:
        level = 0
    if level <= 0:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        captured = tempfile.TemporaryFile()
    except (OSError, ValueError, AttributeError):
        return  # No stderr to redirect: TensorFlow prints as it does.
    failed = True
    try:
        os.dup2(captured.fileno(), 2)
        import tensorflow  # noqa: F401

        failed = False
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        with captured:
            captured.seek(0)
            for line in captured:
                if failed or _shown(line, level):
                    os.write(2, line)


# Defined above: `common.run` calls it before `main`.
from svae.cli.common import (  # noqa: E402
    bound_flags,
    define_flags,
    model_dir_or_newest,
    parse_flags,
    run,
)
