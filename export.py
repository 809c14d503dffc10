# `python export.py [flags]`: exports a run as a SavedModel for TF Serving. The
# code is in svae/cli/export.py (also the console script svae-export); --help
# lists the flags.

if __name__ == "__main__":
    from svae.cli.export import run

    run()
