"""Test helpers shared across areas, imported as ``tests.support.<module>`` (pytest runs with
``--import-mode=importlib`` and the checkout's root on the path; bench imports them too).

procs (child processes), ports, mqtt (the recorder), pgcluster (PostgreSQL URLs and private
servers), leaks (the check behind tests/conftest.py's autouse fixture), ci_guard, nginx_rtmp,
chromium, and one harness module per area that has one (e2e, multi, rooms, callbacks, emulator,
mqtt_bridge, storekit, ops_fakes, ux, ...). Real services run privately per test.
"""
