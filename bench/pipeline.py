"""Pipeline throughput: events through (a) embedded mode and (b) Kafka -> writer process(es) -> ClickHouse.

Prints events/s, produce-to-queryable latency p50/p99 (ClickHouse's `ingested_at` minus the event's
produce time), writer peak RSS and the share of writer time per stage, so the bottleneck is visible.
Ratios against baselines measured in the same run:
- enrichment with an inventory and 1 M indicators vs no enrichment (goal: at most 2x slower);
- two writer processes in one consumer group vs one (scaling with partitions).

Usage: python bench/pipeline.py [--events 500000] [--indicators 1000000] [--record]
Servers: GANZHI_KAFKA / GANZHI_CLICKHOUSE if set, else deploy/local starts them in a temp directory.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import make_events, peak_rss_mib, record_results
from deploy.local.process import free_port
from pipeline.bus.base import Topics
from pipeline.bus.kafka import KafkaBus
from pipeline.bus.memory import MemoryBus
from pipeline.codec import EVENT_HEADERS, encode_events
from pipeline.enrich import Enricher
from pipeline.enrich.ioc import load_paths
from pipeline.store.embedded import EmbeddedStore
from pipeline.store.server import ServerStore
from pipeline.writer import Writer

REPO = Path(__file__).resolve().parents[1]
STAGES = ("decode", "enrich", "insert", "detect", "commit")


def make_sources(workdir: Path, indicators: int) -> tuple[Path, Path]:
    """An inventory of 5,000 nested blocks and an indicator feed of `indicators` IPs, CIDRs, domains, hashes."""
    rng = random.Random(11)
    inventory = workdir / "inventory.csv"
    with open(inventory, "w", encoding="utf-8") as fh:
        fh.write("cidr,department,street,committee,asset,criticality,zone\n")
        for d in range(40):
            fh.write(f"10.{d}.0.0/16,部门{d},,,,2,internal\n")
            for s in range(0, 256, 4):
                fh.write(f"10.{d}.{s}.0/22,,街道{d}-{s},,,,\n")
                fh.write(f"10.{d}.{s}.{rng.randrange(1, 255)},,,居委会{d}-{s},资产{d}-{s},4,\n")
    feed = workdir / "indicators.csv"
    with open(feed, "w") as fh:
        fh.write("type,value,source,confidence\n")
        for i in range(indicators):
            kind = i % 10
            if kind < 5:
                fh.write(f"ip,{(i * 2654435761) % (1 << 32) >> 24 | 128}.{(i >> 16) & 255}.{(i >> 8) & 255}."
                         f"{i & 255},feed,60\n")
            elif kind < 6:
                fh.write(f"cidr,{100 + i % 100}.{(i >> 8) & 255}.{i & 255}.0/24,feed,40\n")
            elif kind < 9:
                fh.write(f"domain,d{i}.bad{i % 997}.example,feed,70\n")
            else:
                fh.write(f"sha256,{i:064x},feed,90\n")
    return inventory, feed


def messages(n: int) -> list[bytes]:
    return list(encode_events(make_events(n, seed=3)))


def shares(stats: dict[str, float]) -> str:
    total = sum(stats.get(f"{s}_seconds", 0.0) for s in STAGES) or 1.0
    return ", ".join(f"{s} {stats.get(f'{s}_seconds', 0.0) / total:.0%}" for s in STAGES
                     if stats.get(f"{s}_seconds", 0.0) > 0)


def latency(store) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """p50/p99 seconds from the event's produce time (its ts) to when ClickHouse had it (ingested_at)."""
    row = store.query("SELECT quantiles(0.5, 0.99)(dateDiff('millisecond', ts, ingested_at)) FROM events").rows[0]
    return row[0][0] / 1000, row[0][1] / 1000


# -- (a) embedded ------------------------------------------------------------------------------


def run_embedded(msgs: list[bytes], n: int, workdir: Path, enricher: Enricher | None) -> dict[str, float]:
    store = EmbeddedStore(workdir / "chdb", database="b" + uuid.uuid4().hex[:8])
    store.ensure_schema()
    bus = MemoryBus(Topics("bench"))
    writer = Writer(bus, store, max_batch_messages=200, enricher=enricher)
    started = time.perf_counter()
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop, 0.3))
    thread.start()
    for value in msgs:
        bus.publish(bus.topics.events, value, headers=EVENT_HEADERS)
    thread.join()
    elapsed = time.perf_counter() - started - 0.3
    got = store.query("SELECT count() FROM events").scalar()
    if got != n:
        raise SystemExit(f"benchmark invalid: {got} rows stored, {n} expected")
    store.execute(f"DROP DATABASE {store.database}")
    return {"rate": n / elapsed, **writer.stats.as_dict()}


# -- (b) servers -------------------------------------------------------------------------------


def start_servers(workdir: Path) -> tuple[str, str, list]:  # type: ignore[type-arg]
    kafka, clickhouse = os.environ.get("GANZHI_KAFKA"), os.environ.get("GANZHI_CLICKHOUSE")
    if kafka and clickhouse:
        return kafka, clickhouse.rsplit("/", 1)[0], []
    from deploy.local.clickhouse import LocalClickHouse
    from deploy.local.kafka import LocalKafka

    ch = LocalClickHouse(workdir / "clickhouse").start()
    broker = LocalKafka(workdir / "kafka").start()
    return broker.bootstrap, f"clickhouse://127.0.0.1:{ch.tcp_port}", [broker, ch]


def _writer(kafka: str, url: str, prefix: str, group: str, port: int, index: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GANZHI_KAFKA": kafka, "GANZHI_CLICKHOUSE": url, "GANZHI_TOPIC_PREFIX": prefix}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "writer", "--group", group, "--no-detect", "--linger", "0.2",
         "--metrics-port", str(port), "--instance-id", f"bench-{index}"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ganzhi_writer_stage_seconds_total{"):
            stage = line.split('stage="', 1)[1].split('"', 1)[0]
            out[f"{stage}_seconds"] = float(line.rsplit(" ", 1)[1])
    return out


def run_servers(kafka: str, base_url: str, msgs: list[bytes], n: int, consumers: int,
                rate: float | None = None) -> dict[str, float]:
    """Backlog mode (rate None): publish everything, then time the writers draining it. Live mode: publish
    at `rate` events/s while the writers run, and measure produce-to-queryable latency."""
    from pipeline.schema import dumps, loads

    name = "b" + uuid.uuid4().hex[:10]
    url = f"{base_url}/{name}"
    store = ServerStore(url)
    store.ensure_schema()
    bus = KafkaBus(kafka, Topics(name))
    bus.ensure_topics(partitions=4)
    if rate is None:
        for value in msgs:
            bus.publish(bus.topics.events, value, headers=EVENT_HEADERS)
        bus.flush()
    ports = [free_port() for _ in range(consumers)]
    procs = [_writer(kafka, url, name, name, port, i) for i, port in enumerate(ports)]
    started = time.perf_counter()
    if rate is not None:  # stamp each message's events with the time it is produced
        per_message = n / len(msgs)
        for i, value in enumerate(msgs):
            now_ms = int(time.time() * 1000)
            events = [loads(line) | {"ts": now_ms} for line in value.split(b"\n")]
            bus.publish(bus.topics.events, b"\n".join(map(dumps, events)), headers=EVENT_HEADERS)
            bus.flush()
            ahead = (i + 1) * per_message / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
    first: tuple[float, int] | None = None  # (time, count) when the first rows were queryable: excludes start-up
    while (count := store.query("SELECT count() FROM events").scalar()) < n:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a writer process exited during the benchmark")
        if first is None and count > 0:
            first = (time.perf_counter(), count)
        time.sleep(0.05)
    if rate is None and first is not None and first[1] < n // 4:
        started, n_timed = first[0], n - first[1]
    else:
        n_timed = n
    elapsed = time.perf_counter() - started
    stage: dict[str, float] = {}
    for port in ports:
        for key, value in _scrape(port).items():
            stage[key] = stage.get(key, 0.0) + value
    rss = max(peak_rss_mib(p.pid) for p in procs)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(60)
    got = store.query("SELECT count() FROM events").scalar()
    if got != n:
        raise SystemExit(f"benchmark invalid: {got} rows stored, {n} expected")
    p50, p99 = latency(store)
    store.execute(f"DROP DATABASE {name}")
    store.close()
    bus.close()
    return {"rate": n_timed / elapsed, "rss": rss, "p50": p50, "p99": p99, **stage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--indicators", type=int, default=1_000_000)
    parser.add_argument("--live-rate", type=int, default=10_000, help="events/s for the latency run")
    parser.add_argument("--record", action="store_true", help="write the output into bench/RESULTS.md")
    args = parser.parse_args()
    n = args.events
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory(prefix="ganzhi-bench-") as tmp:
        workdir = Path(tmp)
        msgs = messages(n)
        say(f"events: {n:,} in {len(msgs):,} messages; Python {sys.version.split()[0]}, {os.cpu_count()} cores")

        inventory, feed = make_sources(workdir, args.indicators)
        clock = time.perf_counter()
        index, report = load_paths([feed])
        say(f"sources: {len(index):,} indicators loaded in {time.perf_counter() - clock:.1f}s "
            f"({dict(report.loaded)}), inventory {inventory.stat().st_size // 1024} KiB")
        del index

        plain = run_embedded(msgs, n, workdir, None)
        say(f"(a) embedded, no enrichment:     {plain['rate']:>10,.0f} events/s  stages: {shares(plain)}")
        enricher = Enricher(inventory, [feed])
        enriched = run_embedded(msgs, n, workdir, enricher)
        say(f"(a) embedded, inventory + {args.indicators / 1e6:g} M IOCs: {enriched['rate']:>7,.0f} events/s  "
            f"stages: {shares(enriched)}; hits: inventory {enricher.stats.inventory_hits:,}, "
            f"ioc {enricher.stats.ioc_hits:,}")
        say(f"    enrichment slow-down: {plain['rate'] / enriched['rate']:.2f}x (goal <= 2x); enrich stage "
            f"{enriched['enrich_seconds'] / n * 1e6:.1f} us/event; bench process peak RSS {peak_rss_mib():,.0f} MiB")
        del enricher

        kafka, base_url, servers = start_servers(workdir)
        try:
            one = run_servers(kafka, base_url, msgs, n, 1)
            say(f"(b) Kafka -> 1 writer -> ClickHouse:  {one['rate']:>10,.0f} events/s  writer peak RSS "
                f"{one['rss']:,.0f} MiB  stages: {shares(one)}")
            two = run_servers(kafka, base_url, msgs, n, 2)
            say(f"(b) Kafka -> 2 writers -> ClickHouse: {two['rate']:>10,.0f} events/s  writer peak RSS "
                f"{two['rss']:,.0f} MiB  stages: {shares(two)}")
            say(f"    scaling 2 writers / 1 writer (4 partitions, {os.cpu_count()} cores shared with the broker "
                f"and ClickHouse): {two['rate'] / one['rate']:.2f}x")
            live_msgs = msgs[: max(1, len(msgs) * min(n, args.live_rate * 20) // n)]  # about 20 s of traffic
            live_n = sum(m.count(b"\n") + 1 for m in live_msgs)
            live = run_servers(kafka, base_url, live_msgs, live_n, 1, rate=args.live_rate)
            say(f"(b) live at {args.live_rate:,} events/s: produce-to-queryable p50 {live['p50']:.2f}s, "
                f"p99 {live['p99']:.2f}s")
        finally:
            for server in servers:
                server.stop()
        say("goals: (a) >= 500,000 events/s, (b) >= 200,000 events/s on this 2-core machine")
    if args.record:
        record_results("pipeline", " ".join(["python bench/pipeline.py", *sys.argv[1:]]), lines)


if __name__ == "__main__":
    main()
