"""The operational surface: what an SRE and systemd see of the daemon.

* :mod:`orchestrator.ops.metrics` — :class:`Metrics`, Prometheus series behind named methods.
* :mod:`orchestrator.ops.http` — :func:`ops_routes` (``/healthz``, ``/readyz``, ``/metrics``,
  ``/rooms``, the status page) and :class:`Readiness`.
* :mod:`orchestrator.ops.status_page` — static pages and the pure 24 h :func:`timeline`.
* :mod:`orchestrator.ops.systemd` — sd_notify (READY/STATUS/WATCHDOG/STOPPING), no libsystemd.

Submodules are imported explicitly by the application; importing this package pulls in nothing.
"""
