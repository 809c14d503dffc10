# `python evaluate.py [flags]`: NLL, ELBO, KL, MSE, FLOPs and sample health of a
# run. The code is in svae/cli/evaluate.py (also the console script
# svae-evaluate); --help lists the flags.

if __name__ == "__main__":
    from svae.cli.evaluate import run

    run()
