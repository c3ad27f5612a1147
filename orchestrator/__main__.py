"""`python -m orchestrator` is the same as the `liveorch` console script."""

from orchestrator.cli import main

raise SystemExit(main())
