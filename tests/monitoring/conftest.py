"""Fixtures of the monitoring tests: the real-process harness of tests/e2e (tests.support.e2e)."""

from tests.support.e2e import prefix, stack

__all__ = ["prefix", "stack"]  # pytest finds fixtures by name in a conftest's namespace
