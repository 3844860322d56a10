from __future__ import annotations

import pytest

from pipeline.schema import (
    FIELD_BY_NAME,
    FIELD_NAMES,
    FIELDS,
    SchemaError,
    Sensitivity,
    dumps,
    event_id,
    format_ts,
    loads,
    masked,
    normalize,
    parse_ts,
    to_json_dict,
    value,
)
from pipeline.store.ddl import all_ddl, events_ddl

BASE = {"ts": "2024-05-01T08:00:00.123Z", "event_id": "abc", "sensor": "s", "source_type": "t", "event_category": "dns"}


def test_event_id_is_deterministic_and_depends_on_every_part() -> None:
    a = event_id("zeek", "line one", 7)
    assert a == event_id("zeek", b"line one", "7")
    assert len(a) == 32
    variants = {event_id("zeek2", "line one", 7), event_id("zeek", "line one!", 7), event_id("zeek", "line one", 8)}
    assert len(variants | {a}) == 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T08:00:00.123Z", 1714550400123),
        ("2024-05-01T16:00:00.123+08:00", 1714550400123),
        ("2024-05-01 08:00:00.123", 1714550400123),  # naive = UTC
        (1714550400.123, 1714550400123),  # seconds
        (1714550400123, 1714550400123),  # milliseconds
        (1714550400123456, 1714550400123),  # microseconds
        (1714550400123456789, 1714550400123),  # nanoseconds
        ("1714550400.123", 1714550400123),
    ],
)
def test_timestamps_in_every_common_shape(value: object, expected: int) -> None:
    assert parse_ts(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "", None, True, -5, float("nan"), [1]])
def test_bad_timestamps_are_rejected_with_the_field_name(value: object) -> None:
    with pytest.raises(SchemaError) as info:
        normalize({**BASE, "ts": value})
    assert info.value.field == "ts"


def test_format_ts_round_trips() -> None:
    assert format_ts(1714550400123) == "2024-05-01T08:00:00.123Z"
    assert parse_ts(format_ts(1714550400007)) == 1714550400007


def test_normalize_fills_every_field_and_keeps_unknown_fields_in_extra() -> None:
    event = normalize({**BASE, "src_ip": "::ffff:10.1.2.3", "dst_port": "443", "vendor": {"a": 1}, "rule": "x"})
    assert set(event) <= set(FIELD_NAMES)
    assert event["src_ip"] == "10.1.2.3"  # IPv4-mapped shown as IPv4
    assert event["dst_port"] == 443
    assert event["extra"] == {"vendor": '{"a":1}', "rule": "x"}
    assert value(event, "dns_answers") == () and value(event, "bytes_in") == 0  # absent = default
    assert all(value(event, f) == FIELD_BY_NAME[f].default for f in FIELD_NAMES if f not in event)


@pytest.mark.parametrize(
    ("field", "value"),
    [("src_ip", "10.0.0.256"), ("src_ip", "not-an-ip"), ("dst_port", 70000), ("dst_port", "http"),
     ("bytes_in", -1), ("duration", "fast"), ("dns_answers", {"a": 1}), ("user_name", {"x": 1}),
     ("http_status", 1.5)],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(SchemaError) as info:
        normalize({**BASE, field: value})
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize("missing", ["ts", "event_id", "sensor", "source_type", "event_category"])
def test_required_fields(missing: str) -> None:
    record = dict(BASE)
    del record[missing]
    with pytest.raises(SchemaError, match="required"):
        normalize(record)


def test_ipv6_and_empty_addresses() -> None:
    event = normalize({**BASE, "src_ip": "2001:DB8::0001", "dst_ip": "-"})
    assert event["src_ip"] == "2001:db8::1"
    assert value(event, "dst_ip") == "" and "dst_ip" not in event


def test_json_round_trip_is_lossless() -> None:
    event = normalize({**BASE, "src_ip": "10.0.0.1", "dns_answers": ["a", "b"], "duration": 1.5, "other": "x"})
    text = dumps(event)
    assert b'"ts":"2024-05-01T08:00:00.123Z"' in text
    assert loads(text) == event
    assert "message" not in to_json_dict(event)  # empty fields are left out


def test_loads_rejects_non_objects_and_bad_json() -> None:
    with pytest.raises(SchemaError, match="invalid JSON"):
        loads(b"{nope")
    with pytest.raises(SchemaError, match="JSON object"):
        loads(b"[1, 2]")


def test_masking_by_clearance() -> None:
    event = to_json_dict(normalize({**BASE, "user_name": "zhangsan", "dns_query": "a.example", "src_port": 5}))
    low = masked(event, Sensitivity.PUBLIC)
    assert low["user_name"] == "***" and low["dns_query"] == "***" and low["src_port"] == 5
    mid = masked(event, Sensitivity.INTERNAL)
    assert mid["user_name"] == "***" and mid["dns_query"] == "a.example"
    assert masked(event, Sensitivity.SECRET) == event


def test_ddl_has_every_schema_field_once() -> None:
    ddl = events_ddl("ganzhi")
    for f in FIELDS:
        assert ddl.count(f"`{f.name}` {f.ch_type}") == 1
    assert "TTL toDateTime(ingested_at) + INTERVAL 180 DAY" in ddl
    assert "PARTITION BY toYYYYMMDD(ts)" in ddl
    assert "TTL" not in events_ddl("ganzhi", retention_days=0)
    # every column compressed with a chosen codec (bench/storage.py); the baseline variant has none
    column_lines = [line for line in ddl.splitlines() if line.startswith("    `")]
    assert len(column_lines) == len(FIELDS) + 1 and all(" CODEC(" in line for line in column_lines)
    assert "`raw` String CODEC(ZSTD(3))" in ddl and "`ts` DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))" in ddl
    assert "CODEC(" not in events_ddl("ganzhi", codecs=False)
    tables = [s.split()[5] for s in all_ddl("x")[1:]]  # CREATE TABLE/VIEW IF NOT EXISTS <name>
    assert tables == ["x.events", "x.deadletter", "x.alert_hits", "x.alerts", "x.suppressions", "x.rulesets",
                      "x.ruleset_activations", "x.correlation_events",
                      "x.incidents", "x.incident_alerts", "x.incident_timeline", "x.api_users", "x.api_tokens",
                      "x.audit_log", "x.rule_state", "x.replay_jobs", "x.situation_history", "x.anomalies",
                      "x.forecasts", "x.warning_levels", "x.notifications", "x.software_inventory", "x.cve_feed",
                      "x.exposure_exclusions", "x.reports", "x.situation_state", "x.writer_stats"]


def test_cluster_ddl_is_replicated_distributed_and_parses(embedded_store) -> None:  # type: ignore[no-untyped-def]
    from pipeline.store.ddl import cluster_ddl

    statements = cluster_ddl("ganzhi", "gz_cluster")
    local = [s for s in statements if "_local ON CLUSTER" in s and s.startswith("CREATE TABLE")]
    distributed = [s for s in statements if "ENGINE = Distributed(" in s]
    plain_tables = [s.split()[5] for s in all_ddl("ganzhi")[1:] if s.startswith("CREATE TABLE")]
    assert len(local) == len(distributed) == len(plain_tables)
    assert all("ENGINE = Replicated" in s and "'/clickhouse/tables/{shard}/ganzhi/" in s for s in local)
    assert not any("non_replicated" in s for s in statements)
    assert "Distributed(gz_cluster, ganzhi, events_local, cityHash64(event_id))" in "\n".join(distributed)
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/ganzhi/incidents_local', '{replica}', version)" \
        in "\n".join(local)
    for statement in statements:  # the ClickHouse parser accepts every statement (no cluster needed to parse)
        formatted = embedded_store.query("SELECT formatQuery({q:String})", {"q": statement}).scalar()
        assert "ON CLUSTER gz_cluster" in formatted
    with pytest.raises(ValueError):
        cluster_ddl("ganzhi", "bad name; DROP")


def test_a_second_of_events_reads_its_own_granules_not_its_hour(embedded_store) -> None:  # type: ignore[no-untyped-def]
    """The sorting key puts a category's rows in time order: a one-second range (a live batch, a correlation
    step) is a few granules of an hour's 120 k events. The earlier key (hour, then src_ip) read the whole hour."""
    from tests.conftest import make_events

    start = 1_714_550_400_000  # on the hour
    events = make_events(120_000)
    for i, event in enumerate(events):
        event["ts"] = start + i * 29  # 3,480 s: one hour, 30 k events per category
    embedded_store.insert_events(events)
    embedded_store.execute("OPTIMIZE TABLE events FINAL")

    def estimated_rows(lo: int, hi: int) -> int:
        rows = embedded_store.query(
            "EXPLAIN ESTIMATE SELECT event_id FROM events WHERE ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') "
            "AND ts < fromUnixTimestamp64Milli({hi:Int64}, 'UTC')", {"lo": lo, "hi": hi}).dicts()
        return sum(int(r["rows"]) for r in rows)

    assert estimated_rows(start, start + 3_600_000) >= 120_000
    second = estimated_rows(start + 1_800_000, start + 1_801_000)  # 35 events
    assert 0 < second <= 8 * 8192  # a granule or two per category, of the 15 the hour fills


def test_a_table_with_an_earlier_key_is_kept_and_the_move_is_logged(chdb_path, unique_name, caplog) -> None:  # type: ignore[no-untyped-def]
    from pipeline.store.embedded import EmbeddedStore

    store = EmbeddedStore(chdb_path, database=unique_name)
    try:
        store.execute(f"CREATE DATABASE IF NOT EXISTS {unique_name}")
        store.execute(events_ddl(unique_name).replace("ORDER BY (event_category, ts, event_id)",
                                                      "ORDER BY (event_category, toStartOfHour(ts), src_ip, event_id)"))
        with caplog.at_level("WARNING", logger="pipeline.store.base"):
            store.ensure_schema()
        assert f"RENAME TABLE {unique_name}.events TO {unique_name}.events_old" in caplog.text
        caplog.clear()
        store.execute("DROP TABLE events")
        with caplog.at_level("WARNING", logger="pipeline.store.base"):
            store.ensure_schema()  # a table of the current key: nothing to say
        assert "sorted by" not in caplog.text
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {unique_name}")
