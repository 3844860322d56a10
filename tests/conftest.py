"""Shared fixtures. Integration tests get a real Kafka broker and a real ClickHouse server:
GANZHI_KAFKA / GANZHI_CLICKHOUSE if set, else the ones deploy/local starts on free ports for the session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.schema import event_id, normalize

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "samples" / "extranet-sample.jsonl"
INVENTORY = SAMPLE.parent / "inventory.yaml"


def _say(config: pytest.Config, line: str) -> None:
    """Print to the test log even while output is captured (which engines ran is part of the record)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


@pytest.fixture(scope="session")
def clickhouse_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL clickhouse://host:port of a running ClickHouse server (without database)."""
    configured = os.environ.get("GANZHI_CLICKHOUSE")
    if configured:
        base = configured.rsplit("/", 1)[0] if configured.count("/") > 2 else configured
        _say(request.config, f"ClickHouse: using configured server {base}")
        yield base
        return
    from deploy.local.clickhouse import LocalClickHouse

    server = LocalClickHouse(tmp_path_factory.mktemp("clickhouse")).start()
    _say(request.config, f"ClickHouse: started local server {server.version()} (chDB) on native port {server.tcp_port}")
    try:
        yield f"clickhouse://127.0.0.1:{server.tcp_port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("GANZHI_KAFKA")
    if configured:
        _say(request.config, f"Kafka: using configured broker {configured}")
        yield configured
        return
    from deploy.local.kafka import LocalKafka

    broker = LocalKafka(tmp_path_factory.mktemp("kafka")).start()
    from pipeline.bus.kafka import KafkaBus

    described = KafkaBus(broker.bootstrap).describe()
    _say(request.config, f"Kafka: started Apache Kafka {broker.version} (KRaft) — {described}")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def unique_name() -> str:
    """A fresh identifier for a database, topic prefix or consumer group."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def server_store(clickhouse_server: str, unique_name: str):  # type: ignore[no-untyped-def]
    from pipeline.store.server import ServerStore

    store = ServerStore(f"{clickhouse_server}/{unique_name}")
    store.ensure_schema()
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {unique_name}")
    store.close()


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """chDB opens one data directory per process: the session shares one, tests isolate by database."""
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session", autouse=True)
def _close_chdb_last() -> Iterator[None]:
    """Close chDB before the interpreter exits: its own teardown at exit crashed the test process (exit 139
    after all tests passed) once many threads had used a connection (the API tests)."""
    yield
    from pipeline.store.embedded import close_all

    close_all()


@pytest.fixture
def embedded_store(chdb_path: Path, unique_name: str):  # type: ignore[no-untyped-def]
    from pipeline.store.embedded import EmbeddedStore

    store = EmbeddedStore(chdb_path, database=unique_name)
    store.ensure_schema()
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {unique_name}")


def make_events(n: int, start_ms: int = 1_714_550_400_000, seed: str = "e", **overrides: object) -> list[dict]:
    """n valid canonical events with distinct, deterministic ids."""
    out = []
    for i in range(n):
        record = {
            "ts": start_ms + i * 37,
            "event_id": event_id("test", f"{seed}-{i}", i),
            "sensor": "test-sensor",
            "source_type": "test",
            "event_category": ("dns", "network_connection", "http", "auth")[i % 4],
            "src_ip": f"10.{i % 3}.{(i // 250) % 250}.{i % 250}",
            "dst_ip": "2001:db8::53" if i % 5 == 0 else "192.0.2.53",
            "src_port": 1024 + i % 60000,
            "dst_port": 53,
            "protocol": "udp",
            "dns_query": f"host{i % 97}.example.org",
            "bytes_out": i,
            "user_name": f"user{i % 11}",
            "vendor_field": f"v{i % 7}",
            **overrides,
        }
        out.append(normalize(record))
    return out
