"""`ganzhi ingest` -> Kafka, `ganzhi writer` process -> ClickHouse server, `ganzhi query` back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson

from deploy.local.process import free_port
from tests.conftest import SAMPLE


def test_cli_against_kafka_and_clickhouse(kafka_bootstrap, clickhouse_server, unique_name, tmp_path) -> None:
    env = {**os.environ, "GANZHI_KAFKA": kafka_bootstrap, "GANZHI_CLICKHOUSE": f"{clickhouse_server}/{unique_name}",
           "GANZHI_TOPIC_PREFIX": unique_name, "GANZHI_HOME": str(tmp_path), "COLUMNS": "200"}
    cli = [sys.executable, "-m", "pipeline.cli"]
    ingest = subprocess.run([*cli, "ingest", str(SAMPLE)], env=env, capture_output=True, text=True, timeout=120)
    assert ingest.returncode == 0, ingest.stderr
    assert "published to Kafka" in ingest.stdout

    port = free_port()
    samples = SAMPLE.parent
    writer = subprocess.Popen([*cli, "--inventory", str(samples / "inventory.yaml"), "--ioc", str(samples / "iocs.csv"),
                               "writer", "--group", unique_name, "--metrics-port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def count() -> int:
        out = subprocess.run([*cli, "query", "--json", "SELECT count() AS n FROM events"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return int(orjson.loads(out.stdout)["n"])

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and count() < 400:
        time.sleep(0.5)
    time.sleep(5.5)  # one lag refresh of the writer (every 5 s)
    status = subprocess.run([*cli, "pipeline", "status", "--group", unique_name, "--json", "--metrics",
                             f"http://127.0.0.1:{port}/metrics"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    report = orjson.loads(status.stdout)
    assert report["store"]["events"] == 400 and report["store"]["dead_letters"] == 1
    events_lag = [r for r in report["lag"] if r["topic"] == f"{unique_name}.events"]
    assert len(events_lag) == 6 and sum(r["lag"] for r in events_lag) == 0 and sum(r["end"] for r in events_lag) > 0
    metrics = report["writers"][f"http://127.0.0.1:{port}/metrics"]
    assert metrics["ganzhi_writer_events_written_total"] == 400
    assert metrics["ganzhi_enrich_hits_total{source=ioc}"] == 40  # the SSH burst from the listed address
    assert metrics["ganzhi_writer_stage_seconds_total{stage=insert}"] > 0
    assert "ganzhi_writer_insert_seconds_count" in metrics and "ganzhi_writer_consumer_lag{partition=0,topic=" \
        f"{unique_name}.events}}" in metrics
    writer.send_signal(signal.SIGTERM)  # graceful: flush and commit, then exit 0
    stdout, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0, stderr
    assert "writer stopped" in stdout
    assert count() == 400
    recorded = subprocess.run([*cli, "query", "--json", "SELECT max(events_written) AS n, max(batches) AS b, "
                               "count() AS rows FROM writer_stats"],
                              env=env, capture_output=True, text=True, timeout=60)
    stats = orjson.loads(recorded.stdout)
    assert stats["n"] == 400 and stats["b"] >= 1 and stats["rows"] >= 2  # at start, every 15 s, at the end
    info = subprocess.run([*cli, "info"], env=env, capture_output=True, text=True, timeout=60)
    assert "ClickHouse server 26." in info.stdout and "Kafka 4.1" in info.stdout
