"""Fixtures of the end-to-end tests: ``stack`` and ``prefix`` from ``tests.support.e2e``."""

from tests.support.e2e import prefix, stack

__all__ = ["prefix", "stack"]  # pytest finds fixtures by name in a conftest's namespace
