"""Entry point for `python -m runproc` and for the frozen binary."""

import sys

from runproc.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
