"""``python -m foundation_core`` runs the ``foundation`` CLI."""

import sys

from ._cli import main

sys.exit(main())
