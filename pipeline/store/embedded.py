"""Embedded store: ClickHouse in-process through chDB, on a local directory.

chDB allows one open data directory per process, so connections are shared per path, and a lock
serializes statements (chDB's connection is not safe for concurrent use from several threads).
Inserts go column-wise through a pyarrow table read by ClickHouse's `Python()` table function — about
ten times faster than sending rows as text (see DESIGN.md).
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import chdb
import orjson
import pyarrow as pa

from pipeline.store.base import (
    INSERT_SETTINGS,
    QueryResult,
    Store,
    StoreError,
    check_token,
    normalize_rows,
    prepare_params,
    split_sets,
)

_ARROW_TYPES = {
    "ts": pa.timestamp("ms", tz="UTC"),
    "str": pa.string(),
    "lcstr": pa.string(),
    "ip": pa.string(),
    "u8": pa.uint8(),
    "u16": pa.uint16(),
    "u32": pa.uint32(),
    "u64": pa.uint64(),
    "f64": pa.float64(),
    "strs": pa.list_(pa.string()),
    "map": pa.map_(pa.string(), pa.string()),
}
_JSON_SETTINGS = (
    "SETTINGS output_format_json_quote_64bit_integers = 0, output_format_json_quote_denormals = 0, "
    "output_format_json_named_tuples_as_objects = 0"
)

_connections: dict[str, tuple[Any, threading.RLock]] = {}
_statement_numbers = itertools.count()
_connections_lock = threading.Lock()


def _shared_connection(path: str) -> tuple[Any, threading.RLock]:
    with _connections_lock:
        if path not in _connections:
            _connections[path] = (chdb.connect(path), threading.RLock())
        return _connections[path]


def close_all() -> None:
    """Close every chDB connection of this process (before interpreter exit: chDB's own teardown at exit
    crashed the process after many threads had used a connection)."""
    with _connections_lock:
        for conn, lock in _connections.values():
            with lock:
                conn.close()
        _connections.clear()


def to_arrow_column(kind: str, values: list[Any]) -> pa.Array:
    if kind == "ip":
        values = [v or "::" for v in values]
    return pa.array(values, _ARROW_TYPES[kind])


def _literal(value: Any) -> str:
    """A value in ClickHouse's literal syntax, for collection parameters (chDB takes parameters as text)."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return "NULL"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(str(k))}: {_literal(v)}" for k, v in value.items()) + "}"
    return _literal(str(value))


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\b": "\\b",
                          "\f": "\\f"})


def _chdb_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """chDB reads parameter values in ClickHouse's escaped text format (as the HTTP interface does): scalars need
    their backslashes and control characters escaped, collections go as literals."""
    collections = list | tuple | dict | bool
    out = {}
    for key, value in prepare_params(params).items():
        if isinstance(value, collections):
            value = _literal(value)
        elif isinstance(value, str):
            value = value.translate(_ESCAPES)
        out[key] = value
    return out


class EmbeddedStore(Store):
    engine = "chdb"

    def __init__(self, path: str | Path, database: str = "ganzhi", retention_days: int = 180):
        self.path = str(Path(path).resolve())
        Path(self.path).mkdir(parents=True, exist_ok=True)
        self.database = database
        self.retention_days = retention_days
        self._conn, self._lock = _shared_connection(self.path)

    def _run(self, sql: str, fmt: str, params: dict[str, Any] | None = None) -> Any:
        # chDB's Python() table function finds a table by name in the calling frame's globals: the large lists
        # are published here for this one statement, under names no other statement uses
        suffix = next(_statement_numbers)
        sql, params, tables = split_sets(sql, params, lambda name: f"(SELECT v FROM Python({name}_{suffix}))")
        scope = globals()
        with self._lock:
            for name, (ch_type, values) in tables.items():
                arrow_type = pa.string() if ch_type == "String" else None
                scope[f"{name}_{suffix}"] = pa.table({"v": pa.array(values, arrow_type)})
            try:
                return self._conn.query(sql, fmt, params=_chdb_params(params))
            except Exception as exc:  # chdb raises plain RuntimeError/ChdbError
                raise StoreError(str(exc).strip()) from exc
            finally:
                for name in tables:
                    scope.pop(f"{name}_{suffix}", None)

    def use_database(self) -> None:
        self.execute(f"USE {self.database}")

    def execute(self, sql: str, params: dict[str, Any] | None = None,
                settings: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._set(settings)
            self._run(sql, "CSV", params)

    def _set(self, settings: dict[str, Any] | None) -> None:
        """Settings for the session (the caller holds the lock): parse-time limits must be set before the query."""
        for name, value in (settings or {}).items():
            if not name.isidentifier():
                raise ValueError(f"not a setting name: {name!r}")
            if isinstance(value, str) and not value.isidentifier():
                raise ValueError(f"not a setting value: {value!r}")
            self._run(f"SET {name} = " + (f"'{value}'" if isinstance(value, str) else f"{int(value)}"), "CSV")

    def query(self, sql: str, params: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None) -> QueryResult:
        sql = sql.strip().rstrip(";")
        with self._lock:
            self._set(settings)
            out = self._run(f"{sql}\nFORMAT JSONCompact {_JSON_SETTINGS}", "JSONCompact", params)
        data = out.bytes()
        if not data:
            return QueryResult([], [], [])
        doc = orjson.loads(data)
        columns = [m["name"] for m in doc["meta"]]
        types = [m["type"] for m in doc["meta"]]
        return QueryResult(columns, types, normalize_rows(types, doc["data"]))

    def insert_columns(
        self, table: str, columns: dict[str, list[Any]], types: dict[str, str], dedup_token: str | None = None
    ) -> None:
        batch = pa.table({name: to_arrow_column(types[name], values) for name, values in columns.items()})
        settings = dict(INSERT_SETTINGS)
        if check_token(dedup_token):
            settings["insert_deduplication_token"] = f"'{dedup_token}'"
        names = ", ".join(f"`{c}`" for c in columns)
        setting_sql = ", ".join(f"{k} = {v}" for k, v in settings.items())
        sql = f"INSERT INTO {self.database}.{table} ({names}) SELECT * FROM Python(batch) SETTINGS {setting_sql}"
        self._insert(sql, batch)

    def _insert(self, sql: str, batch: pa.Table) -> None:
        # `batch` must be a local of the calling frame: ClickHouse's Python() function finds it by name
        with self._lock:
            try:
                self._conn.query(sql, "CSV")
            except Exception as exc:
                raise StoreError(str(exc).strip()) from exc

    def server_version(self) -> str:
        return f"chDB {chdb.__version__} (ClickHouse {chdb.engine_version})"
