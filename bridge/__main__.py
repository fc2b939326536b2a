"""``python -m bridge …`` is ``transfer-bridge …``."""

import sys

from bridge.cli import main

sys.exit(main())
