"""Fault tests against real engines: the table must end up holding exactly the produced event ids.

- the writer process is killed (SIGKILL) at random moments 20 times while 1 M events flow;
- the ClickHouse server is killed and restarted mid-stream (the writer pauses, bounded, and resumes);
- the Kafka broker is killed and restarted mid-stream;
- a sensor whose broker is down spools to disk and drains in order when it returns;
- SIGTERM makes the writer flush and commit before it exits.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer

from deploy.local.clickhouse import LocalClickHouse
from deploy.local.kafka import LocalKafka
from pipeline.bus.base import Topics
from pipeline.bus.kafka import KafkaBus
from pipeline.codec import EVENT_HEADERS
from pipeline.store.server import ServerStore
from pipeline.writer import Writer
from sensors.sink import BusSink
from sensors.spool import DiskSpool

REPO = Path(__file__).resolve().parents[2]
T0 = 1_714_550_400_000
CHUNK = 2000  # events per Kafka message


def _chunk(tag: str, start: int, end: int) -> bytes:
    return b"\n".join(orjson.dumps({
        "ts": T0 + i, "event_id": f"{tag}-{i:07d}", "sensor": "fault-test", "source_type": "test",
        "event_category": "network_connection", "src_ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
        "dst_ip": "192.0.2.1", "dst_port": i % 65536, "protocol": "tcp"}) for i in range(start, end))


def _produce(bus: KafkaBus, tag: str, start: int, end: int, rate: float | None = None,
             until: threading.Event | None = None) -> None:
    """Publish events start..end in CHUNK-event messages; with rate (events/s), spread over time (until the
    event `until` is set, if given: then the rest at full speed)."""
    began = time.monotonic()
    for lo in range(start, end, CHUNK):
        bus.publish(bus.topics.events, _chunk(tag, lo, min(end, lo + CHUNK)), headers=EVENT_HEADERS)
        if rate and not (until and until.is_set()):
            ahead = (lo + CHUNK - start) / rate - (time.monotonic() - began)
            if ahead > 0:
                bus.flush()
                time.sleep(ahead)
    bus.flush()


def _count(store: ServerStore) -> int:
    return int(store.query("SELECT count() FROM events").scalar())


def _assert_exact_set(store: ServerStore, tag: str, n: int) -> None:
    rows = store.query("SELECT event_id FROM events").rows
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicated rows"
    missing = {f"{tag}-{i:07d}" for i in range(n)} - set(ids)
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:3]}"
    assert len(ids) == n


def _wait(condition, timeout_s: float, what: str, log: Path | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:]) if log else ""
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (load average {load})\n{tail}")
        time.sleep(0.5)


# -- kill -9 the writer ----------------------------------------------------------------------


def _writer_process(kafka: str, clickhouse: str, prefix: str, group: str, log: Path) -> subprocess.Popen[bytes]:
    # INFO: the group's joins and assignments are in the log a failure prints
    env = {**os.environ, "GANZHI_KAFKA": kafka, "GANZHI_CLICKHOUSE": clickhouse, "GANZHI_TOPIC_PREFIX": prefix,
           "GANZHI_LOG": "INFO"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "writer", "--group", group, "--no-detect", "--linger", "0.2",
             "--instance-id", "writer-1"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.timeout(900)
def test_writer_killed_20_times_while_1m_events_flow(kafka_bootstrap, clickhouse_server, kafka_bus, server_store,
                                                     unique_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    n, kills = 1_000_000, 20
    seed = int(os.environ.get("GANZHI_FAULT_SEED", time.time()))
    rng = random.Random(seed)
    print(f"fault seed {seed} (GANZHI_FAULT_SEED reproduces the kill times)")
    # produced at 3,000 events/s while the writers are being killed (so the 1 M events are still flowing when the
    # last kill lands, even on a slow machine), the rest at full speed
    kills_done = threading.Event()
    producer = threading.Thread(target=_produce, args=(kafka_bus, "k", 0, n, 3_000, kills_done), daemon=True)
    producer.start()
    log = tmp_path / "writers.log"
    url = f"{clickhouse_server}/{unique_name}"
    counts = []
    for _ in range(kills):
        before = _count(server_store)
        proc = _writer_process(kafka_bootstrap, url, unique_name, unique_name, log)
        try:
            # every life gets to work (its first insert), then dies at a random point of its insert/commit cycle
            # (a fixed sleep alone made lives on a slow machine die before they ever inserted: no test of the path)
            _wait(lambda before=before: _count(server_store) > before, 60, "a restarted writer's first insert", log)
            time.sleep(rng.uniform(0.0, 2.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        counts.append(_count(server_store))
    print(f"stored after each kill: {counts}")
    still_flowing = producer.is_alive()
    kills_done.set()
    assert still_flowing, "the kills must happen while events still flow"
    assert counts == sorted(set(counts)), "every writer life stored something before its kill"

    producer.join()
    final = _writer_process(kafka_bootstrap, url, unique_name, unique_name, log)
    try:
        _wait(lambda: _count(server_store) >= n, 600, f"{n:,} events stored")
        time.sleep(1.0)  # anything doubled would show up as count > n
    finally:
        final.send_signal(signal.SIGTERM)
        code = final.wait(60)
    text = log.read_text(errors="replace")
    print(f"assignment checks dropped already-stored events {text.count('already stored by a previous writer')} "
          f"time(s)")
    assert code == 0, text[-3000:]
    assert "writer stopped" in text.splitlines()[-1] or "writer stopped" in text[-2000:]
    _assert_exact_set(server_store, "k", n)
    # SIGTERM flushed and committed: the group is at the end of every partition
    offsets = kafka_bus.group_offsets(unique_name)
    events = {tp: ce for tp, ce in offsets.items() if tp[0] == kafka_bus.topics.events}
    assert len(events) == 3 and all(committed == end > 0 for committed, end in events.values()), offsets


# -- restart the servers mid-stream ----------------------------------------------------------


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker this module may kill and restart without disturbing the other tests."""
    broker = LocalKafka(tmp_path_factory.mktemp("own-kafka")).start()
    yield broker
    broker.stop()


@contextlib.contextmanager
def _running(writer: Writer) -> Iterator[Writer]:
    """The writer consuming in a thread for the block; stopped (flush and commit) after it."""
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield writer
    finally:
        stop.set()
        thread.join(60)


@pytest.mark.timeout(600)
def test_clickhouse_killed_and_restarted_mid_stream(kafka_bus, unique_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    n = 200_000
    server = LocalClickHouse(tmp_path / "ch").start()
    store = ServerStore(server.url_for(unique_name), connect_timeout=2)
    store.ensure_schema()
    _produce(kafka_bus, "c", 0, n)
    writer = Writer(kafka_bus, store, group=unique_name, max_batch_messages=5, linger_s=0.2)
    with _running(writer):
        _wait(lambda: _count(store) > 20_000, 120, "the first events stored")
        server.kill()
        time.sleep(1.5)
        polled = writer.stats.messages
        time.sleep(3.0)
        # paused, not buffering: nothing more consumed while the store is down, one batch held at most
        assert writer.stats.messages == polled and writer.stats.store_retries > 0
        assert len(writer._batch.messages) <= writer.max_batch_messages
        server = LocalClickHouse(tmp_path / "ch", tcp_port=server.tcp_port, http_port=server.http_port).start()
        _wait(lambda: _count(store) >= n, 300, f"{n:,} events after the restart")
        time.sleep(1.0)
    _assert_exact_set(store, "c", n)
    store.close()
    server.stop()


@pytest.mark.timeout(600)
def test_kafka_killed_and_restarted_mid_stream(own_kafka, server_store, unique_name) -> None:  # type: ignore[no-untyped-def]
    n = 200_000
    bus = KafkaBus(own_kafka.bootstrap, Topics(unique_name), request_timeout_ms=10000)
    bus.ensure_topics(partitions=3)
    _produce(bus, "b", 0, n // 2)
    writer = Writer(KafkaBus(own_kafka.bootstrap, Topics(unique_name)), server_store, group=unique_name,
                    max_batch_messages=5, linger_s=0.2)
    with contextlib.closing(bus), _running(writer):
        _wait(lambda: _count(server_store) > 20_000, 120, "the first events stored")
        own_kafka.kill()
        time.sleep(3.0)
        own_kafka.start()
        _produce(bus, "b", n // 2, n)
        _wait(lambda: _count(server_store) >= n, 300, f"{n:,} events after the broker restart")
        time.sleep(1.0)
    print(f"writer after the broker restart: {writer.stats.as_dict()}")
    _assert_exact_set(server_store, "b", n)


@pytest.mark.timeout(300)
def test_sensor_spools_while_the_broker_is_down_and_drains_in_order(own_kafka, unique_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    topics = Topics(unique_name)
    admin_bus = KafkaBus(own_kafka.bootstrap, topics)
    admin_bus.ensure_topics(partitions=1)  # one partition: the order on the topic is the order sent
    admin_bus.close()
    bus = KafkaBus(own_kafka.bootstrap, topics, request_timeout_ms=5000, max_block_ms=2000)
    sink = BusSink(bus, batch_events=500, spool=DiskSpool(tmp_path / "spool"), retry_s=0.5, flush_timeout_s=3)

    def emit(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            sink.emit({"ts": T0 + i, "event_id": f"s-{i:06d}", "sensor": "spool-test", "source_type": "test",
                       "event_category": "network_connection", "src_port": i % 65536})

    clock = time.monotonic()

    def lap(what: str) -> None:
        print(f"spool test: {what} at {time.monotonic() - clock:.1f}s")

    emit(0, 5_000)
    sink.flush()
    assert sink.spool.empty()
    own_kafka.kill()
    emit(5_000, 20_000)
    sink.flush()  # must not raise: the broker is down, the events go to disk
    emit(20_000, 30_000)
    sink.flush()
    assert not sink.spool.empty()
    lap("spooled while down")

    tiny = BusSink(KafkaBus(own_kafka.bootstrap, Topics(unique_name + "x"), request_timeout_ms=3000,
                            max_block_ms=1000), spool=DiskSpool(tmp_path / "tiny", max_bytes=64 * 1024), retry_s=60)
    for i in range(5_000):
        tiny.emit({"ts": T0, "event_id": f"x-{i}", "sensor": "s", "source_type": "t", "event_category": "dns"})
    tiny.flush()  # the spool is full: drops are counted, nothing raises
    assert tiny.spool.dropped > 0

    lap("tiny spool full")
    own_kafka.start()
    lap("broker back")
    emit(30_000, 40_000)
    _wait(lambda: sink.drain(force=True) >= 0 and sink.spool.empty(), 120, "the spool to drain")
    sink.flush()
    bus.close()
    lap("drained")

    consumer = KafkaConsumer(topics.events, bootstrap_servers=own_kafka.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    seen: list[int] = []
    for record in consumer:
        seen.extend(int(orjson.loads(line)["event_id"][2:]) for line in record.value.split(b"\n"))
    consumer.close()
    first = list(dict.fromkeys(seen))  # order of first arrival
    assert first == list(range(40_000)), "every event, in the order sent"
    print(f"spool test: {len(seen) - len(first)} re-sent duplicate(s) (the writer drops them by event_id)")
