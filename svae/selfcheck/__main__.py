# `python -m svae.selfcheck [flags]`: the code is in svae/selfcheck/command.py;
# --help lists the flags.

if __name__ == "__main__":
    from svae.selfcheck.command import run

    run()
