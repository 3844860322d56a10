"""`ganzhi ingest` -> Kafka, `ganzhi writer` process -> ClickHouse server, `ganzhi query` back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson

from tests.conftest import SAMPLE


def test_cli_against_kafka_and_clickhouse(kafka_bootstrap, clickhouse_server, unique_name, tmp_path) -> None:
    env = {**os.environ, "GANZHI_KAFKA": kafka_bootstrap, "GANZHI_CLICKHOUSE": f"{clickhouse_server}/{unique_name}",
           "GANZHI_TOPIC_PREFIX": unique_name, "GANZHI_HOME": str(tmp_path), "COLUMNS": "200"}
    cli = [sys.executable, "-m", "pipeline.cli"]
    ingest = subprocess.run([*cli, "ingest", str(SAMPLE)], env=env, capture_output=True, text=True, timeout=120)
    assert ingest.returncode == 0, ingest.stderr
    assert "published to Kafka" in ingest.stdout

    writer = subprocess.Popen([*cli, "writer", "--group", unique_name], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)

    def count() -> int:
        out = subprocess.run([*cli, "query", "--json", "SELECT count() AS n FROM events"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return int(orjson.loads(out.stdout)["n"])

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and count() < 400:
        time.sleep(0.5)
    writer.send_signal(signal.SIGTERM)  # graceful: flush and commit, then exit 0
    stdout, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0, stderr
    assert "writer stopped" in stdout
    assert count() == 400
    info = subprocess.run([*cli, "info"], env=env, capture_output=True, text=True, timeout=60)
    assert "ClickHouse server 26." in info.stdout and "Kafka 4.1" in info.stdout
