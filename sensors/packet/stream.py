"""TCP stream reassembly for the first bytes of each direction: in order, across out-of-order segments."""

from __future__ import annotations

MASK = 0xFFFF_FFFF
HALF = 1 << 31


class Stream:
    """One direction of a TCP connection: segments in, contiguous new bytes out.

    The start is the SYN's sequence number + 1 (or the first segment's, joining mid-stream). Segments ahead
    of the expected one wait (at most `max_pending`); retransmitted and overlapping bytes are trimmed so each
    byte is delivered once (the first copy wins).
    """

    __slots__ = ("gaps", "max_pending", "next", "pending")

    def __init__(self, max_pending: int = 64):
        self.next: int | None = None
        self.pending: dict[int, bytes] = {}
        self.max_pending = max_pending
        self.gaps = 0  # segments dropped because the wait list was full

    def syn(self, seq: int) -> None:
        if self.next is None:
            self.next = (seq + 1) & MASK

    def add(self, seq: int, data: bytes) -> bytes:
        if self.next is None:
            self.next = seq
        ahead = (seq - self.next) & MASK
        if 0 < ahead < HALF:  # a gap before it: wait for the missing bytes
            if len(self.pending) < self.max_pending:
                self.pending.setdefault(seq, data)
            else:
                self.gaps += 1
            return b""
        out = self._take(seq, data)
        if not self.pending:
            return out
        parts = [out]
        progress = True
        while progress and self.pending:
            progress = False
            for s in list(self.pending):
                if (s - self.next) & MASK >= HALF or s == self.next:  # now due (possibly overlapping)
                    parts.append(self._take(s, self.pending.pop(s)))
                    progress = True
        return b"".join(parts)

    def skip_gap(self) -> tuple[int, bytes]:
        """Give up on missing bytes (lost by the capture): jump to the nearest waiting segment.

        Returns the gap's size and the bytes now contiguous after it ((0, b"") when nothing waits).
        """
        if not self.pending or self.next is None:
            return 0, b""
        nearest = min(self.pending, key=lambda s: (s - self.next) & MASK)
        gap = (nearest - self.next) & MASK
        self.next = nearest
        return gap, self.add(nearest, self.pending.pop(nearest))

    def _take(self, seq: int, data: bytes) -> bytes:
        """Deliver `data` starting at `seq` (at or before `next`): the bytes beyond `next`, if any."""
        behind = (self.next - seq) & MASK
        if behind >= len(data):
            return b""
        data = data[behind:]
        self.next = (self.next + len(data)) & MASK
        return data
