"""Metric names in PromQL expressions, and the names a ``/metrics`` scrape really exports.

Imported as ``tests.support.promql_names``.

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
from collections.abc import Iterable, Mapping

__all__ = [
    "PromQLError",
    "exported_names",
    "grafana_query_expr",
    "matchers",
    "metric_names",
    "sample_labels",
    "sample_series",
    "selectors",
    "selects",
    "unknown_labels",
    "unknown_names",
]


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
_MATCH_OPS = frozenset({"=", "!=", "=~", "!~"})
# Grafana's interval variables stand for durations, the only place they may appear
_GRAFANA_DURATION = re.compile(r"\$__(?:rate_interval|interval|range)(?:_ms|_s)?|\$\{__\w+\}")


class PromQLError(ValueError):
    """The expression uses something this tokenizer cannot vouch for."""


def _tokens(expr: str) -> list[tuple[str, str]]:
    source = _GRAFANA_DURATION.sub("5m", expr)
    strings = iter(m.group() for m in _STRING.finditer(source))  # the literals, in order
    text = _STRING.sub("\x00", source)
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PromQLError(f"cannot tokenize {text[pos : pos + 20]!r} in {expr!r}")
        kind = m.lastgroup or ""
        if kind == "str":
            out.append((kind, next(strings)))
        elif kind not in ("space", "comment"):
            out.append((kind, m.group()))
        pos = m.end()
    return out


def selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """Every vector selector of ``expr``: its metric name and the label names its matchers use.

    Raises :class:`PromQLError` on what it cannot read (and on a selector without a name).
    """
    toks = _tokens(expr)
    depth = 0
    for _, value in toks:
        depth += {"(": 1, ")": -1}.get(value, 0)
        if depth < 0:
            break
    if depth != 0:
        raise PromQLError(f"unbalanced parentheses in {expr!r}")
    out: list[tuple[str, frozenset[str], int]] = []  # name, matcher labels, token index
    i = 0
    while i < len(toks):
        kind, value = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if value in ("{", "["):
            close = "}" if value == "{" else "]"
            j = i + 1
            while j < len(toks) and toks[j][1] != close:
                j += 1
            if j == len(toks):
                raise PromQLError(f"unbalanced {value!r} in {expr!r}")
            if value == "{":
                # a matcher is `label op "string"`; the selector's name is the token before
                labels = frozenset(
                    toks[k][1]
                    for k in range(i + 1, j)
                    if toks[k][0] == "ident" and k + 1 < j and toks[k + 1][1] in _MATCH_OPS
                )
                if "__name__" in labels or not out or out[-1][2] != i - 1:
                    raise PromQLError(f"selector without a metric name in {expr!r}")
                out[-1] = (out[-1][0], labels, out[-1][2])
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
                out.append((value, frozenset(), i))
        i += 1
    return [(name, labels) for name, labels, _ in out]


def matchers(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Every selector of ``expr`` with its matchers ``(label, op, value)``; ``value`` is the
    string literal's content (escapes of the literal's quote undone)."""
    toks = _tokens(expr)
    names = {n for n, _ in selectors(expr)}
    out: list[tuple[str, list[tuple[str, str, str]]]] = []
    for i, (kind, value) in enumerate(toks):
        if kind != "ident" or value not in names:
            continue
        found: list[tuple[str, str, str]] = []
        if i + 1 < len(toks) and toks[i + 1][1] == "{":
            j = i + 2
            while toks[j][1] != "}":
                if toks[j][1] == ",":
                    j += 1
                    continue
                label, op, lit = toks[j][1], toks[j + 1][1], toks[j + 2]
                if lit[0] != "str" or op not in _MATCH_OPS:
                    raise PromQLError(f"unexpected matcher near {label!r} in {expr!r}")
                found.append((label, op, _unquote(lit[1])))
                j += 3
        out.append((value, found))
    return out


def _unquote(literal: str) -> str:
    if literal[0] == "`":
        return literal[1:-1]
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


def selects(found: list[tuple[str, str, str]], labels: Mapping[str, str]) -> bool:
    """Whether a series with ``labels`` satisfies every matcher (regexes are anchored)."""
    for label, op, value in found:
        have = labels.get(label, "")
        ok = {
            "=": have == value,
            "!=": have != value,
            "=~": re.fullmatch(value, have) is not None,
            "!~": re.fullmatch(value, have) is None,
        }[op]
        if not ok:
            return False
    return True


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects."""
    return {name for name, _ in selectors(expr)}


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


#: labels Prometheus attaches to every series it scrapes (target labels), not the daemon
TARGET_LABELS = frozenset({"job", "instance"})


def sample_labels(exposition: str) -> dict[str, set[str]]:
    """``series name → label names`` of the samples present in a scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def unknown_labels(
    exprs: Iterable[str], labels: Mapping[str, set[str]], synthetic: Iterable[str] = ()
) -> set[tuple[str, str]]:
    """``(metric, label)`` pairs matched in ``exprs`` that the scrape's samples of that metric
    do not carry. Metrics without samples in the scrape (or ``synthetic``, like ``up``) can
    only carry target labels."""
    bad: set[tuple[str, str]] = set()
    for e in exprs:
        for name, used in selectors(e):
            allowed = labels.get(name, set()) | TARGET_LABELS
            if name not in labels and name not in synthetic:
                continue  # no sample to learn its labels from: unchecked
            bad |= {(name, label) for label in used - allowed}
    return bad


def sample_series(exposition: str) -> dict[str, list[dict[str, str]]]:
    """``series name → the label sets of its samples`` in a scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            out.setdefault(s.name, []).append(dict(s.labels))
    return out
