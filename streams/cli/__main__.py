"""``python -m streams.cli ...``: how ``up`` and the tests start workers."""

import sys

from streams.cli import main

sys.exit(main())
