"""SigmaHQ regression data: each sample's events, replayed through its rule, match exactly `match_count`
times — read from the .evtx file the sample was exported from as well as from its JSON, and again with every
value's letter case flipped (Sigma matching is case-insensitive).

Samples without a `match_count` in info.yml are positive tests of one event: 1 is expected.

Where upstream's expectation is wrong by Sigma's own semantics, the override below says why (checked by
reading the events). The case-flipped run is skipped for rules that are case-sensitive on purpose
(`|cased`, or `|re` without the `i` flag: e.g. curl's `-H` flag must not match `-h`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from pipeline.detect.compile import compile_rules
from pipeline.detect.replay import read_event_file, replay_events
from sensors.logs.parsers.windows import read_json_documents
from tests.conftest import SHARED_DATA

SIGMAHQ = SHARED_DATA / "sigma" / "sigmahq"
REGRESSION = SIGMAHQ / "regression_data"
pytestmark = pytest.mark.skipif(not REGRESSION.exists(), reason="../shared/data (SigmaHQ regression data) is absent")


# sample folder -> (expected hits, why upstream's match_count is not used)
OVERRIDES = {
    "file_event_win_anydesk_artefact": (
        3, "info.yml says 1, but 3 of the 5 events have a TargetFilename containing "
           "'\\AppData\\Roaming\\AnyDesk\\user.conf' (user.conf.new twice, user.conf~RF2d9c20d.TMP), "
           "and the rule is a plain `contains`"),
}
CASE_SENSITIVE = re.compile(r"\|cased|\|re(?!\|i)(?=[:|])")


def _samples() -> list[Path]:
    return sorted(REGRESSION.rglob("info.yml")) if REGRESSION.exists() else []


def _rule_index() -> dict[str, Path]:
    index: dict[str, Path] = {}
    pattern = re.compile(r"^id:\s*([0-9a-fA-F-]{36})", re.MULTILINE)
    for path in SIGMAHQ.glob("rules*/**/*.yml"):
        match = pattern.search(path.read_text(encoding="utf-8"))
        if match:
            index[match.group(1)] = path
    return index


@pytest.fixture(scope="module")
def rule_index() -> dict[str, Path]:
    return _rule_index()


def _flip_case(node: Any) -> Any:
    if isinstance(node, str):
        return node.swapcase()
    if isinstance(node, list):
        return [_flip_case(v) for v in node]
    if isinstance(node, dict):  # keys are field names, not values: kept
        return {k: (_flip_case(v) if k != "#attributes" else _flip_attrs(v)) for k, v in node.items()}
    return node


def _flip_attrs(attrs: Any) -> Any:
    # attribute values are values too (e.g. Data Name="..." is a field name, kept; SystemTime a time)
    if not isinstance(attrs, dict):
        return attrs
    keep = ("Name", "SystemTime")
    return {k: (v.swapcase() if isinstance(v, str) and k not in keep else v) for k, v in attrs.items()}


@pytest.mark.parametrize("info", _samples(), ids=lambda p: p.parent.name)
def test_regression_sample(info: Path, rule_index: dict[str, Path], embedded_store, tmp_path: Path) -> None:
    meta = yaml.safe_load(info.read_text())
    rule_id = meta["rule_metadata"][0]["id"]
    if not meta.get("regression_tests_info"):
        pytest.skip("info.yml lists no active regression test (commented out upstream)")
    expected = next((t.get("match_count") for t in meta.get("regression_tests_info", []) if "match_count" in t), 1)
    if info.parent.name in OVERRIDES:
        expected = OVERRIDES[info.parent.name][0]
    if rule_id not in rule_index:
        pytest.skip(f"rule {rule_id} is not in this SigmaHQ checkout")
    ruleset = compile_rules([rule_index[rule_id]])
    assert not ruleset.errors, ruleset.errors
    samples = sorted(info.parent.glob("*.json"))
    assert samples, f"no JSON sample next to {info}"

    dead: list[dict[str, Any]] = []
    events = [e for s in samples for e in read_event_file(s, on_dead=dead.append)]
    assert dead == []
    report = replay_events(embedded_store, ruleset, events)
    assert report.results[0].hit_count == expected, (rule_index[rule_id].name, report.results[0])

    # the same events as the .evtx files they were exported from, read by the EVTX reader
    recorded = sorted(info.parent.glob("*.evtx"))
    if recorded:
        from_evtx = [e for s in recorded for e in read_event_file(s, on_dead=dead.append)]
        assert dead == [] and len(from_evtx) == len(events)
        report = replay_events(embedded_store, ruleset, from_evtx)
        assert report.results[0].hit_count == expected, ("evtx", rule_index[rule_id].name, report.results[0])

    if CASE_SENSITIVE.search(rule_index[rule_id].read_text()):
        return  # a case-sensitive rule is meant to stop matching when the case changes
    flipped = []
    for i, sample in enumerate(samples):
        path = tmp_path / f"flipped{i}.json"
        docs = [_flip_case(d) for d in read_json_documents(sample.read_text())]
        path.write_bytes(b"\n".join(orjson.dumps(d) for d in docs))
        flipped.extend(read_event_file(path, on_dead=dead.append))
    assert dead == []
    report = replay_events(embedded_store, ruleset, flipped)
    assert report.results[0].hit_count == expected, ("case flipped", rule_index[rule_id].name, report.results[0])
