"""Ganzhi's own rule pack: every rule compiles, every test file's golden events behave, and every
alerting rule is fired by at least one positive case."""

from __future__ import annotations

from pipeline.detect.compile import compile_rules
from pipeline.detect.golden import run_golden_tests
from pipeline.detect.golden import tests_file as golden_file
from rules import PACK


def test_pack_compiles_without_errors() -> None:
    ruleset = compile_rules([PACK])
    assert ruleset.errors == []
    assert len([r for r in ruleset.rules if r.alerts]) + len(ruleset.correlations) >= 25
    assert all(golden_file(r.path).exists() for r in ruleset.rules), "every rule file has golden events"


def test_golden_events(embedded_store) -> None:
    results = run_golden_tests(embedded_store, compile_rules([PACK]))
    failed = [r for r in results if not r.passed]
    assert failed == []
    assert {r.kind for r in results} == {"positive", "negative", "coverage"}
