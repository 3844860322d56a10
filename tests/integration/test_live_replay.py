"""Live detection == replay, on a real Kafka broker and a real ClickHouse server.

Events (the extranet sample plus an SSH brute force and web attacks) flow through Kafka; the writer
stores them in small batches and runs Ganzhi's rule pack on each. Then `replay` runs the same rule set
over the time range. The alert ids — and every alert's events — must be the same, alerts must have been
published to the alerts topic, and a suppression must hide what it scopes and nothing else.
"""

from __future__ import annotations

import time

import orjson
import pytest
from kafka import KafkaConsumer

from pipeline.bus.kafka import KafkaBus
from pipeline.detect import suppress
from pipeline.detect.compile import compile_rules
from pipeline.detect.engine import Detector, Selector
from pipeline.detect.live import LiveDetection
from pipeline.detect.replay import replay
from pipeline.ingest import IngestReport, publish_events, read_events
from pipeline.schema import event_id, normalize
from pipeline.writer import Writer
from rules import PACK
from tests.conftest import SAMPLE
from tests.integration.test_kafka_clickhouse import _write_until

pytestmark = pytest.mark.integration
T0 = 1_714_550_400_000


def attack_events() -> list[dict]:
    out = []
    for i in range(15):  # brute force from one source, then a success
        out.append({"ts": T0 + i * 5000, "source_type": "sshd", "event_category": "auth", "action": "failure",
                    "src_ip": "203.0.113.50", "user_name": "root"})
    out.append({"ts": T0 + 80_000, "source_type": "sshd", "event_category": "auth", "action": "success",
                "src_ip": "203.0.113.50", "user_name": "root"})
    for i, uri in enumerate(["/a.php?id=1%20union%20select%201,2", "/x?f=../../etc/passwd", "/s?q=<script>x"]):
        out.append({"ts": T0 + 90_000 + i, "source_type": "nginx_access", "event_category": "http",
                    "src_ip": "198.51.100.9", "http_method": "GET", "http_uri": uri, "http_status": 200})
    return [normalize({**e, "sensor": "it", "event_id": event_id("it", orjson.dumps(e), n)})
            for n, e in enumerate(out)]


def test_live_alerts_equal_replay_alerts(kafka_bus: KafkaBus, server_store, kafka_bootstrap: str) -> None:
    events = list(read_events(SAMPLE, IngestReport(), on_dead=lambda record: None)) + attack_events()
    ruleset = compile_rules([PACK])
    # a suppression on the web attacker: stored but hidden from the alerts topic
    hidden = suppress.new_suppression("", "src_ip", "198.51.100.9", "it-test", "authorized pentest", 1,
                                      now_ms=int(time.time() * 1000) - 1000)
    suppress.save(server_store, hidden)

    live = LiveDetection(server_store, kafka_bus, ruleset)
    publish_events(kafka_bus, events, max_bytes=8 * 1024)  # many small messages -> many live batches
    kafka_bus.flush()
    writer = Writer(kafka_bus, server_store, group="it-live", max_batch_messages=5, on_batch=live)
    _write_until(writer, server_store, len({e["event_id"] for e in events}), timeout_s=60)
    assert live.stats.batches > 3

    stored = server_store.query("SELECT alert_id, arraySort(event_ids), suppression_id FROM alerts "
                                "ORDER BY alert_id").rows
    live_alerts = {r[0]: r[1] for r in stored}
    assert live_alerts, (live.stats, server_store.query("SELECT count() FROM alert_hits").rows)

    lo = min(e["ts"] for e in events)
    hi = max(e["ts"] for e in events) + 1
    report = replay(server_store, ruleset, Selector(lo, hi))
    replay_alerts = {a.alert_id: sorted(a.event_ids) for a in report.alerts}
    assert replay_alerts == live_alerts

    titles = {r.title for r in report.results if r.hit_count}
    assert {"SSH password brute force", "SSH brute force followed by a successful login",
            "SQL injection attempt in a web request", "Path traversal attempt in a web request"} <= titles

    suppressed = {r[0] for r in stored if r[2] == hidden.suppression_id}
    assert suppressed and suppressed == {a.alert_id for a in report.alerts if a.context["src_ip"] == "198.51.100.9"}

    consumer = KafkaConsumer(kafka_bus.topics.alerts, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    published = {orjson.loads(m.value)["alert_id"] for m in consumer}
    consumer.close()
    assert published == set(live_alerts) - suppressed

    # the same replay again is byte-identical (auditors' reproducibility)
    assert replay(server_store, ruleset, Selector(lo, hi)).to_json() == report.to_json()


def test_side_by_side_live_batches_find_what_one_at_a_time_finds(server_store) -> None:
    """On a server a live batch's queries run side by side and start with the rules the previous batch needed
    (before the prefilter answers). Batches whose candidate rules differ from the batch before (web attacks,
    then none, then SSH and the sample) must give exactly the hits of the same detector run one query at a time."""
    ruleset = compile_rules([PACK])
    side_by_side, one_at_a_time = Detector(server_store, ruleset), Detector(server_store, ruleset)
    assert side_by_side.parallel > 1
    one_at_a_time.parallel = 1
    attacks = attack_events()
    web = [e for e in attacks if e["source_type"] == "nginx_access"]
    sample = list(read_events(SAMPLE, IngestReport(), on_dead=lambda record: None))
    quiet = [normalize({**e, "event_id": event_id("quiet", e["event_id"], 0), "http_uri": "/index.html"}) for e in web]
    batches = [web, quiet, [e for e in attacks if e["source_type"] == "sshd"] + sample, web + quiet]
    for n, batch in enumerate(batches):
        if n < 3:
            server_store.insert_events(batch)
        expected = sorted((h.rule_id, h.event_id, h.alert_id) for h in one_at_a_time.run_live(Selector.batch(batch)))
        # side by side also searches the batch in memory for the prefilter's literals (the native module)
        got = sorted((h.rule_id, h.event_id, h.alert_id) for h in side_by_side.run_live(Selector.batch(batch), batch))
        assert got == expected, f"batch {n}"
        assert expected or n == 1, f"batch {n} should have hits"
        guessed = {r.rule_id for _, rules in side_by_side._guess for r in rules}
        assert guessed >= {h[0] for h in expected if h[0] in {r.rule_id for r in ruleset.rules}}
