"""Where a log sensor's records go: parsed into events, or dead-lettered with the parser and the reason.

`RecordRouter` runs a parser over one record and hands the result to a sink; sinks are the bus (batched
JSON-lines messages, the wire format of pipeline.codec) or JSON lines on stdout (events) and stderr
(dead letters) for pipes, tests and users without a bus. `flush()` returns only when everything emitted
so far is durable on the bus, which is when a tailer may advance its checkpoint.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from pipeline.bus.base import Bus
from pipeline.codec import EVENT_HEADERS, dead_letter, encode_dead_letter, encode_events
from pipeline.schema import dumps
from sensors.logs.parsers.base import ParseError, Parser

log = logging.getLogger(__name__)


class Sink(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...

    def dead(self, record: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...


class BusSink:
    """Batches events into size-bounded messages on <prefix>.events; dead letters go to <prefix>.deadletter."""

    def __init__(self, bus: Bus, batch_events: int = 2000):
        self.bus = bus
        self.batch_events = batch_events
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._events.append(event)
            if len(self._events) >= self.batch_events:
                self._publish()

    def dead(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.bus.publish(self.bus.topics.deadletter, encode_dead_letter(record))

    def _publish(self) -> None:
        events, self._events = self._events, []
        for value in encode_events(events):
            self.bus.publish(self.bus.topics.events, value, headers=EVENT_HEADERS)

    def flush(self) -> None:
        with self._lock:
            self._publish()
            self.bus.flush()


class JsonlSink:
    """Events as JSON lines on `out`, dead letters as JSON lines on `err`."""

    def __init__(self, out: IO[bytes] | None = None, err: IO[bytes] | None = None):
        self.out = out or sys.stdout.buffer
        self.err = err or sys.stderr.buffer

    def emit(self, event: dict[str, Any]) -> None:
        self.out.write(dumps(event) + b"\n")

    def dead(self, record: dict[str, Any]) -> None:
        self.err.write(encode_dead_letter(record) + b"\n")

    def flush(self) -> None:
        self.out.flush()
        self.err.flush()


class ListSink:
    """Keeps everything in memory (tests, replays of small files)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.dead_letters: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def dead(self, record: dict[str, Any]) -> None:
        self.dead_letters.append(record)

    def flush(self) -> None:
        pass


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

