from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.bus.base import Topics
from pipeline.bus.kafka import KafkaBus


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def kafka_bus(kafka_bootstrap: str, unique_name: str) -> Iterator[KafkaBus]:
    """A Kafka bus with this test's own topics (3 partitions each)."""
    bus = KafkaBus(kafka_bootstrap, Topics(unique_name))
    bus.ensure_topics(partitions=3)
    yield bus
    bus.close()
