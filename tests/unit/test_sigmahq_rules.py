"""The whole SigmaHQ rule set converts, and every converted query runs on ClickHouse.

Each query is the whole rule — log-source filter and condition, after the field-mapping pipeline — and
all rules of a log source also run together as the engine's one-scan query.
Exclusions, with reasons: rules with unresolved placeholders (%name%, values a site must supply — e.g.
its admin workstations — before such a rule means anything)."""

from __future__ import annotations

import pytest

from pipeline.detect.compile import DETECTION_SETTINGS, compile_rules
from pipeline.detect.engine import Detector, Selector
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
    # the engine's grouped scans (what live and replay run) over a seeded table
    embedded_store.insert_events(make_events(200))
    detector = Detector(embedded_store, report)
    detector.run_rules(Selector(0, 2**41))
