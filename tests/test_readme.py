"""The README and docs/: examples run, links resolve, named things exist."""

import ast
import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
GUARANTEES = DOCS / "guarantees.md"
ARCHITECTURE = DOCS / "architecture.md"
# The pages a reader follows links through.
PAGES = [README, *sorted(DOCS.glob("*.md")), RESULTS]
# Where a `docs/...` path may be named: code, flags' help, Markdown, builds.
NAMING_FILES = [
    *ROOT.glob("*.py"),
    *(ROOT / "svae").rglob("*.py"),
    *(ROOT / "benchmarks").rglob("*.py"),
    *(ROOT / "tests").rglob("*.py"),
    *PAGES,
    ROOT / "Makefile",
    ROOT / "pyproject.toml",
    *(ROOT / "docker").rglob("*"),
]
# `docs/` followed by a path, not part of a longer path or a glob.
_DOCS_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*[\w/]")
_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6}) +(.*?) *#* *$")
# [text](target) and ![alt](target); the text may wrap lines.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")


def _outside_fences(text):
    """The text with fenced code blocks blanked out, line numbers kept."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return "\n".join(lines)


def _code_blocks(text, language):
    """The fenced blocks of `language` in a Markdown text."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _python_programs():
    """`(page, block)`: the ```python blocks that are whole programs (import)."""
    return [
        (page, block)
        for page in [README, *sorted(DOCS.glob("*.md"))]
        for block in _code_blocks(page.read_text(encoding="utf-8"), "python")
        if re.search(r"^import ", block, flags=re.M)
    ]


def _slug(heading):
    """GitHub's anchor of a heading: lower case, no punctuation, spaces -> -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # A link's text.
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(page):
    """The anchors of a page's headings, numbered on repeats as GitHub does."""
    seen, anchors = {}, set()
    for line in _outside_fences(page.read_text(encoding="utf-8")).split("\n"):
        match = _HEADING.match(line)
        if match:
            slug = _slug(match.group(2))
            anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(page):
    """The link targets of a page, outside code blocks and code spans."""
    text = _outside_fences(page.read_text(encoding="utf-8"))
    targets = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = re.sub(r"(`+).+?\1", "", paragraph, flags=re.S)
        targets += _LINK.findall(paragraph)
    return targets


def test_docs_have_a_runnable_example():
    assert _python_programs(), "README.md and docs/ lost their runnable example"


def test_examples_run_and_print_the_shapes_they_state():
    for page, program in _python_programs():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(program, str(page), "exec"), {})
        printed = out.getvalue()
        for claim in re.findall(r"print\(.*\)\s+# (\(.*\))", program):
            assert claim in printed, f"{page.name} claims {claim}, printed:\n{printed}"


def test_every_test_the_guarantees_name_exists():
    text = GUARANTEES.read_text(encoding="utf-8")
    section = text.split("# What svae guarantees", 1)[1]
    named = set(re.findall(r"`(test_\w+)`", section))
    defined = {
        match
        for path in (ROOT / "tests").glob("test_*.py")
        for match in re.findall(r"^def (test_\w+)\(", path.read_text(), re.M)
    }
    assert len(named) > 15 and named <= defined, named - defined


def test_every_docs_path_named_exists():
    named = {}
    for path in NAMING_FILES:
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            for match in _DOCS_PATH.findall(text):
                named.setdefault(match, path.relative_to(ROOT))
    assert "docs/data.md" in named  # train.py's --dataset help names it.
    missing = {
        name: str(where) for name, where in named.items() if not (ROOT / name).exists()
    }
    assert not missing, f"docs paths that do not exist (path: where named): {missing}"


def test_the_manual_is_in_docs():
    for name in [
        "data",
        "training",
        "evaluation",
        "serving",
        "distribution",
        "architecture",
        "guarantees",
        "development",
    ]:
        assert (DOCS / f"{name}.md").is_file(), name
        assert f"](docs/{name}.md)" in README.read_text(), f"README links {name}.md"


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        for target in _links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:: not checked here.
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_slugs_are_githubs():
    assert _slug("The models (`svae.models`, `--model=`)") == (
        "the-models-svaemodels---model"
    )
    assert _slug("`sample_photos`: the embedded default") == (
        "sample_photos-the-embedded-default"
    )
    assert _slug("On other photographs (2026-12-01, 17:09 UTC)") == (
        "on-other-photographs-2026-12-01-1709-utc"
    )


def _imports():
    """`{(a, b): lazy}`: module `svae.a` imports `svae.b`; lazy if only in a
    function. A package (`svae.data`, `svae.cli`) counts as one module."""
    found = {}
    for path in (ROOT / "svae").rglob("*.py"):
        parts = path.relative_to(ROOT / "svae").with_suffix("").parts
        if parts == ("__init__",):
            continue
        source = parts[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lazy_nodes = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "svae":
                names = [f"svae.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                target = name.split(".")[1] if name.startswith("svae.") else None
                if target and target != source:
                    lazy = id(node) in lazy_nodes
                    found[source, target] = found.get((source, target), True) and lazy
    return found


def test_the_module_diagram_matches_the_imports():
    marker = "%% A --> B: module A imports module B"
    text = ARCHITECTURE.read_text(encoding="utf-8")
    (diagram,) = [b for b in _code_blocks(text, "mermaid") if marker in b]
    drawn = {}
    for a, b in re.findall(r"^\s*(\w+) --> (\w+)\s*$", diagram, flags=re.M):
        drawn[a, b] = False
    for a, b in re.findall(r"^\s*(\w+) -\..*\.-> (\w+)\s*$", diagram, flags=re.M):
        drawn[a, b] = True
    actual = _imports()
    assert drawn == actual, (
        f"drawn, not imported: {sorted(set(drawn) - set(actual))}; imported, "
        f"not drawn: {sorted(set(actual) - set(drawn))}; dashed (lazy) wrong: "
        f"{sorted(k for k in set(drawn) & set(actual) if drawn[k] != actual[k])}"
    )


# The core: the distribution, the likelihood's value, heads and Keras layers.
CORE = (
    "distributions",
    "conditional",
    "linalg",
    "wavefront",
    "xla",
    "recipes",
    "fields",
    "factors",
    "heads",
    "layers",
    "losses",
)
# What a run is: its configuration and the model variants.
RUN_CONFIGURATION = ("config", "variants", "runs", "training", "cli")


def test_the_core_imports_nothing_of_a_runs_configuration():
    imports = _imports()
    for module in CORE:
        assert (ROOT / "svae" / f"{module}.py").exists(), module
        reached, todo = set(), [module]
        while todo:
            source = todo.pop()
            for (a, b), _ in imports.items():
                if a == source and b not in reached:
                    reached.add(b)
                    todo.append(b)
        assert not reached & set(RUN_CONFIGURATION), (module, sorted(reached))


def test_no_argparse_in_the_package():
    users = [
        path.relative_to(ROOT)
        for path in (ROOT / "svae").rglob("*.py")
        if re.search(r"^\s*(import argparse|from argparse)", path.read_text(), re.M)
    ]
    assert users == []
