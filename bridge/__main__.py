"""``python -m bridge …`` is ``transfer-bridge …``."""

import sys

from bridge.service.cli import main

sys.exit(main())
