"""`ganzhi ingest`: publish a file of normalized events (JSON lines) to the bus.

Lines are validated here already, so a bad line is dead-lettered with its file and line number instead
of travelling on. A record without an `event_id` gets one from its sensor, its text and its line
number, so importing the same file again yields the same ids.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.bus.base import Bus
from pipeline.codec import EVENT_HEADERS, MAX_MESSAGE_BYTES, dead_letter, encode_dead_letter, encode_events
from pipeline.schema import SchemaError, event_id, normalize


@dataclass
class IngestReport:
    lines: int = 0
    events: int = 0
    dead_letters: int = 0
    messages: int = 0


def read_events(path: Path, report: IngestReport, on_dead: Callable[[dict[str, Any]], None],
                on_line: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Canonical events from a JSON-lines file; bad lines go to on_dead as dead-letter records."""
    with open(path, "rb") as fh:
        for lineno, line in enumerate(io.BufferedReader(fh), start=1):  # type: ignore[arg-type]
            if on_line is not None:
                on_line(len(line))
            stripped = line.strip()
            if not stripped:
                continue
            report.lines += 1
            origin = f"{path.name}:{lineno}"
            try:
                record = orjson.loads(stripped)
                if isinstance(record, dict) and not record.get("event_id"):
                    source = f"{record.get('sensor', '')}/{record.get('source_type', '')}"
                    record["event_id"] = event_id(source, stripped, origin)
                event = normalize(record)
            except orjson.JSONDecodeError as exc:
                on_dead(dead_letter("ingest.parse", "ingest", f"invalid JSON: {exc}", stripped, origin))
                continue
            except SchemaError as exc:
                on_dead(dead_letter("ingest.parse", "ingest", exc.reason, stripped, origin, exc.field))
                continue
            report.events += 1
            yield event


def publish_events(bus: Bus, events: Iterable[dict[str, Any]], max_bytes: int = MAX_MESSAGE_BYTES) -> int:
    """Publish canonical events as size-bounded JSON-lines messages; returns the number of messages.
    Call bus.flush() to make them durable."""
    count = 0
    for value in encode_events(events, max_bytes=max_bytes):
        bus.publish(bus.topics.events, value, headers=EVENT_HEADERS)
        count += 1
    return count


def ingest_file(bus: Bus, path: Path, on_line: Callable[[int], None] | None = None) -> IngestReport:
    report = IngestReport()

    def on_dead(record: dict[str, Any]) -> None:
        report.dead_letters += 1
        bus.publish(bus.topics.deadletter, encode_dead_letter(record))

    report.messages = publish_events(bus, read_events(path, report, on_dead, on_line))
    bus.flush()
    return report
