"""Shared hypothesis settings for the fuzzers: short in the default suite, long on demand.

``LIVEORCH_FUZZ_EXAMPLES`` (default 200) sets examples per fuzz test; a long run is e.g.
``LIVEORCH_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/reliability -k fuzz``. Settings are
per test (never a loaded global profile) so other areas' hypothesis tests are untouched.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("LIVEORCH_FUZZ_EXAMPLES", "200"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=EXAMPLES <= 200,  # the CI-sized run is reproducible; long runs explore
)
