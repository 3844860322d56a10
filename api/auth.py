"""API users and tokens, stored in ClickHouse (hashes only), and the check of a presented token.

A token reads `gz_<token_id>_<secret>`: the id finds the row, the secret is compared against its SHA-256
(constant time). Secrets are 256-bit random, so a fast hash is the right one (no password stretching
needed); the secret is shown once at creation and never stored or logged.

OIDC: an identity provider would replace `authenticate` — validate the bearer JWT (issuer, audience, expiry,
signature against the provider's JWKS), then map its subject to an `api_users` row (role, org unit,
clearance stay Ganzhi's). Everything downstream takes a Principal and does not care how it was made.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

from api.principal import DEFAULT_CLEARANCE, Principal, Role
from pipeline.schema import Sensitivity
from pipeline.store.base import Store

TOKEN_RE = re.compile(r"^gz_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MAX_TOKEN_DAYS = 366
CACHE_S = 5.0  # a revoked or expired token stops working within this many seconds


class AuthError(Exception):
    """Not authenticated (401): the message says what is wrong with the token, never whose it was."""


class AccountError(ValueError):
    """A user or token cannot be created or changed as asked."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    org_unit: str
    clearance: Sensitivity
    disabled: bool


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def save_user(store: Store, name: str, role: str, org_unit: str = "", clearance: int | None = None,
              disabled: bool = False) -> User:
    if not USER_RE.match(name):
        raise AccountError("user names are 1-64 letters, digits, '_', '.', '@' or '-'")
    try:
        role_ = Role(role)
    except ValueError:
        raise AccountError(f"role must be one of {', '.join(r.value for r in Role)}") from None
    level = Sensitivity(clearance) if clearance is not None else DEFAULT_CLEARANCE[role_]
    unit = org_unit.strip().strip("/")
    store.insert_columns(
        "api_users",
        {"name": [name], "role": [role_.value], "org_unit": [unit], "clearance": [int(level)],
         "disabled": [int(disabled)], "created_at": [_now_ms()], "version": [time.time_ns()]},
        {"name": "str", "role": "str", "org_unit": "str", "clearance": "u8", "disabled": "u8", "created_at": "ts",
         "version": "u64"})
    return User(name, role_, unit, level, disabled)


def get_user(store: Store, name: str) -> User | None:
    rows = store.query("SELECT name, role, org_unit, clearance, disabled FROM api_users FINAL WHERE name = {n:String}",
                       {"n": name}).rows
    if not rows:
        return None
    name, role, unit, clearance, disabled = rows[0]
    return User(name, Role(role), unit, Sensitivity(clearance), bool(disabled))


def list_users(store: Store) -> list[User]:
    rows = store.query("SELECT name, role, org_unit, clearance, disabled FROM api_users FINAL ORDER BY name").rows
    return [User(n, Role(r), u, Sensitivity(c), bool(d)) for n, r, u, c, d in rows]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(store: Store, user: str, days: float = 90, description: str = "") -> tuple[str, str, int]:
    """A new token for `user`: (token_id, the token text — shown once, expires_at ms)."""
    if get_user(store, user) is None:
        raise AccountError(f"no user {user!r}; create it first")
    if not 0 < days <= MAX_TOKEN_DAYS:
        raise AccountError(f"token lifetime must be between 0 and {MAX_TOKEN_DAYS} days")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = _now_ms()
    expires = now + int(days * 86_400_000)
    _save_token(store, token_id, user, _hash(secret), description[:200], now, expires, revoked=False)
    return token_id, f"gz_{token_id}_{secret}", expires


def _save_token(store: Store, token_id: str, user: str, secret_hash: str, description: str, created: int,
                expires: int, revoked: bool) -> None:
    store.insert_columns(
        "api_tokens",
        {"token_id": [token_id], "user": [user], "secret_hash": [secret_hash], "description": [description],
         "created_at": [created], "expires_at": [expires], "revoked": [int(revoked)], "version": [time.time_ns()]},
        {"token_id": "str", "user": "str", "secret_hash": "str", "description": "str", "created_at": "ts",
         "expires_at": "ts", "revoked": "u8", "version": "u64"})


_TOKEN_COLUMNS = ("token_id, user, secret_hash, description, toUnixTimestamp64Milli(created_at) AS created_at, "
                  "toUnixTimestamp64Milli(expires_at) AS expires_at, revoked")


def revoke_token(store: Store, token_id: str) -> None:
    rows = store.query(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens FINAL WHERE token_id = {{t:String}}",
                       {"t": token_id}).rows
    if not rows:
        raise AccountError(f"no token {token_id!r}")
    tid, user, secret_hash, description, created, expires, _ = rows[0]
    _save_token(store, tid, user, secret_hash, description, created, expires, revoked=True)


def list_tokens(store: Store, user: str | None = None) -> list[dict[str, object]]:
    where = "WHERE user = {u:String}" if user else ""
    result = store.query(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens FINAL {where} ORDER BY created_at",
                         {"u": user} if user else None)
    return [{k: v for k, v in row.items() if k != "secret_hash"} for row in result.dicts()]


class Authenticator:
    """Bearer token -> Principal, with a short cache so a request does not cost two lookups."""

    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[str, tuple[float, Principal | None, str]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Principal:
        match = TOKEN_RE.match(token)
        if not match:
            raise AuthError("malformed API token (expected gz_<id>_<secret>)")
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(token)
        if cached is None or now - cached[0] > CACHE_S:
            principal, problem = self._lookup(match.group(1), match.group(2))
            cached = (now, principal, problem)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[token] = cached
        if cached[1] is None:
            raise AuthError(cached[2])
        return cached[1]

    def _lookup(self, token_id: str, secret: str) -> tuple[Principal | None, str]:
        rows = self.store.query(
            "SELECT user, secret_hash, toUnixTimestamp64Milli(expires_at), revoked FROM api_tokens FINAL "
            "WHERE token_id = {t:String}", {"t": token_id}).rows
        if not rows or not hmac.compare_digest(rows[0][1], _hash(secret)):
            return None, "unknown API token"
        user_name, _, expires, revoked = rows[0]
        if revoked:
            return None, "API token revoked"
        if expires <= _now_ms():
            return None, "API token expired; ask an admin for a new one"
        user = get_user(self.store, user_name)
        if user is None or user.disabled:
            return None, "the token's user is disabled"
        return Principal(user.name, user.role, user.org_unit, user.clearance, token_id), ""
