"""Packet sources: pcap/pcapng files and live interfaces, read as batches for the compiled decoder.

A `Batch` is one contiguous byte buffer with per-packet offsets, lengths and times, so the decoder walks
thousands of packets in one call. Classic pcap files are mapped into memory and their record headers walked
by a compiled loop (the hot path: no per-packet objects, no copies); pcapng files and live capture go through
scapy (`RawPcapNgReader`, `conf.L2listen`), whose raw packets are packed into the same batches.
"""

from __future__ import annotations

import mmap
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

PAD = 128  # zero bytes after the last packet: header gathers past a short packet stay inside the buffer
BATCH_PACKETS = 32768

# link types the decoder reads itself; every other one goes through scapy's dissectors
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_SLL, LINKTYPE_SLL2 = 0, 1, 101, 113, 276
LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW_OLD = 228, 229, 12


class CaptureError(Exception):
    """A capture file or interface that cannot be read at all (the message says why)."""


@dataclass
class Batch:
    data: bytes | mmap.mmap  # packet bytes (a pcap file: its mapping), followed by at least PAD bytes
    off: np.ndarray  # int64: where each packet starts in data
    caplen: np.ndarray  # int64: bytes captured
    wirelen: np.ndarray  # int64: bytes on the wire
    ts_us: np.ndarray  # int64: capture time, epoch microseconds
    linktype: int
    first: int  # 1-based number of the first packet in its source (Suricata's pcap_cnt)
    # slow-path batches of reassembled/re-dissected packets: their own numbers and VLAN ids
    number: np.ndarray | None = None
    vlans: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.off)

    @property
    def buf(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=np.uint8)

    @classmethod
    def pack(cls, packets: list[tuple[bytes, int, int]], linktype: int, first: int) -> Batch:
        """From (bytes, wire length, epoch µs) tuples."""
        lengths = np.fromiter((len(p[0]) for p in packets), dtype=np.int64, count=len(packets))
        off = np.zeros(len(packets), dtype=np.int64)
        if len(packets) > 1:
            np.cumsum(lengths[:-1], out=off[1:])
        data = b"".join(p[0] for p in packets) + bytes(PAD)
        wire = np.fromiter((p[1] for p in packets), dtype=np.int64, count=len(packets))
        ts = np.fromiter((p[2] for p in packets), dtype=np.int64, count=len(packets))
        return cls(data, off, lengths, wire, ts, linktype, first)


_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000), b"\xa1\xb2\xc3\xd4": (">", 1_000),  # µs
    b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1),  # ns
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


def read_file(path: str | Path, batch_packets: int = BATCH_PACKETS) -> Iterator[Batch]:
    """Batches from a pcap or pcapng file. A file cut short ends the stream (its last record is dropped)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic in _PCAP_MAGIC:
        return _read_pcap(path, batch_packets)
    if magic == _PCAPNG_MAGIC:
        return _read_pcapng(path, batch_packets)
    raise CaptureError(f"{path} is not a pcap or pcapng file (magic {magic.hex() or 'empty'})")


def _read_pcap(path: Path, batch_packets: int) -> Iterator[Batch]:
    """The file is mapped, not read: batches point into the mapping, so packet bytes are never copied
    (only the last batch, which needs PAD zero bytes after it)."""
    with path.open("rb") as f:
        header = f.read(24)
        if len(header) < 24:
            raise CaptureError(f"{path}: pcap header cut short")
        endian, ns_factor = _PCAP_MAGIC[header[:4]]
        linktype = struct.unpack(endian + "I", header[20:24])[0] & 0x0FFFFFFF
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    raw = np.frombuffer(mapped, dtype=np.uint8)
    size = len(raw)
    pos, first = 24, 1
    while True:
        off, caplen, wirelen, ts, pos = _walk(raw, pos, batch_packets, endian == ">", ns_factor)
        if not len(off):
            break
        data: bytes | mmap.mmap = mapped
        if pos + PAD > size:  # the file's end: a copy with the padding
            lo = int(off[0])
            data = mapped[lo:pos] + bytes(PAD)
            off = off - lo
        yield Batch(data, off, caplen, wirelen, ts, linktype, first)
        first += len(off)


@njit(cache=True, inline="always")
def _u32(raw: np.ndarray, pos: int, big_endian: bool) -> int:
    b0, b1, b2, b3 = np.int64(raw[pos]), np.int64(raw[pos + 1]), np.int64(raw[pos + 2]), np.int64(raw[pos + 3])
    return (b0 << 24 | b1 << 16 | b2 << 8 | b3) if big_endian else (b3 << 24 | b2 << 16 | b1 << 8 | b0)


@njit(cache=True, nogil=True)
def _walk(raw: np.ndarray, pos: int, limit: int, big_endian: bool, ns_factor: int) -> tuple:
    """Up to `limit` complete records from `pos`: packet offsets, caplen, wire length, epoch µs, and where
    the next record begins. The per-packet loop of the file path, compiled. A record cut short by the end
    of the file ends the walk (it is dropped)."""
    n = raw.shape[0]
    off = np.empty(limit, np.int64)
    caplen = np.empty(limit, np.int64)
    wire = np.empty(limit, np.int64)
    ts = np.empty(limit, np.int64)
    k = 0
    while k < limit and pos + 16 <= n:
        size = _u32(raw, pos + 8, big_endian)
        if pos + 16 + size > n:
            break
        off[k] = pos + 16
        caplen[k] = size
        wire[k] = _u32(raw, pos + 12, big_endian)
        ts[k] = _u32(raw, pos, big_endian) * 1_000_000 + _u32(raw, pos + 4, big_endian) * ns_factor // 1_000
        pos += 16 + size
        k += 1
    return off[:k], caplen[:k], wire[:k], ts[:k], pos


def _read_pcapng(path: Path, batch_packets: int) -> Iterator[Batch]:
    from scapy.utils import RawPcapNgReader

    try:
        reader = RawPcapNgReader(str(path))
    except Exception as exc:  # scapy raises Scapy_Exception and struct errors for damaged headers
        raise CaptureError(f"{path}: unreadable pcapng ({exc})") from None
    first, pending, linktype = 1, [], None
    packets = iter(reader)
    with reader:
        while True:
            try:
                data, meta = next(packets)
            except Exception:  # the end (StopIteration), or a damaged block, which ends the file like a cut-short pcap
                break
            lt = meta.linktype
            if pending and (lt != linktype or len(pending) >= batch_packets):
                yield Batch.pack(pending, linktype, first)
                first += len(pending)
                pending = []
            linktype = lt
            ts_us = ((meta.tshigh << 32) | meta.tslow) * 1_000_000 // meta.tsresol
            pending.append((data, meta.wirelen or len(data), ts_us))
    if pending:
        yield Batch.pack(pending, linktype, first)


@dataclass
class LiveOptions:
    iface: str
    bpf: str | None = None
    snaplen: int = 65535
    promisc: bool = True
    batch_packets: int = 4096
    batch_seconds: float = 0.2


class LiveCapture:
    """Packets from an interface (AF_PACKET through scapy), batched by count or time."""

    def __init__(self, options: LiveOptions):
        from scapy.config import conf

        self.options = options
        try:
            self.socket = conf.L2listen(iface=options.iface, filter=options.bpf, promisc=options.promisc)
        except (OSError, PermissionError) as exc:
            raise CaptureError(f"cannot capture on {options.iface}: {exc} (needs root or CAP_NET_RAW)") from None
        except Exception as exc:  # scapy raises Scapy_Exception for a bad BPF filter
            raise CaptureError(f"cannot capture on {options.iface}: {exc}") from None
        self.linktype = LINKTYPE_ETHERNET
        self.received = 0

    def kernel_drops(self) -> int:
        """Packets the kernel dropped for this socket since the last call (PACKET_STATISTICS)."""
        try:
            raw = self.socket.ins.getsockopt(263, 6, 8)  # SOL_PACKET, PACKET_STATISTICS
        except OSError:
            return 0
        return struct.unpack("II", raw)[1]

    def batches(self, stop: threading.Event) -> Iterator[Batch]:
        opts = self.options
        pending: list[tuple[bytes, int, int]] = []
        deadline = time.monotonic() + opts.batch_seconds
        sock = self.socket
        sock.ins.settimeout(0.05)
        while not stop.is_set():
            try:
                _cls, data, ts = sock.recv_raw(opts.snaplen + 64)
            except (TimeoutError, BlockingIOError):
                data = None
            except OSError as exc:
                raise CaptureError(f"capture on {opts.iface} failed: {exc}") from None
            if data is not None:
                ts_us = int((ts if ts is not None else time.time()) * 1_000_000)
                pending.append((data[:opts.snaplen], len(data), ts_us))
            if pending and (len(pending) >= opts.batch_packets or time.monotonic() >= deadline):
                self.received += len(pending)
                yield Batch.pack(pending, self.linktype, self.received - len(pending) + 1)
                pending = []
            if time.monotonic() >= deadline:
                deadline = time.monotonic() + opts.batch_seconds
        if pending:
            self.received += len(pending)
            yield Batch.pack(pending, self.linktype, self.received - len(pending) + 1)

    def close(self) -> None:
        self.socket.close()
