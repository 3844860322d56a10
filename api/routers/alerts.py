"""Alerts: list and filter, get, acknowledge (into an incident), suppress (scoped, expiring, audited)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from api import schemas
from api.deps import ApiState, App, Reader, Worker, audit_detail
from api.principal import Principal
from api.query import Where, decode_cursor, encode_cursor, scope_events, time_range
from pipeline.detect import suppress
from pipeline.incidents import lifecycle
from pipeline.incidents.correlate import GroupingPolicy, IncidentCorrelator
from pipeline.incidents.model import IncidentError
from pipeline.store.base import COLUMNS_BEFORE_ALIASES

router = APIRouter(prefix="/alerts", tags=["alerts"])
ALERT_COLUMNS = (
    "alert_id, rule_id, rule_title, level, tags, kind, ruleset_version, entity, "
    "toUnixTimestamp64Milli(first_seen) AS first_seen, toUnixTimestamp64Milli(last_seen) AS last_seen, hit_count, "
    "src_ip, dst_ip, host_name, user_name, src_org_unit, dst_org_unit, src_asset, dst_asset, suppression_id")
MAX_RANGE_S = 400 * 86400


def alert_rows(app: ApiState, hits_where: Where, limit: int, outer: str = "", order: str = "") -> list[dict[str, Any]]:
    """Alerts whose hits match `hits_where` (filtering the hit rows lets ClickHouse use the alert_id key of the
    folded view instead of folding every alert first), with the incident each is linked to."""
    rows = app.store.query(
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id IN (SELECT alert_id FROM alert_hits WHERE "
        f"{hits_where.sql}) {('AND ' + outer) if outer else ''} ORDER BY {order or 'last_seen DESC, alert_id DESC'} "
        f"LIMIT {{limit:UInt32}} {COLUMNS_BEFORE_ALIASES}", hits_where.params | {"limit": limit}).dicts()
    if rows:
        links = dict(app.store.query("SELECT alert_id, incident_id FROM incident_alerts FINAL WHERE alert_id IN "
                                     "{ids:Array(String)}", {"ids": [r["alert_id"] for r in rows]}).rows)
        for row in rows:
            row["incident_id"] = links.get(row["alert_id"], "")
    return rows


def visible_alert(app: ApiState, principal: Principal, alert_id: str) -> dict[str, Any]:
    where = Where()
    where.add("alert_id = {id:String}", id=alert_id)
    scope_events(where, principal)
    rows = alert_rows(app, where, 1)
    if not rows:
        raise HTTPException(404, f"no alert {alert_id!r} in your scope")
    return rows[0]


@router.get("", response_model=schemas.AlertPage, summary="List alerts, newest first")
def list_alerts(
    app: App, principal: Reader,
    since: Annotated[datetime | None, Query(description="hits at or after (default 24 h ago)")] = None,
    until: Annotated[datetime | None, Query()] = None,
    level: Annotated[list[schemas.Level] | None, Query()] = None,
    rule_id: Annotated[str | None, Query(max_length=200)] = None,
    entity: Annotated[str | None, Query(max_length=300)] = None,
    suppressed: Annotated[bool, Query(description="include alerts a suppression hides")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    start, end = time_range(since, until, 86400, MAX_RANGE_S)
    where = Where()
    where.add("event_ts >= {since:DateTime64(3, 'UTC')} AND event_ts < {until:DateTime64(3, 'UTC')}",
              since=start, until=end)
    scope_events(where, principal)
    if level:
        where.add("level IN {level:Array(String)}", level=list(level))
    if rule_id:
        where.add("rule_id = {rule_id:String}", rule_id=rule_id)
    if entity:
        where.add("entity = {entity:String}", entity=entity)
    if not suppressed:
        where.add("suppression_id = ''")
    outer = ""
    if cursor:
        ts, key = decode_cursor(cursor)
        outer = "(toUnixTimestamp64Milli(last_seen), alert_id) < ({c_ts:Int64}, {c_id:String})"
        where.params |= {"c_ts": ts, "c_id": key}
    rows = alert_rows(app, where, limit, outer)
    more = len(rows) == limit
    return {"items": [principal.mask(r) for r in rows],
            "next_cursor": encode_cursor(rows[-1]["last_seen"], rows[-1]["alert_id"]) if more else None}


@router.get("/{alert_id}", response_model=schemas.Alert)
def get_alert(app: App, principal: Reader, alert_id: str) -> dict[str, Any]:
    return principal.mask(visible_alert(app, principal, alert_id))


@router.post("/{alert_id}/ack", response_model=schemas.Incident, summary="Acknowledge: the alert's incident "
             "(opened now if it has none) moves from new to acknowledged")
def acknowledge(request: Request, app: App, principal: Worker, alert_id: str) -> dict[str, Any]:
    alert = visible_alert(app, principal, alert_id)
    if alert["suppression_id"]:
        raise HTTPException(409, f"alert {alert_id} is suppressed ({alert['suppression_id']}); nothing to acknowledge")
    incident_id = alert["incident_id"]
    if not incident_id:
        record = alert | {"title": alert["rule_title"], "event_ids": []}
        IncidentCorrelator(app.store, GroupingPolicy.from_env()).process([record])
        incident_id = visible_alert(app, principal, alert_id)["incident_id"]
    audit_detail(request, incident_id=incident_id)
    now = lifecycle.now_ms()
    lifecycle.append_timeline(app.store, [(incident_id, now, principal.user, "alert_acknowledged",
                                           {"alert_id": alert_id})])
    try:
        incident = lifecycle.get_incident(app.store, incident_id)
        if incident.status == "new":
            incident = lifecycle.update(app.store, incident_id, principal.user, status="acknowledged",
                                        reason=f"alert {alert_id} acknowledged")
    except IncidentError as exc:
        raise HTTPException(409, str(exc)) from None
    return principal.mask(incident.as_json())


@router.post("/{alert_id}/suppress", response_model=schemas.Suppression, status_code=201,
             summary="Hide this alert's kind in a scope until the suppression expires")
def suppress_alert(request: Request, app: App, principal: Worker, alert_id: str,
                   body: schemas.SuppressIn) -> dict[str, Any]:
    alert = visible_alert(app, principal, alert_id)
    value = body.value
    if value is None:
        value = {"src_ip": alert["src_ip"], "dst_ip": alert["dst_ip"], "entity": alert["entity"],
                 "asset": alert["src_asset"] or alert["dst_asset"],
                 "org_unit": alert["src_org_unit"] or alert["dst_org_unit"]}.get(body.scope, "")
    if body.scope == "org_unit" and principal.org_unit and not principal.sees_unit(value.strip("/")):
        raise HTTPException(403, f"you can only suppress inside {principal.org_unit}")
    try:
        created = suppress.new_suppression("" if body.all_rules else alert["rule_id"], body.scope, value,
                                           principal.user, body.reason, body.days)
    except suppress.SuppressionError as exc:
        raise HTTPException(422, str(exc)) from None
    suppress.save(app.store, created)
    audit_detail(request, suppression_id=created.suppression_id, scope=created.scope, value=created.value,
                 rule_id=created.rule_id, days=body.days)
    return dict(created.__dict__)
