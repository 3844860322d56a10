"""The embedded store (chDB in-process): the same contract the server store meets in integration tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.store.base import StoreError
from tests.conftest import make_events


def test_insert_and_query_round_trip(embedded_store) -> None:
    events = make_events(500)
    embedded_store.insert_events(events)
    r = embedded_store.query(
        "SELECT event_id, ts, src_ip, dst_ip, extra, dns_answers FROM events ORDER BY ts LIMIT 1"
    )
    eid, ts, src, dst, extra, answers = r.rows[0]
    assert eid == events[0]["event_id"]
    assert ts == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert (src, dst) == ("10.0.0.0", "2001:db8::53")
    assert extra == {"vendor_field": "v0"}
    assert answers == []
    assert embedded_store.query("SELECT count() FROM events").scalar() == 500


def test_parameters_are_values_never_sql(embedded_store) -> None:
    embedded_store.insert_events(make_events(20))
    hostile = "x' OR 1=1 --"
    assert embedded_store.query("SELECT count() FROM events WHERE user_name = {u:String}", {"u": hostile}).scalar() == 0
    assert embedded_store.query("SELECT count() FROM events WHERE user_name IN {u:Array(String)}",
                                {"u": ["user1", "a'b", "c\\d"]}).scalar() == 2
    assert embedded_store.query("SELECT count() FROM events WHERE src_ip = {ip:IPv6}", {"ip": "10.0.0.3"}).scalar() == 1
    since = datetime(2024, 5, 1, 8, 0, 0, 111000, tzinfo=UTC)  # milliseconds survive the parameter
    assert embedded_store.query("SELECT count() FROM events WHERE ts >= {t:DateTime64(3, 'UTC')}",
                                {"t": since}).scalar() == 17


def test_same_token_inserts_once(embedded_store) -> None:
    events = make_events(100)
    embedded_store.insert_events(events, "batch-1")
    embedded_store.insert_events(events, "batch-1")
    embedded_store.insert_events(events[:10], "batch-2")
    assert embedded_store.query("SELECT count() FROM events").scalar() == 110
    # the ReplacingMergeTree backstop collapses the rest on merge
    embedded_store.execute("OPTIMIZE TABLE events FINAL")
    assert embedded_store.query("SELECT count() FROM events").scalar() == 100


def test_existing_event_ids(embedded_store) -> None:
    events = make_events(5)
    embedded_store.insert_events(events[:3])
    assert embedded_store.existing_event_ids([e["event_id"] for e in events]) == {e["event_id"] for e in events[:3]}


def test_bad_sql_is_a_store_error(embedded_store) -> None:
    with pytest.raises(StoreError, match=r"UNKNOWN_TABLE|Unknown table"):
        embedded_store.query("SELECT * FROM no_such_table")


def test_result_rows_normalized_column_by_column() -> None:
    """normalize_rows converts only the columns whose type needs it, and agrees with value-by-value conversion."""
    from pipeline.store.base import normalize_rows, normalize_value

    types = ["String", "UInt64", "Nullable(Int32)", "IPv6", "Array(UInt16)", "LowCardinality(String)",
             "DateTime64(3, 'UTC')"]
    rows = [("a", "18446744073709551615", None, "::ffff:10.1.2.3", (1, 2), "x", "2026-12-05 10:00:00.250"),
            ("", 7, -3, "::", (), "", datetime(2026, 12, 5, 10, 0, tzinfo=UTC))]
    expected = [tuple(normalize_value(t, v) for t, v in zip(types, row, strict=True)) for row in rows]
    assert normalize_rows(types, rows) == expected
    assert expected[0][1] == 18446744073709551615 and expected[0][3] == "10.1.2.3" and expected[1][3] == ""
    assert expected[0][4] == [1, 2] and expected[0][2] is None
    assert normalize_rows(types, []) == []
    strings = [("a", "b"), ("c", "d")]
    assert normalize_rows(["String", "String"], strings) == strings
