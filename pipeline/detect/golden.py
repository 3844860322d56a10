"""Golden tests of rules: `<rule>.tests.yml` beside `<rule>.yml` lists events that must fire the rule
(`positive`) and events that must not (`negative`).

    positive:
      - name: ten failures within three minutes
        events:
          - {source_type: sshd, event_category: auth, action: failure, src_ip: 10.1.1.5,
             repeat: 10, every: 15}          # 10 copies, 15 s apart
    negative:
      - name: ...
        events: [...]

Each event is a partial normalized event: `sensor`, `event_id` and `ts` are filled in (`at: SECONDS`
offsets an event from the case start); `repeat`/`every` generate series, and `{i}` in a string value is
replaced by the copy's number. Every case runs in its own time slot of one store, through the same
replay path as production.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.detect.compile import RuleSet
from pipeline.detect.engine import Detector, Selector
from pipeline.schema import event_id, normalize
from pipeline.store.base import Store

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SLOT_MS = 2 * 86_400_000


@dataclass
class GoldenResult:
    test_file: str
    kind: str  # positive, negative or coverage
    case: str
    passed: bool
    detail: str


def tests_file(rule_path: str) -> Path:
    path = Path(rule_path)
    return path.with_name(path.stem + ".tests.yml")


def expand(case_events: list[dict[str, Any]], start_ms: int, label: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, spec in enumerate(case_events):
        spec = dict(spec)
        repeat, every, at = int(spec.pop("repeat", 1)), float(spec.pop("every", 1)), float(spec.pop("at", 0))
        for i in range(repeat):
            record = {k: (v.replace("{i}", str(i)) if isinstance(v, str) else v) for k, v in spec.items()}
            record.setdefault("ts", start_ms + int((at + i * every) * 1000))
            record.setdefault("sensor", "golden")
            record["event_id"] = event_id("golden", f"{label}/{n}/{i}", record["ts"])
            out.append(normalize(record))
    return out


def run_golden_tests(store: Store, ruleset: RuleSet) -> list[GoldenResult]:
    """Per test file: each positive case must fire one of the file's rules, each negative case none of
    them, and every alerting rule of the file must be fired by some positive case."""
    detector = Detector(store, ruleset)
    by_file: dict[str, dict[str, str]] = {}
    for rule_id, title, path in [(r.rule_id, r.title, r.path) for r in ruleset.rules if r.alerts] + [
            (c.rule_id, c.title, c.path) for c in ruleset.correlations]:
        by_file.setdefault(path, {})[rule_id] = title
    results: list[GoldenResult] = []
    slot = 0
    for path, rules in sorted(by_file.items()):
        spec_path = tests_file(path)
        if not spec_path.exists():
            continue
        spec = yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}
        fired_by_positive: set[str] = set()
        label = Path(path).name
        for polarity in ("positive", "negative"):
            for case in spec.get(polarity, []):
                slot += 1
                start = T0 + slot * SLOT_MS
                name = case.get("name", f"{polarity} case")
                try:
                    events = expand(case.get("events", []), start, f"{label}/{polarity}/{name}")
                except Exception as exc:  # a broken test file is a failed test, with the reason
                    results.append(GoldenResult(label, "", name, False, f"bad test events: {exc}"))
                    continue
                store.insert_events(events)
                hits = [h for h in detector.run(Selector(start, start + SLOT_MS // 2)) if h.rule_id in rules]
                fired = sorted({rules[h.rule_id] for h in hits})
                if polarity == "positive":
                    fired_by_positive |= {h.rule_id for h in hits}
                ok = bool(fired) if polarity == "positive" else not fired
                detail = f"fired: {'; '.join(fired)}" if fired else "fired nothing"
                results.append(GoldenResult(label, polarity, name, ok, detail))
        for rule_id, title in sorted(rules.items()):
            covered = rule_id in fired_by_positive
            results.append(GoldenResult(label, "coverage", title, covered,
                                        "fired by a positive case" if covered else "no positive case fires it"))
    return results
