"""The incident record and how it is stored: one versioned row per change (ReplacingMergeTree(version))."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson

from pipeline.store.base import COLUMNS_BEFORE_ALIASES, Store

LEVELS = ("informational", "low", "medium", "high", "critical")
STATUSES = ("new", "acknowledged", "investigating", "contained", "resolved", "false_positive")
CLOSED = ("resolved", "false_positive")

_KINDS = {
    "incident_id": "str", "title": "str", "status": "str", "severity": "str", "group_key": "str",
    "org_units": "strs", "assets": "strs", "max_criticality": "u8", "rule_ids": "strs", "alert_count": "u32",
    "assignee": "str", "tags": "strs", "first_seen": "ts", "last_seen": "ts", "opened_at": "ts",
    "updated_at": "ts", "version": "u64",
}
COLUMNS = tuple(_KINDS)
# times as epoch ms in Python, so a row read back equals the row written
SELECT_COLUMNS = ", ".join(
    f"toUnixTimestamp64Milli({c}) AS {c}" if kind == "ts" else c for c, kind in _KINDS.items() if c != "version")


class IncidentError(ValueError):
    """A change the incident cannot take (message says why)."""


class IncidentNotFound(IncidentError):
    pass


@dataclass
class Incident:
    incident_id: str
    title: str
    status: str
    severity: str
    group_key: str
    org_units: list[str] = field(default_factory=list)
    assets: list[str] = field(default_factory=list)
    max_criticality: int = 0
    rule_ids: list[str] = field(default_factory=list)
    alert_count: int = 0
    assignee: str = ""
    tags: list[str] = field(default_factory=list)
    first_seen: int = 0  # epoch ms of its earliest alert
    last_seen: int = 0
    opened_at: int = 0
    updated_at: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Incident:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def save_incidents(store: Store, incidents: list[Incident]) -> None:
    if not incidents:
        return
    version = time.time_ns()
    columns: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for n, incident in enumerate(incidents):
        row = asdict(incident) | {"version": version + n}
        for c in COLUMNS:
            columns[c].append(row[c])
    store.insert_columns("incidents", columns, _KINDS)


def append_timeline(store: Store, entries: list[tuple[str, int, str, str, dict[str, Any]]]) -> None:
    """Entries (incident_id, at_ms, actor, action, detail)."""
    if not entries:
        return
    seq = time.time_ns()
    store.insert_columns(
        "incident_timeline",
        {"incident_id": [e[0] for e in entries], "at": [e[1] for e in entries],
         "seq": [seq + n for n in range(len(entries))], "actor": [e[2] for e in entries],
         "action": [e[3] for e in entries], "detail": [orjson.dumps(e[4]).decode() for e in entries]},
        {"incident_id": "str", "at": "ts", "seq": "u64", "actor": "str", "action": "str", "detail": "str"})


def link_alerts(store: Store, links: list[tuple[str, str]], actor: str, at_ms: int) -> None:
    """Links (alert_id, incident_id)."""
    if not links:
        return
    store.insert_columns(
        "incident_alerts",
        {"alert_id": [a for a, _ in links], "incident_id": [i for _, i in links], "linked_at": [at_ms] * len(links),
         "linked_by": [actor] * len(links)},
        {"alert_id": "str", "incident_id": "str", "linked_at": "ts", "linked_by": "str"})


def load_incidents(store: Store, where: str, params: dict[str, Any], order_limit: str = "") -> list[Incident]:
    """Incidents (their newest versions) matching `where`; `order_limit` e.g. "ORDER BY last_seen DESC LIMIT 50"."""
    result = store.query(
        f"SELECT {SELECT_COLUMNS} FROM incidents FINAL WHERE {where} {order_limit} {COLUMNS_BEFORE_ALIASES}", params)
    return [Incident.from_row(row) for row in result.dicts()]


def get_incident(store: Store, incident_id: str) -> Incident:
    found = load_incidents(store, "incident_id = {id:String}", {"id": incident_id})
    if not found:
        raise IncidentNotFound(f"no incident {incident_id!r}")
    return found[0]
