"""The shipped monitoring files as data: every PromQL expression in the rules and the dashboard.

Imported as ``tests.support.monitoring_files``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.promql_names import grafana_query_expr

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "prometheus" / "liveorch-rules.yml"
RULES_TEST = REPO / "monitoring" / "prometheus" / "liveorch-rules.test.yml"
DASHBOARD = REPO / "monitoring" / "grafana" / "liveorch-dashboard.json"


def rules(text: str | None = None) -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text() if text is None else text)
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def rule_exprs(text: str | None = None) -> dict[str, str]:
    """``alert name → expr``."""
    return {r.get("alert") or r["record"]: str(r["expr"]) for r in rules(text)}


def dashboard_exprs(dash: dict[str, Any] | None = None) -> dict[str, str]:
    """``"panel title / refId" → expr`` and ``"$variable" → the expr inside its query``."""
    dash = dashboard() if dash is None else dash
    out: dict[str, str] = {}
    for p in panels(dash):
        for t in p.get("targets", []):
            out[f"{p['title']} / {t['refId']}"] = str(t["expr"])
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out[f"${v['name']}"] = grafana_query_expr(str(q))
    return out
