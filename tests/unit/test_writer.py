"""Writer semantics on the in-process bus and embedded store (the same code runs against Kafka)."""

from __future__ import annotations

import threading

import pytest

from pipeline.bus.memory import MemoryBus
from pipeline.codec import EVENT_HEADERS
from pipeline.ingest import publish_events
from pipeline.writer import Writer
from tests.conftest import make_events


class Crash(Exception):
    pass


def _publish(bus: MemoryBus, events: list[dict], max_bytes: int = 16 * 1024) -> int:
    return publish_events(bus, events, max_bytes)


def _ids(store) -> list[str]:
    return [r[0] for r in store.query("SELECT event_id FROM events").rows]


def test_everything_published_is_stored_once(embedded_store) -> None:
    bus = MemoryBus()
    events = make_events(20_000)
    _publish(bus, events)
    stats = Writer(bus, embedded_store, max_batch_messages=50).run(threading.Event(), idle_exit_s=0.1)
    ids = _ids(embedded_store)
    assert len(ids) == 20_000 and set(ids) == {e["event_id"] for e in events}
    assert stats.batches > 1 and stats.events_written == 20_000


def test_crash_between_insert_and_commit_leaves_one_copy(embedded_store) -> None:
    bus = MemoryBus()
    events = make_events(5_000)
    _publish(bus, events)

    def crash(_batch: list[dict], _as_stored: bool) -> None:
        raise Crash

    first = Writer(bus, embedded_store, max_batch_messages=40, on_batch=crash)
    with pytest.raises(Crash):
        first.run(threading.Event(), idle_exit_s=0.1)
    stored_before = len(_ids(embedded_store))
    assert 0 < stored_before < 5_000  # the crash hit after a batch was inserted, before its commit
    second = Writer(bus, embedded_store, max_batch_messages=40)
    stats = second.run(threading.Event(), idle_exit_s=0.1)
    ids = _ids(embedded_store)
    assert len(ids) == 5_000 and set(ids) == {e["event_id"] for e in events}
    assert stats.duplicates_dropped == stored_before


def test_duplicates_inside_a_batch_are_dropped(embedded_store) -> None:
    bus = MemoryBus()
    events = make_events(100)
    _publish(bus, events + events[:30])
    stats = Writer(bus, embedded_store).run(threading.Event(), idle_exit_s=0.1)
    assert len(_ids(embedded_store)) == 100 and stats.duplicates_dropped == 30


def test_poison_messages_are_dead_lettered_and_the_rest_is_written(embedded_store) -> None:
    bus = MemoryBus()
    events = make_events(50)
    _publish(bus, events[:25])
    bus.publish(bus.topics.events, b"\x00\xffnot json at all", headers=EVENT_HEADERS)
    bus.publish(bus.topics.events, b'{"ts": 1}\n{"ts": "x", "event_id": "a", "sensor": "s", "source_type": "t", '
                                   b'"event_category": "c"}', headers=EVENT_HEADERS)
    bus.publish(bus.topics.deadletter, b"a foreign, malformed dead letter")
    _publish(bus, events[25:])
    Writer(bus, embedded_store).run(threading.Event(), idle_exit_s=0.1)
    # dead letters published by the writer are consumed back into the table by the next pass
    Writer(bus, embedded_store).run(threading.Event(), idle_exit_s=0.1)
    assert len(_ids(embedded_store)) == 50
    rows = embedded_store.query("SELECT stage, field, reason FROM deadletter ORDER BY reason").rows
    reasons = [r[2] for r in rows]
    assert len(rows) == 4, rows
    assert any("invalid JSON" in r for r in reasons)
    assert any("required field" in r for r in reasons)
    assert any("not ISO 8601" in r for r in reasons)
    assert any("malformed dead-letter record" in r for r in reasons)
