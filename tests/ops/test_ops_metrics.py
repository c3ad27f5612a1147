"""Metrics: own registry, names, labels, exposition."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.ops.metrics import Metrics
from orchestrator.rooms.model import RoomState


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = m.render()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_instances_do_not_collide() -> None:
    a, b = Metrics(version="1"), Metrics(version="2")
    a.transition("IDLE", "STARTING")
    assert (
        _samples(a)[
            ("liveorch_transitions_total", (("from_state", "IDLE"), ("to_state", "STARTING")))
        ]
        == 1
    )
    assert not any(k[0] == "liveorch_transitions_total" for k in _samples(b))


def test_rooms_by_state_resets_emptied_states() -> None:
    m = Metrics()
    m.rooms(["LIVE", "LIVE", RoomState.DEGRADED], alerting=1)
    s = _samples(m)
    assert s[("liveorch_rooms", (("state", "LIVE"),))] == 2
    assert s[("liveorch_rooms", (("state", "DEGRADED"),))] == 1
    assert s[("liveorch_rooms_alerting", ())] == 1
    m.rooms(["LIVE"])
    s = _samples(m)
    assert s[("liveorch_rooms", (("state", "DEGRADED"),))] == 0
    assert s[("liveorch_rooms", (("state", "IDLE"),))] == 0


def test_recovery_api_callback_rate_sla_mqtt_build() -> None:
    m = Metrics(version="9.9")
    m.recovery("refresh", "ok", 12.0)
    m.recovery("restart", "failed")
    m.api_call("start_job", 200, 0.3)
    m.api_call("start_job", "APIGW.0308", 0.1)
    m.callback("RTMP_STREAM_STATE_CHANGE", "accepted", lag_s=1.5)
    m.rate_limit_wait("start", 0.25)
    m.rate_limit_wait("start", 0.0)
    m.sla("room-1", live_s=50, scheduled_s=60)
    m.mqtt_connected(True)
    m.api_shares({"start": 0.5, "job_query": 0.625}, reader=True)
    s = _samples(m)
    assert s[("liveorch_recoveries_total", (("outcome", "ok"), ("rung", "refresh")))] == 1
    assert s[("liveorch_recoveries_total", (("outcome", "failed"), ("rung", "restart")))] == 1
    assert s[("liveorch_recovery_duration_seconds_count", (("rung", "refresh"),))] == 1
    assert (
        s[("liveorch_recovery_duration_seconds_bucket", (("le", "15.0"), ("rung", "refresh")))] == 1
    )
    assert (
        s[("liveorch_recovery_duration_seconds_bucket", (("le", "10.0"), ("rung", "refresh")))] == 0
    )
    assert (
        "liveorch_recovery_duration_seconds_bucket",
        (("le", "600.0"), ("rung", "refresh")),
    ) in s
    assert s[("liveorch_api_calls_total", (("code", "200"), ("operation", "start_job")))] == 1
    assert (
        s[("liveorch_api_calls_total", (("code", "APIGW.0308"), ("operation", "start_job")))] == 1
    )
    assert s[("liveorch_api_call_duration_seconds_count", (("operation", "start_job"),))] == 2
    key = (("result", "accepted"), ("type", "RTMP_STREAM_STATE_CHANGE"))
    assert s[("liveorch_callbacks_total", key)] == 1
    assert s[("liveorch_callback_lag_seconds_sum", ())] == 1.5
    assert s[("liveorch_rate_limit_wait_seconds_total", (("group", "start"),))] == 0.25
    assert s[("liveorch_sla_live_seconds_total", (("room", "room-1"),))] == 50
    assert s[("liveorch_sla_scheduled_seconds_total", (("room", "room-1"),))] == 60
    assert s[("liveorch_mqtt_connected", ())] == 1
    assert s[("liveorch_api_share", (("group", "job_query"),))] == 0.625
    assert s[("liveorch_tenant_reader", ())] == 1
    build = [k for k in s if k[0] == "liveorch_build_info"]
    assert build and ("version", "9.9") in build[0][1]
    m.forget_room("room-1")
    m.forget_room("never-seen")
    assert not any(k[0].startswith("liveorch_sla_") for k in _samples(m))


def test_render_content_type() -> None:
    body, ctype = Metrics().render()
    assert ctype.startswith("text/plain")
    assert b"# TYPE liveorch_rooms gauge" in body


def test_public_names_exist() -> None:
    import importlib

    for name in ("http", "metrics", "status_page", "systemd"):
        mod = importlib.import_module(f"orchestrator.ops.{name}")
        for attr in mod.__all__:
            assert hasattr(mod, attr), f"{name}.{attr}"


def _series(m: Metrics, name: str) -> list[tuple[tuple[str, str], ...]]:
    return [labels for (n, labels) in _samples(m) if n == name]


def test_label_values_from_outside_are_bounded() -> None:
    """2,000 invented callback types, error codes and states must not make 2,000 series each
    (they cost 92 MB of RSS): unknown values share "other"."""
    m = Metrics()
    for i in range(2000):
        m.callback(f"EVIL_TYPE_{i}", "applied")
        m.callback("RTMP_STREAM_STATE_CHANGE", f"weird_result_{i}")
        m.api_call("show_job", f"MSS.{i:05d}", 0.01)
        m.api_call("show_job", f"<script>{i}</script>", 0.01)
        m.transition(f"STATE_{i}", "LIVE")
    callbacks = _series(m, "liveorch_callbacks_total")
    assert (("result", "applied"), ("type", "other")) in callbacks
    assert len(callbacks) <= 40
    api = _series(m, "liveorch_api_calls_total")
    assert (("code", "other"), ("operation", "show_job")) in api
    assert len(api) <= 50
    assert len(_series(m, "liveorch_transitions_total")) == 1  # other → LIVE
    m.callback("RTMP_STREAM_STATE_CHANGE", "applied")  # known values keep their own series
    assert (("result", "applied"), ("type", "RTMP_STREAM_STATE_CHANGE")) in _series(
        m, "liveorch_callbacks_total"
    )
