"""Suppressions: scoped, expiring, owned decisions to hide alerts — and what they would have hidden.

A suppression names a rule (or every rule) and a scope: an address (`src_ip`, `dst_ip`), a network
(`cidr`, either side), an org unit (`org_unit`, a path prefix on either side), an asset (`asset`) or an
alert entity (`entity`). Suppressed alerts are still stored (with the suppression id) but not published,
so nothing is lost and an auditor can see what was hidden and by whose decision.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.detect.engine import Alert
from pipeline.store.base import Store

SCOPES = ("src_ip", "dst_ip", "cidr", "org_unit", "asset", "entity")


class SuppressionError(ValueError):
    """A suppression that cannot be created as asked (message says why)."""


@dataclass(frozen=True)
class Suppression:
    suppression_id: str
    rule_id: str  # "" = every rule
    scope: str
    value: str
    owner: str
    reason: str
    created_at: int  # epoch ms
    expires_at: int  # epoch ms

    def active(self, now_ms: int) -> bool:
        return self.created_at <= now_ms < self.expires_at

    def matches(self, rule_id: str, entity: str, context: dict[str, str]) -> bool:
        if self.rule_id and self.rule_id != rule_id:
            return False
        if self.scope in ("src_ip", "dst_ip"):
            return context.get(self.scope, "") == self.value
        if self.scope == "cidr":
            network = ipaddress.ip_network(self.value, strict=False)
            for side in ("src_ip", "dst_ip"):
                text = context.get(side, "")
                if text and ipaddress.ip_address(text) in network:
                    return True
            return False
        if self.scope == "org_unit":
            prefix = self.value.lower().rstrip("/")
            return any(ou == prefix or ou.startswith(prefix + "/")
                       for ou in (context.get("src_org_unit", ""), context.get("dst_org_unit", "")) if ou)
        if self.scope == "asset":
            return self.value in (context.get("src_asset", ""), context.get("dst_asset", ""))
        return entity == self.value  # scope "entity"

    def hides(self, alert: Alert) -> bool:
        return self.matches(alert.rule_id, alert.entity, alert.context)


def _validate(scope: str, value: str) -> str:
    if scope not in SCOPES:
        raise SuppressionError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    value = value.strip()
    if not value:
        raise SuppressionError("a suppression needs a value for its scope")
    try:
        if scope in ("src_ip", "dst_ip"):
            addr = ipaddress.ip_address(value)
            mapped = getattr(addr, "ipv4_mapped", None)
            return str(mapped or addr)
        if scope == "cidr":
            return str(ipaddress.ip_network(value, strict=False))
    except ValueError as exc:
        raise SuppressionError(f"{scope}: {exc}") from None
    return value


def new_suppression(rule_id: str, scope: str, value: str, owner: str, reason: str, days: float,
                    now_ms: int | None = None) -> Suppression:
    if not owner.strip() or not reason.strip():
        raise SuppressionError("a suppression needs an owner and a reason (they are audited)")
    if not 0 < days <= 366:
        raise SuppressionError("expiry must be between 0 and 366 days: suppressions do not last forever")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return Suppression(uuid.uuid4().hex, rule_id.strip(), scope, _validate(scope, value), owner.strip(),
                       reason.strip(), now, now + int(days * 86_400_000))


def save(store: Store, suppression: Suppression, revoked: bool = False) -> None:
    columns: dict[str, list[Any]] = {
        "suppression_id": [suppression.suppression_id], "rule_id": [suppression.rule_id],
        "scope": [suppression.scope], "value": [suppression.value], "owner": [suppression.owner],
        "reason": [suppression.reason], "created_at": [suppression.created_at],
        "expires_at": [suppression.expires_at], "revoked": [1 if revoked else 0],
        "version": [time.time_ns()],
    }
    kinds = {name: "str" for name in columns} | {"created_at": "ts", "expires_at": "ts", "revoked": "u8",
                                                 "version": "u64"}
    store.insert_columns("suppressions", columns, kinds)


def load(store: Store, include_inactive: bool = False, now_ms: int | None = None) -> list[Suppression]:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    rows = store.query(
        "SELECT suppression_id, rule_id, scope, value, owner, reason, toUnixTimestamp64Milli(created_at), "
        "toUnixTimestamp64Milli(expires_at), revoked FROM suppressions FINAL ORDER BY created_at").rows
    out = []
    for row in rows:
        suppression = Suppression(*row[:8])
        if include_inactive or (not row[8] and suppression.active(now)):
            out.append(suppression)
    return out


def revoke(store: Store, suppression_id: str) -> Suppression:
    found = [s for s in load(store, include_inactive=True) if s.suppression_id == suppression_id]
    if not found:
        raise SuppressionError(f"no suppression {suppression_id!r}")
    save(store, found[0], revoked=True)
    return found[0]


def apply(alerts: Iterable[Alert], suppressions: list[Suppression]) -> None:
    """Mark each alert with the first suppression that hides it."""
    for alert in alerts:
        for suppression in suppressions:
            if suppression.hides(alert):
                alert.suppression_id = suppression.suppression_id
                break


def dry_run(store: Store, suppression: Suppression, days: float, now_ms: int | None = None) -> dict[str, Any]:
    """What `suppression` would have hidden among the alerts of the last `days` days."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    result = store.query(
        "SELECT alert_id, rule_id, entity, hit_count, src_ip, dst_ip, src_org_unit, dst_org_unit, src_asset, "
        "dst_asset FROM alerts WHERE last_seen >= fromUnixTimestamp64Milli({since:Int64}, 'UTC') ORDER BY alert_id",
        {"since": now - int(days * 86_400_000)})
    hidden, hits = [], 0
    for row in result.rows:
        context = dict(zip(("src_ip", "dst_ip", "src_org_unit", "dst_org_unit", "src_asset", "dst_asset"),
                           (v or "" for v in row[4:]), strict=True))
        if suppression.matches(row[1], row[2], context):
            hidden.append(row[0])
            hits += row[3]
    return {"alerts_considered": len(result.rows), "alerts_hidden": len(hidden), "hits_hidden": hits,
            "alert_ids": hidden[:100]}
