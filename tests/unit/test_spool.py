"""The sensor spool: order, bounds, restarts, torn writes (the bus side is tested against real Kafka)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensors.spool import DiskSpool, SpoolBusy


def _drain(spool: DiskSpool, chunk: int = 7) -> list[bytes]:
    out: list[bytes] = []
    while batch := spool.peek(chunk):
        out.extend(item.value for item in batch)
        spool.consume(batch)
    return out


def test_messages_come_back_in_order_across_segments_and_restarts(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, segment_bytes=4096)
    values = [f"message {i:05d} ".encode() * (1 + i % 9) for i in range(500)]
    for v in values[:300]:
        assert spool.append("t.events", v)
    first = spool.peek(100)
    spool.consume(first)
    spool.sync()
    spool.close()
    assert len(list(tmp_path.glob("*.spool"))) > 3

    reopened = DiskSpool(tmp_path, segment_bytes=4096)  # a sensor restart: the cursor survives
    for v in values[300:]:
        reopened.append("t.events", v)
    assert [i.value for i in first] + _drain(reopened) == values
    assert reopened.empty() and reopened.bytes == 0
    assert len(list(tmp_path.glob("*.spool"))) == 1  # delivered segments are deleted


def test_full_spool_drops_and_counts_never_raises(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=10_000)
    accepted = sum(spool.append("t", b"x" * 1000) for _ in range(50))
    assert 0 < accepted < 50 and spool.dropped == 50 - accepted
    assert spool.bytes <= 10_000
    assert len(_drain(spool)) == accepted
    assert spool.append("t", b"x" * 1000)  # room again once drained


def test_a_torn_record_at_the_end_is_cut_off(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    for i in range(10):
        spool.append("t", f"m{i}".encode())
    spool.sync()
    spool.close()
    segment = next(tmp_path.glob("*.spool"))
    with open(segment, "ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x01\x02")  # a crash in the middle of the next append
    reopened = DiskSpool(tmp_path)
    reopened.append("t", b"after")
    assert _drain(reopened) == [f"m{i}".encode() for i in range(10)] + [b"after"]


def test_one_process_per_spool(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    with pytest.raises(SpoolBusy):
        DiskSpool(tmp_path)
    spool.close()
    DiskSpool(tmp_path).close()
