"""Events: search by time range and field filters, top-N and histograms, export. Every value a parameter,
every query bounded in time (MAX_RANGE_S) and rows; the time range leads so partitions and the sort key
prune before anything is read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from api import schemas
from api.deps import ApiState, App, Exporter, Reader, audit_detail
from api.export import export_response
from api.principal import Principal
from api.query import Where, cidr_bounds, decode_cursor, encode_cursor, ip_text, scope_events, time_range, unit_filter
from pipeline.schema import FIELD_BY_NAME, FIELD_NAMES, FIELDS, Sensitivity, format_ts
from pipeline.store.base import COLUMNS_BEFORE_ALIASES

router = APIRouter(prefix="/events", tags=["events"])
MAX_RANGE_S = 31 * 86400
# what a search returns unless asked for more: reading every column of a wide table costs about twice as much
# (measured: 100 rows of 10 M, 24 ms vs 45 ms); `fields=all` or a list gets the rest
SUMMARY = ("ts", "event_id", "sensor", "source_type", "event_category", "action", "severity", "message", "src_ip",
           "src_port", "dst_ip", "dst_port", "protocol", "app_protocol", "bytes_out", "bytes_in", "conn_state",
           "dns_query", "http_method", "http_host", "http_uri", "http_status", "tls_sni", "user_name", "host_name",
           "process_image", "src_org_unit", "dst_org_unit", "src_asset", "dst_asset", "ioc_ids")


def _columns(names: Sequence[str]) -> str:
    return ", ".join("toUnixTimestamp64Milli(ts) AS ts" if n == "ts" else n for n in names)


def selected_fields(fields: str) -> tuple[str, ...]:
    if fields == "summary":
        return SUMMARY
    if fields == "all":
        return FIELD_NAMES
    names = [n.strip() for n in fields.split(",") if n.strip()]
    unknown = [n for n in names if n not in FIELD_BY_NAME]
    if unknown:
        raise HTTPException(422, f"fields: unknown field {unknown[0][:64]!r}; see `ganzhi schema`")
    return tuple(dict.fromkeys(["ts", "event_id", *names]))
# fields one may group by: scalar columns (not the raw record, maps or lists)
GROUPABLE = tuple(f.name for f in FIELDS if f.kind in ("str", "lcstr", "ip", "u8", "u16", "u32")
                  and f.name not in ("raw", "event_id", "message"))
Groupable = Literal[GROUPABLE]  # type: ignore[valid-type]
INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400}


class EventFilters:
    def __init__(
        self,
        since: Annotated[datetime | None, Query(description="default: 1 h before `until`")] = None,
        until: Annotated[datetime | None, Query(description="default: now")] = None,
        ip: Annotated[str | None, Query(max_length=64, description="either side")] = None,
        src_ip: Annotated[str | None, Query(max_length=64)] = None,
        dst_ip: Annotated[str | None, Query(max_length=64)] = None,
        cidr: Annotated[str | None, Query(max_length=64, description="either side in this network")] = None,
        port: Annotated[int | None, Query(ge=0, le=65535, description="either side")] = None,
        dst_port: Annotated[int | None, Query(ge=0, le=65535)] = None,
        domain: Annotated[str | None, Query(max_length=253, description="DNS query, HTTP host or TLS SNI; "
                                            "subdomains included")] = None,
        user: Annotated[str | None, Query(max_length=256)] = None,
        rule: Annotated[str | None, Query(max_length=200, description="events a rule's alerts point at")] = None,
        category: Annotated[str | None, Query(max_length=64)] = None,
        sensor: Annotated[str | None, Query(max_length=128)] = None,
        org_unit: Annotated[str | None, Query(max_length=300)] = None,
        q: Annotated[str | None, Query(max_length=200, description="free text in the message (and the raw record "
                                       "for callers cleared for it)")] = None,
    ):
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})

    def where(self, principal: Principal) -> Where:
        where = Where()
        start, end = time_range(self.since, self.until, 3600, MAX_RANGE_S)
        where.add("ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')}", since=start, until=end)
        if self.category:
            where.add("event_category = {category:String}", category=self.category.lower())
        scope_events(where, principal)
        if self.ip:
            where.add("src_ip = {ip:IPv6} OR dst_ip = {ip:IPv6}", ip=_v6(ip_text("ip", self.ip)))
        if self.src_ip:
            where.add("src_ip = {src_ip:IPv6}", src_ip=_v6(ip_text("src_ip", self.src_ip)))
        if self.dst_ip:
            where.add("dst_ip = {dst_ip:IPv6}", dst_ip=_v6(ip_text("dst_ip", self.dst_ip)))
        if self.cidr:
            lo, hi = cidr_bounds(self.cidr)
            where.add("src_ip BETWEEN {net_lo:IPv6} AND {net_hi:IPv6} OR "
                      "dst_ip BETWEEN {net_lo:IPv6} AND {net_hi:IPv6}", net_lo=lo, net_hi=hi)
        if self.port is not None:
            where.add("src_port = {port:UInt16} OR dst_port = {port:UInt16}", port=self.port)
        if self.dst_port is not None:
            where.add("dst_port = {dst_port:UInt16}", dst_port=self.dst_port)
        if self.domain:
            domain = self.domain.strip().strip(".").lower()
            where.add(" OR ".join(f"{c} = {{domain:String}} OR endsWith({c}, {{dot_domain:String}})"
                                  for c in ("dns_query", "http_host", "tls_sni")),
                      domain=domain, dot_domain="." + domain)
        if self.user:
            where.add("user_name = {user:String}", user=self.user)
        if self.rule:
            where.add("event_id IN (SELECT event_id FROM alert_hits WHERE rule_id = {rule:String} "
                      "AND event_ts >= {since:DateTime64(3, 'UTC')} AND event_ts < {until:DateTime64(3, 'UTC')})",
                      rule=self.rule)
        if self.sensor:
            where.add("sensor = {sensor:String}", sensor=self.sensor)
        if self.org_unit:
            unit_filter(where, "src_org_unit = {f_unit:String} OR startsWith(src_org_unit, {f_prefix:String}) OR "
                               "dst_org_unit = {f_unit:String} OR startsWith(dst_org_unit, {f_prefix:String})",
                        self.org_unit)
        if self.q:
            text = "positionCaseInsensitiveUTF8(message, {q:String}) > 0"
            if principal.clearance >= FIELD_BY_NAME["raw"].sensitivity:
                text += " OR positionCaseInsensitiveUTF8(raw, {q:String}) > 0"
            where.add(text, q=self.q)
        return where


Filters = Annotated[EventFilters, Depends()]


def _v6(text: str) -> str:
    return text if ":" in text else "::ffff:" + text


def event_rows(app: ApiState, principal: Principal, where: Where, limit: int,
               fields: Sequence[str] = FIELD_NAMES) -> list[dict[str, Any]]:
    rows = app.store.query(f"SELECT {_columns(fields)} FROM events WHERE {where.sql} ORDER BY ts DESC, event_id DESC "
                           f"LIMIT {{limit:UInt32}} {COLUMNS_BEFORE_ALIASES}", where.params | {"limit": limit}).dicts()
    return [principal.mask(_json_form(r)) for r in rows]


def _json_form(row: dict[str, Any]) -> dict[str, Any]:
    """The event's JSON form (as `ganzhi` writes it): empty fields left out, time as ISO text plus epoch ms."""
    out = {k: v for k, v in row.items() if v not in ("", 0, 0.0, [], {}, None)}
    out["ts"] = format_ts(row["ts"])
    out["ts_ms"] = row["ts"]
    return out


@router.get("", response_model=schemas.EventPage, summary="Search events, newest first")
def search_events(app: App, principal: Reader, filters: Filters,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  cursor: Annotated[str | None, Query(max_length=300)] = None,
                  fields: Annotated[str, Query(max_length=2000, description="summary (default), all, or a "
                                               "comma-separated list of schema fields")] = "summary") -> dict[str, Any]:
    where = filters.where(principal)
    if cursor:
        ts, key = decode_cursor(cursor)
        where.add("(ts, event_id) < (fromUnixTimestamp64Milli({c_ts:Int64}, 'UTC'), {c_id:String})", c_ts=ts, c_id=key)
    items = event_rows(app, principal, where, limit, selected_fields(fields))
    more = len(items) == limit
    return {"items": items, "next_cursor": encode_cursor(items[-1]["ts_ms"], items[-1]["event_id"]) if more else None}


@router.get("/top", response_model=list[schemas.Bucket], summary="Most frequent values of a field")
def top_values(app: App, principal: Reader, filters: Filters, field: Annotated[Groupable, Query()],
               n: Annotated[int, Query(ge=1, le=100)] = 10) -> list[dict[str, Any]]:
    if FIELD_BY_NAME[field].sensitivity > principal.clearance:
        raise HTTPException(403, f"{field} is above your clearance ({Sensitivity(principal.clearance).name})")
    where = filters.where(principal)
    rows = app.store.query(f"SELECT toString({field}) AS key, count() AS count FROM events WHERE {where.sql} "
                           "GROUP BY key ORDER BY count DESC, key LIMIT {n:UInt32}", where.params | {"n": n}).rows
    return [{"key": _unmap(k), "count": c} for k, c in rows]


def _unmap(key: str) -> str:
    return key[7:] if key.startswith("::ffff:") else key


@router.get("/histogram", response_model=list[schemas.Bucket], summary="Event counts over time")
def histogram(app: App, principal: Reader, filters: Filters,
              interval: Annotated[Literal[tuple(INTERVALS)], Query()] = "5m") -> list[dict[str, Any]]:  # type: ignore[valid-type]
    where = filters.where(principal)
    rows = app.store.query(
        f"SELECT toUnixTimestamp(toStartOfInterval(ts, INTERVAL {INTERVALS[interval]} SECOND)) * 1000 AS bucket, "
        f"count() FROM events WHERE {where.sql} GROUP BY bucket ORDER BY bucket LIMIT 10000", where.params).rows
    return [{"key": format_ts(int(b)), "count": c} for b, c in rows]


@router.get("/export", summary="Export events as CSV or JSON (audited)",
            responses={200: {"content": {"text/csv": {}, "application/json": {}}}})
def export_events(request: Request, app: App, principal: Exporter, filters: Filters,
                  format: Annotated[Literal["csv", "json"], Query()] = "json",
                  limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> Response:
    rows = event_rows(app, principal, filters.where(principal), limit)
    audit_detail(request, rows=len(rows))
    return export_response(rows, format, "events")
