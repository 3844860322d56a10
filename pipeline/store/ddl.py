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

import re

from pipeline.config import DEFAULT_RETENTION_DAYS
from pipeline.schema import FIELDS, INGESTED_AT

# Column codecs of the events table, by schema kind. Measured by bench/storage.py on 168 k real events (Zeek,
# syslog, sshd, Apache, Windows): 160 bytes/event on disk with ClickHouse's default LZ4, 98 with these (the raw
# record, the `extra` map and the event id are most of it); inserts ~1.1x and full scans of `raw` ~1.4x slower.
# Six months of retention (MLPS 2.0) is a disk-size question first, so the events table trades that CPU for 1.6x.
_CODECS = {"ts": "CODEC(Delta, ZSTD(1))", "str": "CODEC(ZSTD(3))", "lcstr": "CODEC(ZSTD(3))",
           "strs": "CODEC(ZSTD(3))", "map": "CODEC(ZSTD(3))"}
_DEFAULT_CODEC = "CODEC(ZSTD(1))"

DEDUP_WINDOW_BLOCKS = 1000
# A writer's batch (tens of thousands of events, ~20 of its 60 columns set) is written as one compact part
# (one data file) rather than a wide one (a file per column and index): measured at 50 k events, the server's
# insert CPU 0.30 -> 0.13 s. Merges write the wide parts once data adds up (ClickHouse's default is 10 MiB).
COMPACT_PART_BYTES = 128 * 1024 * 1024

# The sorting key: a category's rows in time order. Nearly every read is a time range of one category or all of
# them (a live batch, a correlation window, a replay, a search newest first), and with `ts` right after the
# category the key narrows each to its granules. An earlier key, (event_category, toStartOfHour(ts), src_ip,
# event_id), scattered a second of events across its whole hour: measured at 2,000 events/s, a live batch read
# 4.0 M rows instead of 57 k (80 vs 13 ms); at 50,000 events/s it would read 180 M. Replacing rows need the same
# key for duplicates, and (category, ts, event_id) is one event's. Addresses go to bloom filters instead.
EVENTS_SORTING_KEY = "event_category, ts, event_id"
# bloom-filter skip indexes for point lookups that are not in the sorting key
_BLOOM_INDEXED = ("event_id", "src_ip", "dst_ip", "user_name", "dns_query", "http_host", "tls_sni", "host_name")


def _retention(column: str, days: int) -> str:
    return f"TTL toDateTime({column}) + INTERVAL {int(days)} DAY" if days > 0 else ""


def events_ddl(database: str, retention_days: int = DEFAULT_RETENTION_DAYS, codecs: bool = True) -> str:
    """The events table; `codecs=False` leaves ClickHouse's default (LZ4) everywhere: the storage benchmark's
    baseline."""
    def codec(kind: str) -> str:
        return f" {_CODECS.get(kind, _DEFAULT_CODEC)}" if codecs else ""

    columns = [f"    `{f.name}` {f.ch_type}{codec(f.kind)} COMMENT '{f.doc.replace(chr(39), '')}'" for f in FIELDS]
    columns.append(f"    `{INGESTED_AT}` DateTime64(3, 'UTC') DEFAULT now64(3){codec('ts')} "
                   "COMMENT 'when the store received it'")
    indexes = [f"    INDEX idx_{name} {name} TYPE bloom_filter(0.01) GRANULARITY 4" for name in _BLOOM_INDEXED]
    return "\n".join(
        [
            f"CREATE TABLE IF NOT EXISTS {database}.events (",
            ",\n".join(columns + indexes),
            ") ENGINE = ReplacingMergeTree",
            "PARTITION BY toYYYYMMDD(ts)",
            f"ORDER BY ({EVENTS_SORTING_KEY})",
            _retention(INGESTED_AT, retention_days),
            f"SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW_BLOCKS}, "
            f"min_bytes_for_wide_part = {COMPACT_PART_BYTES}",
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


def alert_ddl(database: str, retention_days: int = DEFAULT_RETENTION_DAYS) -> list[str]:
    """Alerts are stored as one row per (alert, matching event); the `alerts` view folds them.

    An alert is keyed by (rule, entity, window), so live batches and replays that find the same thing
    write the same keys: re-running detection can add events to an alert but never a second alert.
    """
    # alerts outlive the events they point at by a year: an incident review may come long after; counted
    # from detection, not event time (a replay of an old capture must not be expired on arrival)
    keep = retention_days + 365 if retention_days > 0 else 0
    hits = f"""CREATE TABLE IF NOT EXISTS {database}.alert_hits (
    `alert_id` String COMMENT 'hash of rule id, entity and window start',
    `rule_id` String,
    `rule_title` String,
    `level` LowCardinality(String) COMMENT 'informational, low, medium, high, critical',
    `tags` Array(String) COMMENT 'ATT&CK and other Sigma tags',
    `kind` LowCardinality(String) COMMENT 'rule or the correlation type',
    `ruleset_version` String COMMENT 'content hash of the rule set that found it',
    `entity` String COMMENT 'what the alert is about, e.g. src_ip=10.1.2.3',
    `window_start` DateTime64(3, 'UTC'),
    `event_id` String COMMENT 'one matching event',
    `event_ts` DateTime64(3, 'UTC'),
    `src_ip` IPv6, `dst_ip` IPv6, `host_name` String, `user_name` String,
    `src_org_unit` LowCardinality(String), `dst_org_unit` LowCardinality(String),
    `src_asset` String, `dst_asset` String,
    `suppression_id` String COMMENT 'set when an active suppression hid it (kept, not published)',
    `detected_at` DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (alert_id, event_id)
{_retention("detected_at", keep)}
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW_BLOCKS}"""
    view = f"""CREATE VIEW IF NOT EXISTS {database}.alerts AS
SELECT alert_id, any(rule_id) AS rule_id, any(rule_title) AS rule_title, any(level) AS level, any(tags) AS tags,
       any(kind) AS kind, argMin(ruleset_version, detected_at) AS ruleset_version, any(entity) AS entity,
       min(window_start) AS window_start, min(event_ts) AS first_seen, max(event_ts) AS last_seen,
       uniqExact(event_id) AS hit_count, arraySort(groupUniqArray(1000)(event_id)) AS event_ids,
       any(src_ip) AS src_ip, any(dst_ip) AS dst_ip, any(host_name) AS host_name, any(user_name) AS user_name,
       any(src_org_unit) AS src_org_unit, any(dst_org_unit) AS dst_org_unit,
       any(src_asset) AS src_asset, any(dst_asset) AS dst_asset,
       max(suppression_id) AS suppression_id, min(detected_at) AS first_detected_at
FROM {database}.alert_hits GROUP BY alert_id"""
    suppressions = f"""CREATE TABLE IF NOT EXISTS {database}.suppressions (
    `suppression_id` String,
    `rule_id` String COMMENT 'empty = every rule',
    `scope` LowCardinality(String) COMMENT 'src_ip, dst_ip, cidr, org_unit, asset or entity',
    `value` String,
    `owner` String,
    `reason` String,
    `created_at` DateTime64(3, 'UTC'),
    `expires_at` DateTime64(3, 'UTC'),
    `revoked` UInt8 DEFAULT 0,
    `version` UInt64 COMMENT 'the newest row of a suppression wins'
) ENGINE = ReplacingMergeTree(version)
ORDER BY suppression_id"""
    rulesets = f"""CREATE TABLE IF NOT EXISTS {database}.rulesets (
    `version` String COMMENT 'content hash of the rule files',
    `created_at` DateTime64(3, 'UTC'),
    `files` Map(String, String) COMMENT 'path -> rule file text, so any version can be replayed later'
) ENGINE = ReplacingMergeTree
ORDER BY version"""
    activations = f"""CREATE TABLE IF NOT EXISTS {database}.ruleset_activations (
    `activated_at` DateTime64(3, 'UTC'),
    `version` String COMMENT 'the rule-set version live detection runs from then on',
    `activated_by` String,
    `reason` String
) ENGINE = MergeTree
ORDER BY activated_at"""
    return [hits, view, suppressions, rulesets, activations, correlation_events_ddl(database)]


# How long a correlation's counted events are kept past its timespan, counted from when they were written: a late
# event (a writer catching up, an out-of-order batch) still finds the window it belongs to.
CORRELATION_KEEP_MARGIN_S = 3600


def correlation_events_ddl(database: str) -> str:
    """Live correlation windows read their events here instead of the events table (pipeline/detect/engine.py).

    Each live batch writes the events each correlation counts, already projected (group, marks, value): a
    window then reads one correlation's groups by the key instead of every row of its category over the
    timespan, evaluating the referenced rules on each (measured: 5 minutes of history at 50 k events/s put ~1 s
    per batch into the password-spraying window alone). `correlation` is a digest of the projection's SQL, so a
    rule set that changes a correlation starts a new key and an unchanged one keeps its rows. The minute before
    the group: a window reads the minutes within its reach (two timespans), not every row the table still keeps
    (the timespan plus the margin, and expired rows until a merge drops them); a batch's groups are looked up
    within each minute."""
    return f"""CREATE TABLE IF NOT EXISTS {database}.correlation_events (
    `correlation` String COMMENT 'digest of the SQL that selects and projects the events a correlation counts',
    `gk` Array(String) COMMENT 'the group-by values',
    `gh` UInt64 MATERIALIZED cityHash64(gk) COMMENT 'what a window looks a group up by (cheaper than its values)',
    `ts` DateTime64(3, 'UTC'),
    `event_id` String,
    `marks` Array(UInt8) COMMENT 'temporal kinds: which referenced rules the event matched',
    `value` String COMMENT 'value_count: the counted field',
    `number` Float64 COMMENT 'value_sum/avg/percentile/median: the field',
    `src_ip` IPv6, `dst_ip` IPv6, `host_name` String, `user_name` String,
    `src_org_unit` LowCardinality(String), `dst_org_unit` LowCardinality(String),
    `src_asset` String, `dst_asset` String,
    `keep_s` UInt32 COMMENT 'the timespan plus a margin for late events',
    `written_at` DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(written_at)
ORDER BY (correlation, toStartOfMinute(ts), gh, ts, event_id)
TTL written_at + toIntervalSecond(keep_s)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW_BLOCKS}, min_bytes_for_wide_part = {COMPACT_PART_BYTES}"""


ALERT_HIT_KINDS = {
    "alert_id": "str", "rule_id": "str", "rule_title": "str", "level": "str", "tags": "strs", "kind": "str",
    "ruleset_version": "str", "entity": "str", "window_start": "ts", "event_id": "str", "event_ts": "ts",
    "src_ip": "ip", "dst_ip": "ip", "host_name": "str", "user_name": "str", "src_org_unit": "str",
    "dst_org_unit": "str", "src_asset": "str", "dst_asset": "str", "suppression_id": "str",
}


def incident_ddl(database: str) -> list[str]:
    """Incidents are versioned rows (the newest `version` of an incident wins); their timeline and alert
    links are append-only. Kept as long as the database: an incident is the record of a decision."""
    incidents = f"""CREATE TABLE IF NOT EXISTS {database}.incidents (
    `incident_id` String,
    `title` String,
    `status` LowCardinality(String) COMMENT 'new, acknowledged, investigating, contained, resolved, false_positive',
    `severity` LowCardinality(String) COMMENT 'informational, low, medium, high, critical',
    `group_key` String COMMENT 'what grouped its alerts, e.g. src_ip=10.1.2.3',
    `org_units` Array(String) COMMENT 'org units of the alerts (department isolation reads this)',
    `assets` Array(String),
    `max_criticality` UInt8 COMMENT 'highest criticality of the assets involved, 0 = unknown',
    `rule_ids` Array(String),
    `alert_count` UInt32,
    `assignee` String,
    `tags` Array(String),
    `first_seen` DateTime64(3, 'UTC'),
    `last_seen` DateTime64(3, 'UTC'),
    `opened_at` DateTime64(3, 'UTC'),
    `updated_at` DateTime64(3, 'UTC'),
    `version` UInt64,
    INDEX idx_org_units org_units TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ReplacingMergeTree(version)
ORDER BY incident_id"""
    links = f"""CREATE TABLE IF NOT EXISTS {database}.incident_alerts (
    `alert_id` String,
    `incident_id` String,
    `linked_at` DateTime64(3, 'UTC'),
    `linked_by` String,
    INDEX idx_incident incident_id TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ReplacingMergeTree
ORDER BY alert_id"""
    timeline = f"""CREATE TABLE IF NOT EXISTS {database}.incident_timeline (
    `incident_id` String,
    `at` DateTime64(3, 'UTC'),
    `seq` UInt64 COMMENT 'orders changes within one millisecond',
    `actor` String COMMENT 'user, or ganzhi for the correlator',
    `action` LowCardinality(String) COMMENT 'opened, alert_linked, status, assignee, note, tags, acknowledged',
    `detail` String COMMENT 'JSON: what changed (from/to) or the note text'
) ENGINE = MergeTree
ORDER BY (incident_id, at, seq)"""
    return [incidents, links, timeline]


def api_ddl(database: str) -> list[str]:
    """Users, tokens (hashes only), the audit log, rule switches and replay jobs of the responders' API.

    The audit log is append-only by design: rows are never updated, each carries the hash of its predecessor
    (`ganzhi audit verify` recomputes the chain). In production grant the API's ClickHouse user INSERT and
    SELECT only on it, so not even the API can rewrite history."""
    users = f"""CREATE TABLE IF NOT EXISTS {database}.api_users (
    `name` String,
    `role` LowCardinality(String) COMMENT 'operator, responder, auditor, admin',
    `org_unit` String COMMENT 'sees this unit and below; empty = the whole network',
    `clearance` UInt8 COMMENT 'highest data sensitivity shown unmasked (1 public .. 4 secret)',
    `disabled` UInt8,
    `created_at` DateTime64(3, 'UTC'),
    `version` UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY name"""
    tokens = f"""CREATE TABLE IF NOT EXISTS {database}.api_tokens (
    `token_id` String,
    `user` String,
    `secret_hash` String COMMENT 'sha256 of the secret; the secret itself is shown once and never stored',
    `description` String,
    `created_at` DateTime64(3, 'UTC'),
    `expires_at` DateTime64(3, 'UTC'),
    `revoked` UInt8,
    `version` UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY token_id"""
    audit = f"""CREATE TABLE IF NOT EXISTS {database}.audit_log (
    `seq` UInt64 COMMENT '1, 2, 3, ... with no gaps',
    `ts` DateTime64(3, 'UTC'),
    `actor` String,
    `role` LowCardinality(String),
    `action` String COMMENT 'HTTP method and route, or the CLI command',
    `target` String COMMENT 'the resource acted on',
    `source` String COMMENT 'client address',
    `result` String COMMENT 'HTTP status or outcome',
    `detail` String COMMENT 'JSON: parameters of the call (no secrets)',
    `prev_hash` String,
    `hash` String COMMENT 'sha256 over prev_hash and this record'
) ENGINE = MergeTree
ORDER BY seq"""
    rule_state = f"""CREATE TABLE IF NOT EXISTS {database}.rule_state (
    `rule_id` String,
    `enabled` UInt8,
    `changed_by` String,
    `changed_at` DateTime64(3, 'UTC'),
    `version` UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY rule_id"""
    replays = f"""CREATE TABLE IF NOT EXISTS {database}.replay_jobs (
    `job_id` String,
    `status` LowCardinality(String) COMMENT 'queued, running, done, failed',
    `submitted_by` String,
    `ruleset_version` String,
    `range_from` DateTime64(3, 'UTC'),
    `range_to` DateTime64(3, 'UTC'),
    `submitted_at` DateTime64(3, 'UTC'),
    `finished_at` DateTime64(3, 'UTC'),
    `report_hash` String,
    `report` String COMMENT 'the reproducible JSON report',
    `error` String,
    `version` UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY job_id"""
    return [users, tokens, audit, rule_state, replays]


def situation_ddl(database: str) -> list[str]:
    """The situation assessment's history, baselines' anomalies, forecasts, warning levels, notifications,
    the observed software inventory, the CVE feed, exposure exclusions and rendered bulletins."""
    history = f"""CREATE TABLE IF NOT EXISTS {database}.situation_history (
    `at` DateTime64(3, 'UTC') COMMENT 'the moment assessed',
    `scope_kind` LowCardinality(String) COMMENT 'extranet, org_unit or asset',
    `scope` String COMMENT 'org unit path or asset name; empty for the extranet',
    `score` Float64 COMMENT 'situation index (extranet, org unit) or risk (asset), 0-100',
    `factors` String COMMENT 'JSON: the top contributing factors',
    `model` LowCardinality(String) COMMENT 'version of the scoring formula'
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (scope_kind, scope, at)"""
    anomalies = f"""CREATE TABLE IF NOT EXISTS {database}.anomalies (
    `anomaly_id` String,
    `hour` DateTime64(3, 'UTC'),
    `org_unit` String COMMENT 'empty = the whole extranet',
    `metric` LowCardinality(String),
    `observed` Float64,
    `expected` Float64 COMMENT 'median of the same hour of the week in the baseline weeks',
    `low` Float64,
    `high` Float64,
    `samples` UInt16 COMMENT 'how many past hours the baseline used',
    `detected_at` DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY anomaly_id"""
    forecasts = f"""CREATE TABLE IF NOT EXISTS {database}.forecasts (
    `made_at` DateTime64(3, 'UTC'),
    `series` String COMMENT 'e.g. index:extranet, alerts:民政局',
    `ts` DateTime64(3, 'UTC'),
    `mean` Float64, `low` Float64, `high` Float64,
    `model` String,
    `error` String COMMENT 'JSON: error on held-back history (MAPE, sMAPE, MAE, seasonal-naive MAE)'
) ENGINE = ReplacingMergeTree
ORDER BY (series, made_at, ts)"""
    levels = f"""CREATE TABLE IF NOT EXISTS {database}.warning_levels (
    `at` DateTime64(3, 'UTC'),
    `scope` String COMMENT 'empty = the extranet, else an org unit',
    `level` UInt8 COMMENT '1 = I 特别重大 (red) .. 4 = IV 一般 (blue), 0 = no warning',
    `previous` UInt8,
    `reasons` String COMMENT 'JSON: the triggers that fired'
) ENGINE = MergeTree
ORDER BY (scope, at)"""
    notifications = f"""CREATE TABLE IF NOT EXISTS {database}.notifications (
    `key` String COMMENT 'deduplication key of the message',
    `channel` LowCardinality(String) COMMENT 'webhook, email or syslog',
    `status` LowCardinality(String) COMMENT 'sent, failed (retried later) or deferred (rate limit)',
    `attempts` UInt16,
    `error` String,
    `payload` String,
    `updated_at` DateTime64(3, 'UTC'),
    `version` UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (key, channel)"""
    software = f"""CREATE TABLE IF NOT EXISTS {database}.software_inventory (
    `ip` IPv6,
    `port` UInt16,
    `kind` LowCardinality(String) COMMENT 'service, http_server, x_powered_by, ssh, tls, smb, software',
    `product` String COMMENT 'as observed, e.g. OpenSSH_7.4p1 or Apache/2.4.49 (Unix)',
    `org_unit` LowCardinality(String),
    `asset` String,
    `criticality` UInt8,
    `first_seen` SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    `last_seen` SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    `hits` SimpleAggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
ORDER BY (ip, port, kind, product, org_unit, asset, criticality)"""
    feed = f"""CREATE TABLE IF NOT EXISTS {database}.cve_feed (
    `cve_id` String,
    `published` String,
    `cvss` Float64,
    `severity` LowCardinality(String),
    `description` String,
    `products` Array(String) COMMENT 'the CPE products named (prefilter for matching)',
    `matches` String COMMENT 'JSON: the vulnerable CPE criteria with version ranges',
    `kev` UInt8 COMMENT 'listed in CISA Known Exploited Vulnerabilities',
    `kev_added` String,
    `loaded_at` DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY cve_id"""
    exclusions = f"""CREATE TABLE IF NOT EXISTS {database}.exposure_exclusions (
    `exclusion_id` String,
    `cve_id` String COMMENT 'empty = every CVE',
    `scope` LowCardinality(String) COMMENT 'ip, asset, org_unit or all',
    `value` String,
    `kind` LowCardinality(String) COMMENT 'accepted_risk or false_positive',
    `reason` String,
    `owner` String,
    `created_at` DateTime64(3, 'UTC'),
    `expires_at` DateTime64(3, 'UTC'),
    `revoked` UInt8,
    `version` UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY exclusion_id"""
    reports = f"""CREATE TABLE IF NOT EXISTS {database}.reports (
    `report_id` String,
    `period` LowCardinality(String),
    `period_start` DateTime64(3, 'UTC'),
    `period_end` DateTime64(3, 'UTC'),
    `generated_at` DateTime64(3, 'UTC'),
    `generated_by` String,
    `html` String,
    `pdf` String COMMENT 'base64'
) ENGINE = ReplacingMergeTree
ORDER BY report_id"""
    state = f"""CREATE TABLE IF NOT EXISTS {database}.situation_state (
    `name` String COMMENT 'e.g. inventory_watermark: how far the scheduled jobs have read',
    `value` Int64,
    `version` UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY name"""
    return [history, anomalies, forecasts, levels, notifications, software, feed, exclusions, reports, state]


def ops_ddl(database: str, retention_days: int = DEFAULT_RETENTION_DAYS) -> list[str]:
    """Writers' own counters, a row per writer every few seconds: what the pipeline-health dashboard reads
    (consumer lag and insert latency are not visible in the events themselves)."""
    return [f"""CREATE TABLE IF NOT EXISTS {database}.writer_stats (
    `ts` DateTime64(3, 'UTC'),
    `instance` String COMMENT 'writer instance (static member id or host:pid)',
    `group` String,
    `messages` UInt64, `events_written` UInt64, `dead_letters` UInt64, `duplicates_dropped` UInt64,
    `batches` UInt64, `store_retries` UInt64, `bus_retries` UInt64 COMMENT 'cumulative since the writer started',
    `insert_seconds` Float64 COMMENT 'cumulative time in ClickHouse inserts',
    `last_insert_seconds` Float64,
    `lag` UInt64 COMMENT 'messages not yet consumed, summed over its partitions'
) ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (instance, ts)
{_retention("ts", retention_days)}"""]


def all_ddl(database: str, retention_days: int = DEFAULT_RETENTION_DAYS) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        events_ddl(database, retention_days),
        deadletter_ddl(database, retention_days),
        *alert_ddl(database, retention_days),
        *incident_ddl(database),
        *api_ddl(database),
        *situation_ddl(database),
        *ops_ddl(database, retention_days),
    ]


# sharding key per table: rows that must meet (versions of one incident, hits of one alert, copies of one event
# that ReplacingMergeTree collapses) land on the same shard; small tables go to one shard whole (key 0)
_SHARD_KEYS = {
    "events": "cityHash64(event_id)", "deadletter": "cityHash64(dl_id)", "alert_hits": "cityHash64(alert_id)",
    "correlation_events": "cityHash64(gk)", "incidents": "cityHash64(incident_id)",
    "incident_alerts": "cityHash64(alert_id)",
    "incident_timeline": "cityHash64(incident_id)", "situation_history": "cityHash64(scope)",
    "software_inventory": "cityHash64(ip)", "writer_stats": "cityHash64(instance)",
}
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+) \(")
_ENGINE = re.compile(r"ENGINE = (\w*)MergeTree(?:\(([^)]*)\))?")


def cluster_ddl(database: str, cluster: str, retention_days: int = DEFAULT_RETENTION_DAYS) -> list[str]:
    """The same schema for a ClickHouse cluster: each table becomes `<name>_local` (Replicated*MergeTree, ON
    CLUSTER, replicas by the `{shard}`/`{replica}` macros) plus `<name>` (Distributed over it, sharded by
    `_SHARD_KEYS`), so every query and insert of Ganzhi keeps using the plain names. Inserts should run with
    `insert_distributed_sync = 1` (the writer commits offsets only after the shards acknowledged)."""
    if not re.fullmatch(r"[A-Za-z_][\w]*", cluster):
        raise ValueError(f"not a cluster name: {cluster!r}")
    out: list[str] = []
    for statement in all_ddl(database, retention_days):
        if statement.startswith("CREATE DATABASE"):
            out.append(f"{statement} ON CLUSTER {cluster}")
            continue
        if statement.startswith("CREATE VIEW"):
            out.append(statement.replace(" AS\n", f" ON CLUSTER {cluster} AS\n", 1))
            continue
        match = _CREATE_TABLE.match(statement)
        if match is None:
            raise ValueError(f"unexpected DDL: {statement[:60]}")
        table = match.group(2)

        def replicated(m: re.Match[str], table: str = table) -> str:
            args = [f"'/clickhouse/tables/{{shard}}/{database}/{table}_local'", "'{replica}'"]
            return f"ENGINE = Replicated{m.group(1)}MergeTree({', '.join(args + ([m.group(2)] if m.group(2) else []))})"

        local = _ENGINE.sub(replicated, statement.replace(
            match.group(0), f"CREATE TABLE IF NOT EXISTS {database}.{table}_local ON CLUSTER {cluster} (", 1), 1)
        local = local.replace("non_replicated_deduplication_window", "replicated_deduplication_window")
        out.append(local)
        out.append(f"CREATE TABLE IF NOT EXISTS {database}.{table} ON CLUSTER {cluster} AS {database}.{table}_local "
                   f"ENGINE = Distributed({cluster}, {database}, {table}_local, {_SHARD_KEYS.get(table, '0')})")
    return out
