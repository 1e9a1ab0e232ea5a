"""TraceQL for the bundled dashboards' trace tables: attribute names from ``names.py``, and
the one query shape the tables use, a span set filtered on attributes and intrinsics with the
columns it shows (``{ a && b } | select(c, d)``).

Every query keeps to the services of the dashboards' ``$service`` variable; the panel
modules never write it, nor a ``span.`` or ``resource.`` prefix, by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Final

from opentelemetry.semconv.attributes import service_attributes

SERVICE_VARIABLE: Final = "service"
"""The template variable holding a regular expression of the services whose spans the trace
tables list (``resource.service.name``)."""


def span(attribute: str) -> str:
    """A span attribute: ``gen_ai.agent.name`` -> ``span.gen_ai.agent.name``."""
    return f"span.{attribute}"


def resource(attribute: str) -> str:
    """A resource attribute: ``service.name`` -> ``resource.service.name``."""
    return f"resource.{attribute}"


def equals(field: str, value: str) -> str:
    return f"{field} = {_string(value)}"


def one_of(field: str, values: Iterable[str]) -> str:
    """``field`` is one of ``values`` (a regular expression, which TraceQL anchors)."""
    return f"{field} =~ {_string('|'.join(re.escape(value) for value in values))}"


def longer_than(duration: str) -> str:
    """Spans that lasted longer than ``duration`` (``5s``, ``250ms``, or a ``$variable``)."""
    return f"duration > {duration}"


def spans(*conditions: str, columns: Iterable[str] = ()) -> str:
    """Spans of the selected services meeting every condition, showing ``columns``."""
    service = f'{resource(service_attributes.SERVICE_NAME)} =~ "${SERVICE_VARIABLE}"'
    query = "{ " + " && ".join((service, *conditions)) + " }"
    shown = ", ".join(columns)
    return f"{query} | select({shown})" if shown else query


def _string(value: str) -> str:
    """A TraceQL string literal: double quotes, backslash escapes (as JSON writes them)."""
    return json.dumps(value)


ERROR: Final = "status = error"
"""Spans whose status is error."""
