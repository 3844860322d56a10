"""Correlation rules on hand-built event sequences whose right answers can be stated.

Windows slide: N events within any `timespan` fire; the same N spread wider do not, however long the
replayed range. Group-by separates entities.
"""

from __future__ import annotations

from typing import Any

from pipeline.detect.compile import compile_sources
from pipeline.detect.engine import Detector, Selector
from pipeline.schema import event_id, normalize

T0 = 1_714_550_400_000  # 2024-05-01 08:00 UTC
MIN = 60_000

def login_rule(number: int, name: str, action: str) -> str:
    return f"""
title: SSH login {action}
id: 11111111-0000-0000-0000-00000000000{number}
name: {name}
logsource: {{product: linux, service: sshd}}
detection:
  sel: {{action: {action}}}
  condition: sel
level: low
"""


FAILED_LOGIN = login_rule(1, "ssh_failed", "failure")
SUCCESS_LOGIN = login_rule(2, "ssh_success", "success")


def correlation(kind: str, condition: str, timespan: str = "5m", group_by: str = "[src_ip]",
                rules: str = "[ssh_failed]") -> str:
    return f"""
title: Correlation {kind}
id: 22222222-0000-0000-0000-000000000001
correlation:
  type: {kind}
  rules: {rules}
  group-by: {group_by}
  timespan: {timespan}
  condition: {condition}
level: high
"""


def sshd(n: int, ts: int, action: str, src: str = "10.0.0.5", user: str = "root") -> dict[str, Any]:
    return normalize({"ts": ts, "event_id": event_id("t", f"{src}-{user}-{ts}-{action}", n), "sensor": "s",
                      "source_type": "sshd", "event_category": "auth", "action": action, "src_ip": src,
                      "user_name": user})


def fired(store, rule_texts: list[str], events: list[dict[str, Any]]) -> list:  # type: ignore[no-untyped-def]
    store.insert_events(events)
    ruleset = compile_sources({f"r{i}.yml": t for i, t in enumerate(rule_texts)})
    assert not ruleset.errors, ruleset.errors
    detector = Detector(store, ruleset)
    lo = min(e["ts"] for e in events)
    hits = detector.run(Selector(lo - 86_400_000, lo + 86_400_000))
    return [a for a in detector.alerts(hits) if a.kind != "rule"]


def test_ten_failures_in_five_minutes_fire_but_spread_over_an_hour_do_not(embedded_store) -> None:
    burst = [sshd(i, T0 + i * 20_000, "failure", src="10.0.0.5") for i in range(10)]  # within 3 min
    spread = [sshd(i, T0 + i * 6 * MIN, "failure", src="10.0.0.6") for i in range(10)]  # over an hour
    alerts = fired(embedded_store, [FAILED_LOGIN, correlation("event_count", "{gte: 10}")], burst + spread)
    assert [a.entity for a in alerts] == ["src_ip=10.0.0.5"]
    assert set(alerts[0].event_ids) == {e["event_id"] for e in burst}


def test_window_slides_rather_than_using_fixed_buckets(embedded_store) -> None:
    # 10 failures straddling a 5-minute boundary: 5 just before 08:05 and 5 just after
    events = [sshd(i, T0 + 4 * MIN + i * 10_000, "failure") for i in range(10)]
    alerts = fired(embedded_store, [FAILED_LOGIN, correlation("event_count", "{gte: 10}")], events)
    assert len(alerts) == 1


def test_group_by_separates_sources(embedded_store) -> None:
    # 6 + 6 failures from two sources in the same minute: neither reaches 10 on its own
    events = [sshd(i, T0 + i * 1000, "failure", src=f"10.0.0.{i % 2 + 1}") for i in range(12)]
    assert fired(embedded_store, [FAILED_LOGIN, correlation("event_count", "{gte: 10}")], events) == []


def test_value_count_password_spraying(embedded_store) -> None:
    spray = [sshd(i, T0 + i * 5000, "failure", src="10.0.0.9", user=f"user{i}") for i in range(8)]
    same_user = [sshd(i, T0 + i * 5000, "failure", src="10.0.0.8", user="admin") for i in range(20)]
    rule = correlation("value_count", "{gte: 5, field: user_name}", timespan="10m")
    alerts = fired(embedded_store, [FAILED_LOGIN, rule], spray + same_user)
    assert [a.entity for a in alerts] == ["src_ip=10.0.0.9"]


def test_temporal_ordered_needs_the_order(embedded_store) -> None:
    # failures then a success from .7 (brute force that worked); a success then failures from .8
    good_order = [sshd(i, T0 + i * 1000, "failure", src="10.0.0.7") for i in range(3)]
    good_order.append(sshd(9, T0 + 10_000, "success", src="10.0.0.7"))
    bad_order = [sshd(0, T0, "success", src="10.0.0.8")]
    bad_order += [sshd(i, T0 + 5000 + i * 1000, "failure", src="10.0.0.8") for i in range(3)]
    rule = correlation("temporal_ordered", "{gte: 2}", rules="[ssh_failed, ssh_success]")
    alerts = fired(embedded_store, [FAILED_LOGIN, SUCCESS_LOGIN, rule], good_order + bad_order)
    assert [a.entity for a in alerts] == ["src_ip=10.0.0.7"]


def test_temporal_unordered_needs_both_within_the_span(embedded_store) -> None:
    near = [sshd(0, T0, "success", src="10.0.0.1"), sshd(1, T0 + MIN, "failure", src="10.0.0.1")]
    far = [sshd(0, T0, "success", src="10.0.0.2"), sshd(1, T0 + 30 * MIN, "failure", src="10.0.0.2")]
    rule = correlation("temporal", "{gte: 2}", rules="[ssh_failed, ssh_success]")
    alerts = fired(embedded_store, [FAILED_LOGIN, SUCCESS_LOGIN, rule], near + far)
    assert [a.entity for a in alerts] == ["src_ip=10.0.0.1"]


def test_replaying_any_range_covering_the_burst_gives_the_same_alert(embedded_store) -> None:
    burst = [sshd(i, T0 + i * 20_000, "failure") for i in range(10)]
    embedded_store.insert_events(burst)
    ruleset = compile_sources({"a.yml": FAILED_LOGIN, "b.yml": correlation("event_count", "{gte: 10}")})
    detector = Detector(embedded_store, ruleset)
    ids = set()
    for lo, hi in ((T0 - MIN, T0 + 10 * MIN), (T0 - 86_400_000, T0 + 86_400_000), (T0, T0 + 4 * MIN)):
        alerts = [a for a in detector.alerts(detector.run(Selector(lo, hi))) if a.kind != "rule"]
        ids.add(tuple(a.alert_id for a in alerts))
    assert len(ids) == 1 and len(next(iter(ids))) == 1


def test_live_batches_window_only_their_groups_and_find_what_a_replay_finds(embedded_store) -> None:
    """Live, a batch windows only the groups its events fall in. Bursts of three sources arrive over eight
    batches out of order (a later batch brings earlier failures that complete a window), beside a source that
    never reaches the threshold and batches with no failure at all: the alerts and their events, gathered over
    the batches, are the replay's; and a batch without a failure finds no firing."""
    import random

    rules = {"a.yml": FAILED_LOGIN, "b.yml": SUCCESS_LOGIN,
             "c.yml": correlation("event_count", "{gte: 10}"),
             "d.yml": correlation("value_count", "{gte: 3, field: user_name}")
             .replace("22222222-0000-0000-0000-000000000001", "22222222-0000-0000-0000-000000000002")}
    ruleset = compile_sources(rules)
    assert not ruleset.errors and len(ruleset.correlations) == 2, ruleset.errors
    events = [sshd(i, T0 + i * 15_000 + k, "failure", src=f"10.0.0.{k}", user=f"u{i % (k + 1)}")
              for k in (1, 2, 3) for i in range(12)]
    events += [sshd(i, T0 + i * 40_000, "failure", src="10.0.0.9") for i in range(6)]  # 6 in 5 min: no firing
    events += [sshd(i, T0 + i * 7_000, "success", src="10.0.0.8") for i in range(30)]
    random.Random(3).shuffle(events)
    batches = [events[i::8] for i in range(8)]
    quiet = [sshd(i, T0 + 3 * MIN + i, "success", src="10.0.1.1") for i in range(5)]
    live = Detector(embedded_store, ruleset)
    found: set[tuple[str, str]] = set()
    for batch in [*batches, quiet]:
        embedded_store.insert_events(batch)
        hits = live.run_live(Selector.batch(batch), batch)
        correlated = {(h.alert_id, h.event_id) for h in hits if h.rule_id.startswith("22222222")}
        if batch is quiet:
            assert not correlated
        found |= correlated
    replay = Detector(embedded_store, ruleset).run(Selector(T0 - 86_400_000, T0 + 86_400_000))
    expected = {(h.alert_id, h.event_id) for h in replay if h.rule_id.startswith("22222222")}
    assert found == expected
    entities = {e for h in replay if h.rule_id.startswith("22222222") for e in [h.entity]}
    assert entities == {"src_ip=10.0.0.1", "src_ip=10.0.0.2", "src_ip=10.0.0.3"}
