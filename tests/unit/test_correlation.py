"""Correlation rules on hand-built event sequences whose right answers can be stated.

Windows slide: N events within any `timespan` fire; the same N spread wider do not, however long the
replayed range. Group-by separates entities.
"""

from __future__ import annotations

from collections import defaultdict
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


def numbered(rule: str, n: int) -> str:
    return rule.replace("22222222-0000-0000-0000-000000000001", f"22222222-0000-0000-0000-0000000000{n:02d}")


def live_and_replay(store, ruleset, batches: list[list[dict[str, Any]]]) -> tuple[set, set]:  # type: ignore[no-untyped-def]
    """The correlation hits (rule, alert, event) of the batches run live one after another, and of a replay of them."""
    live = Detector(store, ruleset)
    found: set[tuple[str, str]] = set()
    for batch in batches:
        store.insert_events(batch)
        found |= {(h.rule_id, h.alert_id, h.event_id) for h in live.run_live(Selector.batch(batch), batch)
                  if h.rule_id.startswith("22222222")}
    replay = Detector(store, ruleset).run(Selector(T0 - 86_400_000, T0 + 86_400_000))
    return found, {(h.rule_id, h.alert_id, h.event_id) for h in replay if h.rule_id.startswith("22222222")}


def test_every_correlation_kind_finds_live_what_a_replay_finds(embedded_store) -> None:
    """Live windows read correlation_events (what each correlation keeps of the events it counts: group, marks,
    value), a replay reads the events table: every kind must fire on the same windows either way."""
    import random

    kinds = [("event_count", "{gte: 6}", "[ssh_failed]"),
             ("value_count", "{gte: 3, field: user_name}", "[ssh_failed]"),
             ("temporal_ordered", "{gte: 2}", "[ssh_failed, ssh_success]"),
             ("temporal", "{gte: 2}", "[ssh_success, ssh_failed]"),
             ("value_sum", "{gte: 5000, field: src_port}", "[ssh_failed]"),
             ("value_avg", "{gt: 900, field: src_port}", "[ssh_failed]"),
             ("value_median", "{gte: 1000, field: src_port}", "[ssh_failed, ssh_success]")]
    rules = {"a.yml": FAILED_LOGIN, "b.yml": SUCCESS_LOGIN}
    rules |= {f"c{n}.yml": numbered(correlation(kind, cond, rules=refs), n)
              for n, (kind, cond, refs) in enumerate(kinds)}
    ruleset = compile_sources(rules)
    assert not ruleset.errors and len(ruleset.correlations) == len(kinds), ruleset.errors
    rng = random.Random(5)
    events = []
    for k in range(1, 7):  # six sources, bursts of different sizes, ports and orders
        for i in range(2 + k):
            event = sshd(i, T0 + k * 7 * MIN + i * 20_000, "failure", src=f"10.0.1.{k}", user=f"u{i % k}")
            events.append({**event, "src_port": 200 * k + 10 * i})
        events.append(sshd(99, T0 + k * 7 * MIN + (1 if k % 2 else -1) * 30_000, "success", src=f"10.0.1.{k}"))
    rng.shuffle(events)
    found, expected = live_and_replay(embedded_store, ruleset, [events[i::6] for i in range(6)])
    assert found == expected
    assert len({rule for rule, _, _ in expected}) == len(kinds)  # every kind fired somewhere


def test_a_new_detector_counts_history_that_no_live_batch_wrote_and_a_restart_adds_nothing(embedded_store) -> None:
    """Nine failures stored without live detection (an import, a first start over history), then a live batch
    with the tenth: the window must hold all ten. A second detector (a restarted writer) given the same batch
    finds nothing lacking and writes nothing twice."""
    rules = {"a.yml": FAILED_LOGIN, "b.yml": correlation("event_count", "{gte: 10}")}
    ruleset = compile_sources(rules)
    history = [sshd(i, T0 + i * 20_000, "failure") for i in range(9)]
    embedded_store.insert_events(history)
    batch = [sshd(9, T0 + 9 * 20_000, "failure")]
    embedded_store.insert_events(batch)

    def correlated(detector: Detector) -> set[tuple[str, str]]:
        hits = detector.run_live(Selector.batch(batch), batch)
        return {(h.alert_id, h.event_id) for h in hits if h.rule_id.startswith("22222222")}

    first = correlated(Detector(embedded_store, ruleset))
    assert {event for _, event in first} == {e["event_id"] for e in history + batch}
    again = Detector(embedded_store, ruleset)
    assert again.backfill(Selector.batch(batch)) == []
    assert correlated(again) == first
    stored = embedded_store.query("SELECT count(), uniqExact(correlation, event_id) FROM correlation_events").rows
    assert stored == [(10, 10)]


def test_a_live_window_reads_its_groups_not_the_timespan_of_history(embedded_store) -> None:
    """100 k failures from 5,000 sources in the minute before a live batch with one failure from one of them:
    that batch's window reads a granule or two of its group's rows in correlation_events, where the same window
    over the events table (a replay's, or a live one before that table) reads all 100 k. A batch whose group
    cannot reach the threshold reads none."""
    ruleset = compile_sources({"a.yml": FAILED_LOGIN, "b.yml": correlation("event_count", "{gte: 10}")})
    history = [sshd(i, T0 + 240_000 + i * 3 // 5, "failure", src=f"10.1.{i % 5000 // 250}.{i % 250 + 1}")
               for i in range(100_000)]  # within one minute: a lookup reads a granule of each minute it reaches
    embedded_store.insert_events(history)
    live = Detector(embedded_store, ruleset)
    # the first live batch backfills the history; the second's source has 20 failures there, so could fire
    batches = [[sshd(n, T0 + 300_000 + n, "failure", src=src)] for n, src in enumerate(("10.9.9.8", "10.1.0.1"))]
    for batch in batches:
        embedded_store.insert_events(batch)
        live.run_live(Selector.batch(batch), batch)
    lone, batch = batches  # lone: one failure in all, so its group cannot reach 10
    embedded_store.execute("OPTIMIZE TABLE correlation_events FINAL")
    corr = ruleset.correlations[0]
    fire = Selector(batch[0]["ts"], batch[0]["ts"] + 1 + 300_000)
    source = Selector(fire.lo_ms - 300_000, fire.hi_ms)
    params = source.params() | fire.params("fire_")
    params["correlation"] = live.counting(corr).key

    def rows_read(sql: str, of_batch: list[dict[str, Any]] = batch) -> dict[str, int]:
        read: dict[str, int] = defaultdict(int)
        query_params = params | Selector.batch(of_batch).params("batch_")
        for row in embedded_store.query(f"EXPLAIN ESTIMATE {sql}", query_params).dicts():
            read[row["table"]] += int(row["rows"])
        return dict(read)

    windowed = rows_read(live.correlation_sql(corr, source, fire, Selector.batch(batch)))
    assert 0 < windowed["correlation_events"] <= 3 * 8192, windowed  # its minutes: the history's, the batch's
    assert windowed.get("events", 0) <= 2 * 8192, windowed
    assert rows_read(live.correlation_sql(corr, source, fire, Selector.batch(lone)), lone).get(
        "correlation_events", 0) == 0
    assert rows_read(live.correlation_sql(corr, source, fire))["events"] >= 100_000
    over_events = Detector(embedded_store, ruleset, counted_table=False)
    assert rows_read(over_events.correlation_sql(corr, source, fire, Selector.batch(batch)))["events"] >= 100_000
