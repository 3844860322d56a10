"""Which rule set live detection runs: pinned by --rules, or following activations without a restart."""

from __future__ import annotations

import orjson

from pipeline.bus.memory import MemoryBus
from pipeline.detect.compile import compile_sources
from pipeline.detect.live import LiveDetection, activate_ruleset, active_version, save_ruleset
from pipeline.schema import event_id, normalize

T0 = 1_714_550_400_000


def _rule(name: str, uid: str) -> str:
    return (f"title: DNS to {name}\nid: {uid}\nstatus: test\nlogsource: {{category: dns}}\n"
            f"detection:\n  sel:\n    query: {name}.example.org\n  condition: sel\nlevel: medium\n")


A = {"custom/a.yml": _rule("a-only", "aaaaaaaa-0000-0000-0000-000000000001")}
B = A | {"custom/b.yml": _rule("b-only", "bbbbbbbb-0000-0000-0000-000000000002")}


def _batch(store, tag: str, offset_ms: int) -> list[dict]:  # type: ignore[no-untyped-def]
    events = []
    for i, name in enumerate(("a-only", "b-only")):
        record = {"ts": T0 + offset_ms + i, "sensor": "t", "source_type": "zeek_dns", "event_category": "dns",
                  "src_ip": "10.0.0.9", "dns_query": f"{name}.example.org"}
        events.append(normalize({**record, "event_id": event_id("t", orjson.dumps(record) + tag.encode(), i)}))
    store.insert_events(events)
    return events


def _fired(alerts) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {a.rule_id: a.ruleset_version for a in alerts}


def test_a_following_writer_switches_to_an_activated_version_and_back(embedded_store) -> None:  # type: ignore[no-untyped-def]
    a, b = compile_sources(A), compile_sources(B)
    live = LiveDetection(embedded_store, MemoryBus(), a, follow_active=True)
    pinned = LiveDetection(embedded_store, MemoryBus(), a, follow_active=False)
    try:
        assert _fired(live(_batch(embedded_store, "1", 0))) == {"aaaaaaaa-0000-0000-0000-000000000001": a.version}

        save_ruleset(embedded_store, b)
        activate_ruleset(embedded_store, b.version, "test", "adds b")
        assert active_version(embedded_store) == b.version
        assert live.sync_rules() == b.version
        assert pinned.sync_rules() == a.version, "a writer pinned by --rules must not follow"
        assert _fired(live(_batch(embedded_store, "2", 10_000))) == {
            "aaaaaaaa-0000-0000-0000-000000000001": b.version, "bbbbbbbb-0000-0000-0000-000000000002": b.version}
        assert set(_fired(pinned(_batch(embedded_store, "3", 20_000)))) == {"aaaaaaaa-0000-0000-0000-000000000001"}

        activate_ruleset(embedded_store, a.version, "test", "rollback")
        assert live.sync_rules() == a.version
        assert set(_fired(live(_batch(embedded_store, "4", 30_000)))) == {"aaaaaaaa-0000-0000-0000-000000000001"}
    finally:
        live.close()
        pinned.close()


def test_an_activated_version_that_cannot_run_leaves_the_running_one(embedded_store) -> None:  # type: ignore[no-untyped-def]
    a = compile_sources(A)
    live = LiveDetection(embedded_store, MemoryBus(), a, follow_active=True)
    try:
        activate_ruleset(embedded_store, "0123456789abcdef", "test")  # never stored
        assert live.sync_rules() == a.version
        broken = compile_sources({"custom/x.yml": "title: not a rule\n"})
        save_ruleset(embedded_store, broken)
        activate_ruleset(embedded_store, broken.version, "test")
        assert live.sync_rules() == a.version
        assert set(_fired(live(_batch(embedded_store, "5", 0)))) == {"aaaaaaaa-0000-0000-0000-000000000001"}
    finally:
        live.close()
