"""The responders' API on the real ClickHouse server: the unit suite's security properties re-run against
the server engine, the incident correlator fed from a real Kafka alerts topic, and `ganzhi serve` as a process
with accounts made by the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import orjson
import pytest

from deploy.local.process import free_port
from pipeline.incidents.model import load_incidents
from tests.api_support import seeded_app
from tests.unit import test_api as suite


@pytest.fixture
def api(server_store, tmp_path):  # type: ignore[no-untyped-def]
    seeded = seeded_app(server_store, tmp_path)
    yield seeded
    seeded.close()


def test_route_role_policy_on_the_server(api) -> None:  # type: ignore[no-untyped-def]
    suite.test_every_route_has_a_policy_and_it_is_enforced(api)


def test_department_isolation_on_the_server(api) -> None:  # type: ignore[no-untyped-def]
    suite.test_department_isolation_on_every_list_search_and_export_route(api)


def test_masking_on_the_server(api) -> None:  # type: ignore[no-untyped-def]
    suite.test_fields_above_clearance_are_masked(api)


def test_injection_attempts_on_the_server(api) -> None:  # type: ignore[no-untyped-def]
    suite.test_injection_attempts_on_every_filter_are_harmless(api)


def test_audit_tamper_detection_on_the_server(api) -> None:  # type: ignore[no-untyped-def]
    suite.test_audit_verify_detects_edited_deleted_and_truncated_records(api)


def test_lifecycle_on_the_server(api) -> None:  # type: ignore[no-untyped-def]
    suite.test_incident_lifecycle_through_the_api_is_audited(api)


def test_correlator_follows_the_kafka_alerts_topic(kafka_bootstrap, clickhouse_server, unique_name, server_store,
                                                   tmp_path) -> None:
    from pipeline.bus.base import Topics
    from pipeline.bus.kafka import KafkaBus

    env = {**os.environ, "GANZHI_KAFKA": kafka_bootstrap, "GANZHI_CLICKHOUSE": f"{clickhouse_server}/{unique_name}",
           "GANZHI_TOPIC_PREFIX": unique_name, "GANZHI_HOME": str(tmp_path)}
    bus = KafkaBus(kafka_bootstrap, Topics(unique_name))
    bus.ensure_topics(partitions=2)
    t0 = int(time.time() * 1000) - 600_000
    for n in range(6):  # two entities, three alerts each, minutes apart: two incidents
        entity = f"src_ip=10.10.1.{n % 2}"
        bus.publish(bus.topics.alerts, orjson.dumps({
            "alert_id": f"{n:032x}", "rule_id": "r", "title": "t", "level": "high", "entity": entity,
            "first_seen": t0 + n * 60_000, "last_seen": t0 + n * 60_000, "event_ids": [],
            "src_org_unit": "民政局"}))
    bus.publish(bus.topics.alerts, b"not json")  # dead-lettered, not a crash
    bus.flush()
    follower = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "incidents", "follow", "--group", unique_name],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            incidents = load_incidents(server_store, "1", {})
            if sum(i.alert_count for i in incidents) >= 6:
                break
            time.sleep(0.5)
        assert sorted((i.group_key, i.alert_count) for i in incidents) == [
            ("src_ip=10.10.1.0", 3), ("src_ip=10.10.1.1", 3)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not server_store.query(
                "SELECT count() FROM deadletter WHERE stage = 'incidents.decode'").scalar():
            time.sleep(0.5)
        assert server_store.query("SELECT count() FROM deadletter WHERE stage = 'incidents.decode'").scalar() == 1
    finally:
        follower.send_signal(signal.SIGTERM)
        _, errors = follower.communicate(timeout=60)
        bus.close()
    assert follower.returncode == 0, errors


def test_ganzhi_serve_with_cli_accounts(clickhouse_server, unique_name, server_store, tmp_path) -> None:
    env = {**os.environ, "GANZHI_CLICKHOUSE": f"{clickhouse_server}/{unique_name}", "GANZHI_HOME": str(tmp_path)}
    cli = [sys.executable, "-m", "pipeline.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done

    run("user", "add", "root", "--role", "admin")
    token = run("token", "create", "root", "--days", "1").stdout.strip()
    port = free_port()
    server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/api/v1/users", timeout=10).status_code == 401
        users = httpx.get(f"{base}/api/v1/users", headers=headers, timeout=10)
        assert users.status_code == 200 and users.json()[0]["name"] == "root"
        made = httpx.post(f"{base}/api/v1/users", headers=headers, json={"name": "ann", "role": "auditor"}, timeout=10)
        assert made.status_code == 201
        assert "server" not in {k.lower() for k in users.headers}
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    verify = run("audit", "verify")
    assert "audit log intact" in verify.stdout
    records = server_store.query("SELECT actor, action FROM audit_log ORDER BY seq").rows
    assert [a for _, a in records] == ["user add", "token create", "POST /api/v1/users"]
    assert records[-1][0] == "root"
