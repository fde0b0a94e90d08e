"""``python -m engine.cli``: the same as ``pktx``."""

import sys

from engine.cli import main

sys.exit(main())
