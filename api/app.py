"""The FastAPI application: routers under /api/v1, health at /healthz and /readyz, JSON errors, a request
size limit, load shedding, and the audit trail of every state-changing or exporting call."""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import __doc__ as API_DOC
from api.audit import AuditLog
from api.auth import Authenticator
from api.deps import ApiState, RateLimiter
from api.routers import admin, alerts, assets, events, incidents, rules, situation
from api.schemas import Problem
from pipeline import __version__
from pipeline.config import Settings
from pipeline.store import Store, StoreError, StoreUnavailable, open_store

log = logging.getLogger("ganzhi.api")
PREFIX = "/api/v1"
MAX_BODY = 1024 * 1024
AUDITED_READS = ("/export", "/report", "/pdf", "/html")  # reads that take data away: audited too


class BodyLimit:
    """413 for a request body over `limit` bytes, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _problem(413, f"request body over {self.limit} bytes")(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


class LoadShedder:
    """At most `inflight` API calls at once; a call that waited `queue_s` for a slot gets 503 + Retry-After.

    Every call ends in the store, and past what the store can serve a queue only adds latency: measured at
    200 req/s on 2 cores, every call waited (p99 86 s). Shedding keeps the latency of the calls let in bounded and
    tells the rest to come back. Only reads are shed: a responder's change to an incident during an attack, when
    dashboards load the API most, must go through (changes are few, and each is audited). Health and the API
    description are never shed.
    """

    def __init__(self, app: ASGIApp, inflight: int, queue_s: float):
        if inflight < 1 or queue_s < 0:
            raise ValueError("GANZHI_API_MAX_INFLIGHT must be >= 1 and GANZHI_API_QUEUE_MS >= 0")
        self.app, self.inflight, self.queue_s = app, inflight, queue_s
        self.shed = 0
        # per event loop: uvicorn runs one; a test client may run one per call
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD") or not path.startswith(PREFIX)
                or path.startswith(_NEVER_SHED)):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.inflight)
        try:
            await asyncio.wait_for(slots.acquire(), self.queue_s)
        except TimeoutError:
            self.shed += 1
            if self.shed in (1, 10, 100) or self.shed % 1000 == 0:
                log.warning("at capacity: %d calls in flight, %d shed so far (GANZHI_API_MAX_INFLIGHT)",
                            self.inflight, self.shed)
            await _problem(503, f"the API is at capacity ({self.inflight} calls in flight); retry in a second",
                           {"Retry-After": "1"})(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            slots.release()


_NEVER_SHED = (f"{PREFIX}/openapi.json", f"{PREFIX}/docs")


def _problem(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(settings: Settings | None = None, store: Store | None = None, rate: float | None = None,
               burst: int | None = None, inflight: int | None = None, queue_ms: float | None = None) -> FastAPI:
    """The API over `store` (default: the one `settings` name, else the environment's)."""
    settings = settings or Settings.from_env()
    store = store or open_store(settings)
    rate = rate if rate is not None else float(os.environ.get("GANZHI_API_RATE", 50))
    burst = burst if burst is not None else int(os.environ.get("GANZHI_API_BURST", 200))
    inflight = inflight if inflight is not None else int(os.environ.get("GANZHI_API_MAX_INFLIGHT", 16))
    queue_ms = queue_ms if queue_ms is not None else float(os.environ.get("GANZHI_API_QUEUE_MS", 500))
    app = build_app(inflight, queue_ms / 1000)
    state = ApiState(settings, store, Authenticator(store), AuditLog(store), RateLimiter(rate, burst))
    app.state.ganzhi = state
    app.router.on_shutdown.append(state.close)
    return app


def build_app(inflight: int = 16, queue_s: float = 0.5) -> FastAPI:
    """Routes, handlers and middleware; the state (store, accounts, audit log) is attached by create_app."""
    app = FastAPI(title="Ganzhi API", version=__version__, description=API_DOC or "",
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=f"{PREFIX}/docs", redoc_url=None)
    for module in (incidents, alerts, events, rules, assets, situation, admin):
        app.include_router(module.router, prefix=PREFIX,
                           responses={code: {"model": Problem} for code in (401, 403, 404, 409, 422, 429, 503)})

    @app.get("/healthz", tags=["health"], summary="Liveness (no token needed)")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: the store answers (no token needed)",
             responses={503: {"model": Problem}})
    def readyz(request: Request) -> dict[str, str]:
        request.app.state.ganzhi.store.query("SELECT 1")
        return {"status": "ready"}

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        detail = getattr(exc, "detail", None)
        return _problem(404, str(detail) if detail and detail != "Not Found" else f"no route {request.url.path}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(422, _validation_message(exc))

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("store unavailable: %s", exc)
        return _problem(503, "the event store is unreachable right now; retry shortly", {"Retry-After": "5"})

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store error on %s %s: %s", request.method, request.url.path, exc)
        return _problem(500, "the store could not run this query (logged); please report it")

    @app.middleware("http")
    async def audit_trail(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        path = request.url.path
        if request.method in ("POST", "PATCH", "PUT", "DELETE") or (
                path.startswith(PREFIX) and path.endswith(AUDITED_READS)):
            principal = getattr(request.state, "principal", None)
            detail = {"query": dict(request.query_params), **getattr(request.state, "audit_detail", {})}
            try:
                app.state.ganzhi.audit.append(
                    principal.user if principal else "anonymous", principal.role.value if principal else "",
                    f"{request.method} {_route_of(request)}", path,
                    request.client.host if request.client else "", str(response.status_code), detail)
            except StoreError as exc:  # the call happened but cannot be recorded: say so loudly
                log.critical("AUDIT LOG WRITE FAILED for %s %s: %s", request.method, path, exc)
                return _problem(503, "the action ran but the audit log could not record it; tell the administrator")
        return response

    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_middleware(LoadShedder, inflight=inflight, queue_s=queue_s)  # outermost: a shed call costs nothing
    return app


def _route_of(request: Request) -> str:
    """The route template (ids left out: the target says which), under its full prefix."""
    route = getattr(request.scope.get("route"), "path", None)
    if route is None:
        return request.url.path
    return route if route.startswith(PREFIX) or not request.url.path.startswith(PREFIX) else PREFIX + route
