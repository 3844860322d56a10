"""FastAPI dependencies: the app's shared state, the caller (token -> Principal, rate-limited) and role checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.audit import AuditLog
from api.auth import Authenticator, AuthError
from api.principal import ADMINS, AUDITORS, EXPORTERS, READERS, REPLAYERS, WORKERS, Principal, Role
from pipeline.config import Settings
from pipeline.enrich.inventory import Inventory
from pipeline.store.base import Store


class RateLimiter:
    """A token bucket per API token: `rate` requests per second on average, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def wait_time(self, key: str) -> float:
        """0 if the request may go now (and counts it), else seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


@dataclass
class ApiState:
    settings: Settings
    store: Store
    auth: Authenticator
    audit: AuditLog
    limiter: RateLimiter
    cache: dict[str, Any] = field(default_factory=dict)  # compiled rule sets by version, the inventory
    # replay jobs run here, one at a time (a replay scans history: several at once would starve the API), and
    # are waited for at shutdown (a job cut off mid-query by interpreter exit can crash the embedded engine)
    replays: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay"))

    def close(self) -> None:
        self.replays.shutdown(wait=True)

    def inventory(self) -> Inventory | None:
        """The asset inventory file, re-read when it changes."""
        path = self.settings.inventory
        if path is None:
            return None
        mtime = path.stat().st_mtime if path.exists() else 0.0
        cached = self.cache.get("inventory")
        if cached is None or cached[0] != mtime:
            cached = (mtime, Inventory.load(path))
            self.cache["inventory"] = cached
        return cached[1]  # type: ignore[no-any-return]


def state(request: Request) -> ApiState:
    return request.app.state.ganzhi  # type: ignore[no-any-return]


_bearer = HTTPBearer(auto_error=False, description="API token: `Authorization: Bearer gz_<id>_<secret>`")


def caller(request: Request,
           credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    if credentials is None:
        raise HTTPException(401, "missing API token: send `Authorization: Bearer <token>` (ask an admin for one)",
                            headers={"WWW-Authenticate": "Bearer"})
    app = state(request)
    try:
        principal = app.auth.authenticate(credentials.credentials)
    except AuthError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    request.state.principal = principal
    wait = app.limiter.wait_time(principal.token_id)
    if wait > 0:
        raise HTTPException(429, f"rate limit of {app.limiter.rate:g} requests/s for this token exceeded; retry later",
                            headers={"Retry-After": str(max(1, round(wait)))})
    return principal


def allow(*roles: Role) -> Callable[..., Principal]:
    """A dependency admitting only callers with one of `roles` (403 for the others)."""
    names = ", ".join(r.value for r in roles)

    def check(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(403, f"this needs the role {names}; your token's role is {principal.role.value}")
        return principal

    return check


def network_wide(principal: Principal) -> None:
    """Some views span every department (replays, the audit log): a user bound to an org unit may not see them."""
    if principal.org_unit:
        raise HTTPException(403, f"this covers the whole network; your account is bound to {principal.org_unit}")


def audit_detail(request: Request, **detail: Any) -> None:
    """What the audit record of this call should say beyond its route and query (no secrets)."""
    request.state.audit_detail = {**getattr(request.state, "audit_detail", {}), **detail}


# The callers each route admits (api/principal.py says who holds which role); routes take these as parameters.
App = Annotated[ApiState, Depends(state)]
Reader = Annotated[Principal, Depends(allow(*READERS))]
Worker = Annotated[Principal, Depends(allow(*WORKERS))]
Exporter = Annotated[Principal, Depends(allow(*EXPORTERS))]
Replayer = Annotated[Principal, Depends(allow(*REPLAYERS))]
Auditor = Annotated[Principal, Depends(allow(*AUDITORS))]
Admin = Annotated[Principal, Depends(allow(*ADMINS))]
