"""`python -m experiments.run ...` in a checkout: the `cljax` command (see `cljax/cli.py`)."""

from cljax.cli import entry

if __name__ == "__main__":
    entry()
