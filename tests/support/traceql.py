"""The subset of TraceQL the dashboards' trace tables use, parsed and evaluated on the SDK's
finished spans: there is no Tempo here, so a query's syntax is checked by this parser and its
meaning by matching the spans a test app produced.

Grammar (Tempo's, restricted)::

    query      = "{" condition { "&&" condition } "}" [ "|" "select" "(" field { "," field } ")" ]
    condition  = field operator value
    field      = ("span." | "resource.") name | "status" | "kind" | "duration" | "name"
    operator   = "=" | "!=" | "=~" | "!~" | ">" | ">=" | "<" | "<="
    value      = string | duration | number | "true" | "false" | status | kind
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<duration>\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)\b)
    | (?P<number>\d+(?:\.\d+)?)
    | (?P<operator>&&|=~|!~|!=|>=|<=|=|>|<)
    | (?P<punctuation>[{}()|,])
    | (?P<field>(?:span|resource)\.[A-Za-z_][A-Za-z0-9_.]*)
    | (?P<word>[A-Za-z_]+)
    )""",
    re.VERBOSE,
)
_INTRINSICS = {"status", "kind", "duration", "name"}
_STATUSES = {"error": StatusCode.ERROR, "ok": StatusCode.OK, "unset": StatusCode.UNSET}
_KINDS = {kind.name.lower(): kind for kind in SpanKind}
_NANOSECONDS = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "=~": lambda a, b: re.fullmatch(b, str(a)) is not None,  # Tempo anchors its regexes
    "!~": lambda a, b: re.fullmatch(b, str(a)) is None,
}


class TraceQLSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    value: Any

    def holds(self, span: ReadableSpan) -> bool:
        actual = _field(span, self.field)
        if actual is None:
            return self.operator == "!="  # an absent attribute differs from every value
        try:
            return _COMPARE[self.operator](actual, self.value)
        except TypeError:
            return False


@dataclass(frozen=True)
class Query:
    conditions: tuple[Condition, ...]
    selected: tuple[str, ...]

    def matches(self, span: ReadableSpan) -> bool:
        return all(condition.holds(span) for condition in self.conditions)

    @property
    def attributes(self) -> set[str]:
        """Every ``span.X`` and ``resource.X`` the query names, filtered on or selected."""
        fields = {condition.field for condition in self.conditions} | set(self.selected)
        return {field for field in fields if field not in _INTRINSICS}


def parse(query: str) -> Query:
    tokens = _tokens(query)
    position = 0

    def take(kind: str | None = None, text: str | None = None) -> tuple[str, str]:
        nonlocal position
        if position >= len(tokens):
            raise TraceQLSyntaxError(f"{query!r}: ends early, expected {text or kind}")
        found = tokens[position]
        if (kind and found[0] != kind) or (text and found[1] != text):
            raise TraceQLSyntaxError(f"{query!r}: {found[1]!r} where {text or kind} belongs")
        position += 1
        return found

    def next_is(text: str) -> bool:
        return position < len(tokens) and tokens[position][1] == text

    take("punctuation", "{")
    conditions = [_condition(take, query)]
    while next_is("&&"):
        take("operator", "&&")
        conditions.append(_condition(take, query))
    take("punctuation", "}")
    selected: list[str] = []
    if position < len(tokens):
        take("punctuation", "|")
        take("word", "select")
        take("punctuation", "(")
        selected.append(_field_name(take(), query))
        while next_is(","):
            take("punctuation", ",")
            selected.append(_field_name(take(), query))
        take("punctuation", ")")
    if position != len(tokens):
        raise TraceQLSyntaxError(f"{query!r}: unexpected {tokens[position][1]!r}")
    return Query(tuple(conditions), tuple(selected))


def _tokens(query: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(query.rstrip()):
        match = _TOKEN.match(query, position)
        if match is None or match.end() == position:
            raise TraceQLSyntaxError(f"{query!r}: cannot read {query[position:]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match[kind]))
        position = match.end()
    return tokens


def _field_name(token: tuple[str, str], query: str) -> str:
    kind, text = token
    if kind == "field" or (kind == "word" and text in _INTRINSICS):
        return text
    raise TraceQLSyntaxError(f"{query!r}: {text!r} is not a field")


def _condition(take: Callable[..., tuple[str, str]], query: str) -> Condition:
    field = _field_name(take(), query)
    _, operator = take("operator")
    if operator == "&&":
        raise TraceQLSyntaxError(f"{query!r}: && where an operator belongs")
    kind, text = take()
    value: Any
    if kind == "string":
        value = json.loads(text)
        if operator in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as error:
                raise TraceQLSyntaxError(f"{query!r}: {text} is no regular expression") from error
    elif kind == "duration":
        number, unit = re.fullmatch(r"([\d.]+)(\D+)", text).groups()  # type: ignore[union-attr]
        value = float(number) * _NANOSECONDS[unit]
    elif kind == "number":
        value = float(text)
    elif kind == "word" and field == "status" and text in _STATUSES:
        value = _STATUSES[text]
    elif kind == "word" and field == "kind" and text in _KINDS:
        value = _KINDS[text]
    elif kind == "word" and text in ("true", "false"):
        value = text == "true"
    else:
        raise TraceQLSyntaxError(f"{query!r}: {text!r} is not a value for {field}")
    if (field == "duration") != (kind == "duration"):
        raise TraceQLSyntaxError(f"{query!r}: {field} compared with {text!r}")
    return Condition(field, operator, value)


def _field(span: ReadableSpan, field: str) -> Any:
    if field == "status":
        return span.status.status_code
    if field == "kind":
        return span.kind
    if field == "duration":
        assert span.end_time is not None
        assert span.start_time is not None
        return span.end_time - span.start_time
    if field == "name":
        return span.name
    scope, _, name = field.partition(".")
    attributes = span.resource.attributes if scope == "resource" else span.attributes
    return (attributes or {}).get(name)
