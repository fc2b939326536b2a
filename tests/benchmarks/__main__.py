"""``python -m tests.benchmarks [--quick]``: see ``tests.benchmarks.run``."""

from tests.benchmarks.run import main

raise SystemExit(main())
