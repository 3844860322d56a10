"""A live batch is looked up in the time spans its events lie in, not one range from its oldest to newest event."""

from __future__ import annotations

from dataclasses import replace

from pipeline.detect.compile import compile_sources
from pipeline.detect.engine import MAX_SPANS, Detector, Selector, time_spans
from pipeline.schema import event_id, normalize

T0 = 1_714_550_400_000
HOUR = 3_600_000

RULE = """
title: DNS to a bad domain
id: 33333333-0000-0000-0000-000000000001
logsource: {category: dns}
detection:
  sel: {query|endswith: .bad.example}
  condition: sel
level: medium
"""


def test_a_batch_without_gaps_is_one_span() -> None:
    assert time_spans([T0 + 5, T0, T0 + 999, T0 + 1_500]) == ((T0, T0 + 1_501),)


def test_a_straggler_an_hour_late_is_a_span_of_its_own() -> None:
    assert time_spans([T0, T0 + 400, T0 - HOUR, T0 + 999]) == ((T0 - HOUR, T0 - HOUR + 1), (T0, T0 + 1_000))


def test_gaps_up_to_the_threshold_do_not_split() -> None:
    assert len(time_spans([T0, T0 + 1_000, T0 + 2_000])) == 1
    assert len(time_spans([T0, T0 + 1_001])) == 2


def test_at_most_max_spans_split_at_the_widest_gaps() -> None:
    stamps = [T0 + i * 10_000 for i in range(20)] + [T0 - HOUR, T0 - 2 * HOUR]
    spans = time_spans(stamps)
    assert len(spans) == MAX_SPANS
    assert spans[:2] == ((T0 - 2 * HOUR, T0 - 2 * HOUR + 1), (T0 - HOUR, T0 - HOUR + 1)), "the widest gaps cut first"
    assert all(any(lo <= s < hi for lo, hi in spans) for s in stamps)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))


def _dns(ts: int, query: str, tag: str) -> dict:  # type: ignore[type-arg]
    record = {"ts": ts, "sensor": "t", "source_type": "zeek_dns", "event_category": "dns", "src_ip": "10.0.0.9",
              "dns_query": query}
    return normalize({**record, "event_id": event_id("t", f"{tag}{ts}{query}".encode(), 0)})


def test_a_batch_with_a_straggler_selects_its_rows_and_skips_the_hour_between(embedded_store) -> None:  # type: ignore[no-untyped-def]
    between = [_dns(T0 - HOUR + m * 60_000, "x.bad.example", "between") for m in range(1, 60)]
    batch = [_dns(T0 + i, f"{i}.bad.example" if i % 2 else "good.example", "batch") for i in range(10)]
    batch.append(_dns(T0 - HOUR, "late.bad.example", "batch"))
    embedded_store.insert_events(between + batch)

    selector = Selector.batch(batch)
    assert len(selector.spans) == 2
    unnarrowed = replace(selector, event_ids=None)
    assert embedded_store.query(f"SELECT count() FROM events WHERE {unnarrowed.sql()}", unnarrowed.params()).rows \
        == [(len(batch),)], "the rows stored in the hour between the spans are outside them"

    detector = Detector(embedded_store, compile_sources({"dns.yml": RULE}))
    expected = sorted(e["event_id"] for e in batch if e["dns_query"].endswith(".bad.example"))
    assert sorted(h.event_id for h in detector.run_live(selector)) == expected
    assert sorted(h.event_id for h in detector.run_live(selector, batch)) == expected
