"""``python -m app.swarm``: the same as the ``df-swarm`` console script."""

import sys

from app.swarm.cli import main

sys.exit(main())
