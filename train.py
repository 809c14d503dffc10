# `python train.py [flags]`: trains a model of the paper. The code is in
# svae/cli/train.py (also the console script svae-train); --help lists the flags.

if __name__ == "__main__":
    from svae.cli.train import run

    run()
