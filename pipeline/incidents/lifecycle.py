"""Working an incident: status transitions, assignee, tags, notes — each change a new row version plus a
timeline entry saying who changed what, when."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.incidents.model import (
    LEVELS,
    Incident,
    IncidentError,
    append_timeline,
    get_incident,
    now_ms,
    save_incidents,
)
from pipeline.store.base import Store

# new → acknowledged → investigating → contained → resolved / false positive; closed ones can be reopened
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("acknowledged", "investigating", "contained", "resolved", "false_positive"),
    "acknowledged": ("investigating", "contained", "resolved", "false_positive"),
    "investigating": ("contained", "resolved", "false_positive"),
    "contained": ("investigating", "resolved"),
    "resolved": ("investigating",),
    "false_positive": ("investigating",),
}
MAX_NOTE = 10_000
MAX_TAGS = 50


def update(store: Store, incident_id: str, actor: str, *, status: str | None = None, assignee: str | None = None,
           tags: list[str] | None = None, severity: str | None = None, reason: str = "") -> Incident:
    """Apply the given changes (None = leave as is). Raises IncidentError for a change it cannot take."""
    incident = get_incident(store, incident_id)
    changes: list[tuple[str, dict[str, Any]]] = []
    if status is not None and status != incident.status:
        if status not in TRANSITIONS.get(incident.status, ()):
            allowed = ", ".join(TRANSITIONS.get(incident.status, ())) or "none"
            raise IncidentError(f"cannot move an incident from {incident.status} to {status} (allowed: {allowed})")
        changes.append(("status", {"from": incident.status, "to": status, "reason": reason}))
        incident.status = status
    if assignee is not None and assignee != incident.assignee:
        changes.append(("assignee", {"from": incident.assignee, "to": assignee}))
        incident.assignee = assignee
    if tags is not None:
        clean = sorted({t.strip() for t in tags if t.strip()})
        if len(clean) > MAX_TAGS or any(len(t) > 100 for t in clean):
            raise IncidentError(f"at most {MAX_TAGS} tags of at most 100 characters")
        if clean != sorted(incident.tags):
            changes.append(("tags", {"from": incident.tags, "to": clean}))
            incident.tags = clean
    if severity is not None and severity != incident.severity:
        if severity not in LEVELS:
            raise IncidentError(f"severity must be one of {', '.join(LEVELS)}")
        changes.append(("severity", {"from": incident.severity, "to": severity, "reason": reason}))
        incident.severity = severity
    if changes:
        now = now_ms()
        incident.updated_at = now
        save_incidents(store, [incident])
        append_timeline(store, [(incident_id, now, actor, action, detail) for action, detail in changes])
    return incident


def add_note(store: Store, incident_id: str, actor: str, text: str) -> dict[str, Any]:
    text = text.strip()
    if not text or len(text) > MAX_NOTE:
        raise IncidentError(f"a note needs 1 to {MAX_NOTE} characters")
    get_incident(store, incident_id)  # 404 before writing
    entry = (incident_id, now_ms(), actor, "note", {"text": text})
    append_timeline(store, [entry])
    return {"incident_id": incident_id, "at": entry[1], "actor": actor, "action": "note", "detail": entry[4]}


def timeline(store: Store, incident_id: str) -> list[dict[str, Any]]:
    rows = store.query(
        "SELECT toUnixTimestamp64Milli(at) AS at, actor, action, detail FROM incident_timeline "
        "WHERE incident_id = {id:String} ORDER BY at, seq", {"id": incident_id}).dicts()
    for row in rows:
        row["detail"] = orjson.loads(row["detail"]) if row["detail"] else {}
    return rows


def linked_alert_ids(store: Store, incident_id: str) -> list[str]:
    return [r[0] for r in store.query("SELECT alert_id FROM incident_alerts FINAL WHERE incident_id = {id:String} "
                                      "ORDER BY alert_id", {"id": incident_id}).rows]
