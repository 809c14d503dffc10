# `python -m svae.reproduce [flags]`: the code is in svae/reproduce/command.py;
# --help lists the flags.

if __name__ == "__main__":
    from svae.reproduce.command import run

    run()
