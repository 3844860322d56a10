"""Where a sensor's output goes: normalized events, and dead letters for input it could not read.

Sinks are the bus (batched JSON-lines messages, the wire format of pipeline.codec), JSON lines on stdout
(events) and stderr (dead letters) for pipes, tests and users without a bus, or a list in memory. `flush()`
returns only when everything emitted so far is durable on the bus, which is when a tailer may advance its
checkpoint.
"""

from __future__ import annotations

import sys
import threading
from typing import IO, Any, Protocol

from pipeline.bus.base import Bus
from pipeline.codec import EVENT_HEADERS, encode_dead_letter, encode_events
from pipeline.schema import dumps


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
