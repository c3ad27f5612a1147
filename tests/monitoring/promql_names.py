"""Metric names in PromQL expressions, and the names a ``/metrics`` scrape really exports.

Imported by name (``promql_names``): tests/ has no packages, pytest puts this folder on sys.path.

promtool has no "parse this expression" command, so :func:`metric_names` is a small tokenizer
that knows what in PromQL is *not* a metric name: string literals, label matchers ``{...}``,
range and subquery brackets ``[...]``, the label lists of ``by``/``without``/``on``/
``ignoring``/``group_left``/``group_right``, numbers and durations, keywords, and functions
(an identifier followed by ``(``). Anything else that looks like an identifier is a metric
name. It errs on the loud side: an unknown function, a nameless ``{__name__=...}`` selector
or unbalanced brackets raise :class:`PromQLError` instead of being skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["PromQLError", "exported_names", "grafana_query_expr", "metric_names"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


FUNCTIONS = _words(
    """abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes
    clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year
    days_in_month deg delta deriv exp floor histogram_count histogram_fraction
    histogram_quantile histogram_sum holt_winters hour idelta increase irate label_join
    label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute
    month pi predict_linear present_over_time quantile_over_time rad rate resets round scalar
    sgn sin sinh sort sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh
    time timestamp vector year start end"""  # start()/end(): the @ modifier
)
AGGREGATORS = _words("sum min max avg group stddev stdvar count count_values bottomk topk quantile")
# identifiers that are operators or modifiers, never metric names
KEYWORDS = _words("and or unless offset bool inf nan atan2")
# keywords followed by a parenthesised list of label names
LABEL_LISTS = _words("by without on ignoring group_left group_right")

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<comment>\#[^\n]*)
      | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)
      | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<str>\x00)
      | (?P<punct>==|!=|>=|<=|=~|!~|[-+*/%^<>(){}\[\],=@])""",
    re.VERBOSE,
)
# Grafana's interval variables stand for durations, the only place they may appear
_GRAFANA_DURATION = re.compile(r"\$__(?:rate_interval|interval|range)(?:_ms|_s)?|\$\{__\w+\}")


class PromQLError(ValueError):
    """The expression uses something this tokenizer cannot vouch for."""


def _tokens(expr: str) -> list[tuple[str, str]]:
    text = _STRING.sub("\x00", _GRAFANA_DURATION.sub("5m", expr))
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PromQLError(f"cannot tokenize {text[pos : pos + 20]!r} in {expr!r}")
        kind = m.lastgroup or ""
        if kind not in ("space", "comment"):
            out.append((kind, m.group()))
        pos = m.end()
    return out


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects. Raises :class:`PromQLError` on what it cannot read."""
    toks = _tokens(expr)
    depth = 0
    for _, value in toks:
        depth += {"(": 1, ")": -1}.get(value, 0)
        if depth < 0:
            break
    if depth != 0:
        raise PromQLError(f"unbalanced parentheses in {expr!r}")
    names: set[str] = set()
    i = 0
    while i < len(toks):
        kind, value = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if value in ("{", "["):
            close = "}" if value == "{" else "]"
            j = i + 1
            while j < len(toks) and toks[j][1] != close:
                if value == "{" and toks[j][1] == "__name__":
                    raise PromQLError(f"nameless selector {{__name__=...}} in {expr!r}")
                j += 1
            if j == len(toks):
                raise PromQLError(f"unbalanced {value!r} in {expr!r}")
            i = j + 1
            continue
        if kind == "ident" and value in LABEL_LISTS and nxt == "(":
            j = i + 2
            while j < len(toks) and toks[j][1] != ")":
                j += 1
            if j == len(toks):
                raise PromQLError(f"unbalanced label list after {value!r} in {expr!r}")
            i = j + 1
            continue
        if kind == "ident":
            if nxt == "(":
                if value not in FUNCTIONS and value not in AGGREGATORS:
                    raise PromQLError(f"unknown function {value!r} in {expr!r}")
            elif value in AGGREGATORS and nxt in LABEL_LISTS:
                pass  # "sum by (x) (...)"
            elif value not in KEYWORDS and value not in LABEL_LISTS:
                names.add(value)
        i += 1
    return names


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.*),\s*[A-Za-z_]\w*\s*\)\s*$", re.DOTALL)


def grafana_query_expr(query: str) -> str:
    """The PromQL inside a Grafana variable query (``label_values(expr, label)``)."""
    m = _LABEL_VALUES.match(query)
    if m is None:
        raise PromQLError(f"unsupported Grafana variable query {query!r}")
    return m.group("expr")


# Suffixes a family of each type exposes (OpenMetrics/Prometheus text naming).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def exported_names(exposition: str) -> set[str]:
    """Every series name a scrape of ``exposition`` can carry: the samples present plus the
    names each ``# TYPE``'d family exposes once it has a child (a labelled counter nobody
    incremented yet shows only its HELP/TYPE lines)."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(s.name for s in family.samples)
        names.update(family.name + sfx for sfx in _SUFFIXES.get(family.type, ("",)))
    return names


def unknown_names(exprs: Iterable[str], exported: set[str], synthetic: set[str]) -> set[str]:
    used: set[str] = set()
    for e in exprs:
        used |= metric_names(e)
    return used - exported - synthetic
