"""Which series a PromQL expression selects, and with which label matchers: enough of the
language to check names against the services' registries (promtool checks the syntax)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# Label lists of aggregations and vector matching name labels, not series.
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
# A name with braces, or a bare name that is no function call (names inside numbers and
# durations such as 1e3 or 15m are not names).
_NAME = r"(?<![\w.:])[A-Za-z_:][\w:]*"
_SELECTOR = re.compile(rf"({_NAME})?\s*\{{([^}}]*)\}}|({_NAME})(?![\w:]|\s*[({{])")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
KEYWORDS = frozenset(
    {"and", "or", "unless", "offset", "bool", "inf", "nan", "group_left", "group_right"}
)
# Grafana's variables, as Grafana itself would fill them in.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


@dataclass(frozen=True)
class Selector:
    name: str
    labels: frozenset[str]


def selectors(expr: str) -> list[Selector]:
    text = _STRINGS.sub('""', expr)
    text = _RANGES.sub("", _LABEL_LISTS.sub(" ", text))
    found = []
    for match in _SELECTOR.finditer(text):
        braced_name, matchers, bare = match.groups()
        if matchers is not None:
            if braced_name is None:
                raise ValueError(f"name the metric before its braces: {{{matchers}}}")
            found.append(Selector(braced_name, frozenset(_MATCHER.findall(matchers))))
        elif bare not in KEYWORDS:
            found.append(Selector(bare, frozenset()))
    return found


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr
