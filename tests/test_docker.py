"""The Docker files agree with the pinned stack and the repository layout.

They cannot be built here (no Docker engine), so these checks are what keeps
them from rotting: pinned versions, files they copy, commands they run.
"""

import fnmatch
import importlib
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


def _pinned(package):
    """The version constraints.txt pins for a package."""
    text = (ROOT / "constraints.txt").read_text()
    match = re.search(rf"^{re.escape(package)}==(\S+)$", text, flags=re.M | re.I)
    assert match, f"{package} is not pinned in constraints.txt"
    return match.group(1)


def test_images_use_the_pinned_tensorflow():
    version = _pinned("tensorflow")
    gpu = (DOCKER / "Dockerfile.gpu").read_text()
    assert f"FROM tensorflow/tensorflow:{version}-gpu" in gpu
    serving = (DOCKER / "serving" / "docker-compose.yml").read_text()
    assert f"image: tensorflow/serving:{version}" in serving


def test_images_install_with_the_constraints_and_python_3_11():
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (DOCKER / name).read_text()
        assert "pip install -c constraints.txt ." in text, name
    assert "FROM python:3.11" in (DOCKER / "Dockerfile").read_text()


def test_copied_files_exist():
    for name in ("Dockerfile", "Dockerfile.gpu"):
        for line in (DOCKER / name).read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{name} copies {source}"


def test_serving_layout_matches_tf_serving_expectations():
    text = (DOCKER / "serving" / "docker-compose.yml").read_text()
    assert "MODEL_NAME: svae" in text
    assert re.search(r"- \S+:/models/svae(:ro)?$", text, flags=re.M)
    assert '"8501:8501"' in text


# ------------------------------------------- what the images copy, installed


def _instructions(dockerfile):
    """Yields `(instruction, arguments)` of a Dockerfile, continuations joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            yield instruction.upper(), arguments.strip()


def _ignored(relative, patterns):
    """Whether .dockerignore's patterns leave a context path out (no `!`)."""
    parts = pathlib.PurePosixPath(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.strip("/")
        if pattern.startswith("**/"):
            rest = pattern[3:]
            if any(fnmatch.fnmatchcase(part, rest) for part in parts):
                return True
        elif any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            return True
    return False


def _image_files(dockerfile):
    """The files its COPY lines put in the image, and where `pip install` runs.

    Returns:
      `({absolute path in the image: path in the repository}, the WORKDIR of
      the RUN line that pip-installs the package)`.
    """
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(line.startswith("!") for line in ignore), "! is not handled"
    workdir, files, install_dir = pathlib.PurePosixPath("/"), {}, None
    for instruction, arguments in _instructions(dockerfile):
        if instruction == "WORKDIR":
            workdir = workdir / arguments
        elif instruction == "COPY":
            words = (
                json.loads(arguments)
                if arguments.startswith("[")
                else (shlex.split(arguments))
            )
            words = [w for w in words if not w.startswith("--")]
            *sources, target = words
            target = workdir / target
            for source in sources:
                assert not set("*?[") & set(source), f"glob in COPY {source}"
                path = ROOT / source
                assert path.exists(), f"{dockerfile.name} copies {source}"
                if path.is_dir():
                    for file in path.rglob("*"):
                        relative = file.relative_to(ROOT).as_posix()
                        if file.is_file() and not _ignored(relative, ignore):
                            inside = file.relative_to(path).as_posix()
                            files[str(target / inside)] = file
                elif len(sources) > 1 or words[-1].endswith("/"):
                    files[str(target / path.name)] = path
                else:
                    files[str(target)] = path
        elif instruction == "RUN" and re.search(r"\bpip install\b.* \.$", arguments):
            install_dir = str(workdir)
    assert install_dir, f"{dockerfile.name} installs no package with pip"
    return files, install_dir


def _console_scripts():
    """The console scripts that setup.py declares, `{name: module}`."""
    text = (ROOT / "setup.py").read_text()
    scripts = dict(re.findall(r'"(svae-\w+)=([\w.]+):run"', text))
    assert set(scripts) == {
        "svae-train",
        "svae-evaluate",
        "svae-sample",
        "svae-export",
        "svae-selfcheck",
    }
    return scripts


@pytest.mark.slow
def test_each_image_installs_what_it_copies_and_its_scripts_run(tmp_path):
    """Rebuilds each image's files, pip-installs them, runs each script's --help.

    No Docker engine here: the files that the COPY lines put in the image are
    copied to a folder, and installed there into a scratch venv as the RUN
    line does (`--no-deps`: the project venv's packages, TensorFlow and the
    rest, are put on the scratch venv's path by a .pth file; a venv made with
    --system-site-packages from a venv sees the base Python's packages, not
    the venv's). The images are tested once per distinct file set.
    """
    site_packages = sysconfig.get_paths()["purelib"]
    file_sets = {}
    for name in ("Dockerfile", "Dockerfile.gpu"):
        files, install_dir = _image_files(DOCKER / name)
        key = (tuple(sorted((k, str(v)) for k, v in files.items())), install_dir)
        file_sets.setdefault(key, []).append(name)
    scripts = _console_scripts()
    for index, ((files, install_dir), names) in enumerate(file_sets.items()):
        image = tmp_path / f"image{index}"
        for inside, source in files:
            target = image / inside.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        venv = tmp_path / f"venv{index}"
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
        )
        python = venv / "bin" / "python"
        purelib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        pathlib.Path(purelib, "project_stack.pth").write_text(site_packages + "\n")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env |= {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        source = image / install_dir.lstrip("/")
        installed = subprocess.run(
            [python, "-m", "pip", "install", "--no-deps", "--no-index"]
            + ["--no-build-isolation", "--quiet", str(source)],
            cwd=source,
            env=env,
            capture_output=True,
            text=True,
        )
        assert installed.returncode == 0, f"{names}: {installed.stderr}"
        # Nothing but svae at the top level (no train.py, evaluate.py, ...).
        top = {
            p.name
            for p in pathlib.Path(purelib).iterdir()
            if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__"
        }
        assert top == {"svae"}, f"{names} install {sorted(top)} at the top level"
        for script, module in scripts.items():
            done = subprocess.run(
                [venv / "bin" / script, "--help"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"{names} {script}: {done.stderr}"
            assert "Traceback" not in done.stderr, f"{names} {script}: {done.stderr}"
            # A flag of its own in its help: the script's, not absl's alone.
            own = "--checks" if script == "svae-selfcheck" else "--model_dir"
            assert own in done.stdout, f"{names} {script}: {done.stdout}"
            # The script's docstring is the usage, and it ran the installed copy.
            first = importlib.import_module(module).__doc__.splitlines()[0]
            assert done.stdout.startswith(first), done.stdout
        where = subprocess.run(
            [python, "-c", "import svae.cli; print(svae.cli.__file__)"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert where.startswith(purelib), where
