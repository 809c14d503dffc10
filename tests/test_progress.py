"""Tests of svae.progress: plain lines in logs, Keras' bar on a terminal."""

import io

import keras

from svae import progress as progress_lib


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_first_and_a_last_line_and_no_repeat():
    stream = io.StringIO()
    progress = progress_lib.Progress(10, metrics=("loss",), interval=1e9, stream=stream)
    progress.update(0)
    for step in range(1, 11):
        progress.update(step, [("loss", 1.0 / step)])
    progress.update(10, finalize=True)  # The count of the line printed at 10.
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("0/10 steps (0%) - 0s elapsed")
    assert lines[1].startswith("10/10 steps (100%)")
    assert "loss: 0.1000" in lines[1]
    assert "\b" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_a_log_line_every_interval_with_an_eta():
    stream = io.StringIO()
    progress = progress_lib.Progress(4, "image", interval=0.0, stream=stream)
    for count in range(5):
        progress.update(count)  # Reaching the target finalizes.
    lines = stream.getvalue().splitlines()
    assert [line.split(" ")[0] for line in lines] == ["0/4", "1/4", "2/4", "3/4", "4/4"]
    assert all("ETA" in line for line in lines[1:4])
    assert "ETA" not in lines[0] and "ETA" not in lines[4]
    assert lines[4].startswith("4/4 images (100%)")


def test_an_unknown_target_counts_without_a_fraction():
    stream = io.StringIO()
    progress = progress_lib.Progress(None, "image", interval=0.0, stream=stream)
    progress.update(3)
    progress.update(5, finalize=True)
    lines = stream.getvalue().splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["3 images", "5 images"]


def test_seconds_read_like_a_clock():
    assert progress_lib._format_seconds(3) == "3s"
    assert progress_lib._format_seconds(125) == "2:05"
    assert progress_lib._format_seconds(3725) == "1:02:05"


def test_a_terminal_gets_keras_bar(monkeypatch):
    made = []

    class Recording(keras.utils.Progbar):
        def __init__(self, target, **kwargs):
            made.append((target, kwargs))
            super().__init__(target, **kwargs)

    monkeypatch.setattr(keras.utils, "Progbar", Recording)
    stream = _Terminal()
    progress = progress_lib.Progress(3, "image", metrics=("nll",), stream=stream)
    progress.update(3, [("nll", 2.0)], finalize=True)
    assert made == [(3, {"unit_name": "image", "stateful_metrics": ["nll"]})]
    assert stream.getvalue() == ""  # Keras' bar writes to sys.stdout.
