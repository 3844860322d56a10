"""Buses: Kafka or in-process, behind one interface (see base.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.bus.base import (
    Bus,
    BusError,
    BusUnavailable,
    Consumer,
    Message,
    Topics,
)

if TYPE_CHECKING:
    from pipeline.config import Settings

__all__ = ["Bus", "BusError", "BusUnavailable", "Consumer", "Message", "Topics", "open_bus"]


def open_bus(settings: Settings) -> Bus:
    """Kafka if bootstrap servers are configured, else the in-process bus."""
    if settings.kafka:
        from pipeline.bus.kafka import KafkaBus

        bus: Bus = KafkaBus(settings.kafka, Topics(settings.topic_prefix))
        bus.ensure_topics(settings.events_partitions)
        return bus
    from pipeline.bus.memory import MemoryBus

    return MemoryBus(Topics(settings.topic_prefix))
