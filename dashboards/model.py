"""A small, typed model of the Grafana dashboards Ganzhi ships, rendered to Grafana's dashboard JSON (schema 39).

Why not hand-written JSON: every panel's SQL lives next to the columns it must return, so a test can run each
query against ClickHouse and check them; the JSON under `dashboards/generated/` is rendered from this model
(`ganzhi dashboards build`) and a test fails when it is stale.

Queries use the official ClickHouse data source (`grafana-clickhouse-datasource`) with its macros
(`$__timeFilter(col)`, `$__timeInterval(col)`, `$__fromTime`, `$__toTime`, `$__interval_s`) and the
dashboard variables `${org_unit:sqlstring}` / `${sensor:sqlstring}` ('__all' when All is selected).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "ganzhi-clickhouse"}
ALL = "__all"
SCHEMA_VERSION = 39
FOLDER_UID, FOLDER_TITLE = "ganzhi", "Ganzhi 感知"


def in_unit(column: str) -> str:
    """SQL: `column` is the selected org unit or below it (or All is selected)."""
    return (f"(${{org_unit:sqlstring}} = '{ALL}' OR {column} = ${{org_unit:sqlstring}} "
            f"OR startsWith({column}, concat(${{org_unit:sqlstring}}, '/')))")


def any_in_unit(array_column: str) -> str:
    """SQL: some element of `array_column` is the selected org unit or below it."""
    return (f"(${{org_unit:sqlstring}} = '{ALL}' OR arrayExists(u -> u = ${{org_unit:sqlstring}} "
            f"OR startsWith(u, concat(${{org_unit:sqlstring}}, '/')), {array_column}))")


def of_sensor(column: str = "sensor") -> str:
    return f"(${{sensor:sqlstring}} = '{ALL}' OR {column} = ${{sensor:sqlstring}})"


@dataclass(frozen=True)
class Query:
    sql: str
    columns: tuple[str, ...]  # what the panel reads; the dashboard test checks the query returns these
    table: bool = False  # format: table (else time series)
    ref: str = "A"


@dataclass(frozen=True)
class Panel:
    kind: str  # timeseries, stat, table, barchart, piechart, bargauge
    title: str
    queries: tuple[Query, ...]
    width: int = 12
    height: int = 8
    unit: str = ""
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # fieldConfig.defaults additions

    def render(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {**({"unit": self.unit} if self.unit else {}), **self.defaults}
        return {
            "id": panel_id, "type": self.kind, "title": self.title, "description": self.description,
            "datasource": DATASOURCE, "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []}, "options": self.options,
            "targets": [{"refId": q.ref, "datasource": DATASOURCE, "editorType": "sql", "rawSql": q.sql,
                         "format": 1 if q.table else 0, "queryType": "table" if q.table else "timeseries"}
                        for q in self.queries],
        }


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    sql: str  # one column of values

    def render(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "type": "query", "datasource": DATASOURCE,
                "query": self.sql, "definition": self.sql, "refresh": 2, "includeAll": True, "allValue": ALL,
                "multi": False, "sort": 1, "current": {"selected": True, "text": "All", "value": "$__all"}}


ORG_UNIT = Variable("org_unit", "Org unit 单位",
                    "SELECT DISTINCT unit FROM (SELECT arrayJoin([src_org_unit, dst_org_unit]) AS unit FROM events "
                    "WHERE ts > now() - INTERVAL 7 DAY) WHERE unit != '' ORDER BY unit")
SENSOR = Variable("sensor", "Sensor 探针",
                  "SELECT DISTINCT sensor FROM events WHERE ts > now() - INTERVAL 7 DAY ORDER BY sensor")


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = (ORG_UNIT,)
    time_from: str = "now-24h"
    time_to: str = "now"
    refresh: str = "1m"
    tags: tuple[str, ...] = ("ganzhi",)

    def render(self) -> dict[str, Any]:
        panels, x, y, row_height = [], 0, 0, 0
        for n, panel in enumerate(self.panels, 1):
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(panel.render(n, x, y))
            x += panel.width
            row_height = max(row_height, panel.height)
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": list(self.tags),
            "timezone": "browser", "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True,
            "graphTooltip": 1, "refresh": self.refresh, "time": {"from": self.time_from, "to": self.time_to},
            "templating": {"list": [v.render() for v in self.variables]}, "panels": panels,
            "annotations": {"list": []}, "links": [{"title": "Ganzhi", "type": "dashboards", "tags": ["ganzhi"],
                                                    "asDropdown": True}],
        }


_MACRO = re.compile(r"\$__(timeFilter|timeInterval)\(([^()]+)\)|\$__(fromTime|toTime|interval_s)\b")
_VARIABLE = re.compile(r"\$\{(\w+):sqlstring\}")


def expand(sql: str, from_ms: int, to_ms: int, interval_s: int, variables: dict[str, str]) -> str:
    """What Grafana (variables, `sqlstring` format) and the ClickHouse plugin (macros) do to a panel's SQL before
    it reaches ClickHouse — so the dashboard test can run every panel as Grafana would."""

    def macro(m: re.Match[str]) -> str:
        name, arg = m.group(1) or m.group(3), (m.group(2) or "").strip()
        start, end = f"toDateTime({from_ms // 1000})", f"toDateTime({to_ms // 1000})"
        return {"timeFilter": f"{arg} >= {start} AND {arg} <= {end}",
                "timeInterval": f"toStartOfInterval(toDateTime({arg}), INTERVAL {max(1, interval_s)} second)",
                "fromTime": start, "toTime": end, "interval_s": str(max(1, interval_s))}[name]

    def variable(m: re.Match[str]) -> str:
        value = variables[m.group(1)]
        return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"

    return _MACRO.sub(macro, _VARIABLE.sub(variable, sql))
