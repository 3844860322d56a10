"""Group alerts into incidents: by entity and time proximity, under a configurable policy.

An alert's group key is the first non-empty of the policy's `group_by` fields (default: the alert's own
entity, i.e. the source address, host, user or correlation group it is about). It joins the open incident
with that key whose last alert is at most `gap_s` before it and which began at most `max_span_s` before
it; otherwise it opens a new one. Incident ids are derived from the key and the opening alert, and an
alert is linked once (incident_alerts is keyed by alert id), so re-processing the same alerts — a
restarted correlator, a replayed topic — changes nothing.

Severity: the highest alert level, one step higher when a critical asset (criticality >= 4) is involved
and one more when the incident gathers MULTI_STAGE_RULES or more distinct rules (a multi-stage attack).
Automatic changes only ever raise it; people may lower it through the lifecycle.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.incidents.model import (
    CLOSED,
    LEVELS,
    Incident,
    append_timeline,
    link_alerts,
    load_incidents,
    now_ms,
    save_incidents,
)
from pipeline.store.base import COLUMNS_BEFORE_ALIASES, Store, in_array

GROUP_FIELDS = ("entity", "src_ip", "dst_ip", "host_name", "user_name", "src_asset", "dst_asset")
CRITICAL_ASSET = 4
MULTI_STAGE_RULES = 3
ACTOR = "ganzhi"


@dataclass(frozen=True)
class GroupingPolicy:
    group_by: tuple[str, ...] = ("entity",)
    gap_s: int = 3600
    max_span_s: int = 7 * 86400

    def __post_init__(self) -> None:
        unknown = [f for f in self.group_by if f not in GROUP_FIELDS]
        if unknown or not self.group_by:
            raise ValueError(f"incident group_by takes fields of {', '.join(GROUP_FIELDS)}; got {self.group_by}")
        if self.gap_s <= 0 or self.max_span_s < self.gap_s:
            raise ValueError("incident gap must be > 0 and max span >= gap")

    @classmethod
    def from_env(cls) -> GroupingPolicy:
        """GANZHI_INCIDENT_GROUP_BY (comma-separated), GANZHI_INCIDENT_GAP_S, GANZHI_INCIDENT_MAX_SPAN_S."""
        env = os.environ
        group_by = tuple(f.strip() for f in env.get("GANZHI_INCIDENT_GROUP_BY", "entity").split(",") if f.strip())
        return cls(group_by, int(env.get("GANZHI_INCIDENT_GAP_S", 3600)),
                   int(env.get("GANZHI_INCIDENT_MAX_SPAN_S", 7 * 86400)))

    def key(self, alert: dict[str, Any]) -> str:
        for name in self.group_by:
            value = alert.get(name) or ""
            if value:
                return value if name == "entity" else f"{name}={value}"
        return f"rule={alert['rule_id']}"


def derive_severity(level: str, max_criticality: int, rule_count: int) -> str:
    score = LEVELS.index(level) if level in LEVELS else 2
    score += (max_criticality >= CRITICAL_ASSET) + (rule_count >= MULTI_STAGE_RULES)
    return LEVELS[min(score, len(LEVELS) - 1)]


@dataclass
class CorrelationResult:
    opened: list[str] = field(default_factory=list)
    joined: int = 0
    already_linked: int = 0


def _criticality(store: Store, alerts: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Highest asset criticality among each alert's events (the inventory enrichment put it on the events)."""
    ids = sorted({e for a in alerts for e in a.get("event_ids", ())})
    if not ids:
        return {}
    result = store.query(
        "SELECT event_id, greatest(src_criticality, dst_criticality) FROM events "
        "WHERE ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') AND ts <= fromUnixTimestamp64Milli({hi:Int64}, 'UTC') "
        f"AND {in_array('event_id', 'ids')}",
        {"lo": min(a["first_seen"] for a in alerts), "hi": max(a["last_seen"] for a in alerts), "ids": ids})
    by_event = dict(result.rows)
    return {a["alert_id"]: max((by_event.get(e, 0) for e in a.get("event_ids", ())), default=0) for a in alerts}


class IncidentCorrelator:
    def __init__(self, store: Store, policy: GroupingPolicy | None = None):
        self.store = store
        self.policy = policy or GroupingPolicy()

    def process(self, alerts: Sequence[dict[str, Any]]) -> CorrelationResult:
        """Alert records (as published on the alerts topic) -> new or grown incidents."""
        result = CorrelationResult()
        fresh = {a["alert_id"]: a for a in alerts if not a.get("suppression_id")}
        if not fresh:
            return result
        linked = self._linked(list(fresh))
        result.already_linked = len(linked)
        todo = sorted((a for i, a in fresh.items() if i not in linked), key=lambda a: (a["first_seen"], a["alert_id"]))
        if not todo:
            return result
        criticality = _criticality(self.store, todo)
        keys = sorted({self.policy.key(a) for a in todo})
        open_by_key: dict[str, list[Incident]] = {}
        where = "group_key IN {keys:Array(String)} AND status NOT IN {closed:Array(String)}"
        for incident in load_incidents(self.store, where, {"keys": keys, "closed": list(CLOSED)}):
            open_by_key.setdefault(incident.group_key, []).append(incident)
        now = now_ms()
        changed: dict[str, Incident] = {}
        links: list[tuple[str, str]] = []
        timeline: list[tuple[str, int, str, str, dict[str, Any]]] = []
        for alert in todo:
            key = self.policy.key(alert)
            incident = self._joinable(open_by_key.get(key, ()), alert)
            is_new = incident is None
            if incident is None:
                incident = self._open(key, alert, now)
                open_by_key.setdefault(key, []).append(incident)
                result.opened.append(incident.incident_id)
            else:
                result.joined += 1
            before = incident.severity
            self._absorb(incident, alert, criticality.get(alert["alert_id"], 0), now)
            iid = incident.incident_id
            if is_new:
                timeline.append((iid, now, ACTOR, "opened", {"group_key": key, "severity": incident.severity}))
            elif incident.severity != before:
                timeline.append((iid, now, ACTOR, "severity", {"from": before, "to": incident.severity}))
            timeline.append((iid, now, ACTOR, "alert_linked",
                             {"alert_id": alert["alert_id"], "rule_id": alert["rule_id"], "title": alert.get("title")}))
            links.append((alert["alert_id"], iid))
            changed[iid] = incident
        # links last: a crash before them leaves the alerts unlinked, so the next run redoes this (ids are
        # deterministic, so the same incidents are written again, not new ones)
        save_incidents(self.store, list(changed.values()))
        append_timeline(self.store, timeline)
        link_alerts(self.store, links, ACTOR, now)
        return result

    def _linked(self, alert_ids: list[str]) -> set[str]:
        rows = self.store.query(f"SELECT alert_id FROM incident_alerts WHERE {in_array('alert_id', 'ids')}",
                                {"ids": alert_ids}).rows
        return {r[0] for r in rows}

    def _joinable(self, candidates: Sequence[Incident], alert: dict[str, Any]) -> Incident | None:
        best = None
        for incident in candidates:
            if (alert["first_seen"] - incident.last_seen <= self.policy.gap_s * 1000
                    and alert["first_seen"] - incident.first_seen <= self.policy.max_span_s * 1000
                    and (best is None or incident.last_seen > best.last_seen)):
                best = incident
        return best

    @staticmethod
    def _open(key: str, alert: dict[str, Any], now: int) -> Incident:
        incident_id = hashlib.blake2b(f"{key}\x00{alert['alert_id']}".encode(), digest_size=12).hexdigest()
        return Incident(incident_id=incident_id, title=alert.get("title") or alert["rule_id"],
                        status="new", severity="informational", group_key=key, first_seen=alert["first_seen"],
                        last_seen=alert["last_seen"], opened_at=now, updated_at=now)

    @staticmethod
    def _absorb(incident: Incident, alert: dict[str, Any], criticality: int, now: int) -> None:
        for side in ("src", "dst"):
            unit, asset = alert.get(f"{side}_org_unit") or "", alert.get(f"{side}_asset") or ""
            if unit and unit not in incident.org_units:
                incident.org_units.append(unit)
            if asset and asset not in incident.assets:
                incident.assets.append(asset)
        if alert["rule_id"] not in incident.rule_ids:
            incident.rule_ids.append(alert["rule_id"])
        incident.alert_count += 1
        incident.max_criticality = max(incident.max_criticality, criticality)
        incident.first_seen = min(incident.first_seen, alert["first_seen"])
        incident.last_seen = max(incident.last_seen, alert["last_seen"])
        derived = derive_severity(alert.get("level", "medium"), incident.max_criticality, len(incident.rule_ids))
        if LEVELS.index(derived) > LEVELS.index(incident.severity):
            incident.severity = derived
        incident.updated_at = now


def stored_alerts(store: Store, since_ms: int, until_ms: int | None = None) -> list[dict[str, Any]]:
    """Alerts from the store in the shape the alerts topic carries (to correlate after an embedded run)."""
    until = until_ms if until_ms is not None else 2**62
    result = store.query(
        "SELECT alert_id, rule_id, rule_title AS title, level, kind, entity, toUnixTimestamp64Milli(first_seen) AS "
        "first_seen, toUnixTimestamp64Milli(last_seen) AS last_seen, event_ids, src_ip, dst_ip, host_name, user_name, "
        "src_org_unit, dst_org_unit, src_asset, dst_asset, suppression_id FROM alerts "
        "WHERE last_seen >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') "
        "AND first_seen < fromUnixTimestamp64Milli({hi:Int64}, 'UTC') "
        f"ORDER BY first_seen, alert_id {COLUMNS_BEFORE_ALIASES}",
        {"lo": since_ms, "hi": until})
    return result.dicts()
