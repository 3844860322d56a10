"""The whole SigmaHQ rule set converts, and every converted query runs on ClickHouse.

Exclusions, with reasons: rules with unresolved placeholders (%name%, filled per site by a placeholder
pipeline — not built yet) and correlation rules (not compiled yet)."""

from __future__ import annotations

import pytest

from pipeline.detect.compile import DETECTION_SETTINGS, compile_rules
from pipeline.store.base import StoreError
from tests.conftest import SHARED_DATA

SIGMAHQ = SHARED_DATA / "sigma" / "sigmahq"
pytestmark = pytest.mark.skipif(not SIGMAHQ.exists(), reason="../shared/data (SigmaHQ rules) is not present")
EXPECTED_REASONS = ("unresolved placeholder", "correlation rules are not compiled yet")


def test_every_sigmahq_rule_converts_and_runs(embedded_store) -> None:
    folders = sorted(SIGMAHQ.glob("rules*"))
    report = compile_rules(folders)
    unexpected = [(p, r) for p, r in report.errors if not any(x in r for x in EXPECTED_REASONS)]
    print(f"SigmaHQ: {len(report.rules)} queries converted, {len(report.errors)} rules excluded")
    assert len(report.rules) > 3500
    # a few rules use keyword-list forms not supported yet; keep that list tiny and visible
    assert len(unexpected) <= 3, unexpected
    failures = []
    for rule in report.rules:
        try:
            embedded_store.query(f"SELECT count() FROM events WHERE {rule.where}", settings=DETECTION_SETTINGS)
        except StoreError as exc:
            failures.append((rule.path, str(exc)[:200]))
    assert failures == []
