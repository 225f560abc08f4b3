"""`python -m experiments.run ...` in a checkout: the `cljax` command (see `cljax/cli.py`)."""

import sys

from cljax.cli import main

if __name__ == "__main__":
    sys.exit(main())
