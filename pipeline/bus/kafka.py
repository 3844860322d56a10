"""Kafka bus (kafka-python): the deployment path.

Producer: acks=all, lz4 (gzip if lz4 is missing), errors surface at `flush`. Consumer: a consumer group
with auto-commit off — the writer commits after the store acknowledged — and a rebalance listener so
the writer knows which partitions are newly its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import errors as kafka_errors
from kafka.admin import NewTopic
from kafka.codec import has_lz4
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTP

from pipeline.bus.base import (
    Bus,
    BusError,
    BusUnavailable,
    CommitRejected,
    Consumer,
    Message,
    TopicPartition,
    Topics,
)

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
IDLE_REFRESH_S = 15.0  # a consumer with no partition this long refreshes metadata (see _refresh_if_idle)
POSITION_TIMEOUT_MS = 2000  # lag and stall checks never block on a position lookup longer than this
STALL_S = 25.0  # a consumer fed nothing this long while messages wait is rebuilt (see _reconnect_if_stalled)
CONNECT_S = 20.0  # a consumer that is not built and subscribed this long is abandoned and built anew
CONNECT_ATTEMPTS = 3


_TRANSIENT = (kafka_errors.KafkaTimeoutError, kafka_errors.KafkaConnectionError, kafka_errors.BrokerNotAvailableError)
_REBALANCED = (kafka_errors.CommitFailedError, kafka_errors.RebalanceInProgressError,
               kafka_errors.IllegalGenerationError, kafka_errors.UnknownMemberIdError,
               kafka_errors.FencedInstanceIdError)


def _raise_as_bus_error(exc: Exception, what: str) -> None:
    if isinstance(exc, _REBALANCED):
        raise CommitRejected(f"Kafka group rebalanced while {what}: {exc}") from exc
    if isinstance(exc, _TRANSIENT) or getattr(exc, "retriable", False):
        raise BusUnavailable(f"Kafka unreachable while {what}: {exc}") from exc
    raise BusError(f"Kafka error while {what}: {exc}") from exc


class _NoAnswer(BusUnavailable):
    """A client call that neither returned nor failed within its deadline."""


def _bounded(call: Callable[[], Any], timeout_s: float, what: str, discard: Callable[[Any], None]) -> Any:
    """`call()` in a helper thread, waiting at most timeout_s: kafka-python 3.0 waits for some answers without a
    bound (the metadata fetch of `partitions_for_topic` waits on a future forever; a CI run saw a restarted
    writer's fresh client sit silent after "Initializing connection" for over a minute). A result that arrives
    after the deadline is handed to `discard` (closed), so an abandoned client never joins the group late."""
    done = threading.Event()
    state: dict[str, Any] = {}
    lock = threading.Lock()

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:  # handed to the caller below
            state["error"] = exc
            done.set()
            return
        with lock:
            state["result"] = result
            late = state.get("abandoned", False)
        done.set()
        if late:
            with contextlib.suppress(Exception):
                discard(result)

    threading.Thread(target=run, name=f"ganzhi-{what.replace(' ', '-')}", daemon=True).start()
    if not done.wait(timeout_s):
        with lock:
            if "result" not in state:
                state["abandoned"] = True
                raise _NoAnswer(f"Kafka client gave no answer within {timeout_s:.0f}s while {what}")
    if "error" in state:
        raise state["error"]
    return state["result"]


class KafkaBus(Bus):
    name = "kafka"

    def __init__(self, bootstrap: str, topics: Topics | None = None, client_id: str = "ganzhi",
                 request_timeout_ms: int = 30000, max_block_ms: int = 10000):
        self.bootstrap = bootstrap
        self.topics = topics or Topics()
        self.client_id = client_id
        self._request_timeout_ms = request_timeout_ms
        self._max_block_ms = max_block_ms  # how long publish may wait for an unreachable broker
        self._producer: KafkaProducer | None = None
        self._pending: list[Any] = []

    # -- producing ---------------------------------------------------------------------------

    def _get_producer(self) -> KafkaProducer:
        if self._producer is None:
            try:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    client_id=self.client_id,
                    acks="all",
                    linger_ms=20,
                    batch_size=1024 * 1024,
                    compression_type="lz4" if has_lz4() else "gzip",
                    max_request_size=MAX_MESSAGE_BYTES + 64 * 1024,
                    request_timeout_ms=self._request_timeout_ms,
                    max_block_ms=self._max_block_ms,
                    bootstrap_timeout_ms=self._max_block_ms,
                    retries=5,
                )
            except Exception as exc:
                _raise_as_bus_error(exc, "connecting the producer")
        assert self._producer is not None
        return self._producer

    def publish(
        self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        try:
            self._pending.append(self._get_producer().send(topic, value=value, key=key, headers=headers or []))
        except BusError:
            raise
        except Exception as exc:
            _raise_as_bus_error(exc, f"publishing to {topic}")

    def flush(self, timeout_s: float | None = None) -> None:
        if self._producer is None:
            return
        pending, self._pending = self._pending, []
        try:
            self._producer.flush(timeout=timeout_s)
            for future in pending:
                future.get(timeout=0)
        except Exception as exc:
            _raise_as_bus_error(exc, "flushing the producer")

    # -- admin and consuming -----------------------------------------------------------------

    def _admin(self) -> KafkaAdminClient:
        try:
            return KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-admin",
                                    request_timeout_ms=self._request_timeout_ms)
        except Exception as exc:
            _raise_as_bus_error(exc, "connecting the admin client")
            raise  # unreachable; keeps type checkers content

    def ensure_topics(self, partitions: int) -> None:
        admin = self._admin()
        try:
            existing = set(admin.list_topics())
            wanted = [
                NewTopic(t, partitions if t != self.topics.deadletter else 1, 1,
                         topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES + 64 * 1024)})
                for t in self.topics.all()
                if t not in existing
            ]
            if wanted:
                with contextlib.suppress(kafka_errors.TopicAlreadyExistsError):  # a concurrent creator won
                    admin.create_topics(wanted)
                self._await_leaders(admin, [t.name for t in wanted])
        except BusError:
            raise
        except Exception as exc:
            _raise_as_bus_error(exc, "creating topics")
        finally:
            admin.close()

    @staticmethod
    def _await_leaders(admin: KafkaAdminClient, topics: list[str], timeout_s: float = 30.0) -> None:
        """Return once every partition of `topics` has a leader in the broker's metadata.

        CreateTopics answers before the new topics' metadata has spread (KRaft applies it asynchronously); a
        consumer group that forms in that window is assigned no partitions and, with kafka-python's 5-minute
        metadata refresh, would sit idle that long.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            described = {d.get("name"): d for d in admin.describe_topics(topics)}
            if all(d.get("error_code", 1) == 0 and d.get("partitions")
                   and all(p.get("leader_id", -1) >= 0 for p in d["partitions"])
                   for d in (described.get(t, {}) for t in topics)):
                return
            if time.monotonic() > deadline:
                raise BusError(f"topics {', '.join(topics)} were created but have no partition leaders after "
                               f"{timeout_s:.0f}s; check the broker's log")
            time.sleep(0.2)

    def describe(self) -> str:
        admin = self._admin()
        try:
            cluster = admin.describe_cluster()
            brokers = cluster.get("brokers", [])
            version = admin.get_broker_version_data(brokers[0]["broker_id"]).broker_version_str if brokers else "?"
        except Exception as exc:
            _raise_as_bus_error(exc, "describing the cluster")
            raise
        finally:
            admin.close()
        return f"Kafka {version} at {self.bootstrap} (cluster {cluster.get('cluster_id')}, {len(brokers)} broker(s))"

    def group_offsets(self, group: str) -> dict[TopicPartition, tuple[int, int]]:
        """(committed offset, end offset) per partition of Ganzhi's topics, for a consumer group."""
        admin = self._admin()
        consumer = None
        try:
            committed = {(tp.topic, tp.partition): om.offset
                         for tp, om in admin.list_group_offsets(group).get(group, {}).items()}
            consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-status")
            tps = [KafkaTP(t, p) for t in (self.topics.events, self.topics.deadletter)
                   for p in sorted(consumer.partitions_for_topic(t) or ())]
            ends = consumer.end_offsets(tps) if tps else {}
        except Exception as exc:
            _raise_as_bus_error(exc, f"reading the offsets of group {group!r}")
            raise
        finally:
            admin.close()
            if consumer is not None:
                consumer.close()
        return {(tp.topic, tp.partition): (max(0, committed.get((tp.topic, tp.partition), 0)), end)
                for tp, end in ends.items()}

    def consumer(self, topics: list[str], group: str, instance_id: str | None = None,
                 stall_s: float = STALL_S) -> Consumer:
        return _KafkaConsumer(self, topics, group, instance_id, stall_s)

    def abandon(self) -> None:
        if self._producer is not None:
            producer, self._producer, self._pending = self._producer, None, []
            try:
                producer.close(timeout=0)
            except Exception as exc:  # close(0) first tries flush(0), which times out with records queued
                log.debug("closing the producer: %s", exc)
            sender = getattr(producer, "_sender", None)  # kafka-python has no public abort: force the sender
            if sender is not None and sender.is_alive():  # closed, so queued records are never sent late
                sender.force_close()

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(timeout=10)
            finally:
                self._producer.close(timeout=10)
                self._producer = None


class _Listener(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.new: set[TopicPartition] = set()

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.new.update((tp.topic, tp.partition) for tp in assigned)


class _KafkaConsumer(Consumer):
    def __init__(self, bus: KafkaBus, topics: list[str], group: str, instance_id: str | None = None,
                 stall_s: float = STALL_S):
        self._bus, self._topics, self._group, self._instance_id = bus, topics, group, instance_id
        self._stall_s = stall_s
        self._listener = _Listener()
        self._consumer = self._connect()
        self.reconnects = 0
        self._unassigned_since = self._idle_since = time.monotonic()

    def _connect(self) -> KafkaConsumer:
        """A new client, subscribed; one that hangs while being built is abandoned and built again."""
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                return _bounded(self._new_client, CONNECT_S, "connecting the consumer",
                                discard=lambda c: c.close(autocommit=False))
            except _NoAnswer as exc:
                if attempt == CONNECT_ATTEMPTS:
                    raise
                log.warning("%s; building a new client (attempt %d of %d)", exc, attempt + 1, CONNECT_ATTEMPTS)
        raise AssertionError("unreachable")

    def _new_client(self) -> KafkaConsumer:
        bus = self._bus
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=bus.bootstrap,
                client_id=f"{bus.client_id}-{self._group}",
                group_id=self._group,
                group_instance_id=self._instance_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_bytes=64 * 1024 * 1024,
                max_partition_fetch_bytes=MAX_MESSAGE_BYTES * 2,
                session_timeout_ms=10000,
                heartbeat_interval_ms=2000,
                max_poll_interval_ms=600000,
                request_timeout_ms=max(bus._request_timeout_ms, 20000),
            )
            # know the topics' partitions before joining: a member that leads the group's first assignment
            # without them assigns nothing, and kafka-python may not rejoin until its 5-minute metadata
            # refresh (seen: a restarted writer idle for a minute with partitions waiting)
            for topic in self._topics:
                consumer.partitions_for_topic(topic)
        except Exception as exc:
            _raise_as_bus_error(exc, "connecting the consumer")
            raise
        consumer.subscribe(self._topics, listener=self._listener)
        return consumer

    def _refresh_if_idle(self) -> None:
        """A member holding no partition for long asks for fresh metadata: kafka-python rejoins when the
        metadata differs from what the group's assignment was computed on (a CI run saw a restarted writer
        hold nothing for over a minute). A metadata request is cheap, unlike forcing a rebalance."""
        if self._consumer.assignment():
            self._unassigned_since = time.monotonic()
        elif time.monotonic() - self._unassigned_since > IDLE_REFRESH_S:
            self._unassigned_since = time.monotonic()
            self._consumer._client.cluster.request_update()  # no public API for this

    def _reconnect_if_stalled(self, got_records: bool) -> None:
        """The watchdog: a member that received nothing for `stall_s` although its partitions have messages
        waiting, or have no fetch position, or it holds none while alone in its group, is stuck, and is
        rebuilt: the new client rejoins under the same instance id and takes over from the last commit (the
        writer's assignment check makes that safe). Seen in CI and under load with kafka-python 3.0: a
        restarted static member rejoined twice in two seconds, then sat over a minute with its partitions
        assigned, a backlog waiting and no error, its committed-offset lookup never answered."""
        now = time.monotonic()
        if got_records:
            self._idle_since = now
            return
        if now - self._idle_since < self._stall_s:
            return
        self._idle_since = now
        try:
            if self._consumer.assignment():
                offsets = self._offsets().values()
                waiting = sum(end - pos for pos, end in offsets if pos is not None and end > pos)
                unplaced = sum(pos is None for pos, _ in offsets)
                if waiting == 0 and not unplaced:
                    return
                why = f"{waiting} messages waiting" + (f", {unplaced} partition(s) without a position"
                                                       if unplaced else "")
            elif self._alone_in_group():
                why = "no partition assigned"
            else:  # more members than partitions leaves some idle: that is not stuck
                return
        except BusError as exc:  # the broker is away: that is an outage, not a stuck client
            log.debug("stall check skipped: %s", exc)
            return
        log.warning("Kafka consumer of group %s received nothing for %.0fs with %s; reconnecting",
                    self._group, self._stall_s, why)
        with contextlib.suppress(Exception):
            self._consumer.close(autocommit=False)
        self._listener.new.clear()
        self._consumer = self._connect()
        self.reconnects += 1
        self._unassigned_since = time.monotonic()

    def _offsets(self) -> dict[Any, tuple[int | None, int]]:
        """(fetch position, None while unknown after a bounded wait; end offset) per assigned partition."""
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        try:
            ends = self._consumer.end_offsets(assigned)
            return {tp: (self._consumer.position(tp, timeout_ms=POSITION_TIMEOUT_MS), ends[tp]) for tp in assigned}
        except Exception as exc:
            _raise_as_bus_error(exc, "reading end offsets and positions")
            raise

    def _alone_in_group(self) -> bool:
        """The group has no other member that could hold the topics' partitions."""
        admin = self._bus._admin()
        try:
            group = admin.describe_groups([self._group]).get(self._group) or {}
        except Exception as exc:
            _raise_as_bus_error(exc, f"describing group {self._group!r}")
            raise
        finally:
            admin.close()
        return len(group.get("members") or ()) <= 1

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        self._refresh_if_idle()
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except Exception as exc:
            _raise_as_bus_error(exc, "polling")
            raise
        self._reconnect_if_stalled(bool(batches))
        out: list[Message] = []
        for tp, records in batches.items():
            for r in records:
                headers = tuple((k, v or b"") for k, v in (r.headers or ()))
                out.append(Message(tp.topic, tp.partition, r.offset, r.value or b"", r.key, headers))
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            self._consumer.commit({KafkaTP(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})
        except Exception as exc:
            _raise_as_bus_error(exc, "committing offsets")

    def take_new_assignments(self) -> set[TopicPartition]:
        new, self._listener.new = self._listener.new, set()
        return new

    def lag(self) -> dict[TopicPartition, int]:
        """Messages waiting per assigned partition (one without a fetch position yet counts whole)."""
        return {(tp.topic, tp.partition): max(0, end - (pos or 0)) for tp, (pos, end) in self._offsets().items()}

    def close(self) -> None:
        try:
            self._consumer.close(autocommit=False)
        except Exception as exc:  # closing a consumer of a dead broker must not mask the real error
            log.warning("closing Kafka consumer: %s", exc)
