"""Benchmarks: speed and scale are measured here (``python -m bench <name>``), never in tests.

Each bench prints its figures and appends one dated row to ``bench/RESULTS.md`` (see
:mod:`bench._common`). Benches talk only to 127.0.0.1, are bounded in count and time, and stop
by themselves; ``--quick`` shrinks them to a smoke run that still exercises every code path.
"""
