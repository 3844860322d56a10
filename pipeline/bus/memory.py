"""In-process bus for the embedded default: append-only logs in memory, one partition per topic.

Same contract as Kafka (offsets, consumer groups, commit after processing), so the writer code is
identical in both modes. Messages live as long as the process; durability comes from the store.
"""

from __future__ import annotations

import threading

from pipeline.bus.base import Bus, Consumer, Message, TopicPartition, Topics


class MemoryBus(Bus):
    name = "in-process"

    def __init__(self, topics: Topics | None = None) -> None:
        self.topics = topics or Topics()
        self._logs: dict[str, list[Message]] = {}
        self._committed: dict[str, dict[TopicPartition, int]] = {}
        self._cond = threading.Condition()

    def publish(
        self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        with self._cond:
            log = self._logs.setdefault(topic, [])
            log.append(Message(topic, 0, len(log), bytes(value), key, tuple(headers or ())))
            self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> None:
        pass  # publish is synchronous

    def ensure_topics(self, partitions: int) -> None:
        pass

    def consumer(self, topics: list[str], group: str, instance_id: str | None = None) -> Consumer:
        return _MemoryConsumer(self, list(topics), group)

    def describe(self) -> str:
        return "in-process bus"

    def messages(self, topic: str) -> list[Message]:
        with self._cond:
            return list(self._logs.get(topic, ()))

    def end_offset(self, topic: str) -> int:
        with self._cond:
            return len(self._logs.get(topic, ()))


class _MemoryConsumer(Consumer):
    def __init__(self, bus: MemoryBus, topics: list[str], group: str):
        self._bus = bus
        self._topics = topics
        committed = bus._committed.setdefault(group, {})
        self._committed = committed
        self._position = {(t, 0): committed.get((t, 0), 0) for t in topics}
        self._new = set(self._position)

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        bus = self._bus
        with bus._cond:
            out = self._take(max_records)
            if not out and timeout_s > 0:
                bus._cond.wait(timeout_s)
                out = self._take(max_records)
            return out

    def _take(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        for tp, pos in self._position.items():
            log = self._bus._logs.get(tp[0], ())
            chunk = log[pos : pos + max_records - len(out)]
            out.extend(chunk)
            self._position[tp] = pos + len(chunk)
            if len(out) >= max_records:
                break
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        with self._bus._cond:
            self._committed.update(offsets)

    def take_new_assignments(self) -> set[TopicPartition]:
        new, self._new = self._new, set()
        return new

    def lag(self) -> dict[TopicPartition, int]:
        with self._bus._cond:
            return {tp: len(self._bus._logs.get(tp[0], ())) - pos for tp, pos in self._position.items()}

    def close(self) -> None:
        pass
