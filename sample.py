"""Command line: sampling and figures. See README.md."""

import sys

from absl import app

_MESSAGE = """svae: Sampling and figures is not implemented yet (issue 5).
What works today: svae.distributions.SparsePrecisionGaussian; see README.md."""


def main(argv):
    """Says honestly that this command is not there yet."""
    del argv
    print(_MESSAGE, file=sys.stderr)
    return 2


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
