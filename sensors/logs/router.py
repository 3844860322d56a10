"""Log records into events: a parser runs over each record; the event goes to a sink, a failure to the dead letters
with the parser and the reason."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.codec import dead_letter
from sensors.logs.parsers.base import ParseError, Parser
from sensors.sink import Sink

log = logging.getLogger(__name__)


@dataclass
class SensorStats:
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    skipped: int = 0  # header and comment lines (Zeek #fields, ...)
    drops: Counter[str] = field(default_factory=Counter)  # reason -> count (floods, oversized frames)

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "events": self.events, "dead_letters": self.dead_letters,
                "skipped": self.skipped, "drops": dict(self.drops)}


class RecordRouter:
    """parser + sink: one call per record; never raises for bad input."""

    def __init__(self, sink: Sink, stage: str = "sensor.parse"):
        self.sink = sink
        self.stage = stage
        self.stats = SensorStats()

    def route(self, parser: Parser, text: str, origin: str, **kwargs: Any) -> dict[str, Any] | None:
        return self.handle(parser.name, lambda: parser.parse(text, origin, **kwargs), text, origin)

    def handle(self, name: str, parse: Callable[[], dict[str, Any] | None], text: str,
               origin: str) -> dict[str, Any] | None:
        """Count one record, run `parse` on it and emit the event, or dead-letter `text` with the reason."""
        self.stats.records += 1
        try:
            event = parse()
        except ParseError as exc:
            self.reject(name, str(exc), text, origin)
            return None
        except Exception as exc:  # a parser bug must not stop the sensor or lose the record
            log.exception("parser %s failed on %s", name, origin)
            self.reject(name, f"parser bug ({type(exc).__name__}: {exc}); please report it", text, origin)
            return None
        if event is None:
            self.stats.skipped += 1
            return None
        self.stats.events += 1
        self.sink.emit(event)
        return event

    def reject(self, parser: str, reason: str, text: str, origin: str) -> None:
        self.stats.dead_letters += 1
        self.sink.dead(dead_letter(self.stage, parser, reason, text, origin))

