"""The store interface: one API over embedded chDB and a ClickHouse server, the same SQL on both.

Queries take ClickHouse's server-side parameters (`{name:Type}` placeholders + a params dict), never
string formatting. Results come back as `QueryResult` with values normalized to the same Python types
on both engines (IPs as text with IPv4 unmapped, times as aware UTC datetimes), so the two modes answer
identically.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from pipeline.schema import DEFAULTS, FIELDS
from pipeline.store.ddl import DEADLETTER_COLUMNS, EVENTS_SORTING_KEY, all_ddl

log = logging.getLogger(__name__)

_FIELD_KINDS = {f.name: f.kind for f in FIELDS}
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
# optimize_on_insert=0: ReplacingMergeTree would otherwise collapse every inserted block on the way in,
# which measured 5x slower here (0.55 s vs 0.12 s per 100 k events); the writer already drops duplicates
# inside a batch, and merges collapse the rest.
INSERT_SETTINGS = {"max_partitions_per_insert_block": 1000, "optimize_on_insert": 0}
ID_CHUNK = 100_000  # ids per existence query: bounds one parameter's text (~3.5 MB)

# Queries that return a time column as epoch ms under its own name (`toUnixTimestamp64Milli(ts) AS ts`) end with
# this: ClickHouse would otherwise read `ts` in WHERE/ORDER BY as the alias, not the column.
COLUMNS_BEFORE_ALIASES = "SETTINGS prefer_column_name_to_alias = 1"


def in_array(column: str, param: str, ch_type: str = "String") -> str:
    """`column` IN the list given as query parameter `param`, through a subquery: ClickHouse 26.9 builds a hash set
    from it whatever its size, while a large array parameter right of IN turns into a per-row scan (measured: 50 k
    ids over 100 k rows, 22.8 s instead of 0.2 s; 20 k ids 0.10 s either way). A live batch of 50 k events met it.
    A list of LARGE_SET values or more does not travel as parameter text at all: the store sends it beside the
    query as a one-column table (see `split_sets`)."""
    return f"{column} IN (SELECT arrayJoin({{{param}:Array({ch_type})}}))"


# Parsing a 50 k-id array parameter costs the server 0.39 s (measured: the bare `length({ids:Array(String)})`),
# paid again by every query of a live batch that names it; the same ids as a table cost 0.05 s.
LARGE_SET = 1000
_ARRAY_SET = re.compile(r"\(SELECT arrayJoin\(\{(\w+):Array\((\w+)\)\}\)\)")


def split_sets(sql: str, params: dict[str, Any] | None, table_sql: Callable[[str], str]
               ) -> tuple[str, dict[str, Any] | None, dict[str, tuple[str, list[Any]]]]:
    """The large lists of `in_array` taken out of a query: each such subquery becomes `table_sql(name)` over a
    table `name` with one column `v`, returned as {name: (ClickHouse type, values)} for the store to send."""
    given = params or {}
    tables: dict[str, tuple[str, list[Any]]] = {}
    taken: set[str] = set()

    def swap(m: re.Match[str]) -> str:
        param, ch_type = m.group(1), m.group(2)
        values = given.get(param)
        if not isinstance(values, list | tuple) or len(values) < LARGE_SET:
            return m.group(0)
        taken.add(param)
        tables[f"_set_{param}"] = (ch_type, list(values))
        return table_sql(f"_set_{param}")

    sql = _ARRAY_SET.sub(swap, sql)
    if not taken:
        return sql, params, tables
    # a parameter the query still names elsewhere (not only through in_array) is still sent
    return sql, {k: v for k, v in given.items() if k not in taken or f"{{{k}:" in sql}, tables


class StoreError(RuntimeError):
    """The store refused or could not run a statement (message says which and why)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; retrying later may succeed."""


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


class Store(ABC):
    """A ClickHouse database holding Ganzhi's tables."""

    database: str
    retention_days: int
    engine: str  # "chdb" or "clickhouse-server"
    concurrent_queries: int = 1  # how many queries callers may usefully run at once (the embedded one serializes)

    def ensure_schema(self) -> None:
        """Create Ganzhi's database and tables if missing, and make it the default for unqualified names."""
        for statement in all_ddl(self.database, self.retention_days):
            self.execute(statement)
        self.use_database()
        key = self.query("SELECT sorting_key FROM system.tables WHERE database = {db:String} AND name = 'events' "
                         "AND engine LIKE '%MergeTree'",
                         {"db": self.database}).scalar()
        if key not in (None, EVENTS_SORTING_KEY):  # CREATE ... IF NOT EXISTS kept a table made by an earlier version
            log.warning("%s.events is sorted by (%s), not (%s): time-range reads (live detection above all) read "
                        "whole hours. Move it: RENAME TABLE %s.events TO %s.events_old, start Ganzhi again (it creates "
                        "the table), then INSERT INTO %s.events SELECT * FROM %s.events_old", self.database, key,
                        EVENTS_SORTING_KEY, *[self.database] * 4)

    @abstractmethod
    def use_database(self) -> None: ...

    @abstractmethod
    def execute(self, sql: str, params: dict[str, Any] | None = None,
                settings: dict[str, Any] | None = None) -> None: ...

    @abstractmethod
    def query(self, sql: str, params: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None) -> QueryResult:
        """Run a SELECT; `settings` are ClickHouse settings for this query (e.g. max_query_size)."""

    @abstractmethod
    def insert_columns(
        self, table: str, columns: dict[str, list[Any]], types: dict[str, str], dedup_token: str | None = None
    ) -> None:
        """Insert one block given column-wise (the fast path). `types` maps column -> schema kind."""

    @abstractmethod
    def server_version(self) -> str: ...

    def close(self) -> None:  # noqa: B027 - optional for implementations
        pass

    # -- conveniences built on the primitives ------------------------------------------------

    def insert_events(self, events: Sequence[dict[str, Any]], dedup_token: str | None = None) -> None:
        """Insert canonical events (see pipeline.schema.normalize) as one block.

        Only the columns some event of the block carries are sent; ClickHouse fills the rest with their
        defaults (a typical event uses a quarter of the schema's columns).
        """
        if not events:
            return
        present = set().union(*events)  # canonical events are sparse: only these columns carry values
        columns = {
            name: [e.get(name, default) for e in events]
            for name, default in DEFAULTS.items()
            if name in present
        }
        self.insert_columns("events", columns, _FIELD_KINDS, dedup_token)

    def insert_deadletters(self, records: Sequence[dict[str, Any]], dedup_token: str | None = None) -> None:
        if not records:
            return
        columns = {c: [r[c] for r in records] for c in DEADLETTER_COLUMNS}
        kinds = {c: "str" for c in DEADLETTER_COLUMNS} | {"ts": "ts"}
        self.insert_columns("deadletter", columns, kinds, dedup_token)

    def existing_event_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these ids are stored (see `in_array` for why the set is a subquery)."""
        found: set[str] = set()
        for start in range(0, len(ids), ID_CHUNK):
            result = self.query(
                f"SELECT DISTINCT event_id FROM {self.database}.events WHERE {in_array('event_id', 'ids')}",
                {"ids": list(ids[start:start + ID_CHUNK])},
            )
            found.update(row[0] for row in result.rows)
        return found


def check_token(token: str | None) -> str | None:
    if token is not None and not _TOKEN_RE.match(token):
        raise ValueError(f"invalid dedup token {token!r}")
    return token


def prepare_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """Times as UTC text with milliseconds (both engines parse it; the driver would drop the fraction)."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if isinstance(value, datetime):
            value = (value.astimezone(UTC) if value.tzinfo else value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        elif isinstance(value, date):
            value = value.isoformat()
        out[key] = value
    return out


# -- result normalization ------------------------------------------------------------------------

_WRAPPERS = ("Nullable(", "LowCardinality(", "SimpleAggregateFunction(")


def _unwrap(ch_type: str) -> str:
    changed = True
    while changed:
        changed = False
        for w in _WRAPPERS:
            if ch_type.startswith(w) and ch_type.endswith(")"):
                inner = ch_type[len(w) : -1]
                if w == "SimpleAggregateFunction(":
                    inner = inner.split(",", 1)[1].strip()
                ch_type, changed = inner, True
    return ch_type


def _split_args(args: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(args):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(args[start:i].strip())
            start = i + 1
    parts.append(args[start:].strip())
    return parts


def ip_text(value: Any) -> str:
    """An IPv6 column value as Ganzhi writes addresses: IPv4-mapped ones dotted, the unset address ''."""
    addr = value if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address) else ipaddress.ip_address(value)
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        if int(addr) == 0:
            return ""
    return str(addr)


def _parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def _same(value: Any) -> Any:
    return value


def _date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _listify(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@lru_cache(maxsize=1024)
def converter(ch_type: str) -> Callable[[Any], Any]:
    """The function that turns a result value of `ch_type` into its canonical Python form (built once per type:
    results of wide tables have thousands of values per page)."""
    t = _unwrap(ch_type)
    convert: Callable[[Any], Any]
    if t == "String":
        return _same
    if t.startswith("DateTime"):
        convert = _parse_datetime
    elif t.startswith("Date"):
        convert = _date
    elif t in ("IPv6", "IPv4"):
        convert = ip_text
    elif t.startswith("Array("):
        inner = converter(t[6:-1])
        convert = (lambda v: list(v)) if inner is _same else (lambda v: [inner(x) for x in v])
    elif t.startswith("Map("):
        _, vtype = _split_args(t[4:-1])
        value_of = converter(vtype)
        convert = lambda v: {str(k): value_of(x) for k, x in dict(v).items()}  # noqa: E731
    elif t.startswith("Tuple("):
        # element types may be named ("a String"): the type is the last word
        inner_types = [it.split(" ", 1)[1] if " " in it and not it.startswith(("Nullable", "LowCardinality")) else it
                       for it in _split_args(t[6:-1])]
        parts = [converter(it) for it in inner_types]
        convert = lambda v: [c(x) for c, x in zip(parts, v, strict=True)]  # noqa: E731
    elif t.startswith(("Int", "UInt")):
        convert = int
    elif t.startswith(("Float", "Decimal")):
        convert = float
    else:
        convert = _listify
    return lambda v: None if v is None else convert(v)


def normalize_value(ch_type: str, value: Any) -> Any:
    """One result value to the canonical Python form for its ClickHouse type (both engines agree)."""
    return converter(ch_type)(value)


def normalize_rows(types: list[str], rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Column by column, only the columns whose type needs it: a detection result may hold 100 k rows of a dozen
    columns, most of them strings already in their final form (value by value, this took a third of a replay)."""
    changing = [(i, c) for i, c in enumerate(converter(t) for t in types) if c is not _same]
    if not changing or not rows:
        return [tuple(row) for row in rows]
    columns = list(zip(*rows, strict=True))
    for i, convert in changing:
        columns[i] = tuple(map(convert, columns[i]))
    return list(zip(*columns, strict=True))
