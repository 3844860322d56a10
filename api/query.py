"""Building parameterized filters: every user value becomes a `{name:Type}` parameter, never SQL text.

Also department isolation (a caller bound to an org unit sees its unit and the units below it) and the
opaque cursors of list endpoints.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException

from api.principal import Principal


class Where:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: dict[str, Any] = {}

    def add(self, sql: str, **params: Any) -> None:
        self.parts.append(sql)
        self.params.update(params)

    @property
    def sql(self) -> str:
        return " AND ".join(f"({p})" for p in self.parts) or "1"


def scope_events(where: Where, principal: Principal) -> None:
    """Rows with src_org_unit/dst_org_unit (events, alerts): either side inside the caller's unit."""
    if principal.org_unit:
        where.add("src_org_unit = {scope_unit:String} OR startsWith(src_org_unit, {scope_prefix:String}) "
                  "OR dst_org_unit = {scope_unit:String} OR startsWith(dst_org_unit, {scope_prefix:String})",
                  scope_unit=principal.org_unit, scope_prefix=principal.org_unit + "/")


def scope_incidents(where: Where, principal: Principal) -> None:
    if principal.org_unit:
        where.add("arrayExists(u -> u = {scope_unit:String} OR startsWith(u, {scope_prefix:String}), org_units)",
                  scope_unit=principal.org_unit, scope_prefix=principal.org_unit + "/")


def unit_filter(where: Where, column_sql: str, unit: str) -> None:
    """`column_sql` is a template with {c} for one org-unit column (applied to each side)."""
    unit = unit.strip().strip("/")
    if unit:
        where.add(column_sql, f_unit=unit, f_prefix=unit + "/")


def ip_text(name: str, value: str) -> str:
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        raise HTTPException(422, f"{name}: {value[:64]!r} is not an IP address") from None
    mapped = getattr(addr, "ipv4_mapped", None)
    return str(mapped or addr)


def cidr_bounds(value: str) -> tuple[str, str]:
    """A CIDR as the first and last address in the IPv6 column's form (IPv4 mapped)."""
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise HTTPException(422, f"cidr: {value[:64]!r} is not a network like 10.1.0.0/16") from None
    if isinstance(net, ipaddress.IPv4Network):
        return f"::ffff:{net.network_address}", f"::ffff:{net.broadcast_address}"
    return str(net.network_address), str(net.broadcast_address)


def time_range(since: datetime | None, until: datetime | None, default_s: int, max_s: int) -> tuple[datetime, datetime]:
    end = _utc(until) if until else datetime.now(UTC)
    start = _utc(since) if since else datetime.fromtimestamp(end.timestamp() - default_s, UTC)
    if start >= end:
        raise HTTPException(422, "`since` must be before `until`")
    if (end - start).total_seconds() > max_s:
        raise HTTPException(422, f"time range longer than {max_s // 86400} days; narrow `since`/`until`")
    if start.year < 1970 or end.year > 2200:
        raise HTTPException(422, "time out of range (1970-2200)")
    return start, end


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def encode_cursor(ts_ms: int, key: str) -> str:
    return base64.urlsafe_b64encode(f"{ts_ms}:{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, key = text.split(":", 1)
        return int(ts), key
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HTTPException(422, "cursor: not a cursor this API handed out (use next_cursor as given)") from None
