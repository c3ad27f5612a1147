"""The shipped Prometheus rules and Grafana dashboard, checked as data and by promtool.

``promtool`` (Debian's ``prometheus`` package) checks the rules file and runs its unit tests
(``liveorch-rules.test.yml``); Grafana is not installable here, so the dashboard is checked as
JSON: panel layout, unique ids, and every target a PromQL expression whose metric names the
tokenizer can read. Which names the daemon really exports is test_monitoring_exported.py.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support.monitoring_files import (
    RULES,
    RULES_TEST,
    dashboard,
    dashboard_exprs,
    panels,
    rule_exprs,
    rules,
)
from tests.support.promql_names import (
    PromQLError,
    exported_names,
    metric_names,
    sample_labels,
    selectors,
    unknown_labels,
    unknown_names,
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=60, check=False
    )


# --- promtool -----------------------------------------------------------------------------


def test_promtool_check_rules_accepts_the_rules(require_service: Callable[[str], None]) -> None:
    require_service("promtool")
    r = _promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules())} rules found" in r.stdout


def test_promtool_unit_tests_of_the_rules_pass(require_service: Callable[[str], None]) -> None:
    require_service("promtool")
    r = _promtool("test", "rules", str(RULES_TEST))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_unit_tests_fail_when_a_threshold_changes(
    require_service: Callable[[str], None], tmp_path: Path
) -> None:
    """The unit tests can fail: the same tests against rules with one threshold moved."""
    require_service("promtool")
    text = RULES.read_text()
    assert ") > 0.9" in text
    (tmp_path / "liveorch-rules.yml").write_text(text.replace(") > 0.9", ") > 1.5"))
    (tmp_path / "t.yml").write_text(RULES_TEST.read_text())
    r = _promtool("test", "rules", str(tmp_path / "t.yml"))
    assert r.returncode != 0
    assert "LiveorchRoomScheduledNotLive" in r.stdout + r.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    silent = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    names = set(rule_exprs())
    assert names - fired == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown staying silent"


def test_the_issue_s_alerts_are_there() -> None:
    names = set(rule_exprs())
    for needed in (
        "LiveorchDown",
        "LiveorchAbsent",
        "LiveorchRoomScheduledNotLive",
        "LiveorchRoomQuarantined",
        "LiveorchCallbacksRejected",
        "LiveorchApiThrottled",
        "LiveorchNotReady",
    ):
        assert needed in names
    for r in rules():
        assert r["labels"]["severity"] in ("page", "ticket"), r["alert"]
        assert r["annotations"]["summary"], r["alert"]


# --- the dashboard as data -----------------------------------------------------------------


def test_dashboard_is_valid_and_laid_out() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ps = panels(dash)
    ids = [p["id"] for p in ps]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    for p in ps:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        targets = p["targets"]
        assert targets, f"panel {p['title']!r} has no query"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), p["title"]
        for t in targets:
            # every $variable a query uses is defined (Grafana's own $__ variables aside)
            used = set(re.findall(r"\$(?!__)\{?(\w+)", t["expr"]))
            assert used <= variables, (p["title"], used - variables)


def test_dashboard_covers_what_an_operator_watches() -> None:
    exprs = dashboard_exprs()
    names: set[str] = set()
    for e in exprs.values():
        names |= metric_names(e)
    for needed in (
        "liveorch_rooms",
        "liveorch_sla_live_seconds_total",
        "liveorch_sla_scheduled_seconds_total",
        "liveorch_transitions_total",
        "liveorch_recoveries_total",
        "liveorch_recovery_duration_seconds_bucket",
        "liveorch_api_calls_total",
        "liveorch_api_call_duration_seconds_bucket",
        "liveorch_callbacks_total",
        "liveorch_callback_lag_seconds_bucket",
        "liveorch_mqtt_connected",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ):
        assert needed in names


# --- the PromQL name tokenizer --------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        ('absent(up{job="liveorch"})', {"up"}),
        ('sum by (state) (liveorch_rooms{state="LIVE", x=~"a|b"})', {"liveorch_rooms"}),
        ("sum(rate(a_total[5m])) by (x) / on (y) group_left (z) b", {"a_total", "b"}),
        ('rate(x_total{l="sum(by) {x} [5m]"}[$__rate_interval] offset 1h) > bool 1', {"x_total"}),
        ("histogram_quantile(0.9, sum by (le) (rate(h_bucket[10m]))) > 60", {"h_bucket"}),
        ("a and b unless c or d @ start()", {"a", "b", "c", "d"}),
        ("rate(ns:rule:rate5m[1h:1m])", {"ns:rule:rate5m"}),
    ],
)
def test_tokenizer_finds_exactly_the_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize(
    "expr",
    ['{__name__="up"}', "rate(x[5m]", "sum(rte(x[5m]))", "x{a='b'"],
)
def test_tokenizer_refuses_what_it_cannot_vouch_for(expr: str) -> None:
    with pytest.raises(PromQLError):
        metric_names(expr)


def test_a_misspelt_metric_in_a_rule_is_reported() -> None:
    """The check of test_monitoring_exported.py, against a fixed exposition: the shipped rules
    pass, the same rules with one name misspelt do not."""
    exposition = (
        '# TYPE liveorch_rooms gauge\nliveorch_rooms{state="LIVE"} 1\n'
        "# TYPE liveorch_transitions counter\n"
    )
    exported = exported_names(exposition)
    assert {"liveorch_rooms", "liveorch_transitions_total"} <= exported
    text = RULES.read_text()
    good = rule_exprs(text)["LiveorchRoomQuarantined"]
    assert unknown_names([good], exported, set()) == set()
    bad = rule_exprs(text.replace("liveorch_rooms{", "liveorch_room{"))["LiveorchRoomQuarantined"]
    assert unknown_names([bad], exported, set()) == {"liveorch_room"}


def test_selectors_carry_the_labels_their_matchers_use() -> None:
    expr = 'sum by (le) (rate(a_bucket{job=~"$job", code!="200"}[5m])) / b{x="{y=1}"} + c'
    assert selectors(expr) == [
        ("a_bucket", frozenset({"job", "code"})),
        ("b", frozenset({"x"})),
        ("c", frozenset()),
    ]
    with pytest.raises(PromQLError, match="without a metric name"):
        selectors('sum({job="x"})')


def test_a_misspelt_label_in_a_rule_is_reported() -> None:
    exposition = (
        "# TYPE liveorch_api_calls counter\n"
        'liveorch_api_calls_total{operation="start_job",code="429"} 1\n'
    )
    labels = sample_labels(exposition)
    text = RULES.read_text()
    good = rule_exprs(text)["LiveorchApiThrottled"]
    assert unknown_labels([good], labels) == set()
    bad = rule_exprs(text.replace("{code=~", "{status=~", 1))["LiveorchApiThrottled"]
    assert unknown_labels([bad], labels) == {("liveorch_api_calls_total", "status")}
