"""``/metrics`` carries the ``/readyz`` checks and the process series (for the shipped
Prometheus rules: LiveorchNotReady, LiveorchRestarting, and the dashboard's RSS/CPU panels)."""

from __future__ import annotations

import re

import httpx
from starlette.applications import Starlette

from orchestrator.ops.http import Readiness
from tests.support.ops_fakes import OUTAGE, make_ops


def _value(text: str, series: str) -> float:
    m = re.search("^" + re.escape(series) + r" (\S+)$", text, re.M)
    assert m is not None, f"{series} not in /metrics"
    return float(m.group(1))


async def test_metrics_show_each_readiness_check_as_it_is_now() -> None:
    ops = make_ops()
    ops.readiness = Readiness(mqtt_required=True, clock=lambda: ops.clock[0])
    app = Starlette(routes=ops.routes(None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as c:
        ops.readiness.api_ok()
        ops.readiness.mqtt(True)
        text = (await c.get("/metrics")).text
        for check in ("store", "metastudio", "mqtt"):
            assert _value(text, f'liveorch_ready_check{{check="{check}"}}') == 1.0

        ops.store.outage = OUTAGE  # the store stops answering, MQTT drops
        ops.readiness.mqtt(False)
        text = (await c.get("/metrics")).text
        assert _value(text, 'liveorch_ready_check{check="store"}') == 0.0
        assert _value(text, 'liveorch_ready_check{check="mqtt"}') == 0.0
        assert _value(text, 'liveorch_ready_check{check="metastudio"}') == 1.0

        assert _value(text, "process_resident_memory_bytes") > 0
        assert _value(text, "process_start_time_seconds") > 0
        assert "process_cpu_seconds_total " in text
