"""``python -m virtrigaud_resilience.cli``: the ``virtrigaud-resilience`` command."""

import sys

from . import main

sys.exit(main())
