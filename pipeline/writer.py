"""The writer: bus -> validated events -> ClickHouse, at least once in, exactly once in the table.

Per batch: decode and validate (bad lines become dead letters with the reason), insert the events as
one columnar block with a deduplication token derived from the batch's offsets, store dead letters,
publish new dead letters, and only then commit the offsets. Any failure before the commit leaves the
offsets where they were, so the batch is read again.

Why nothing is doubled:
- a retried insert (the server applied it but the answer was lost) carries the same token -> no-op;
- a writer that crashed after the insert but before the commit leaves rows past the committed offset;
  whoever is assigned that partition next checks its first `max_batch_messages` messages there against
  the table and drops ids already stored. This is why every writer of a group must use the same
  `max_batch_messages` (a batch never spans more messages than that);
- duplicates inside a batch (a producer retry, a sensor re-sending its spool) are dropped by event_id.
While the store is unreachable the writer retries with backoff and does not poll, so memory stays
bounded by one batch and Kafka keeps the backlog.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pipeline.bus.base import Bus, BusUnavailable, CommitRejected, Message, TopicPartition, next_offsets
from pipeline.codec import decode_dead_letter, decode_events, encode_dead_letter
from pipeline.enrich import Enricher
from pipeline.store.base import Store, StoreUnavailable

log = logging.getLogger(__name__)
POLL_MESSAGES = 16


@dataclass
class WriterStats:
    messages: int = 0
    events_written: int = 0
    dead_letters: int = 0
    duplicates_dropped: int = 0
    batches: int = 0
    store_retries: int = 0
    bus_retries: int = 0
    commits_rejected: int = 0
    decode_seconds: float = 0.0
    enrich_seconds: float = 0.0
    insert_seconds: float = 0.0
    detect_seconds: float = 0.0
    commit_seconds: float = 0.0
    last_insert_seconds: float = 0.0
    last_batch_events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Batch:
    messages: list[Message] = field(default_factory=list)
    started: float = 0.0


class Writer:
    def __init__(
        self,
        bus: Bus,
        store: Store,
        group: str = "ganzhi-writer",
        max_batch_messages: int = 2000,
        max_batch_events: int = 50_000,
        linger_s: float = 0.5,
        on_batch: Callable[[list[dict[str, Any]], bool], None] | None = None,
        enricher: Enricher | None = None,
        instance_id: str | None = None,
        on_flush: Callable[[Writer], None] | None = None,
        on_tick: Callable[[Writer], None] | None = None,
    ):
        self.bus = bus
        self.store = store
        self.group = group
        self.max_batch_messages = max_batch_messages
        self.max_batch_events = max_batch_events
        self.linger_s = linger_s
        # hook for live detection: called with each inserted batch's events, and whether each is exactly the row
        # stored (not so after a takeover: a previous writer stored some, this one did not enrich them)
        self.on_batch = on_batch
        self.enricher = enricher
        self.on_flush = on_flush  # called after each committed batch (metrics)
        self.on_tick = on_tick  # called once per loop turn, busy or idle (metrics)
        self.stats = WriterStats()
        self._topics = bus.topics
        self._consumer = bus.consumer([bus.topics.events, bus.topics.deadletter], group, instance_id)
        self._recovering: dict[TopicPartition, int] = {}  # partition -> messages still to check
        self._batch = _Batch()
        self._batch_events = 0

    # -- main loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event, idle_exit_s: float | None = None) -> WriterStats:
        """Consume until `stop` is set (or, with idle_exit_s, until nothing arrived for that long)."""
        last_data = time.monotonic()
        try:
            while not stop.is_set():
                got = self.step(poll_timeout_s=0.2, stop=stop)
                if self.on_tick is not None:
                    self.on_tick(self)
                now = time.monotonic()
                if got:
                    last_data = now
                elif idle_exit_s is not None and now - last_data >= idle_exit_s and not self._batch.messages:
                    break
            self.flush(stop)
        finally:
            self._consumer.close()
        return self.stats

    def step(self, poll_timeout_s: float = 0.2, stop: threading.Event | None = None) -> int:
        """Poll once; flush when the batch is full or has lingered long enough. Returns messages polled."""
        # a few messages per poll: a message may hold thousands of events, and a batch must stop near
        # max_batch_events (a huge first batch after a restart would take long enough to be killed again)
        room = min(POLL_MESSAGES, self.max_batch_messages - len(self._batch.messages))
        messages = self._consumer.poll(poll_timeout_s, room)
        for tp in self._consumer.take_new_assignments():
            self._recovering[tp] = self.max_batch_messages
        if messages:
            if not self._batch.messages:
                self._batch.started = time.monotonic()
            self._batch.messages.extend(messages)
            self._batch_events += sum(m.value.count(b"\n") + 1 for m in messages if m.topic == self._topics.events)
        full = len(self._batch.messages) >= self.max_batch_messages or self._batch_events >= self.max_batch_events
        lingered = self._batch.messages and time.monotonic() - self._batch.started >= self.linger_s
        if full or lingered or (self._batch.messages and not messages):
            self.flush(stop)
        return len(messages)

    # -- one batch ---------------------------------------------------------------------------

    def flush(self, stop: threading.Event | None = None) -> None:
        batch, self._batch, self._batch_events = self._batch.messages, _Batch(), 0
        if not batch:
            return
        with self._stage("decode"):
            events, rejected, stored_dead, recovering_ids = self._decode(batch)
        detect = events  # detection sees the whole batch: a crashed writer may have stored it unexamined
        already: set[str] = set()
        if recovering_ids:
            already = self._with_store_retry(lambda: self.store.existing_event_ids(recovering_ids), stop)
            if already:
                self.stats.duplicates_dropped += len(already)
                events = [e for e in events if e["event_id"] not in already]
                log.warning("dropped %d events already stored by a previous writer", len(already))

        if self.enricher is not None:
            with self._stage("enrich"):
                self.enricher.enrich(events)

        token = _batch_token(batch)
        inserting_since = self.stats.insert_seconds
        with self._stage("insert"):
            self._with_store_retry(lambda: self.store.insert_events(events, token + ":e"), stop)
            self._with_store_retry(lambda: self.store.insert_deadletters(stored_dead, token + ":d"), stop)
        self.stats.last_insert_seconds = self.stats.insert_seconds - inserting_since
        if rejected:
            for record in rejected:
                self.bus.publish(self._topics.deadletter, encode_dead_letter(record))
            self._with_bus_retry(self.bus.flush, stop)
        if self.on_batch is not None and detect:
            with self._stage("detect"):
                self._with_store_retry(lambda: self.on_batch(detect, not already), stop)  # type: ignore[misc]
        offsets = next_offsets(batch)
        with self._stage("commit"):
            try:
                self._with_bus_retry(lambda: self._consumer.commit(offsets), stop)
            except CommitRejected as exc:
                # stored but not committed: the partitions' new owner re-reads them and its assignment check
                # drops what this batch already stored
                self.stats.commits_rejected += 1
                log.warning("%s; the new owner of these partitions takes over from the last commit", exc)

        for msg in batch:
            if msg.tp in self._recovering:
                self._recovering[msg.tp] -= 1
                if self._recovering[msg.tp] <= 0:
                    del self._recovering[msg.tp]
        self.stats.batches += 1
        self.stats.messages += len(batch)
        self.stats.events_written += len(events)
        self.stats.dead_letters += len(rejected)
        self.stats.last_batch_events = len(events)
        if self.on_flush is not None:
            self.on_flush(self)

    def _decode(self, batch: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                     list[dict[str, Any]], list[str]]:
        """(valid events without in-batch duplicates, rejected lines, stored dead letters, ids of events
        from partitions still under the assignment check)."""
        events: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        stored_dead: list[dict[str, Any]] = []
        recovering_ids: list[str] = []
        seen: set[str] = set()
        for msg in batch:
            if msg.topic == self._topics.deadletter:
                stored_dead.append(decode_dead_letter(msg))
                continue
            good, bad = decode_events(msg)
            rejected.extend(bad)
            recovering = msg.tp in self._recovering
            for event in good:
                eid = event["event_id"]
                if eid in seen:
                    self.stats.duplicates_dropped += 1
                    continue
                seen.add(eid)
                events.append(event)
                if recovering:
                    recovering_ids.append(eid)
        return events, rejected, stored_dead, recovering_ids

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Adds the block's wall time to stats.<name>_seconds (the per-stage shares in metrics and bench)."""
        clock = time.perf_counter()
        yield
        setattr(self.stats, f"{name}_seconds", getattr(self.stats, f"{name}_seconds") + time.perf_counter() - clock)

    def _with_store_retry(self, action: Callable[[], Any], stop: threading.Event | None) -> Any:
        return self._retry(action, StoreUnavailable, "store", stop)

    def _with_bus_retry(self, action: Callable[[], Any], stop: threading.Event | None) -> Any:
        return self._retry(action, BusUnavailable, "bus", stop)

    def _retry(self, action: Callable[[], Any], transient: type[Exception], what: str,
               stop: threading.Event | None) -> Any:
        """Run action until it succeeds, backing off on transient outages; give up only when stopping."""
        delay = 0.2
        while True:
            try:
                return action()
            except transient as exc:
                if what == "store":
                    self.stats.store_retries += 1
                else:
                    self.stats.bus_retries += 1
                log.warning("%s unavailable, retrying in %.1fs: %s", what, delay, exc)
                if stop is not None and stop.is_set():
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def lag(self) -> dict[TopicPartition, int]:
        return self._consumer.lag()


def _batch_token(batch: list[Message]) -> str:
    """Same messages -> same token: a retried insert of this batch is dropped by ClickHouse."""
    spans: dict[TopicPartition, list[int]] = {}
    for msg in batch:
        lo_hi = spans.setdefault(msg.tp, [msg.offset, msg.offset])
        lo_hi[0] = min(lo_hi[0], msg.offset)
        lo_hi[1] = max(lo_hi[1], msg.offset)
    text = ";".join(f"{t}/{p}/{lo}-{hi}" for (t, p), (lo, hi) in sorted(spans.items()))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
