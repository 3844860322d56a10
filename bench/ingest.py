"""Ingest throughput: events/s from publish to stored, embedded and Kafka + ClickHouse server.

Each mode is measured against a baseline run in the same process on the same events:
- embedded: columnar insert through Arrow (the fast path) vs ClickHouse's row-wise `FORMAT JSONEachRow`;
- servers: batched Kafka messages (JSON lines) vs one event per Kafka message — the naive design.

Usage: python bench/ingest.py [--events 200000] [--baseline-events 20000] [--record]
Servers: GANZHI_KAFKA / GANZHI_CLICKHOUSE if set, else deploy/local starts them in a temp directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import make_events, peak_rss_mib, record_results
from pipeline.bus.base import Topics
from pipeline.bus.kafka import KafkaBus
from pipeline.bus.memory import MemoryBus
from pipeline.codec import EVENT_HEADERS
from pipeline.ingest import publish_events
from pipeline.schema import dumps
from pipeline.store.embedded import EmbeddedStore
from pipeline.store.server import ServerStore
from pipeline.writer import Writer


def publish(bus, events: list[dict], one_per_message: bool = False) -> None:  # type: ignore[no-untyped-def]
    if one_per_message:
        for e in events:
            bus.publish(bus.topics.events, dumps(e), headers=EVENT_HEADERS)
    else:
        publish_events(bus, events)
    bus.flush()


def run_writer_until(writer: Writer, store, expected: int, timeout_s: float = 600) -> None:  # type: ignore[no-untyped-def]
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and writer.stats.events_written < expected:
        time.sleep(0.05)
    stop.set()
    thread.join()
    got = store.query("SELECT count() FROM events").scalar()
    if got != expected:
        raise SystemExit(f"benchmark invalid: {got} rows stored, {expected} expected")


def bench_embedded(events: list[dict], baseline_n: int, workdir: Path) -> dict[str, float]:
    store = EmbeddedStore(workdir / "chdb", database="bench_embedded")
    store.ensure_schema()
    bus = MemoryBus()
    started = time.perf_counter()
    publish(bus, events)
    published = time.perf_counter()
    writer = Writer(bus, store, max_batch_messages=400)
    writer.run(threading.Event(), idle_exit_s=0.05)
    done = time.perf_counter()
    assert store.query("SELECT count() FROM events").scalar() == len(events)
    fast = len(events) / (done - started)

    # the insert step alone, same events, same 20 k blocks: columnar Arrow vs row-wise JSON text (baseline)
    subset = events[:baseline_n]
    store.execute("TRUNCATE TABLE events")
    t0 = time.perf_counter()
    for i in range(0, len(subset), 20_000):
        store.insert_events(subset[i : i + 20_000])
    columnar = baseline_n / (time.perf_counter() - t0)
    store.execute("TRUNCATE TABLE events")
    lines = [dumps(e) for e in subset]
    t0 = time.perf_counter()
    for i in range(0, len(lines), 20_000):
        chunk = b"\n".join(lines[i : i + 20_000]).decode()
        store.execute(f"INSERT INTO events SETTINGS optimize_on_insert = 0 FORMAT JSONEachRow {chunk}")
    baseline = baseline_n / (time.perf_counter() - t0)
    return {"events_per_s": fast, "publish_s": published - started, "write_s": done - published,
            "insert_s": writer.stats.insert_seconds, "columnar_insert_per_s": columnar,
            "baseline_insert_per_s": baseline}


def bench_servers(events: list[dict], baseline_n: int, kafka: str, clickhouse: str) -> dict[str, float]:
    results: dict[str, float] = {}
    for label, batch, n in (("batched", False, len(events)), ("baseline", True, baseline_n)):
        name = f"bench{uuid.uuid4().hex[:8]}"
        store = ServerStore(f"{clickhouse}/{name}")
        store.ensure_schema()
        bus = KafkaBus(kafka, Topics(name))
        bus.ensure_topics(partitions=3)
        started = time.perf_counter()
        publish(bus, events[:n], one_per_message=batch)
        published = time.perf_counter()
        writer = Writer(bus, store, group=name, max_batch_messages=400 if not batch else 20_000)
        run_writer_until(writer, store, n)
        done = time.perf_counter()
        results[f"{label}_events_per_s"] = n / (done - started)
        results[f"{label}_publish_s"] = published - started
        results[f"{label}_write_s"] = done - published
        store.execute(f"DROP DATABASE {name}")
        store.close()
        bus.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--baseline-events", type=int, default=20_000)
    parser.add_argument("--record", action="store_true", help="write the result into bench/RESULTS.md")
    args = parser.parse_args()

    events = make_events(args.events)
    lines = [f"events: {args.events:,} (baseline subsets: {args.baseline_events:,}), "
             f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}"]
    with tempfile.TemporaryDirectory() as tmp:
        emb = bench_embedded(events, args.baseline_events, Path(tmp))
        lines.append(f"embedded (in-process bus -> chDB): {emb['events_per_s']:,.0f} events/s end to end "
                     f"(publish {emb['publish_s']:.2f}s, write {emb['write_s']:.2f}s of which insert "
                     f"{emb['insert_s']:.2f}s)")
        lines.append(f"  insert step alone: columnar Arrow {emb['columnar_insert_per_s']:,.0f} events/s vs baseline "
                     f"row-wise JSONEachRow {emb['baseline_insert_per_s']:,.0f} events/s "
                     f"-> {emb['columnar_insert_per_s'] / emb['baseline_insert_per_s']:.1f}x")

        kafka, clickhouse, servers = os.environ.get("GANZHI_KAFKA"), os.environ.get("GANZHI_CLICKHOUSE"), []
        if not (kafka and clickhouse):
            from deploy.local.clickhouse import LocalClickHouse
            from deploy.local.kafka import LocalKafka

            ch = LocalClickHouse(Path(tmp) / "ch").start()
            kb = LocalKafka(Path(tmp) / "kafka").start()
            servers = [kb, ch]
            kafka, clickhouse = kb.bootstrap, f"clickhouse://127.0.0.1:{ch.tcp_port}"
        else:
            clickhouse = clickhouse.rsplit("/", 1)[0]
        try:
            srv = bench_servers(events, args.baseline_events, kafka, clickhouse)
        finally:
            for server in servers:
                server.stop()
        lines.append(f"servers (Kafka 4.1 KRaft -> writer -> ClickHouse 26.9 native): "
                     f"{srv['batched_events_per_s']:,.0f} events/s end to end "
                     f"(publish {srv['batched_publish_s']:.2f}s, write {srv['batched_write_s']:.2f}s)")
        lines.append(f"  baseline one event per Kafka message: {srv['baseline_events_per_s']:,.0f} events/s "
                     f"-> batched messages are {srv['batched_events_per_s'] / srv['baseline_events_per_s']:.1f}x")
    lines.append(f"peak RSS of the benchmark process: {peak_rss_mib():.0f} MiB")
    print("\n".join(lines))
    if args.record:
        record_results("ingest", "python bench/ingest.py " + " ".join(sys.argv[1:]), lines)


if __name__ == "__main__":
    main()
