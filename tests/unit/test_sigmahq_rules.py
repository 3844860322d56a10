"""The whole SigmaHQ rule set converts, and every converted query runs on ClickHouse.

Each query is the whole rule — log-source filter and condition, after the field-mapping pipeline — and
all rules of a log source also run together as the engine's one-scan query.
Exclusions, with reasons: rules with unresolved placeholders (%name%, values a site must supply — e.g.
its admin workstations — before such a rule means anything)."""

from __future__ import annotations

import pytest

from pipeline.detect.compile import DETECTION_SETTINGS, compile_rules
from pipeline.detect.engine import Detector, Selector
from pipeline.detect.replay import read_event_file
from pipeline.store.base import StoreError
from tests.conftest import SHARED_DATA, make_events

SIGMAHQ = SHARED_DATA / "sigma" / "sigmahq"
pytestmark = pytest.mark.skipif(not SIGMAHQ.exists(), reason="../shared/data (SigmaHQ rules) is not present")
EXPECTED_REASONS = ("unresolved placeholder",)


def test_every_sigmahq_rule_converts_and_runs(embedded_store) -> None:
    folders = sorted(SIGMAHQ.glob("rules*"))
    report = compile_rules(folders)
    unexpected = [(p, r) for p, r in report.errors if not any(x in r for x in EXPECTED_REASONS)]
    print(f"SigmaHQ: {len(report.rules)} queries converted, {len(report.errors)} rules excluded")
    assert len(report.rules) > 3500
    assert unexpected == []
    failures = []
    for rule in report.rules:
        try:
            embedded_store.query(f"SELECT count() FROM events WHERE {rule.sql}", settings=DETECTION_SETTINGS)
        except StoreError as exc:
            failures.append((rule.path, str(exc)[:200]))
    assert failures == []
    # the engine's grouped scans (what live and replay run) over a seeded table and every regression sample's
    # events (real attacks): the literal prefilter finds exactly what the plain SQL finds
    embedded_store.insert_events(make_events(200))
    samples = [e for path in sorted((SIGMAHQ / "regression_data").rglob("*.json"))
               for e in read_event_file(path, sensor=path.parent.name)]
    embedded_store.insert_events(list({e["event_id"]: e for e in samples}.values()))
    everything = Selector(0, 2**41)
    plain = {(h.rule_id, h.event_id) for h in Detector(embedded_store, report, prefilter=False).run_rules(everything)}
    filtered = {(h.rule_id, h.event_id) for h in Detector(embedded_store, report).run_rules(everything)}
    print(f"{len(plain)} hits; {sum(r.needs is not None for r in report.rules)} of {len(report.rules)} queries "
          f"have necessary literals")
    assert len(plain) > 100 and sum(r.needs is not None for r in report.rules) > len(report.rules) // 2
    assert filtered == plain, (sorted(plain - filtered)[:5], sorted(filtered - plain)[:5])
    # live, the samples as one batch: the prefilter searching them in memory (native) finds what ClickHouse's does
    batch = list({e["event_id"]: e for e in samples}.values())
    in_memory = Detector(embedded_store, report).run_live(Selector.batch(batch), batch)
    in_clickhouse = Detector(embedded_store, report).run_live(Selector.batch(batch))
    pairs = sorted((h.rule_id, h.event_id) for h in in_memory)
    assert pairs == sorted((h.rule_id, h.event_id) for h in in_clickhouse)
    ids, rules = {e["event_id"] for e in batch}, {r.rule_id for r in report.rules}
    assert {p for p in pairs if p[0] in rules} == {(r, e) for r, e in plain if e in ids}
