"""The elements of the situation (态势要素) over a time window, optionally within one org unit (and below):
assets seen with their services and software, threats by kind, ATT&CK tactic and source, incidents,
vulnerabilities, and traffic per org unit against the same window a week earlier."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pipeline.enrich.inventory import Inventory
from pipeline.situation import exposure
from pipeline.situation.baseline import METRICS, ROW_UNITS
from pipeline.store.base import Store

WEEK_MS = 7 * 86_400_000


def _in_unit(*columns: str) -> str:
    parts = [f"{c} = {{unit:String}} OR startsWith({c}, concat({{unit:String}}, '/'))" for c in columns]
    return "({unit:String} = '' OR " + " OR ".join(parts) + ")"


def _window(column: str) -> str:
    return (f"{column} >= fromUnixTimestamp64Milli({{since:Int64}}) "
            f"AND {column} < fromUnixTimestamp64Milli({{until:Int64}})")


def elements(store: Store, since_ms: int, until_ms: int, unit: str = "", inventory: Inventory | None = None,
             exposures: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """`exposures`: already matched ones (exposure.exposures at `until_ms`), to spare matching them again."""
    params = {"since": since_ms, "until": until_ms, "unit": unit}
    alerts = f"{_window('window_start')} AND suppression_id = '' AND {_in_unit('src_org_unit', 'dst_org_unit')}"
    assets = store.query(
        f"SELECT org_unit, uniqExact(ip) AS addresses, uniqExactIf((ip, port), kind = 'service') AS services, "
        f"arraySort(groupUniqArrayIf(product, kind NOT IN ('service', 'tls'))) AS software FROM software_inventory "
        f"WHERE {_in_unit('org_unit')} GROUP BY org_unit ORDER BY org_unit", params).dicts()
    by_kind = dict(store.query(
        f"SELECT kind, uniqExact(alert_id) FROM alert_hits WHERE {alerts} GROUP BY kind ORDER BY kind", params).rows)
    tactics = dict(store.query(
        "SELECT replaceAll(substring(tag, 8), '-', '_') AS tactic, uniqExact(alert_id) AS n FROM alert_hits "
        f"ARRAY JOIN tags AS tag WHERE {alerts} AND startsWith(tag, 'attack.') "
        "AND NOT match(tag, '^attack\\\\.[tgs]\\\\d') "  # technique, group and software ids are not tactics
        "GROUP BY tactic ORDER BY n DESC, tactic", params).rows)
    sources = store.query(
        "SELECT IPv6NumToString(src_ip) AS source, any(src_org_unit) AS org_unit, uniqExact(alert_id) AS alerts, "
        f"uniqExact(rule_id) AS rules FROM alert_hits WHERE {alerts} AND src_ip != toIPv6('::') "
        "GROUP BY src_ip ORDER BY alerts DESC, source LIMIT 10", params).dicts()
    for s in sources:
        s["source"] = s["source"].removeprefix("::ffff:")
    incidents = store.query(
        "SELECT severity, countIf(status NOT IN ('resolved', 'false_positive')) AS open, count() AS total "
        f"FROM incidents FINAL WHERE {_window('last_seen')} AND ({{unit:String}} = '' OR arrayExists("
        "u -> u = {unit:String} OR startsWith(u, concat({unit:String}, '/')), org_units)) "
        "GROUP BY severity ORDER BY severity", params).dicts()
    if exposures is None:
        exposures = exposure.exposures(store, until_ms, inventory)
    found = [e for e in exposures if not unit or e["org_unit"] == unit or e["org_unit"].startswith(unit + "/")]
    traffic = _traffic(store, since_ms, until_ms, unit)
    return {
        "since": since_ms, "until": until_ms, "org_unit": unit,
        "assets": assets,
        "threats": {"by_kind": by_kind, "by_tactic": tactics, "top_sources": sources},
        "incidents": incidents,
        "vulnerabilities": {
            "exposures": len(found), "known_exploited": sum(1 for e in found if e["kev"]),
            "by_severity": dict(Counter(e["severity"] or "unknown" for e in found)),
            "addresses": len({e["ip"] for e in found})},
        "traffic": traffic,
    }


def _traffic(store: Store, since_ms: int, until_ms: int, unit: str) -> list[dict[str, Any]]:
    """Per org unit and metric: the window's total and the same window a week earlier."""
    aggregates = ", ".join(f"{m.sql} AS {m.name}" for m in METRICS)
    rows = store.query(
        f"SELECT ts >= fromUnixTimestamp64Milli({{since:Int64}}) AS current, u AS org_unit, {aggregates} FROM events "
        f"ARRAY JOIN {ROW_UNITS} AS u "
        "WHERE ts >= fromUnixTimestamp64Milli({before:Int64}) AND ts < fromUnixTimestamp64Milli({until:Int64}) "
        "AND NOT (ts >= fromUnixTimestamp64Milli({gap:Int64}) AND ts < fromUnixTimestamp64Milli({since:Int64})) "
        "AND ({unit:String} = '' OR u = {unit:String} OR startsWith(u, concat({unit:String}, '/'))) "
        "GROUP BY current, org_unit",
        {"since": since_ms, "until": until_ms, "before": since_ms - WEEK_MS, "gap": until_ms - WEEK_MS,
         "unit": unit}).rows
    table: dict[str, dict[str, Any]] = {}
    for current, org_unit, *values in rows:
        entry = table.setdefault(org_unit, {"org_unit": org_unit, **{m.name: [0.0, 0.0] for m in METRICS}})
        for metric, value in zip(METRICS, values, strict=True):
            entry[metric.name][0 if current else 1] = float(value)
    return [{"org_unit": u, **{m.name: {"now": e[m.name][0], "week_before": e[m.name][1]} for m in METRICS}}
            for u, e in sorted(table.items())]
