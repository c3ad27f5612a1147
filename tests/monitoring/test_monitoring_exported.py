"""Every metric the shipped rules and dashboard name is one the daemon really exports.

The names are scraped from ``/metrics`` of a real ``liveorch run`` process that has taken a
room LIVE on the emulator (so the API, transition and callback families have children), and
compared with the names a PromQL tokenizer finds in every rule and panel expression. ``up`` is
the only name allowed that the daemon does not export: Prometheus writes it per target.
"""

from __future__ import annotations

import pytest
from e2e_support import ALWAYS, Stack, eventually, room
from monitoring_files import RULES, dashboard_exprs, rule_exprs
from promql_names import exported_names, sample_labels, selectors, unknown_labels, unknown_names

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
    typo = rule_exprs(RULES.read_text().replace('{code="429"}', '{status="429"}'))
    assert unknown_labels(typo.values(), labels, SYNTHETIC) == {
        ("liveorch_api_calls_total", "status")
    }

    # and the check bites: one misspelt name in the rules file is reported
    text = RULES.read_text().replace("liveorch_rooms_alerting", "liveorch_room_alerting")
    misspelt = rule_exprs(text)
    assert unknown_names(misspelt.values(), exported, SYNTHETIC) == {"liveorch_room_alerting"}
