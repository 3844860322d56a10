"""A live batch held in memory: the group queries say only which rule matched which event, and each hit's time
and context come from the event in memory; the hits must equal those read back from the store."""

from __future__ import annotations

import logging

from pipeline.detect.compile import compile_sources
from pipeline.detect.engine import Detector, Selector
from pipeline.schema import event_id, normalize

T0 = 1_714_550_400_000

RULES = {
    "dns.yml": """
title: DNS to a bad domain
id: 44444444-0000-0000-0000-000000000001
logsource: {category: dns}
detection:
  sel: {query|endswith: .bad.example}
  condition: sel
level: medium
""",
    "auth.yml": """
title: Failed login of admin
id: 44444444-0000-0000-0000-000000000002
logsource: {category: auth}
detection:
  sel: {user_name: admin}
  condition: sel
level: high
""",
}


def _event(i: int, **fields: object) -> dict:  # type: ignore[type-arg]
    record = {"ts": T0 + i * 7, "sensor": "t", **fields}
    return normalize({**record, "event_id": event_id("t", f"{i}{fields}".encode(), 0)})


def _batch() -> list[dict]:  # type: ignore[type-arg]
    addresses = ["10.0.0.9", "::", "2001:db8::1", "::ffff:192.0.2.7", "", "0.0.0.0"]
    events = []
    for i in range(60):
        src = addresses[(i // 6) % len(addresses)]  # each block of 6 holds hits
        if i % 3 == 0:
            events.append(_event(i, source_type="zeek_dns", event_category="dns", src_ip=src, dst_ip="10.9.9.9",
                                 dns_query=f"h{i}.bad.example" if i % 2 else "good.example",
                                 src_org_unit="部门1/街道2" if i % 4 else ""))
        else:
            events.append(_event(i, source_type="sshd", event_category="auth", action="failure", src_ip=src,
                                 user_name="admin" if i % 2 else "alice", host_name=f"srv{i % 5}",
                                 dst_asset="门户网站" if i % 5 == 0 else ""))
    return events


def _key(hits: list) -> list:  # type: ignore[type-arg]
    return sorted((h.rule_id, h.event_id, h.event_ts, h.entity, h.window_start, h.alert_id,
                   sorted(h.context.items())) for h in hits)


def test_hits_from_memory_equal_hits_from_the_store(embedded_store) -> None:  # type: ignore[no-untyped-def]
    batch = _batch()
    embedded_store.insert_events(batch)
    detector = Detector(embedded_store, compile_sources(RULES))
    from_store = detector.run_live(Selector.batch(batch))
    from_memory = detector.run_live(Selector.batch(batch), batch)
    assert len(from_store) == 10 + 20, "5 bad DNS names among 10 DNS events, 20 admin logins among 40"
    assert _key(from_memory) == _key(from_store)
    contexts = {h.context["src_ip"] for h in from_store}
    assert {"", "2001:db8::1", "192.0.2.7", "10.0.0.9", "0.0.0.0"} <= contexts, "'::' reads back as unset"


def test_a_hit_not_among_the_held_events_is_read_from_the_store(embedded_store, caplog) -> None:  # type: ignore[no-untyped-def]
    batch = _batch()
    embedded_store.insert_events(batch)
    detector = Detector(embedded_store, compile_sources(RULES))
    selector = Selector.batch(batch)
    held = {e["event_id"]: e for e in batch if e.get("user_name") != "admin"}
    for source, rules in detector.groups:
        expected = _key(detector.run_group(source, rules, selector))
        with caplog.at_level(logging.WARNING):
            assert _key(detector.run_group(source, rules, selector, held)) == expected
    assert "not among the batch's events" in caplog.text, "the admin logins' hits were not held"
