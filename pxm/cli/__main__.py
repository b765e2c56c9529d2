"""``python -m pxm.cli``: the same as the console script."""

import sys

from pxm.cli import main

if __name__ == "__main__":
    sys.exit(main())
