"""pySigma's SQLite backend as a detection baseline: the same rules over the same events, in SQLite.

The rules are converted by `pysigma-backend-sqlite` with Ganzhi's field mapping (rules.mapping.sigma_pipeline),
so they read the same column names; each query is limited to its log source by Ganzhi's log-source filter,
translated to SQLite. Events are flattened into one in-memory table (schema columns plus every `extra` key as a
column; a column a rule names and no event has is added empty). This is how SQLite-based Sigma engines
(Zircolite) run: one full scan per rule. Rules the backend cannot convert (keywords, some modifiers) and
correlations are counted and left out.
"""

from __future__ import annotations

import re
import sqlite3
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection
from sigma.rule import SigmaRule

from rules.mapping import logsource_filter, sigma_pipeline

# the few ClickHouse spellings logsource_filter uses, in SQLite
_LOGSOURCE_SQL = [
    (re.compile(r"lowerUTF8\(extra\['([^']+)'\]\)"), r'lower("\1")'),
    (re.compile(r"startsWith\(source_type, '([a-z_]+)'\)"), r"substr(source_type, 1, length('\1')) = '\1'"),
]


def _sqlite_logsource(sql: str) -> str | None:
    for pattern, replacement in _LOGSOURCE_SQL:
        sql = pattern.sub(replacement, sql)
    return None if re.search(r"\b(?!lower\b|substr\b|length\b|IN\b)\w+\(|\[", sql) else sql


def _regexp(pattern: str, value: Any) -> bool:
    return value is not None and re.search(pattern, str(value)) is not None


def _table(events: list[dict]) -> tuple[sqlite3.Connection, int]:
    rows = []
    for event in events:
        row = {k: v for k, v in event.items() if k != "extra"}
        row.update(event.get("extra") or {})
        rows.append({k: orjson.dumps(v).decode() if isinstance(v, list | dict) else v for k, v in row.items()})
    columns = sorted({k for row in rows for k in row})
    db = sqlite3.connect(":memory:")
    db.create_function("REGEXP", 2, _regexp, deterministic=True)
    db.execute(f"CREATE TABLE events ({', '.join(_quote(c) for c in columns)})")
    db.executemany(f"INSERT INTO events VALUES ({', '.join('?' * len(columns))})",
                   [[row.get(c) for c in columns] for row in rows])
    return db, len(columns)


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def convert(rule_paths: Iterable[Path]) -> tuple[list[tuple[str, str]], int]:
    """(rule id, SQLite query) for every convertible detection rule, and how many rules could not be."""
    collection = SigmaCollection.load_ruleset([str(p) for p in rule_paths], collect_errors=True)
    backend = sqliteBackend(processing_pipeline=sigma_pipeline(), collect_errors=True)
    queries, failed = [], 0
    for rule in collection.rules:
        if not isinstance(rule, SigmaRule) or rule.errors:
            failed += isinstance(rule, SigmaRule)
            continue
        logsource = _sqlite_logsource(logsource_filter(rule.logsource))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                converted = backend.convert_rule(rule)
        except Exception:  # the backend raises its own errors for what it does not support
            converted = []
        if rule.errors or not converted or logsource is None:
            rule.errors.clear()
            failed += 1
            continue
        for query in converted:
            where = query.split(" WHERE ", 1)[1]
            queries.append((str(rule.id or rule.title), f"SELECT rowid FROM events WHERE ({logsource}) AND ({where})"))
    return queries, failed


def run(queries: list[tuple[str, str]], events: list[dict]) -> dict[str, Any]:
    """Every query over the events: seconds (scans only, not loading), hits, queries SQLite rejected."""
    db, width = _table(events)
    for _rule_id, sql in queries:  # add the columns rules name and no event has (outside the timing)
        for _ in range(20):
            try:
                db.execute(f"EXPLAIN {sql}")
                break
            except sqlite3.OperationalError as exc:
                missing = re.match(r"no such column: (.+)", str(exc))
                if not missing:
                    break
                db.execute(f"ALTER TABLE events ADD COLUMN {_quote(missing.group(1).strip('`'))}")
    hits, rejected = 0, 0
    started = time.perf_counter()
    for _rule_id, sql in queries:
        try:
            hits += len(db.execute(sql).fetchall())
        except sqlite3.Error:
            rejected += 1
    elapsed = time.perf_counter() - started
    db.close()
    return {"seconds": elapsed, "hits": hits, "rejected": rejected, "columns": width}
