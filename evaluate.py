"""Command line: evaluation (IW-bound NLL, KL, MSE, FLOPs). See README.md."""

import sys

from absl import app


def main(argv):
    """Says honestly that this command is not there yet."""
    del argv
    print(
        "svae: Evaluation (IW-bound NLL, KL, MSE, FLOPs) is not implemented yet (tracked in issue 5).\n"
        "What works today: svae.distributions.SparsePrecisionGaussian; "
        "see README.md.",
        file=sys.stderr,
    )
    return 2


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
