"""ClickHouse DDL generated from the event schema: the same statements run on chDB and on a server.

Dedup choice (DESIGN.md decision 5): the events table is a ReplacingMergeTree whose sorting key ends in
`event_id`, *and* inserts carry an `insert_deduplication_token` (the table keeps a window of recent
block hashes, `non_replicated_deduplication_window`), *and* the writer checks the first batch after a
partition assignment against the table. The token makes a retried insert a no-op; the assignment check
removes what a crashed writer inserted but never committed; the merge collapses anything that still
slips through (e.g. the same file imported twice), so counts converge without `FINAL` on the hot path.

Retention: rows are kept `retention_days` after they were *received* (`ingested_at`), not after the
event's own time — replaying an old capture must not be deleted by the next merge, and MLPS 2.0 asks
that logs be kept at least six months from collection.
"""

from __future__ import annotations

from pipeline.config import DEFAULT_RETENTION_DAYS
from pipeline.schema import FIELDS, INGESTED_AT

DEDUP_WINDOW_BLOCKS = 1000

# bloom-filter skip indexes for point lookups that are not in the sorting key
_BLOOM_INDEXED = ("event_id", "dst_ip", "user_name", "dns_query", "http_host", "tls_sni", "host_name")


def _retention(column: str, days: int) -> str:
    return f"TTL toDateTime({column}) + INTERVAL {int(days)} DAY" if days > 0 else ""


def events_ddl(database: str, retention_days: int = DEFAULT_RETENTION_DAYS) -> str:
    columns = [f"    `{f.name}` {f.ch_type} COMMENT '{f.doc.replace(chr(39), '')}'" for f in FIELDS]
    columns.append(f"    `{INGESTED_AT}` DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'when the store received it'")
    indexes = [f"    INDEX idx_{name} {name} TYPE bloom_filter(0.01) GRANULARITY 4" for name in _BLOOM_INDEXED]
    return "\n".join(
        [
            f"CREATE TABLE IF NOT EXISTS {database}.events (",
            ",\n".join(columns + indexes),
            ") ENGINE = ReplacingMergeTree",
            "PARTITION BY toYYYYMMDD(ts)",
            "ORDER BY (event_category, toStartOfHour(ts), src_ip, event_id)",
            _retention(INGESTED_AT, retention_days),
            f"SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW_BLOCKS}",
        ]
    )


def deadletter_ddl(database: str, retention_days: int = DEFAULT_RETENTION_DAYS) -> str:
    """Bad input is kept with its reason, as long as events are (an auditor may ask what was rejected)."""
    return f"""CREATE TABLE IF NOT EXISTS {database}.deadletter (
    `ts` DateTime64(3, 'UTC') COMMENT 'when it was rejected',
    `dl_id` String COMMENT 'hash of stage + origin + payload',
    `stage` LowCardinality(String) COMMENT 'where it was rejected, e.g. writer.decode, sensor.parse',
    `source` LowCardinality(String) COMMENT 'sensor, parser or topic it came from',
    `reason` String COMMENT 'why it was rejected',
    `field` String COMMENT 'the offending field, if one',
    `origin` String COMMENT 'where the payload was read: topic/partition/offset or file:line',
    `payload` String COMMENT 'the rejected input, verbatim (base64 if not UTF-8)'
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (stage, ts, dl_id)
{_retention("ts", retention_days)}
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW_BLOCKS}"""


DEADLETTER_COLUMNS = ("ts", "dl_id", "stage", "source", "reason", "field", "origin", "payload")


def all_ddl(database: str, retention_days: int = DEFAULT_RETENTION_DAYS) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        events_ddl(database, retention_days),
        deadletter_ddl(database, retention_days),
    ]
