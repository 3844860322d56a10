"""The first end-to-end path on real engines: Kafka broker -> writer -> ClickHouse server."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from kafka import KafkaConsumer

from pipeline.bus.memory import MemoryBus
from pipeline.codec import EVENT_HEADERS
from pipeline.ingest import publish_events
from pipeline.writer import Writer
from tests.conftest import make_events


class Crash(Exception):
    pass


def _publish(bus, events: list[dict], max_bytes: int = 64 * 1024) -> None:  # type: ignore[no-untyped-def]
    publish_events(bus, events, max_bytes)
    bus.flush()


def _write_until(writer: Writer, store, expected: int, timeout_s: float = 180) -> None:  # type: ignore[no-untyped-def]
    """Run the writer in a thread until the table holds `expected` rows and the writer is idle."""
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if store.query("SELECT count() FROM events").scalar() >= expected:
                time.sleep(1.0)  # let anything extra (a duplicate would be) arrive before we judge
                break
            time.sleep(0.3)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive(), "writer did not stop"


def _stored_ids(store) -> list[str]:  # type: ignore[no-untyped-def]
    return [r[0] for r in store.query("SELECT event_id FROM events").rows]


def test_100k_events_through_kafka_into_clickhouse_none_lost(kafka_bus, server_store, unique_name) -> None:
    events = make_events(100_000)
    _publish(kafka_bus, events)
    writer = Writer(kafka_bus, server_store, group=unique_name)
    _write_until(writer, server_store, 100_000)
    ids = _stored_ids(server_store)
    assert len(ids) == 100_000, f"{100_000 - len(ids)} lost or {len(ids) - 100_000} extra"
    assert set(ids) == {e["event_id"] for e in events}
    assert writer.stats.events_written == 100_000


def test_redelivered_batch_leaves_one_copy(kafka_bus, server_store, unique_name) -> None:
    events = make_events(20_000, seed="redeliver")
    _publish(kafka_bus, events, max_bytes=16 * 1024)

    def crash_after_insert(_events: list[dict], _as_stored: bool) -> None:
        raise Crash  # the batch is in ClickHouse, its offsets are not committed

    first = Writer(kafka_bus, server_store, group=unique_name, max_batch_messages=100, on_batch=crash_after_insert)
    with pytest.raises(Crash):
        first.run(threading.Event())
    inserted_uncommitted = server_store.query("SELECT count() FROM events").scalar()
    assert inserted_uncommitted > 0

    second = Writer(kafka_bus, server_store, group=unique_name, max_batch_messages=100)
    _write_until(second, server_store, 20_000)
    ids = _stored_ids(server_store)
    assert len(ids) == 20_000 and set(ids) == {e["event_id"] for e in events}
    assert second.stats.duplicates_dropped == inserted_uncommitted


def test_malformed_messages_are_dead_lettered_and_the_writer_goes_on(kafka_bus, server_store, unique_name) -> None:
    good = make_events(1_000, seed="dlq")
    _publish(kafka_bus, good[:500])
    kafka_bus.publish(kafka_bus.topics.events, b"\x89PNG\x00\x1a garbage", headers=EVENT_HEADERS)
    kafka_bus.publish(kafka_bus.topics.events, b'{"ts": "2024-05-01T08:00:00Z", "sensor": "s"}', headers=EVENT_HEADERS)
    kafka_bus.publish(kafka_bus.topics.events, b'{"x": 1}', headers=[("ganzhi-schema", b"7")])
    _publish(kafka_bus, good[500:])

    writer = Writer(kafka_bus, server_store, group=unique_name)
    _write_until(writer, server_store, 1_000)
    assert set(_stored_ids(server_store)) == {e["event_id"] for e in good}

    # the dead-letter topic holds each rejection with its reason ...
    consumer = KafkaConsumer(kafka_bus.topics.deadletter, bootstrap_servers=kafka_bus.bootstrap,
                             auto_offset_reset="earliest", group_id=unique_name + "-check", consumer_timeout_ms=5000)
    records = [orjson.loads(m.value) for m in consumer]
    consumer.close()
    reasons = sorted(r["reason"] for r in records)
    assert len(records) == 3, reasons
    assert any("invalid JSON" in r for r in reasons)
    assert any("required field is missing" in r for r in reasons)
    assert any("unsupported schema version" in r for r in reasons)
    assert all(r["origin"].startswith(kafka_bus.topics.events) for r in records)

    # ... and the writer, which also consumes that topic, keeps them in the deadletter table
    deadline = time.monotonic() + 30
    writer2 = Writer(kafka_bus, server_store, group=unique_name)
    stop = threading.Event()
    thread = threading.Thread(target=writer2.run, args=(stop,), daemon=True)
    thread.start()
    while time.monotonic() < deadline and server_store.query("SELECT count() FROM deadletter").scalar() < 3:
        time.sleep(0.3)
    stop.set()
    thread.join(30)
    assert server_store.query("SELECT count() FROM deadletter").scalar() == 3


QUERIES = [
    ("SELECT event_category, count(), sum(bytes_out), uniqExact(src_ip) FROM events GROUP BY 1 ORDER BY 1", {}),
    ("SELECT src_ip, count() AS n FROM events GROUP BY src_ip ORDER BY n DESC, src_ip LIMIT 10", {}),
    ("SELECT ts, event_id, dst_ip, extra['vendor_field'], dns_answers FROM events "
     "WHERE ts BETWEEN {a:DateTime64(3, 'UTC')} AND {b:DateTime64(3, 'UTC')} ORDER BY ts, event_id",
     {"a": "2024-05-01 08:00:01.000", "b": "2024-05-01 08:00:02.500"}),
    ("SELECT toStartOfMinute(ts) AS m, count() FROM events GROUP BY m ORDER BY m", {}),
    ("SELECT dst_ip, count() FROM events WHERE dst_ip = {ip:IPv6} GROUP BY dst_ip", {"ip": "2001:db8::53"}),
    ("SELECT user_name, groupArray(3)(dns_query) FROM (SELECT * FROM events ORDER BY ts) "
     "WHERE user_name IN {u:Array(String)} GROUP BY user_name ORDER BY user_name", {"u": ["user1", "user2"]}),
    ("SELECT * FROM events ORDER BY event_id LIMIT 5", {}),
]


def test_embedded_and_server_modes_return_the_same_results(kafka_bus, server_store, embedded_store,
                                                           unique_name) -> None:
    events = make_events(5_000, seed="same")
    # embedded: in-process bus -> writer -> chDB
    memory_bus = MemoryBus()
    _publish(memory_bus, events)
    Writer(memory_bus, embedded_store).run(threading.Event(), idle_exit_s=0.2)
    # servers: Kafka -> writer -> ClickHouse server
    _publish(kafka_bus, events)
    _write_until(Writer(kafka_bus, server_store, group=unique_name), server_store, 5_000)

    for sql, params in QUERIES:
        a = embedded_store.query(sql, params)
        b = server_store.query(sql, params)
        assert a.columns == b.columns, sql
        without_ingest_time = [i for i, c in enumerate(a.columns) if c != "ingested_at"]
        rows_a = [[r[i] for i in without_ingest_time] for r in a.rows]
        rows_b = [[r[i] for i in without_ingest_time] for r in b.rows]
        assert rows_a == rows_b, sql
        assert rows_a, f"query returned nothing, the comparison would prove nothing: {sql}"


def test_a_stuck_consumer_is_rebuilt_and_the_backlog_flows(kafka_bus, unique_name) -> None:
    """The watchdog: a member that holds partitions with messages waiting but receives nothing (here its client
    is made stuck by pausing every partition it holds) is rebuilt under the same static id and goes on."""
    events = make_events(3_000, seed="stuck")
    _publish(kafka_bus, events, max_bytes=16 * 1024)
    consumer = kafka_bus.consumer([kafka_bus.topics.events], unique_name, "writer-stuck", stall_s=3.0)
    try:
        deadline = time.monotonic() + 60
        while not consumer._consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2, 1)
        assert consumer._consumer.assignment(), "never assigned"
        consumer._consumer.pause(*consumer._consumer.assignment())
        got: list = []
        deadline = time.monotonic() + 60
        while len(got) < 3_000 and time.monotonic() < deadline:
            for msg in consumer.poll(0.5, 100):
                got.extend(msg.value.split(b"\n"))
        assert consumer.reconnects >= 1, "the stuck client was not rebuilt"
        ids = {orjson.loads(line)["event_id"] for line in got}
        assert ids >= {e["event_id"] for e in events}
    finally:
        consumer.close()


def test_a_consumer_whose_client_hangs_while_being_built_is_built_again(kafka_bus, unique_name,
                                                                        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """kafka-python 3.0 waits for some metadata answers without a bound; a client that hangs while it is built
    (here its first metadata fetch never returns) is abandoned after the deadline and built again."""
    import pipeline.bus.kafka as kafka_module

    events = make_events(500, seed="hang")
    _publish(kafka_bus, events)
    monkeypatch.setattr(kafka_module, "CONNECT_S", 3.0)
    release = threading.Event()
    hung = []
    real = KafkaConsumer.partitions_for_topic

    def first_call_hangs(self, topic):  # type: ignore[no-untyped-def]
        if not hung:
            hung.append(self)
            release.wait(120)  # the hang: far beyond the deadline
        return real(self, topic)

    monkeypatch.setattr(KafkaConsumer, "partitions_for_topic", first_call_hangs)
    started = time.monotonic()
    consumer = kafka_bus.consumer([kafka_bus.topics.events], unique_name, "writer-hang")
    try:
        assert len(hung) == 1 and consumer._consumer is not hung[0], "the hung client was not replaced"
        assert 3.0 <= time.monotonic() - started < 30
        got: list = []
        deadline = time.monotonic() + 60
        while len(got) < len(events) and time.monotonic() < deadline:
            for msg in consumer.poll(0.5, 100):
                got.extend(msg.value.split(b"\n"))
        assert {orjson.loads(line)["event_id"] for line in got} >= {e["event_id"] for e in events}
    finally:
        release.set()  # the abandoned client finishes building and is closed (discarded)
        consumer.close()
