"""A bounded on-disk queue of bus messages, for sensors whose broker is unreachable.

Messages are appended to segment files as framed records (length, CRC-32, topic, value); a cursor file
says how far the queue has been delivered. Draining reads from the cursor in order and moves it only
after the bus confirmed a chunk, so a crash at any point re-sends at most that chunk (the writer drops
re-sent events by event_id). A torn record at the end of the last segment (a crash mid-append) is cut
off when the spool is opened. When appending would pass `max_bytes`, the message is dropped, counted
and logged — a full disk never crashes the sensor.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
_FRAME = struct.Struct("<IIH")  # payload length (topic + value), crc32 of the payload, topic length
SEGMENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Spooled:
    topic: str
    value: bytes
    segment: int
    end: int  # offset just past this record in its segment


def _frame_size(topic: bytes, value: bytes) -> int:
    return _FRAME.size + len(topic) + len(value)


class SpoolBusy(RuntimeError):
    """Another process holds this spool directory."""


class DiskSpool:
    def __init__(self, directory: Path, max_bytes: int = 1024**3, segment_bytes: int = SEGMENT_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.directory / "lock", "w")  # noqa: SIM115 - held for the spool's lifetime
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise SpoolBusy(f"spool {self.directory} is in use by another process") from None
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.dropped = 0  # messages refused because the spool was full
        self._cursor_path = self.directory / "cursor"
        self._read_segment, self._read_offset = self._load_cursor()
        segments = self._segments()
        self._write_segment = segments[-1] if segments else self._read_segment
        if segments:
            self._truncate_torn_tail(self._write_segment)
        self._writer = open(self._path(self._write_segment), "ab")  # noqa: SIM115 - kept open for appends
        self._size = sum(self._path(s).stat().st_size for s in self._segments()) - self._read_offset

    # -- layout --------------------------------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.spool"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob("*.spool"))

    def _load_cursor(self) -> tuple[int, int]:
        try:
            segment, offset = self._cursor_path.read_text().split()
            return int(segment), int(offset)
        except (OSError, ValueError):
            existing = self._segments()
            return (existing[0] if existing else 0), 0

    def _save_cursor(self) -> None:
        tmp = self._cursor_path.with_suffix(".tmp")
        tmp.write_text(f"{self._read_segment} {self._read_offset}\n")
        os.replace(tmp, self._cursor_path)

    def _truncate_torn_tail(self, segment: int) -> None:
        path = self._path(segment)
        good = 0
        for record in self._records(segment, 0):
            good = record.end
        if good < path.stat().st_size:
            log.warning("spool %s: cutting a torn record at byte %d (a crash mid-append)", path, good)
            os.truncate(path, good)

    # -- queue ---------------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes not yet delivered."""
        return self._size

    def empty(self) -> bool:
        return self._size <= 0

    def append(self, topic: str, value: bytes) -> bool:
        """Queue one message; False (and counted) if the spool is full."""
        name = topic.encode()
        size = _frame_size(name, value)
        if self._size + size > self.max_bytes:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("spool %s is full (%d bytes): %d message(s) dropped so far", self.directory,
                          self.max_bytes, self.dropped)
            return False
        if self._writer.tell() and self._writer.tell() + size > self.segment_bytes:
            self._writer.close()
            self._write_segment += 1
            self._writer = open(self._path(self._write_segment), "ab")  # noqa: SIM115
        payload = name + value
        self._writer.write(_FRAME.pack(len(payload), zlib.crc32(payload), len(name)) + payload)
        self._size += size
        return True

    def sync(self) -> None:
        """Make appended messages durable (fsync)."""
        self._writer.flush()
        os.fsync(self._writer.fileno())

    def peek(self, max_messages: int) -> list[Spooled]:
        """The oldest undelivered messages, in order (the cursor does not move)."""
        self._writer.flush()
        out: list[Spooled] = []
        segment, offset = self._read_segment, self._read_offset
        while len(out) < max_messages and segment <= self._write_segment:
            for record in self._records(segment, offset):
                out.append(record)
                if len(out) >= max_messages:
                    break
            segment, offset = segment + 1, 0
        return out

    def consume(self, delivered: list[Spooled]) -> None:
        """Move the cursor past `delivered` (the result of peek, confirmed by the bus); drop old segments."""
        if not delivered:
            return
        last = delivered[-1]
        for record in delivered:
            self._size -= _frame_size(record.topic.encode(), record.value)
        for segment in range(self._read_segment, last.segment):
            self._path(segment).unlink(missing_ok=True)
        self._read_segment, self._read_offset = last.segment, last.end
        self._save_cursor()

    def _records(self, segment: int, offset: int) -> Iterator[Spooled]:
        try:
            with open(self._path(segment), "rb") as fh:
                fh.seek(offset)
                while True:
                    header = fh.read(_FRAME.size)
                    if len(header) < _FRAME.size:
                        return
                    length, crc, topic_len = _FRAME.unpack(header)
                    payload = fh.read(length)
                    if len(payload) < length or zlib.crc32(payload) != crc or topic_len > length:
                        return  # torn or corrupt: nothing after it is trusted
                    offset += _FRAME.size + length
                    yield Spooled(payload[:topic_len].decode(), payload[topic_len:], segment, offset)
        except FileNotFoundError:
            return

    def close(self) -> None:
        self._writer.close()
        self._lock.close()
