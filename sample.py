# `python sample.py [flags]`: samples, reconstructions, Y's std and inpainting of
# a run. The code is in svae/cli/sample.py (also the console script
# svae-sample); --help lists the flags.

if __name__ == "__main__":
    from svae.cli.sample import run

    run()
