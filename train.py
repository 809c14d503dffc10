"""Command line: training (the models, the schedule and train.py). See README.md."""

import sys

from absl import app


def main(argv):
    """Says honestly that this command is not there yet."""
    del argv
    print(
        "svae: Training (the models, the schedule and train.py) is not implemented yet (tracked in issue 4).\n"
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
