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


def test_a_running_writer_follows_a_rule_set_activation(kafka_bootstrap, clickhouse_server, unique_name,
                                                        tmp_path) -> None:
    """`ganzhi writer` without --rules runs the active version; `ganzhi rules activate` switches it, no restart."""
    from pipeline.detect.compile import compile_sources, rule_files
    from pipeline.detect.live import save_ruleset
    from pipeline.store.server import ServerStore
    from rules import PACK

    url = f"{clickhouse_server}/{unique_name}"
    env = {**os.environ, "GANZHI_KAFKA": kafka_bootstrap, "GANZHI_CLICKHOUSE": url, "GANZHI_TOPIC_PREFIX": unique_name,
           "GANZHI_HOME": str(tmp_path), "GANZHI_DETECT_REFRESH_S": "1", "GANZHI_LOG": "INFO", "COLUMNS": "200"}
    cli = [sys.executable, "-m", "pipeline.cli"]
    rule_id = "dddddddd-0000-0000-0000-000000000004"
    custom = (f"title: Lookup of the activation canary\nid: {rule_id}\nstatus: test\nlogsource: {{category: dns}}\n"
              "detection:\n  sel:\n    query: canary.activation.example.org\n  condition: sel\nlevel: high\n")
    files = {str(p.relative_to(PACK)): p.read_text() for p in rule_files([PACK])}
    ruleset = compile_sources(files | {"custom/canary.yml": custom})
    assert not ruleset.errors, ruleset.errors
    store = ServerStore(url)
    store.ensure_schema()
    save_ruleset(store, ruleset)

    def ingest(n: int) -> None:
        path = tmp_path / f"canary-{n}.jsonl"
        path.write_bytes(orjson.dumps({"ts": 1_714_550_400_000 + n * 1000, "source_type": "zeek_dns",
                                       "event_category": "dns", "sensor": "it", "src_ip": "10.9.9.9",
                                       "dns_query": "canary.activation.example.org", "event_id": f"canary-{n}"}))
        done = subprocess.run([*cli, "ingest", str(path)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    def canary_hits() -> list[str]:
        return [r[0] for r in store.query("SELECT event_id FROM alert_hits WHERE rule_id = {r:String} ORDER BY 1",
                                          {"r": rule_id}).rows]

    log = tmp_path / "writer.log"
    with open(log, "wb") as out:
        writer = subprocess.Popen([*cli, "writer", "--group", unique_name], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        ingest(0)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not store.query("SELECT count() FROM events").scalar():
            time.sleep(0.5)
        assert "(follows activations)" in log.read_text()
        assert canary_hits() == [], "the pack alone does not know the canary"

        done = subprocess.run([*cli, "rules", "activate", ruleset.version, "--reason", "canary"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        n = 1
        deadline = time.monotonic() + 180
        while f"switched to rule set {ruleset.version}" not in log.read_text():  # batches drive the switch
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            ingest(n)
            n += 1
            time.sleep(2)
        ingest(1000)
        deadline = time.monotonic() + 60
        while "canary-1000" not in canary_hits():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert "canary-0" not in canary_hits(), "only events after the switch met the new rule"
        versions = {r[0] for r in store.query("SELECT DISTINCT ruleset_version FROM alert_hits WHERE rule_id = "
                                              "{r:String}", {"r": rule_id}).rows}
        assert versions == {ruleset.version}
    finally:
        writer.send_signal(signal.SIGTERM)
        writer.wait(60)
        store.close()
