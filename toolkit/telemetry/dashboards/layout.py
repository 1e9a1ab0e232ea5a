"""Grafana JSON for the bundled dashboards: targets, panels, rows that stack themselves, the
template variables and the dashboard around them. Prometheus panels chart metrics; trace
tables list spans from Tempo.

A panel states its size only. A :class:`Row` places its panels left to right, wrapping at
Grafana's 24 columns, and :func:`build_dashboard` puts each row below the one before: no
position is typed by hand, so a panel added to a row moves everything under it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

Json = dict[str, Any]

DATASOURCE: Final = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
"""Every metric panel and target queries the data source chosen in the ``DS_PROMETHEUS``
variable."""
TEMPO_DATASOURCE: Final = {"type": "tempo", "uid": "${DS_TEMPO}"}
"""Every trace table queries the data source chosen in the ``DS_TEMPO`` variable, which a
dashboard has when one of its panels does."""
WIDTH: Final = 24
"""Columns of Grafana's grid."""
TAG: Final = "agent-server-toolkit"
"""On every bundled dashboard; their links menu lists the dashboards with it."""


def legend(*labels: str) -> str:
    """A legend showing each series' values of ``labels``: ``{{a}} {{b}}``."""
    return " ".join(f"{{{{{label}}}}}" for label in labels)


def target(expr: str, legend_format: str = "", *, exemplar: bool = False) -> Json:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "exemplar": exemplar,
        "legendFormat": legend_format or "__auto",
        "range": True,
    }


def trace_target(query: str, *, limit: int = 20) -> Json:
    """A TraceQL search listing up to ``limit`` matching spans (``dashboards/traceql.py``)."""
    return {
        "datasource": TEMPO_DATASOURCE,
        "limit": limit,
        "query": query,
        "queryType": "traceql",
        "tableType": "spans",
    }


def stat(
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    *,
    width: int = 8,
    height: int = 4,
    **defaults: Any,
) -> Json:
    """A single number (the last value) over a sparkline."""
    options = {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": "auto",
    }
    return _panel(
        "stat",
        title,
        description,
        DATASOURCE,
        targets,
        (width, height),
        options,
        unit=unit,
        **defaults,
    )


def timeseries(
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    *,
    width: int = 12,
    height: int = 8,
    **defaults: Any,
) -> Json:
    """Lines over time, with a legend table of each series' mean and max."""
    options = {
        "legend": {"calcs": ["mean", "max"], "displayMode": "table", "placement": "bottom"},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel(
        "timeseries",
        title,
        description,
        DATASOURCE,
        targets,
        (width, height),
        options,
        unit=unit,
        **defaults,
    )


def trace_table(
    title: str, description: str, targets: list[Json], *, width: int = 12, height: int = 10
) -> Json:
    """Spans from Tempo, one a line (``trace_target``): each opens its trace."""
    options = {"cellHeight": "sm", "footer": {"show": False}, "showHeader": True}
    return _panel("table", title, description, TEMPO_DATASOURCE, targets, (width, height), options)


def textbox(name: str, label: str, default: str, description: str) -> Json:
    """A template variable the viewer types, ``$name`` in queries."""
    value = {"selected": True, "text": default, "value": default}
    return {
        "current": value,
        "description": description,
        "hide": 0,
        "label": label,
        "name": name,
        "options": [value],
        "query": default,
        "type": "textbox",
    }


def thresholds(*steps: tuple[str, float | None]) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


@dataclass(frozen=True)
class Row:
    """A titled row of panels, laid out left to right and wrapped at :data:`WIDTH`."""

    title: str
    panels: Sequence[Json]

    def place(self, y: int) -> tuple[list[Json], int]:
        """The row header at ``y`` and its panels below it, positioned; and the first free
        ``y`` under them, where the next row goes."""
        placed = [
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
                "title": self.title,
                "type": "row",
            }
        ]
        y += 1
        x = line_height = 0
        for panel in self.panels:
            width, height = panel["gridPos"]["w"], panel["gridPos"]["h"]
            if x + width > WIDTH:
                x, y, line_height = 0, y + line_height, 0
            placed.append({**panel, "gridPos": {"h": height, "w": width, "x": x, "y": y}})
            x += width
            line_height = max(line_height, height)
        return placed, y + line_height


def build_dashboard(
    *,
    uid: str,
    title: str,
    shows: str,
    tags: Iterable[str],
    rows: Iterable[Row],
    instances_of: str,
    variables: Sequence[Json] = (),
) -> Json:
    """A dashboard of ``rows``, stacked top to bottom.

    Args:
        uid: stable across versions: links and provisioning refer to it.
        shows: what it charts, for its description ("HTTP requests, rate limiting ...").
        tags: besides :data:`TAG`, which every bundled dashboard carries.
        instances_of: the Prometheus series whose ``job`` and ``instance`` labels the
            template variables list.
        variables: more template variables (``textbox``), after ``job`` and ``instance``.
    """
    panels: list[Json] = []
    y = 0
    for row in rows:
        placed, y = row.place(y)
        panels += placed
    return {
        "annotations": {"list": []},
        "description": (
            f"{shows} of servers running agent-server-toolkit. Generated by `agent-toolkit "
            "dashboards` from toolkit/telemetry/names.py: regenerate rather than edit."
        ),
        "editable": True,
        "graphTooltip": 1,
        "links": [
            {
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "tags": [TAG],
                "title": "Agent server dashboards",
                "type": "dashboards",
            }
        ],
        "panels": [{**panel, "id": i} for i, panel in enumerate(panels, start=1)],
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": [TAG, *tags],
        "templating": {"list": [*_variables(instances_of, panels), *variables]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
    }


def _panel(
    kind: str,
    title: str,
    description: str,
    datasource: Json,
    targets: list[Json],
    size: tuple[int, int],
    options: Json,
    **defaults: Any,
) -> Json:
    width, height = size
    return {
        "datasource": datasource,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "gridPos": {"h": height, "w": width},
        "options": options,
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "title": title,
        "type": kind,
    }


def _datasource_variable(name: str, label: str, plugin: str) -> Json:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": label,
        "multi": False,
        "name": name,
        "options": [],
        "query": plugin,
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def _variables(series: str, panels: Sequence[Json]) -> list[Json]:
    jobs = f"label_values({series}, job)"
    instances = f'label_values({series}{{job=~"$job"}}, instance)'
    traces = any(panel.get("datasource") == TEMPO_DATASOURCE for panel in panels)
    return [
        _datasource_variable("DS_PROMETHEUS", "Data source", "prometheus"),
        *([_datasource_variable("DS_TEMPO", "Traces", "tempo")] if traces else []),
        *(
            {
                "allValue": ".*",
                "current": {},
                "datasource": DATASOURCE,
                "definition": query,
                "hide": 0,
                "includeAll": True,
                "label": label,
                "multi": True,
                "name": name,
                "options": [],
                "query": query,
                "refresh": 2,
                "regex": "",
                "sort": 1,
                "type": "query",
            }
            for name, label, query in (("job", "Job", jobs), ("instance", "Instance", instances))
        ),
    ]
