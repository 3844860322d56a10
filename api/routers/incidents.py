"""Incidents: list, get, work (status, assignee, tags, notes), timeline, linked alerts and events, export."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from api import schemas
from api.auth import get_user
from api.deps import ApiState, App, Exporter, Reader, Worker, audit_detail
from api.export import export_response
from api.principal import Principal
from api.query import Where, decode_cursor, encode_cursor, scope_events, scope_incidents, time_range, unit_filter
from api.routers.alerts import alert_rows, visible_alert
from api.routers.events import event_rows
from pipeline.incidents import lifecycle
from pipeline.incidents.model import Incident, IncidentError, IncidentNotFound, link_alerts, load_incidents

router = APIRouter(prefix="/incidents", tags=["incidents"])
MAX_RANGE_S = 400 * 86400


class IncidentFilters:
    def __init__(
        self,
        status: Annotated[list[schemas.Status] | None, Query(description="one or more statuses")] = None,
        severity: Annotated[list[schemas.Level] | None, Query()] = None,
        org_unit: Annotated[str | None, Query(max_length=300, description="this unit and below")] = None,
        assignee: Annotated[str | None, Query(max_length=64)] = None,
        since: Annotated[datetime | None, Query(description="last alert at or after (default: 30 days ago)")] = None,
        until: Annotated[datetime | None, Query()] = None,
    ):
        self.status, self.severity, self.org_unit, self.assignee = status, severity, org_unit, assignee
        self.since, self.until = since, until

    def where(self, principal: Principal) -> Where:
        where = Where()
        scope_incidents(where, principal)
        start, end = time_range(self.since, self.until, 30 * 86400, MAX_RANGE_S)
        where.add("last_seen >= {since:DateTime64(3, 'UTC')} AND last_seen < {until:DateTime64(3, 'UTC')}",
                  since=start, until=end)
        if self.status:
            where.add("status IN {status:Array(String)}", status=list(self.status))
        if self.severity:
            where.add("severity IN {severity:Array(String)}", severity=list(self.severity))
        if self.org_unit:
            unit_filter(where, "arrayExists(u -> u = {f_unit:String} OR startsWith(u, {f_prefix:String}), org_units)",
                        self.org_unit)
        if self.assignee is not None:
            where.add("assignee = {assignee:String}", assignee=self.assignee)
        return where


Filters = Annotated[IncidentFilters, Depends()]


def _visible(app: ApiState, principal: Principal, incident_id: str) -> Incident:
    """The incident, if the caller may see it; 404 otherwise (not 403: do not confirm it exists)."""
    where = Where()
    where.add("incident_id = {id:String}", id=incident_id)
    scope_incidents(where, principal)
    found = load_incidents(app.store, where.sql, where.params)
    if not found:
        raise HTTPException(404, f"no incident {incident_id!r} in your scope")
    return found[0]


def _list(app: ApiState, where: Where, limit: int, cursor: str | None) -> list[dict[str, Any]]:
    if cursor:
        ts, key = decode_cursor(cursor)
        where.add("(toUnixTimestamp64Milli(last_seen), incident_id) < ({c_ts:Int64}, {c_id:String})", c_ts=ts, c_id=key)
    found = load_incidents(app.store, where.sql, where.params | {"limit": limit},
                           "ORDER BY last_seen DESC, incident_id DESC LIMIT {limit:UInt32}")
    return [incident.as_json() for incident in found]


@router.get("", response_model=schemas.IncidentPage, summary="List incidents, newest activity first")
def list_incidents(app: App, principal: Reader, filters: Filters,
                   limit: Annotated[int, Query(ge=1, le=500)] = 50,
                   cursor: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    rows = _list(app, filters.where(principal), limit, cursor)
    more = len(rows) == limit
    return {"items": [principal.mask(r) for r in rows],
            "next_cursor": encode_cursor(rows[-1]["last_seen"], rows[-1]["incident_id"]) if more else None}


@router.get("/export", summary="Export incidents as CSV or JSON (audited)",
            responses={200: {"content": {"text/csv": {}, "application/json": {}}}})
def export_incidents(request: Request, app: App, principal: Exporter, filters: Filters,
                     format: Annotated[Literal["csv", "json"], Query()] = "json",
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> Response:
    rows = [principal.mask(r) for r in _list(app, filters.where(principal), limit, None)]
    audit_detail(request, rows=len(rows))
    return export_response(rows, format, "incidents")


@router.get("/{incident_id}", response_model=schemas.Incident)
def get_incident(app: App, principal: Reader, incident_id: str) -> dict[str, Any]:
    return principal.mask(_visible(app, principal, incident_id).as_json())


@router.patch("/{incident_id}", response_model=schemas.Incident, summary="Change status, assignee, tags, severity")
def update_incident(request: Request, app: App, principal: Worker, incident_id: str,
                    body: schemas.IncidentUpdate) -> dict[str, Any]:
    _visible(app, principal, incident_id)
    audit_detail(request, change=body.model_dump(exclude_none=True))
    if body.assignee and get_user(app.store, body.assignee) is None:
        raise HTTPException(422, f"assignee {body.assignee!r} is not a user")
    try:
        incident = lifecycle.update(app.store, incident_id, principal.user, status=body.status,
                                    assignee=body.assignee, tags=body.tags, severity=body.severity, reason=body.reason)
    except IncidentNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except IncidentError as exc:
        raise HTTPException(409, str(exc)) from None
    return principal.mask(incident.as_json())


@router.post("/{incident_id}/notes", response_model=schemas.TimelineEntry, status_code=201)
def add_note(request: Request, app: App, principal: Worker, incident_id: str, body: schemas.NoteIn) -> dict[str, Any]:
    _visible(app, principal, incident_id)
    audit_detail(request, note_chars=len(body.text))
    try:
        return lifecycle.add_note(app.store, incident_id, principal.user, body.text)
    except IncidentError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/{incident_id}/timeline", response_model=list[schemas.TimelineEntry])
def get_timeline(app: App, principal: Reader, incident_id: str) -> list[dict[str, Any]]:
    _visible(app, principal, incident_id)
    return lifecycle.timeline(app.store, incident_id)


@router.get("/{incident_id}/alerts", response_model=list[schemas.Alert])
def incident_alerts(app: App, principal: Reader, incident_id: str) -> list[dict[str, Any]]:
    _visible(app, principal, incident_id)
    ids = lifecycle.linked_alert_ids(app.store, incident_id)
    where = Where()
    where.add("alert_id IN {ids:Array(String)}", ids=ids)
    scope_events(where, principal)
    return [principal.mask(r) for r in alert_rows(app, where, len(ids) or 1)]


@router.post("/{incident_id}/alerts", response_model=schemas.Incident, status_code=201,
             summary="Link an alert to this incident by hand")
def link_alert(request: Request, app: App, principal: Worker, incident_id: str, body: schemas.LinkIn) -> dict[str, Any]:
    incident = _visible(app, principal, incident_id)
    visible_alert(app, principal, body.alert_id)
    audit_detail(request, alert_id=body.alert_id)
    now = lifecycle.now_ms()
    link_alerts(app.store, [(body.alert_id, incident_id)], principal.user, now)
    lifecycle.append_timeline(app.store, [(incident_id, now, principal.user, "alert_linked",
                                           {"alert_id": body.alert_id})])
    return principal.mask(incident.as_json())


@router.get("/{incident_id}/events", response_model=schemas.EventPage, summary="Events of the linked alerts")
def incident_events(app: App, principal: Reader, incident_id: str,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict[str, Any]:
    incident = _visible(app, principal, incident_id)
    ids = lifecycle.linked_alert_ids(app.store, incident_id)
    event_ids = [r[0] for r in app.store.query(
        "SELECT DISTINCT event_id FROM alert_hits WHERE alert_id IN {ids:Array(String)} ORDER BY event_id "
        "LIMIT {n:UInt32}", {"ids": ids, "n": limit}).rows]
    where = Where()
    # the events lie within the incident's span (hour-wide alert windows: allow a day either side)
    where.add("ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') AND ts <= fromUnixTimestamp64Milli({hi:Int64}, 'UTC')",
              lo=incident.first_seen - 86_400_000, hi=incident.last_seen + 86_400_000)
    where.add("event_id IN {event_ids:Array(String)}", event_ids=event_ids)
    return {"items": event_rows(app, principal, where, limit), "next_cursor": None}
