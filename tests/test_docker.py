"""The Docker files agree with the pinned stack and the repository layout.

They cannot be built here (no Docker engine), so these checks are what keeps
them from rotting: pinned versions, files they copy, commands they run.
"""

import pathlib
import re

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
