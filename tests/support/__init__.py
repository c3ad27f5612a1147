"""Test helpers shared across areas (real services run privately per test)."""
