"""``python -m nucseg``: the ``nucseg`` command."""

import sys

from nucseg.cli import main

sys.exit(main())
