"""Batch packet decoding: link layer → IPv4/IPv6 → TCP/UDP/ICMP, one compiled loop over a batch.

`decode(batch)` returns a `Packets` table (one row per IP packet) and counts everything it could not use by
reason, so a malformed packet is a number in the sensor's health event, never an exception. The common case
— Ethernet (with up to two VLAN tags), Linux cooked, raw IP or BSD loopback framing, IPv4 without fragments,
IPv6 with its extension headers walked — is decoded by `_headers`, compiled with numba, which gives each
packet a status. The rest takes the slow path, per packet in Python: IPv4/IPv6 fragments are reassembled
(`Defragmenter`), unusual link types and encapsulations (MPLS, PPPoE, 802.11, ...) dissected by scapy; what
comes out of the slow path is decoded as a second, small batch of raw IP packets. The compiled loop reads
no byte past a packet's captured length except fixed-size link headers, which the batch's zero padding
covers (a test runs it against its bounds-checked Python source).

Addresses are kept as two uint64 halves of the IPv6 form (IPv4 mapped to ::ffff:a.b.c.d), matching the
`IPv6` columns of the event store. For ICMP, ports are (type, code) as in Zeek's conn.log, and a reply type
is filed under its request type with the packet marked `reverse`, so an echo and its reply are one flow.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field, fields

import numpy as np
from numba import njit

from sensors.packet.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    LINKTYPE_RAW_OLD,
    LINKTYPE_SLL,
    LINKTYPE_SLL2,
    Batch,
)

TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
SCAPY_ETHERTYPES = (0x8847, 0x8848, 0x8864)  # MPLS unicast/multicast, PPPoE session: dissected by scapy
IPV6_EXTENSIONS = frozenset({0, 43, 44, 51, 60, 135, 139, 140})
V4_MAPPED = np.uint64(0xFFFF_0000_0000)

# ICMP reply types -> the request type they answer (Zeek files both under the request)
_ICMP4_REPLY = {0: 8, 14: 13, 16: 15, 18: 17}
_ICMP6_REPLY = {129: 128, 131: 130, 136: 135}
_REPLY_TO_REQUEST = np.full((2, 256), -1, dtype=np.int64)
for _t, _r in _ICMP4_REPLY.items():
    _REPLY_TO_REQUEST[0, _t] = _r
for _t, _r in _ICMP6_REPLY.items():
    _REPLY_TO_REQUEST[1, _t] = _r



@dataclass
class DecodeStats:
    packets: int = 0
    bytes: int = 0  # on the wire
    ip_packets: int = 0
    non_ip: int = 0  # ARP, LLDP, STP, ...: counted, not decoded
    fragments: int = 0
    reassembled: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # reason -> packets

    def as_dict(self) -> dict[str, object]:
        return {"packets": self.packets, "bytes": self.bytes, "ip_packets": self.ip_packets,
                "non_ip": self.non_ip, "fragments": self.fragments, "reassembled": self.reassembled,
                "decode_errors": dict(self.errors)}


@dataclass
class Packets:
    """Decoded IP packets of one batch (struct of arrays); `data` is the buffer `poff` points into."""

    data: bytes
    idx: np.ndarray  # row in the batch (packet order)
    number: np.ndarray  # 1-based packet number in the source
    ts_us: np.ndarray
    wirelen: np.ndarray
    vlan: np.ndarray  # outer 802.1Q id (0 = none)
    inner_vlan: np.ndarray
    proto: np.ndarray
    src_hi: np.ndarray  # uint64 halves of the IPv6(-mapped) address
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    sport: np.ndarray  # ICMP: type (a reply: its request's type)
    dport: np.ndarray  # ICMP: code
    reverse: np.ndarray  # bool: an ICMP reply (travels responder -> originator)
    flags: np.ndarray  # TCP flags (FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32, ECE 64, CWR 128)
    seq: np.ndarray
    ip_len: np.ndarray  # IP datagram length from its header
    payload_len: np.ndarray  # transport payload length from the headers
    poff: np.ndarray  # payload offset in data
    pcap_len: np.ndarray  # payload bytes actually captured

    def __len__(self) -> int:
        return len(self.idx)

    def take(self, rows: np.ndarray) -> Packets:
        return Packets(self.data, *(getattr(self, f.name)[rows] for f in fields(self)[1:]))

    def payload(self, row: int) -> bytes:
        start = int(self.poff[row])
        return self.data[start:start + int(self.pcap_len[row])]


class Decoder:
    """Decodes batches; keeps the counters and the fragment reassembly state between them."""

    def __init__(self, fragment_timeout_s: float = 30.0):
        self.stats = DecodeStats()
        self.defrag = Defragmenter(fragment_timeout_s, self.stats)

    def decode(self, batch: Batch) -> list[Packets]:
        """The batch's IP packets: the fast-path table, then (if any) one of reassembled/scapy-decoded packets."""
        self.stats.packets += len(batch)
        self.stats.bytes += int(batch.wirelen.sum())
        slow: list[tuple[bytes, int, int, int, int, int]] = []  # (ip bytes, wirelen, ts, number, vlan, inner)
        out = [self._decode(batch, slow)] if len(batch) else []
        if slow:
            ip_batch = Batch.pack([(s[0], s[1], s[2]) for s in slow], LINKTYPE_RAW, 0)
            ip_batch.number = np.asarray([s[3] for s in slow], dtype=np.int64)
            ip_batch.vlans = (np.asarray([s[4] for s in slow], dtype=np.int64),
                              np.asarray([s[5] for s in slow], dtype=np.int64))
            out.append(self._decode(ip_batch, None))
        return [p for p in out if len(p)]

    def _decode(self, batch: Batch, slow: list | None) -> Packets:
        n, lt = len(batch), batch.linktype
        if lt not in _OWN_LINKTYPES:
            if slow is not None:
                self._scapy(batch, np.arange(n), slow, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))
            else:
                self.stats.errors["unsupported_linktype"] += n
            return _empty(batch.data)
        given = batch.vlans is not None
        zero = np.zeros(0, dtype=np.int64)
        h = _headers(batch.buf, batch.off, batch.caplen, lt, given, batch.vlans[0] if given else zero,
                     batch.vlans[1] if given else zero, _REPLY_TO_REQUEST)
        status, vlan, inner, l3, frag_at = h[0], h[1], h[2], h[3], h[4]
        counts = np.bincount(status, minlength=len(_STATUS))
        stats = self.stats
        for code in np.flatnonzero(counts):
            reason = _STATUS[code]
            if reason.startswith(("truncated", "bad")):
                stats.errors[reason] += int(counts[code])
        stats.non_ip += int(counts[S_NON_IP])
        stats.fragments += int(counts[S_FRAGMENT4] + counts[S_FRAGMENT6])
        stats.ip_packets += int(counts[S_IP] + counts[_TRANSPORT_ERRORS].sum())
        if slow is not None:
            odd = np.flatnonzero((status == S_FRAGMENT4) | (status == S_FRAGMENT6) | (status == S_ENCAPSULATED))
            for row in odd.tolist():  # packet order: fragments of one datagram reach the defragmenter in order
                code, v, i = status[row], int(vlan[row]), int(inner[row])
                if code == S_FRAGMENT4:
                    self.defrag.add_ipv4(batch, row, int(l3[row]), slow, v, i)
                elif code == S_FRAGMENT6:
                    self.defrag.add_ipv6(batch, row, int(l3[row]), int(frag_at[row]), slow, v, i)
                else:
                    self._scapy(batch, np.asarray([row]), slow, vlan, inner)
        rows = np.flatnonzero(status == S_IP)
        number = batch.number if batch.number is not None else np.arange(batch.first, batch.first + n)
        return Packets(batch.data, rows, number[rows], batch.ts_us[rows], batch.wirelen[rows],
                       *(column[rows] for column in h[1:3]), *(column[rows] for column in h[5:]))

    # -- slow paths ------------------------------------------------------------------------------

    def _scapy(self, batch: Batch, rows: np.ndarray, slow: list, vlan: np.ndarray, inner: np.ndarray) -> None:
        """Rare link types and encapsulations: let scapy find the IP layer."""
        from scapy.config import conf
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6

        cls = conf.l2types.num2layer.get(batch.linktype)
        if cls is None:
            self._error("unsupported_linktype", np.ones(len(rows), dtype=bool))
            return
        for row in rows:
            start = int(batch.off[row])
            raw = batch.data[start:start + int(batch.caplen[row])]
            try:
                pkt = cls(raw)
            except Exception:  # scapy's dissectors raise all sorts on garbage
                self.stats.errors["undecodable_link"] += 1
                continue
            layer = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            if layer is None:
                self.stats.non_ip += 1
                continue
            slow.append((bytes(layer), int(batch.wirelen[row]), int(batch.ts_us[row]), batch.first + int(row),
                         int(vlan[row]), int(inner[row])))


# -- the compiled header decoder -------------------------------------------------------------------------

# what became of each packet of a batch
_STATUS = ("ip", "non_ip", "encapsulated", "fragment4", "fragment6", "truncated_link", "truncated_ip",
           "bad_ip_version", "bad_ip_header", "bad_ipv6_extension", "truncated_tcp", "bad_tcp_header",
           "truncated_udp", "truncated_icmp")
(S_IP, S_NON_IP, S_ENCAPSULATED, S_FRAGMENT4, S_FRAGMENT6, S_TRUNCATED_LINK, S_TRUNCATED_IP, S_BAD_IP_VERSION,
 S_BAD_IP_HEADER, S_BAD_IPV6_EXTENSION, S_TRUNCATED_TCP, S_BAD_TCP_HEADER, S_TRUNCATED_UDP,
 S_TRUNCATED_ICMP) = range(len(_STATUS))
_TRANSPORT_ERRORS = np.asarray([S_TRUNCATED_TCP, S_BAD_TCP_HEADER, S_TRUNCATED_UDP, S_TRUNCATED_ICMP])
_OWN_LINKTYPES = (LINKTYPE_ETHERNET, LINKTYPE_SLL, LINKTYPE_SLL2, LINKTYPE_NULL, LINKTYPE_RAW, LINKTYPE_RAW_OLD,
                  LINKTYPE_IPV4, LINKTYPE_IPV6)
_V6_EXTENSION = np.zeros(256, dtype=np.bool_)
_V6_EXTENSION[list(IPV6_EXTENSIONS)] = True


@njit(cache=True, inline="always")
def _u16(buf, pos):
    return (np.int64(buf[pos]) << 8) | buf[pos + 1]


@njit(cache=True, inline="always")
def _u32(buf, pos):
    return (np.int64(buf[pos]) << 24) | (np.int64(buf[pos + 1]) << 16) | (np.int64(buf[pos + 2]) << 8) | buf[pos + 3]


@njit(cache=True, inline="always")
def _u64(buf, pos):
    return (np.uint64(_u32(buf, pos)) << np.uint64(32)) | np.uint64(_u32(buf, pos + 4))


@njit(cache=True, nogil=True)
def _headers(buf, off, caplen, linktype, vlans_given, vlan_in, inner_in, reply_to_request):
    """Every packet of a batch through link layer -> IPv4/IPv6 (extension headers walked) -> TCP/UDP/ICMP.

    Returns (status, vlan, inner vlan, l3 offset, IPv6 fragment header offset, proto, src hi, src lo, dst hi,
    dst lo, sport, dport, reverse, flags, seq, ip_len, payload_len, payload offset in the buffer, payload bytes
    captured); the last fourteen are those of `Packets`, filled where status is S_IP.
    """
    n = len(off)
    status = np.zeros(n, np.int64)
    vlan, inner = np.zeros(n, np.int64), np.zeros(n, np.int64)
    l3s, frag_at = np.zeros(n, np.int64), np.zeros(n, np.int64)
    proto, sport, dport = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    src_hi, src_lo = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    dst_hi, dst_lo = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    reverse = np.zeros(n, np.bool_)
    flags, seq, ip_len = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    payload_len, poff, pcap_len = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i in range(n):
        o, cap = off[i], caplen[i]
        # link layer -> ethertype and where the IP header starts
        if linktype == 1:  # Ethernet, up to two VLAN tags
            if cap < 14:
                status[i] = S_TRUNCATED_LINK
                continue
            etype, l3 = _u16(buf, o + 12), 14
            for depth in range(2):
                if etype != 0x8100 and etype != 0x88A8 and etype != 0x9100:
                    break
                vid = _u16(buf, o + l3) & 0xFFF
                if depth == 0:
                    vlan[i] = vid
                else:
                    inner[i] = vid
                etype, l3 = _u16(buf, o + l3 + 2), l3 + 4
        elif linktype == 113:  # Linux cooked
            if cap < 16:
                status[i] = S_TRUNCATED_LINK
                continue
            etype, l3 = _u16(buf, o + 14), 16
        elif linktype == 276:  # Linux cooked v2
            if cap < 20:
                status[i] = S_TRUNCATED_LINK
                continue
            etype, l3 = _u16(buf, o), 20
        elif linktype == 0:  # BSD loopback: address family in host byte order, either way
            if cap < 4:
                status[i] = S_TRUNCATED_LINK
                continue
            family = max(np.int64(buf[o]), np.int64(buf[o + 3]))
            etype = ETH_IPV4 if family == 2 else (ETH_IPV6 if family in (10, 24, 28, 30) else -1)
            l3 = 4
        else:  # raw IP
            if cap < 1:
                status[i] = S_TRUNCATED_IP
                continue
            version = buf[o] >> 4
            etype = ETH_IPV4 if version == 4 else (ETH_IPV6 if version == 6 else -1)
            l3 = 0
            if vlans_given:
                vlan[i], inner[i] = vlan_in[i], inner_in[i]
        l3s[i] = l3
        if etype != ETH_IPV4 and etype != ETH_IPV6:
            is_encapsulated = etype == 0x8847 or etype == 0x8848 or etype == 0x8864
            status[i] = S_ENCAPSULATED if is_encapsulated else S_NON_IP
            continue
        ip0 = o + l3
        v6 = etype == ETH_IPV6
        if (buf[ip0] >> 4) != (6 if v6 else 4):
            status[i] = S_BAD_IP_VERSION
            continue
        # network layer
        if not v6:
            if cap < l3 + 20:
                status[i] = S_TRUNCATED_IP
                continue
            ihl = np.int64(buf[ip0] & 0xF) * 4
            total = _u16(buf, ip0 + 2)
            if total == 0:  # TSO captures leave it 0
                total = cap - l3
            if ihl < 20 or total < ihl:
                status[i] = S_BAD_IP_HEADER
                continue
            frag = _u16(buf, ip0 + 6) & 0x3FFF
            if frag != 0 and frag != 0x4000:  # MF set or offset > 0 (DF alone is fine)
                status[i] = S_FRAGMENT4
                continue
            pr = np.int64(buf[ip0 + 9])
            s_hi, s_lo = np.uint64(0), V4_MAPPED | np.uint64(_u32(buf, ip0 + 12))
            d_hi, d_lo = np.uint64(0), V4_MAPPED | np.uint64(_u32(buf, ip0 + 16))
            length, l4 = total, l3 + ihl
        else:
            if cap < l3 + 40:
                status[i] = S_TRUNCATED_IP
                continue
            plen = _u16(buf, ip0 + 4)
            if plen == 0:  # jumbogram
                plen = cap - l3 - 40
            pr = np.int64(buf[ip0 + 6])
            s_hi, s_lo, d_hi, d_lo = _u64(buf, ip0 + 8), _u64(buf, ip0 + 16), _u64(buf, ip0 + 24), _u64(buf, ip0 + 32)
            length, l4 = plen + 40, l3 + 40
            if _V6_EXTENSION[pr]:  # follow extension headers to the transport
                end, pos, walked = o + cap, o + l4, False
                for _ in range(16):
                    if not _V6_EXTENSION[pr]:
                        walked = True
                        break
                    if pos + 8 > end:
                        break
                    if pr == 44:  # fragment header
                        if _u16(buf, pos + 2) & 0xFFF9:  # offset > 0 or more fragments: a real fragment
                            status[i] = S_FRAGMENT6
                            frag_at[i] = pos - o
                            break
                        pr, pos = np.int64(buf[pos]), pos + 8
                        continue
                    size = (np.int64(buf[pos + 1]) + 2) * 4 if pr == 51 else (np.int64(buf[pos + 1]) + 1) * 8
                    pr, pos = np.int64(buf[pos]), pos + size
                if status[i] == S_FRAGMENT6:
                    continue
                if not walked:
                    status[i] = S_BAD_IPV6_EXTENSION
                    continue
                l4 = pos - o
        # transport layer
        ip_end = l3 + length
        cap_end = min(ip_end, cap)
        l4p = o + l4
        payload = l4
        rev = False
        if pr == TCP:
            if cap_end < l4 + 20:
                status[i] = S_TRUNCATED_TCP
                continue
            doff = np.int64(buf[l4p + 12] >> 4) * 4
            if doff < 20:
                status[i] = S_BAD_TCP_HEADER
                continue
            sport[i], dport[i] = _u16(buf, l4p), _u16(buf, l4p + 2)
            seq[i], flags[i] = _u32(buf, l4p + 4), buf[l4p + 13]
            payload = l4 + doff
        elif pr == UDP:
            if cap_end < l4 + 8:
                status[i] = S_TRUNCATED_UDP
                continue
            sport[i], dport[i] = _u16(buf, l4p), _u16(buf, l4p + 2)
            payload = l4 + 8
        elif (pr == ICMP and not v6) or (pr == ICMP6 and v6):
            if cap_end < l4 + 4:
                status[i] = S_TRUNCATED_ICMP
                continue
            icmp_type = np.int64(buf[l4p])
            request = reply_to_request[1 if v6 else 0, icmp_type]
            rev = request >= 0  # a reply is filed as if sent by the requester
            sport[i], dport[i] = (request if rev else icmp_type), buf[l4p + 1]
            payload = l4 + 8
        proto[i], reverse[i], ip_len[i] = pr, rev, length
        if rev:
            src_hi[i], src_lo[i], dst_hi[i], dst_lo[i] = d_hi, d_lo, s_hi, s_lo
        else:
            src_hi[i], src_lo[i], dst_hi[i], dst_lo[i] = s_hi, s_lo, d_hi, d_lo
        payload_len[i] = max(ip_end - payload, 0)
        pcap_len[i] = max(cap_end - payload, 0)
        poff[i] = o + payload
    return (status, vlan, inner, l3s, frag_at, proto, src_hi, src_lo, dst_hi, dst_lo, sport, dport, reverse,
            flags, seq, ip_len, payload_len, poff, pcap_len)


def _empty(data: bytes) -> Packets:
    e = np.zeros(0, dtype=np.int64)
    u = np.zeros(0, dtype=np.uint64)
    return Packets(data, e, e, e, e, e, e, e, u, u, u, u, e, e, np.zeros(0, dtype=bool), e, e, e, e, e, e)


@dataclass
class _Datagram:
    first_ts: int
    header: bytes = b""  # the IP header of the offset-0 fragment (without the fragment header, for IPv6)
    next_header: int = 0  # IPv6: the protocol after the fragment header
    pieces: list[tuple[int, bytes]] = field(default_factory=list)
    total: int = -1  # payload length, known once the last fragment arrived
    wirelen: int = 0
    vlan: tuple[int, int] = (0, 0)


class Defragmenter:
    """IPv4 and IPv6 fragment reassembly (first fragment wins on overlaps), bounded in memory and time."""

    MAX_DATAGRAMS = 10_000
    MAX_PIECES = 128

    def __init__(self, timeout_s: float, stats: DecodeStats):
        self.timeout_us = int(timeout_s * 1_000_000)
        self.stats = stats
        self.pending: dict[tuple, _Datagram] = {}

    def add_ipv4(self, batch: Batch, row: int, l3: int, slow: list, vlan: int, inner: int) -> None:
        start = int(batch.off[row]) + l3
        end = int(batch.off[row]) + int(batch.caplen[row])
        data = batch.data
        ihl = (data[start] & 0xF) * 4
        total = struct.unpack_from(">H", data, start + 2)[0]
        frag = struct.unpack_from(">H", data, start + 6)[0]
        offset, more = (frag & 0x1FFF) * 8, bool(frag & 0x2000)
        key = (4, data[start + 12:start + 20], data[start + 4:start + 6], data[start + 9], vlan)
        piece = data[start + ihl:min(start + total, end)]
        header = data[start:start + ihl] if offset == 0 else b""
        self._add(key, batch, row, offset, more, piece, header, 0, slow, (vlan, inner))

    def add_ipv6(self, batch: Batch, row: int, l3: int, frag_at: int, slow: list, vlan: int, inner: int) -> None:
        base = int(batch.off[row])
        start, fh = base + l3, base + frag_at
        end = base + int(batch.caplen[row])
        data = batch.data
        plen = struct.unpack_from(">H", data, start + 4)[0]
        offset_flags = struct.unpack_from(">H", data, fh + 2)[0]
        offset, more = offset_flags & 0xFFF8, bool(offset_flags & 1)
        key = (6, data[start + 8:start + 40], data[fh + 4:fh + 8], 0, vlan)
        piece = data[fh + 8:min(start + 40 + plen, end)]
        # the unfragmentable part is the fixed header alone (extension headers before the fragment dropped)
        header = data[start:start + 40] if offset == 0 else b""
        self._add(key, batch, row, offset, more, piece, header, data[fh], slow, (vlan, inner))

    def _add(self, key: tuple, batch: Batch, row: int, offset: int, more: bool, piece: bytes, header: bytes,
             next_header: int, slow: list, vlans: tuple[int, int]) -> None:
        ts = int(batch.ts_us[row])
        self._expire(ts)
        dgram = self.pending.get(key)
        if dgram is None:
            if len(self.pending) >= self.MAX_DATAGRAMS:
                self.stats.errors["fragments_evicted"] += 1
                self.pending.pop(next(iter(self.pending)))
            dgram = self.pending[key] = _Datagram(ts, vlan=vlans)
        if len(dgram.pieces) >= self.MAX_PIECES:
            self.stats.errors["fragments_too_many"] += 1
            return
        dgram.pieces.append((offset, piece))
        dgram.wirelen += int(batch.wirelen[row])
        if header:
            dgram.header, dgram.next_header = header, next_header
        if not more:
            dgram.total = offset + len(piece)
        ip = self._complete(dgram)
        if ip is None:
            return
        del self.pending[key]
        self.stats.reassembled += 1
        slow.append((ip, dgram.wirelen, dgram.first_ts, batch.first + row, *dgram.vlan))

    def _complete(self, d: _Datagram) -> bytes | None:
        if d.total < 0 or not d.header or d.total > 65_535:
            return None
        covered = bytearray(d.total)
        body = bytearray(d.total)
        for offset, piece in reversed(d.pieces):  # earlier pieces written last: the first one wins
            piece = piece[:max(0, d.total - offset)]
            body[offset:offset + len(piece)] = piece
            covered[offset:offset + len(piece)] = b"\x01" * len(piece)
        if covered.count(0):
            return None
        header = bytearray(d.header)
        if header[0] >> 4 == 4:
            struct.pack_into(">HH", header, 2, len(header) + d.total, 0)
            struct.pack_into(">H", header, 6, 0)
        else:
            struct.pack_into(">H", header, 4, d.total)
            header[6] = d.next_header
        return bytes(header) + bytes(body)

    def _expire(self, now_us: int) -> None:
        if not self.pending:
            return
        oldest_key = next(iter(self.pending))
        if now_us - self.pending[oldest_key].first_ts > self.timeout_us:
            for key in [k for k, d in self.pending.items() if now_us - d.first_ts > self.timeout_us]:
                del self.pending[key]
                self.stats.errors["fragments_timed_out"] += 1
