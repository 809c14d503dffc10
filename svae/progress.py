"""Progress reports: Keras' bar on a terminal, a plain line now and then in logs.

Keras' `Progbar` redraws its line with backspaces and colour codes whenever
`posix` is imported, that is on every Linux machine, terminal or not: piped
into a log, a training run writes ~5 kB of them per second on one line. On a
terminal `Progress` is that bar; elsewhere (a log file, a cluster job, a
pipe) it prints one plain line every `interval` seconds and a last one at the
end, which a log keeps readable.
"""

import sys
import time

__all__ = ["Progress"]


def _format_seconds(seconds):
    """`1:02:03`, `2:03` or `3s`."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    if seconds >= 60:
        return f"{seconds // 60}:{seconds % 60:02d}"
    return f"{seconds}s"


def _format_value(value):
    """A metric as Keras' bar shows it."""
    return f"{value:.4f}" if abs(value) > 1e-3 else f"{value:.4e}"


class Progress:
    """Reports progress towards `target` units with the latest metrics.

    Args:
      target: units in all (steps, images), or None if unknown.
      unit_name: what a unit is, for the report.
      metrics: names of the metrics `update` is given; each is shown with its
        latest value.
      interval: seconds between plain lines (not on a terminal).
      stream: where plain lines go; default `sys.stdout`.
    """

    def __init__(
        self, target, unit_name="step", metrics=(), interval=10.0, stream=None
    ):
        self.target = target
        self._stream = sys.stdout if stream is None else stream
        self._unit_name = unit_name
        self._interval = interval
        self._bar = None
        if getattr(self._stream, "isatty", lambda: False)():
            import keras  # Only here: importing Keras takes seconds.

            self._bar = keras.utils.Progbar(
                target, unit_name=unit_name, stateful_metrics=list(metrics)
            )
        self._values = {}
        self._first = None  # (time, count) of the first update, for the ETA.
        self._last_time = None
        self._last_printed = None

    def update(self, current, values=(), finalize=None):
        """Records that `current` units are done.

        Args:
          current: units done so far.
          values: `(name, value)` pairs of metrics.
          finalize: the last update; on a terminal it ends the bar's line,
            elsewhere it prints a last line unless that count was printed.
            Default: whether `current` has reached the target.
        """
        if finalize is None:
            finalize = bool(self.target) and current >= self.target
        if self._bar is not None:
            self._bar.update(current, list(values), finalize=finalize)
            return
        self._values.update((name, float(value)) for name, value in values)
        now = time.monotonic()
        if self._first is None:
            self._first = (now, current)
        if finalize:
            if current == self._last_printed:
                return
        elif self._last_time is not None and now - self._last_time < self._interval:
            return
        self._last_time, self._last_printed = now, current
        self._stream.write(self._line(current, now, finalize) + "\n")
        self._stream.flush()

    def _line(self, current, now, finalize):
        """The plain report for `current` units at time `now`."""
        start, first_count = self._first
        elapsed = now - start
        parts = [f"{current} {self._unit_name}s"]
        if self.target:
            parts[0] = f"{current}/{self.target} {self._unit_name}s"
            parts[0] += f" ({100.0 * current / self.target:.0f}%)"
        timing = f"{_format_seconds(elapsed)} elapsed"
        done = current - first_count
        if not finalize and done > 0 and self.target:
            remaining = (self.target - current) * elapsed / done
            timing += f", ETA {_format_seconds(remaining)}"
        parts.append(timing)
        parts += [f"{name}: {_format_value(v)}" for name, v in self._values.items()]
        return " - ".join(parts)
