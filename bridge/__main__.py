"""``python -m bridge`` is the ``transfer-bridge`` command."""

from bridge.cli import main

raise SystemExit(main())
