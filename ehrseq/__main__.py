"""``python -m ehrseq``: the ``ehrseq`` command line (see :mod:`ehrseq.cli`)."""

import sys

from ehrseq.cli import main

if __name__ == "__main__":
    sys.exit(main())
