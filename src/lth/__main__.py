"""``python -m lth``: the ``lth`` command."""

import sys

from .cli import main

sys.exit(main())
