"""Server store: a ClickHouse server over the native protocol (clickhouse-driver).

URL form: clickhouse://[user[:password]@]host[:9000]/database (the database is created if missing).
Parameters are sent server-side (`{name:Type}` placeholders), so values never enter SQL text.
"""

from __future__ import annotations

import queue
import socket
import threading
from typing import Any
from urllib.parse import unquote, urlparse

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from pipeline.store.base import (
    INSERT_SETTINGS,
    QueryResult,
    Store,
    StoreError,
    StoreUnavailable,
    check_token,
    normalize_rows,
    prepare_params,
    split_sets,
)

_NETWORK_ERRORS = (ch_errors.NetworkError, ch_errors.SocketTimeoutError, EOFError, ConnectionError, OSError)


def _driver_column(kind: str, values: list[Any]) -> list[Any]:
    if kind == "ip":  # the IPv6 column's 16 bytes, IPv4 mapped (the driver's own text parsing took 1.6 s / 100 k)
        return [_ip_bytes(v) for v in values]
    return values


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
_UNSPECIFIED = b"\0" * 16


def _ip_bytes(text: str) -> bytes | str:
    if not text:
        return _UNSPECIFIED
    try:
        if ":" in text:
            return socket.inet_pton(socket.AF_INET6, text)
        return _V4_MAPPED + socket.inet_aton(text)
    except OSError:  # e.g. a zone index (fe80::1%eth0): the driver parses the text, as it always did
        return text if ":" in text else "::ffff:" + text


def _table_sql(name: str) -> str:
    return f"(SELECT v FROM {name})"


def _external(tables: dict[str, tuple[str, list[Any]]]) -> list[dict[str, Any]] | None:
    """Lists sent with the query as the native protocol's external tables (binary columns, no SQL text)."""
    return [{"name": name, "structure": [("v", ch_type)], "data": [(v,) for v in values]}
            for name, (ch_type, values) in tables.items()] or None


class ServerStore(Store):
    engine = "clickhouse-server"

    def __init__(self, url: str, retention_days: int = 180, connect_timeout: float = 5.0, pool_size: int = 8):
        parsed = urlparse(url)
        if parsed.scheme not in ("clickhouse", "clickhouses"):
            raise ValueError(f"ClickHouse URL must start with clickhouse://, got {url!r}")
        self.database = (parsed.path or "/").strip("/") or "ganzhi"
        self.retention_days = retention_days
        self.url = url
        self._client_args = dict(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 9000,
            user=unquote(parsed.username or "default"),
            password=unquote(parsed.password or ""),
            secure=parsed.scheme == "clickhouses",
            connect_timeout=connect_timeout,
            send_receive_timeout=300,
            settings={"server_side_params": True},
        )
        # clickhouse-driver's Client is one connection, usable by one thread at a time: a small pool lets
        # concurrent callers (the API's request threads) query in parallel instead of queueing on one socket
        self.pool_size = self.concurrent_queries = pool_size
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        self._created = 0
        self._pool_lock = threading.Lock()
        self._current_database = "default"

    def _acquire(self) -> Client:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._pool_lock:
            if self._created < self.pool_size:
                self._created += 1
                return Client(database=self._current_database, **self._client_args)
        return self._idle.get()

    def _call(self, sql: str, params: Any = None, **kwargs: Any) -> Any:
        client = self._acquire()
        try:
            return client.execute(sql, params, **kwargs)
        except _NETWORK_ERRORS as exc:
            client.disconnect()
            raise StoreUnavailable(f"ClickHouse server unreachable ({self.url}): {exc}") from exc
        except ch_errors.Error as exc:
            raise StoreError(str(exc).strip()) from exc
        finally:
            self._idle.put(client)

    def _drop_idle(self) -> None:
        with self._pool_lock:
            while True:
                try:
                    self._idle.get_nowait().disconnect()
                except queue.Empty:
                    break
                self._created -= 1

    def use_database(self) -> None:
        """New connections open in Ganzhi's database; idle ones made before are dropped."""
        self._current_database = self.database
        self._drop_idle()

    def execute(self, sql: str, params: dict[str, Any] | None = None,
                settings: dict[str, Any] | None = None) -> None:
        sql, params, tables = split_sets(sql, params, _table_sql)
        self._call(sql, prepare_params(params) or None, settings=settings, external_tables=_external(tables))

    def query(self, sql: str, params: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None) -> QueryResult:
        sql, params, tables = split_sets(sql, params, _table_sql)
        rows, meta = self._call(sql, prepare_params(params) or None, with_column_types=True, settings=settings,
                                external_tables=_external(tables))
        columns = [name for name, _ in meta]
        types = [t for _, t in meta]
        return QueryResult(columns, types, normalize_rows(types, rows))

    def insert_columns(
        self, table: str, columns: dict[str, list[Any]], types: dict[str, str], dedup_token: str | None = None
    ) -> None:
        settings: dict[str, Any] = dict(INSERT_SETTINGS)
        if check_token(dedup_token):
            settings["insert_deduplication_token"] = dedup_token
        names = ", ".join(f"`{c}`" for c in columns)
        data = [_driver_column(types[name], values) for name, values in columns.items()]
        self._call(f"INSERT INTO {self.database}.{table} ({names}) VALUES", data, columnar=True, settings=settings)

    def server_version(self) -> str:
        return f"ClickHouse server {self.query('SELECT version()').scalar()}"

    def close(self) -> None:
        self._drop_idle()
