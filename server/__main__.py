"""``python -m ldam``: the same as the ``ldam`` command."""

import sys

from ldam.cli.main import main

sys.exit(main())
