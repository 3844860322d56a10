"""The bus interface: topics of byte messages with consumer groups and explicit offset commits.

Two implementations: Kafka (kafka-python) for deployments, and an in-process bus for the embedded
default. Both give the writer the same contract: poll, process, then commit the next offset per
partition; a consumer learns which partitions it was (re)assigned, because those are where a crashed
predecessor may have written past its last commit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class Topics:
    """Ganzhi's topic names: <prefix>.events, <prefix>.deadletter, <prefix>.alerts (prefix 'ganzhi')."""

    prefix: str = "ganzhi"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    def all(self) -> tuple[str, str, str]:
        return (self.events, self.deadletter, self.alerts)


class BusError(RuntimeError):
    """The bus refused or failed an operation."""


class BusUnavailable(BusError):
    """The broker cannot be reached right now; retrying later may succeed."""


class CommitRejected(BusError):
    """The group moved on (a rebalance) and refused this consumer's commit: its partitions' new owner
    re-reads from the last committed offset, so the batch must not be retried here."""


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = field(default=())

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def next_offsets(messages: list[Message]) -> dict[TopicPartition, int]:
    """Per partition, the offset to commit after processing `messages` (the highest seen + 1)."""
    offsets: dict[TopicPartition, int] = {}
    for msg in messages:
        offsets[msg.tp] = max(offsets.get(msg.tp, 0), msg.offset + 1)
    return offsets


class Consumer(ABC):
    @abstractmethod
    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        """Up to max_records messages, waiting at most timeout_s for the first."""

    @abstractmethod
    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Record, per partition, the offset of the next message to read (last processed + 1)."""

    @abstractmethod
    def take_new_assignments(self) -> set[TopicPartition]:
        """Partitions assigned since the last call (all of them, the first time)."""

    @abstractmethod
    def lag(self) -> dict[TopicPartition, int]:
        """Messages not yet consumed, per assigned partition (best effort)."""

    @abstractmethod
    def close(self) -> None: ...


class Bus(ABC):
    name: str
    topics: Topics

    @abstractmethod
    def publish(
        self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Queue one message; `flush` makes everything queued durable (or raises)."""

    @abstractmethod
    def flush(self, timeout_s: float | None = None) -> None: ...

    @abstractmethod
    def consumer(self, topics: list[str], group: str, instance_id: str | None = None) -> Consumer:
        """A group member; with `instance_id` a static one (a restart under the same id takes back its
        partitions at once instead of waiting out the session timeout and a rebalance)."""

    @abstractmethod
    def ensure_topics(self, partitions: int) -> None:
        """Create Ganzhi's topics if they do not exist."""

    @abstractmethod
    def describe(self) -> str:
        """What the bus is, for logs: implementation and broker version."""

    def abandon(self) -> None:  # noqa: B027 - optional for implementations
        """Drop messages queued but not yet confirmed (their sender spooled them and will re-send)."""

    def close(self) -> None:  # noqa: B027 - optional for implementations
        pass
