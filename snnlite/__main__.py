"""``python -m snnlite``: the ``snnlite`` command line (:mod:`snnlite.cli`)."""

import sys

from snnlite.cli import main

if __name__ == "__main__":
    sys.exit(main())
