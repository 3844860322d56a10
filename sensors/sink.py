"""Where a sensor's output goes: normalized events, and dead letters for input it could not read.

Sinks are the bus (batched JSON-lines messages, the wire format of pipeline.codec), JSON lines on stdout
(events) and stderr (dead letters) for pipes, tests and users without a bus, or a list in memory. `flush()`
returns only when everything emitted so far is durable on the bus, which is when a tailer may advance its
checkpoint.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import IO, Any, Protocol

from pipeline.bus.base import Bus, BusUnavailable
from pipeline.codec import EVENT_HEADERS, encode_dead_letter, encode_events
from pipeline.native import event_dumps
from sensors.spool import DiskSpool

log = logging.getLogger(__name__)


class Sink(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...

    def dead(self, record: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...


class BusSink:
    """Batches events into size-bounded messages on <prefix>.events; dead letters go to <prefix>.deadletter.

    With a spool, a broker outage does not stop the sensor: messages the bus could not confirm go to the
    bounded on-disk spool (in order, and everything after them too, so order is kept), and the spool is
    drained into the bus, oldest first, once the broker answers again (probed every `retry_s`).
    """

    def __init__(self, bus: Bus, batch_events: int = 2000, spool: DiskSpool | None = None, retry_s: float = 5.0,
                 confirm_every: int = 64, flush_timeout_s: float = 15.0):
        self.bus = bus
        self.batch_events = batch_events
        self.spool = spool
        self.retry_s = retry_s  # how often a drain is tried while the broker is away
        self.flush_timeout_s = flush_timeout_s  # how long a confirmation may take before the bus counts as down
        self.confirm_every = confirm_every  # with a spool: flush the bus every n messages (bounds memory)
        self._events: list[dict[str, Any]] = []
        self._unconfirmed: list[tuple[str, bytes]] = []  # sent since the last confirmed flush
        self._next_drain = 0.0
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._events.append(event)
            if len(self._events) >= self.batch_events:
                self._publish()

    def dead(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._send(self.bus.topics.deadletter, encode_dead_letter(record))

    def _publish(self) -> None:
        events, self._events = self._events, []
        for value in encode_events(events):
            self._send(self.bus.topics.events, value)

    def _send(self, topic: str, value: bytes) -> None:
        if self.spool is None:
            self.bus.publish(topic, value, headers=_headers(self.bus, topic))
            return
        if not self.spool.empty():  # keep order: nothing overtakes what is already spooled
            self.spool.append(topic, value)
            self.drain()
            return
        self._unconfirmed.append((topic, value))
        try:
            self.bus.publish(topic, value, headers=_headers(self.bus, topic))
            if len(self._unconfirmed) >= self.confirm_every:
                self.bus.flush(self.flush_timeout_s)
                self._unconfirmed = []
        except BusUnavailable as exc:
            self._to_spool(exc)

    def _to_spool(self, exc: Exception) -> None:
        assert self.spool is not None
        log.warning("bus unavailable, spooling to %s: %s", self.spool.directory, exc)
        self.bus.abandon()  # what the producer still queues would otherwise arrive after the spool
        for topic, value in self._unconfirmed:  # some may have arrived: the writer drops re-sent event ids
            self.spool.append(topic, value)
        self._unconfirmed = []
        self._next_drain = time.monotonic() + self.retry_s

    def drain(self, force: bool = False, chunk: int = 256) -> int:
        """Deliver spooled messages, oldest first, until the spool is empty or the bus fails again."""
        if self.spool is None or self.spool.empty() or (not force and time.monotonic() < self._next_drain):
            return 0
        delivered = 0
        while not self.spool.empty():
            batch = self.spool.peek(chunk)
            if not batch:
                break
            try:
                for item in batch:
                    self.bus.publish(item.topic, item.value, headers=_headers(self.bus, item.topic))
                self.bus.flush(self.flush_timeout_s)
            except BusUnavailable as exc:
                self.bus.abandon()  # the chunk stays spooled: its queued copies must not arrive later
                log.info("bus still unavailable, %d bytes stay spooled: %s", self.spool.bytes, exc)
                self._next_drain = time.monotonic() + self.retry_s
                break
            self.spool.consume(batch)
            delivered += len(batch)
        return delivered

    def flush(self) -> None:
        """Everything emitted so far is on the bus, or (with a spool) durable in the spool."""
        with self._lock:
            self._publish()
            if self.spool is None:
                self.bus.flush()
                return
            if self._unconfirmed:
                try:
                    self.bus.flush(self.flush_timeout_s)
                    self._unconfirmed = []
                except BusUnavailable as exc:
                    self._to_spool(exc)
            self.drain()
            if not self.spool.empty():
                self.spool.sync()


def _headers(bus: Bus, topic: str) -> list[tuple[str, bytes]] | None:
    return EVENT_HEADERS if topic == bus.topics.events else None


class JsonlSink:
    """Events as JSON lines on `out`, dead letters as JSON lines on `err`."""

    def __init__(self, out: IO[bytes] | None = None, err: IO[bytes] | None = None):
        self.out = out or sys.stdout.buffer
        self.err = err or sys.stderr.buffer
        self._dump = event_dumps()

    def emit(self, event: dict[str, Any]) -> None:
        self.out.write(self._dump(event) + b"\n")

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
