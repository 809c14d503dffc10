"""The README's runnable examples run and print what they claim."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _python_programs():
    """The README's ```python blocks that are whole programs (they import)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if re.search(r"^import ", b, flags=re.M)]


def test_readme_has_a_runnable_example():
    assert _python_programs(), "README.md lost its runnable example"


def test_readme_examples_run_and_print_the_shapes_they_state():
    for program in _python_programs():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(program, str(README), "exec"), {})
        printed = out.getvalue()
        for claim in re.findall(r"print\(.*\)\s+# (\(.*\))", program):
            assert claim in printed, f"README claims {claim}, printed:\n{printed}"


def test_every_test_the_guarantees_name_exists():
    text = README.read_text(encoding="utf-8")
    section = text.split("## What svae guarantees", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(test_\w+)`", section))
    defined = {
        match
        for path in README.parent.joinpath("tests").glob("test_*.py")
        for match in re.findall(r"^def (test_\w+)\(", path.read_text(), re.M)
    }
    assert len(named) > 15 and named <= defined, named - defined
