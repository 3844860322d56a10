"""Replay: run a rule set over stored history or over event files, and report what it finds.

The report is reproducible: the same rule set version over the same events gives byte-identical JSON
(sorted rules, sorted ids, no wall-clock time inside `content`); its `report_hash` lets an auditor
compare two runs at a glance.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline.codec import dead_letter
from pipeline.detect.compile import RuleSet
from pipeline.detect.engine import Alert, Detector, Hit, Selector
from pipeline.schema import REQUIRED, SchemaError, event_id, format_ts, normalize
from pipeline.store.base import Store
from sensors.logs.parsers import windows


@dataclass
class RuleResult:
    rule_id: str
    title: str
    level: str
    hit_count: int
    event_ids: list[str]
    alert_ids: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "title": self.title, "level": self.level, "hit_count": self.hit_count,
                "event_ids": self.event_ids, "alert_ids": self.alert_ids}


@dataclass
class ReplayReport:
    ruleset_version: str
    lo_ms: int
    hi_ms: int
    results: list[RuleResult]
    alerts: list[Alert] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def content(self) -> dict[str, Any]:
        return {
            "ruleset_version": self.ruleset_version,
            "from": format_ts(self.lo_ms),
            "to": format_ts(self.hi_ms),
            "rules": [r.as_json() for r in self.results],
            "alerts": sorted(a.alert_id for a in self.alerts),
            "rules_not_compiled": [{"path": p, "reason": r} for p, r in self.errors],
        }

    @property
    def report_hash(self) -> str:
        return hashlib.sha256(orjson.dumps(self.content, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def to_json(self) -> bytes:
        doc = {"report_hash": self.report_hash, **self.content}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def summarize(ruleset: RuleSet, hits: list[Hit], alerts: list[Alert], selector: Selector) -> ReplayReport:
    events: dict[str, set[str]] = defaultdict(set)
    alert_ids: dict[str, set[str]] = defaultdict(set)
    for hit in hits:
        events[hit.rule_id].add(hit.event_id)
        alert_ids[hit.rule_id].add(hit.alert_id)
    seen: set[str] = set()
    results = []
    entries = [(r.rule_id, r.title, r.level) for r in ruleset.rules if r.alerts]
    entries += [(c.rule_id, c.title, c.level) for c in ruleset.correlations]
    for rule_id, title, level in entries:
        if rule_id in seen:  # a rule with several conditions compiles to several queries
            continue
        seen.add(rule_id)
        ids = sorted(events.get(rule_id, ()))
        results.append(RuleResult(rule_id, title, level, len(ids), ids, sorted(alert_ids.get(rule_id, ()))))
    results.sort(key=lambda r: (-r.hit_count, r.rule_id))
    return ReplayReport(ruleset.version, selector.lo_ms, selector.hi_ms, results, alerts, list(ruleset.errors))


def replay(store: Store, ruleset: RuleSet, selector: Selector) -> ReplayReport:
    detector = Detector(store, ruleset)
    hits = detector.run(selector)
    return summarize(ruleset, hits, detector.alerts(hits), selector)


# -- event files ---------------------------------------------------------------------------------------


def _document_event(doc: Any, sensor: str, origin: str) -> dict[str, Any]:
    """One JSON document: a Windows event in any supported shape, or an already normalized event."""
    if windows.looks_like(doc):
        return windows.to_event(doc, sensor, origin)
    if isinstance(doc, dict) and all(doc.get(name) not in (None, "") for name in REQUIRED if name != "event_id"):
        if not doc.get("event_id"):
            doc = {**doc, "event_id": event_id(sensor, orjson.dumps(doc), origin)}
        return normalize(doc)
    raise windows.ParseError("unknown record shape (expected a Windows event or a normalized Ganzhi event)")


def read_event_file(path: Path, sensor: str = "replay",
                    on_dead: Callable[[dict[str, Any]], None] | None = None) -> Iterator[dict[str, Any]]:
    """Normalized events from a file: .evtx, or JSON / JSON lines / concatenated JSON documents.
    A record that cannot be read goes to `on_dead` as a dead-letter record with the reason."""
    def dead(reason: str, payload: str, origin: str) -> None:
        if on_dead is not None:
            on_dead(dead_letter("replay.parse", "replay", reason, payload, origin))

    if path.suffix.lower() == ".evtx":
        for number, doc in windows.read_evtx(path):
            origin = f"{path.name}#{number}"
            try:
                yield windows.to_event(doc, sensor, origin)
            except windows.ParseError as exc:
                dead(str(exc), orjson.dumps(doc).decode(), origin)
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        documents = list(windows.read_json_documents(text))
    except ValueError:
        documents = None
    if documents is None:  # JSON lines with some bad lines: keep the good ones, dead-letter the rest
        documents = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                documents.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                dead(f"invalid JSON: {exc}", line, f"{path.name}:{lineno}")
    for index, doc in enumerate(documents):
        origin = f"{path.name}#{index}"
        try:
            yield _document_event(doc, sensor, origin)
        except (windows.ParseError, SchemaError) as exc:
            dead(str(exc), orjson.dumps(doc).decode() if not isinstance(doc, str) else doc, origin)


def event_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in (".evtx", ".json", ".jsonl",
                                                                                  ".ndjson")))
        else:
            out.append(path)
    return out


def replay_events(store: Store, ruleset: RuleSet, events: list[dict[str, Any]]) -> ReplayReport:
    """Load events into `store` (a throwaway database) and replay the rule set over exactly them."""
    if not events:
        return summarize(ruleset, [], [], Selector(0, 0))
    store.insert_events(events)
    selector = Selector.batch(events)
    detector = Detector(store, ruleset)
    hits = detector.run(selector, correlation_fire=Selector(selector.lo_ms, selector.hi_ms))
    return summarize(ruleset, hits, detector.alerts(hits), selector)
