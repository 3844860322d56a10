"""One contract, two engines: the ClickHouse server (native protocol) and embedded chDB answer alike."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import make_events


@pytest.fixture(params=["embedded", "server"])
def store(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"{request.param}_store")


def test_token_dedup_and_merge_backstop(store) -> None:
    events = make_events(300)
    store.insert_events(events, "tok-a")
    store.insert_events(events, "tok-a")  # a retried insert
    assert store.query("SELECT count() FROM events").scalar() == 300
    store.insert_events(events[:50], "tok-b")  # the same events under another token
    store.execute("OPTIMIZE TABLE events FINAL")
    assert store.query("SELECT count() FROM events").scalar() == 300


def test_hostile_parameters_stay_values(store) -> None:
    store.insert_events(make_events(40))
    for hostile in ("' OR 1=1 --", "\\'; DROP TABLE events; --", "%", "_", "user1' UNION SELECT 1 --"):
        assert store.query("SELECT count() FROM events WHERE user_name = {u:String}", {"u": hostile}).scalar() == 0
        assert store.query("SELECT count() FROM events WHERE user_name IN {u:Array(String)}",
                           {"u": [hostile, "user2"]}).scalar() == 4
    assert store.query("SELECT count() FROM events").scalar() == 40


def test_ipv4_and_ipv6_in_one_column(store) -> None:
    store.insert_events(make_events(50))
    q = "SELECT count() FROM events WHERE dst_ip = {ip:IPv6}"
    assert store.query(q, {"ip": "2001:db8::53"}).scalar() == 10
    assert store.query(q, {"ip": "192.0.2.53"}).scalar() == 40
    cidr = store.query("SELECT count() FROM events WHERE isIPAddressInRange(toString(dst_ip), '2001:db8::/32')")
    assert cidr.scalar() == 10
    assert store.query("SELECT src_ip FROM events ORDER BY ts LIMIT 1").scalar() == "10.0.0.0"


def test_time_parameters_keep_milliseconds(store) -> None:
    store.insert_events(make_events(10))
    since = datetime(2024, 5, 1, 8, 0, 0, 74000, tzinfo=UTC)
    assert store.query("SELECT count() FROM events WHERE ts >= {t:DateTime64(3, 'UTC')}", {"t": since}).scalar() == 8


def test_large_id_lists_travel_as_tables(store) -> None:
    """`in_array` with LARGE_SET ids or more: the list goes beside the query as a table (not parameter text) and
    answers as the parameter would; a parameter the query also names directly still arrives."""
    from pipeline.store.base import LARGE_SET, in_array, split_sets

    events = make_events(LARGE_SET + 500)
    store.insert_events(events)
    ids = [e["event_id"] for e in events[::2]] + [f"missing-{i}" for i in range(LARGE_SET)]
    sql = f"SELECT count() FROM events WHERE {in_array('event_id', 'ids')}"
    assert split_sets(sql, {"ids": ids}, lambda name: name)[2], "a large list should become a table"
    assert store.query(sql, {"ids": ids}).scalar() == len(events[::2])
    assert store.query(sql, {"ids": ids[:10]}).scalar() == 10  # small lists stay parameters
    both = f"{sql} AND has({{ids:Array(String)}}, event_id) AND user_name != {{u:String}}"
    assert store.query(both, {"ids": ids, "u": "' OR 1=1 --"}).scalar() == len(events[::2])
    assert store.existing_event_ids(ids) == {e["event_id"] for e in events[::2]}
