"""Prometheus metrics of a writer process (`ganzhi writer --metrics-port 9464` serves /metrics).

Counters and gauges are read from the writer's and enricher's own stats at scrape time (one source of
truth); the two histograms are observed after each batch. Consumer lag is measured by the writer's
loop (a Kafka consumer is not thread-safe, so the scrape thread never touches it) and cached here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.bus.base import TopicPartition
from pipeline.store.base import Store, StoreError

if TYPE_CHECKING:
    from pipeline.writer import Writer

LAG_REFRESH_S = 5.0
STATS_INTERVAL_S = 15.0
log = logging.getLogger(__name__)
_COUNTERS = (
    ("messages", "Kafka messages consumed"),
    ("events_written", "events inserted into ClickHouse"),
    ("dead_letters", "lines rejected to the dead-letter topic"),
    ("duplicates_dropped", "re-delivered events dropped because already stored"),
    ("batches", "batches inserted and committed"),
    ("store_retries", "store calls retried after ClickHouse was unreachable"),
    ("bus_retries", "bus calls retried after Kafka was unreachable"),
    ("commits_rejected", "commits refused after a group rebalance"),
)
_STAGES = ("decode", "enrich", "insert", "detect", "commit")
_RECORDED = ("messages", "events_written", "dead_letters", "duplicates_dropped", "batches", "store_retries",
             "bus_retries", "insert_seconds", "last_insert_seconds")
_RECORDED_KINDS = {"ts": "ts", "instance": "str", "group": "str", "lag": "u64", "insert_seconds": "f64",
                   "last_insert_seconds": "f64", **{n: "u64" for n in _RECORDED[:7]}}


class WriterMetrics(Collector):
    def __init__(self, writer: Writer):
        self.writer = writer
        self.registry = CollectorRegistry()
        self.batch_events = Histogram("ganzhi_writer_batch_events", "events per inserted batch",
                                      buckets=(10, 100, 1000, 5000, 20000, 50000, 100000, 250000),
                                      registry=self.registry)
        self.insert_seconds = Histogram("ganzhi_writer_insert_seconds", "ClickHouse insert latency per batch",
                                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                        registry=self.registry)
        self.registry.register(self)
        self._lag: dict[TopicPartition, int] = {}
        self._lag_at = 0.0
        self._lock = threading.Lock()

    def observe_batch(self, writer: Writer) -> None:
        """Writer.on_flush hook."""
        self.batch_events.observe(writer.stats.last_batch_events)
        self.insert_seconds.observe(writer.stats.last_insert_seconds)

    def refresh_lag(self, writer: Writer | None = None) -> None:
        """Writer.on_tick hook: re-measure the consumer lag every few seconds."""
        now = time.monotonic()
        if now - self._lag_at >= LAG_REFRESH_S:
            try:
                lag = self.writer.lag()
            except Exception:  # lag is best effort: an outage must not fail the batch
                return
            with self._lock:
                self._lag, self._lag_at = lag, now

    def lag(self) -> dict[TopicPartition, int]:
        with self._lock:
            return dict(self._lag)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.writer.stats
        for name, doc in _COUNTERS:
            yield CounterMetricFamily(f"ganzhi_writer_{name}", doc, value=getattr(stats, name))
        stage = CounterMetricFamily("ganzhi_writer_stage_seconds", "time spent per stage", labels=["stage"])
        for name in _STAGES:
            stage.add_metric([name], getattr(stats, f"{name}_seconds"))
        yield stage
        lag = GaugeMetricFamily("ganzhi_writer_consumer_lag", "messages not yet consumed",
                                labels=["topic", "partition"])
        for (topic, partition), value in sorted(self.lag().items()):
            lag.add_metric([topic, str(partition)], value)
        yield lag
        enricher = self.writer.enricher
        if enricher is not None:
            e = enricher.stats
            yield CounterMetricFamily("ganzhi_enrich_events", "events through enrichment", value=e.events)
            hits = CounterMetricFamily("ganzhi_enrich_hits", "enrichment hits by source", labels=["source"])
            hits.add_metric(["inventory"], e.inventory_hits)
            hits.add_metric(["ioc"], e.ioc_hits)
            hits.add_metric(["geo"], e.geo_hits)
            yield hits
            yield CounterMetricFamily("ganzhi_enrich_reloads", "enrichment sources reloaded", value=e.reloads)
            yield CounterMetricFamily("ganzhi_enrich_reload_errors", "changed sources that failed to load",
                                      value=e.reload_errors)

    def serve(self, port: int, address: str = "127.0.0.1") -> None:
        start_http_server(port, addr=address, registry=self.registry)


class StatsRecorder:
    """Writes the writer's counters and consumer lag to `writer_stats` every `interval_s` (Writer.on_tick hook),
    so Grafana's pipeline-health dashboard reads them from ClickHouse like everything else. Best effort: a
    failed write is skipped, never fails a batch."""

    def __init__(self, writer: Writer, store: Store, instance: str, interval_s: float = STATS_INTERVAL_S):
        self.writer, self.store, self.instance, self.interval_s = writer, store, instance, interval_s
        self._last = 0.0

    def tick(self, writer: Writer | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s and not force:
            return
        self._last = now
        try:
            lag = sum(self.writer.lag().values())
        except Exception:  # lag is best effort (see WriterMetrics.refresh_lag)
            lag = 0
        s = self.writer.stats
        row: dict[str, Any] = {"ts": int(time.time() * 1000), "instance": self.instance, "group": self.writer.group,
                               **{name: getattr(s, name) for name in _RECORDED}, "lag": lag}
        try:
            self.store.insert_columns("writer_stats", {k: [v] for k, v in row.items()}, _RECORDED_KINDS)
        except StoreError as exc:
            log.warning("writer_stats not recorded: %s", exc)
