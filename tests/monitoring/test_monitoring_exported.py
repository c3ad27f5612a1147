"""Every metric the shipped rules and dashboard name is one the daemon really exports.

The names are scraped from ``/metrics`` of a real ``liveorch run`` process that has taken a
room LIVE on the emulator (so the API, transition and callback families have children), and
compared with the names a PromQL tokenizer finds in every rule and panel expression. ``up`` is
the only name allowed that the daemon does not export: Prometheus writes it per target.
"""

from __future__ import annotations

import pytest

from tests.support.e2e import ALWAYS, Stack, eventually, room
from tests.support.monitoring_files import RULES, dashboard_exprs, rule_exprs
from tests.support.promql_names import (
    TARGET_LABELS,
    exported_names,
    matchers,
    sample_labels,
    sample_series,
    selectors,
    selects,
    unknown_labels,
    unknown_names,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SYNTHETIC = {"up"}  # written by Prometheus for every scrape target, not by the daemon


async def test_rules_and_dashboard_name_only_metrics_the_daemon_exports(stack: Stack) -> None:
    await stack.emulator(["mon1"])
    stack.write(stack.config([room("mon1", [ALWAYS])]))
    d = await stack.daemon()
    await d.wait_room("mon1", "LIVE")

    async def scraped() -> str | None:
        r = await d.http.get("/metrics")
        r.raise_for_status()
        # the room went LIVE: a transition and an API call were counted before this scrape
        return r.text if "liveorch_transitions_total{" in r.text else None

    text = await eventually(scraped, what="a /metrics with transitions", diag=stack.diag)
    exported = exported_names(text)
    # the families the rules lean on are really there (a parse that found nothing passes nothing)
    for name in (
        "liveorch_rooms",
        "liveorch_api_calls_total",
        "liveorch_sla_scheduled_seconds_total",
        "liveorch_ready_check",
        "process_resident_memory_bytes",
    ):
        assert name in exported, name
    assert 'liveorch_ready_check{check="store"} 1.0' in text

    rules = rule_exprs()
    assert unknown_names(rules.values(), exported, SYNTHETIC) == set()
    panels = dashboard_exprs()
    for where, expr in panels.items():
        assert unknown_names([expr], exported, SYNTHETIC) == set(), where

    # label names in matchers, for every metric the scrape has samples of
    labels = sample_labels(text)
    checked = {n for e in [*rules.values(), *panels.values()] for n, _ in selectors(e)} & set(
        labels
    )
    assert {"liveorch_rooms", "liveorch_api_calls_total", "liveorch_transitions_total"} <= checked
    assert unknown_labels([*rules.values(), *panels.values()], labels, SYNTHETIC) == set()
    typo = rule_exprs(RULES.read_text().replace("{code=~", "{status=~", 1))
    assert unknown_labels(typo.values(), labels, SYNTHETIC) == {
        ("liveorch_api_calls_total", "status")
    }

    # and the check bites: one misspelt name in the rules file is reported
    text = RULES.read_text().replace("liveorch_rooms_alerting", "liveorch_room_alerting")
    misspelt = rule_exprs(text)
    assert unknown_names(misspelt.values(), exported, SYNTHETIC) == {"liveorch_room_alerting"}


# Alerts whose matchers name label *values* (error codes, callback results, states): each must
# select a series the daemon really writes once the condition happens.
VALUE_RULES = (
    "LiveorchApiThrottled",
    "LiveorchApiAuthFailing",
    "LiveorchApiErrors",
    "LiveorchCallbacksRejected",
    "LiveorchRoomQuarantined",
    "LiveorchNotReady",
)


def _selected(expr: str, series: dict[str, list[dict[str, str]]]) -> list[str]:
    """The selectors of ``expr`` that match no sample of the scrape (Grafana variables and
    target labels aside: Prometheus adds those)."""
    missing = []
    for name, found in matchers(expr):
        own = [(k, op, v) for k, op, v in found if k not in TARGET_LABELS and "$" not in v]
        if not any(selects(own, labels) for labels in series.get(name, [])):
            missing.append(f"{name}{own}")
    return missing


async def test_rule_matchers_select_what_the_daemon_records_when_it_happens(
    stack: Stack,
) -> None:
    """Throttling, refused credentials, a 5xx and a rejected callback happen for real (faults in
    the emulator, an unsigned POST to the daemon); the alerts' matchers must select the series
    the daemon then exports — a code spelt as the HTTP status where the daemon records
    MetaStudio's error code would never fire."""
    emu = await stack.emulator(["mon3"])
    stack.write(stack.config([room("mon3", [ALWAYS])]))
    d = await stack.daemon()
    await d.wait_room("mon3", "LIVE")
    for status, code in ((429, "APIGW.0308"), (503, "APIGW.0201"), (401, "APIGW.0301")):
        r = await emu.http.post(
            "/_emulator/faults",
            json={"operation": "list", "status": status, "error_code": code, "count": 1},
        )
        r.raise_for_status()
    cb = await d.http.post("/callbacks/metastudio", json={"event_type": "RTMP_STREAM_STATE_CHANGE"})
    assert cb.status_code in (400, 401)

    async def scraped() -> str | None:
        text = (await d.http.get("/metrics")).text
        wanted = ('code="APIGW.0308"', 'code="APIGW.0201"', 'code="APIGW.0301"', "rejected_")
        return text if all(w in text for w in wanted) else None

    text = await eventually(scraped, what="the faults on /metrics", diag=stack.diag)
    series = sample_series(text)
    rules = rule_exprs()
    for alert in VALUE_RULES:
        assert _selected(rules[alert], series) == [], alert
    panels = {w: e for w, e in dashboard_exprs().items() if "code=" in e.replace("=~", "=")}
    assert len(panels) >= 3
    for where, expr in panels.items():
        assert _selected(expr, series) == [], where
    # the old spelling (HTTP status only) selects nothing: the check can fail
    assert _selected('liveorch_api_calls_total{code="429"}', series) != []
