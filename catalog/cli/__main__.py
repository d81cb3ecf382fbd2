"""`python -m catalog.cli`: the same command line as the `marina` script."""

import sys

from catalog.cli import main

sys.exit(main())
