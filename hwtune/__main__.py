"""``python -m hwtune`` runs the CLI."""

import sys

from hwtune.cli import main

sys.exit(main())
