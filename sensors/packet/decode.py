"""Batch packet decoding: link layer → IPv4/IPv6 → TCP/UDP/ICMP, one numpy operation per header field.

`decode(batch)` returns a `Packets` table (one row per IP packet) and counts everything it could not use by
reason, so a malformed packet is a number in the sensor's health event, never an exception. The common case
— Ethernet (with up to two VLAN tags), Linux cooked, raw IP or BSD loopback framing, IPv4 without fragments,
IPv6 without extension headers — is decoded for the whole batch at once. The rest takes the slow path, per
packet in Python: IPv6 extension headers are walked, IPv4/IPv6 fragments reassembled (`Defragmenter`), and
unusual link types and encapsulations (MPLS, PPPoE, 802.11, ...) dissected by scapy; what comes out of the
slow path is decoded as a second, small batch of raw IP packets.

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


@njit(cache=True, nogil=True)
def _be(buf: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    """Big-endian unsigned integers of `width` bytes at each position (a gather numpy would do in width passes)."""
    out = np.empty(len(pos), np.int64)
    for i in range(len(pos)):
        v = np.int64(0)
        for k in range(width):
            v = (v << 8) | buf[pos[i] + k]
        out[i] = v
    return out


def _be16(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return _be(buf, pos, 2)


def _be32(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return _be(buf, pos, 4)


def _be64(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    hi, lo = _be(buf, pos, 4).astype(np.uint64), _be(buf, pos + 4, 4).astype(np.uint64)
    return hi << np.uint64(32) | lo


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

    def _error(self, reason: str, mask: np.ndarray) -> None:
        count = int(np.count_nonzero(mask))
        if count:
            self.stats.errors[reason] += count

    def _decode(self, batch: Batch, slow: list | None) -> Packets:
        buf = batch.buf
        off, caplen, n = batch.off, batch.caplen, len(batch)
        number = batch.number if batch.number is not None else np.arange(batch.first, batch.first + n)
        ok = np.ones(n, dtype=bool)
        vlan = inner = np.zeros(n, dtype=np.int64)
        lt = batch.linktype
        if lt == LINKTYPE_ETHERNET:
            ok &= caplen >= 14
            self._error("truncated_link", ~ok)
            etype = _be16(buf, off + 12)
            l3 = np.full(n, 14, dtype=np.int64)
            vlan = np.zeros(n, dtype=np.int64)
            inner = np.zeros(n, dtype=np.int64)
            for depth in range(2):
                tagged = np.isin(etype, VLAN_TYPES)
                if not tagged.any():
                    break
                vid = _be16(buf, off + l3) & 0xFFF
                (vlan if depth == 0 else inner)[tagged] = vid[tagged]
                etype = np.where(tagged, _be16(buf, off + l3 + 2), etype)
                l3 = np.where(tagged, l3 + 4, l3)
        elif lt == LINKTYPE_SLL:
            ok &= caplen >= 16
            self._error("truncated_link", ~ok)
            etype, l3 = _be16(buf, off + 14), np.full(n, 16, dtype=np.int64)
        elif lt == LINKTYPE_SLL2:
            ok &= caplen >= 20
            self._error("truncated_link", ~ok)
            etype, l3 = _be16(buf, off), np.full(n, 20, dtype=np.int64)
        elif lt == LINKTYPE_NULL:
            ok &= caplen >= 4
            self._error("truncated_link", ~ok)
            family = np.maximum(buf[off].astype(np.int64), buf[off + 3])  # host byte order, either way
            etype = np.where(family == 2, ETH_IPV4, np.where(np.isin(family, (10, 24, 28, 30)), ETH_IPV6, -1))
            l3 = np.full(n, 4, dtype=np.int64)
        elif lt in (LINKTYPE_RAW, LINKTYPE_RAW_OLD, LINKTYPE_IPV4, LINKTYPE_IPV6):
            ok &= caplen >= 1
            self._error("truncated_ip", ~ok)
            version = buf[off] >> 4
            etype = np.where(version == 4, ETH_IPV4, np.where(version == 6, ETH_IPV6, -1))
            l3 = np.zeros(n, dtype=np.int64)
            if batch.vlans is not None:
                vlan, inner = batch.vlans
        else:
            if slow is not None:
                self._scapy(batch, np.arange(n), slow, vlan, inner)
            else:
                self._error("unsupported_linktype", ok)
            return _empty(batch.data)
        is4 = ok & (etype == ETH_IPV4)
        is6 = ok & (etype == ETH_IPV6)
        other = ok & ~is4 & ~is6
        if other.any():
            encapsulated = other & np.isin(etype, SCAPY_ETHERTYPES)
            if encapsulated.any() and slow is not None:
                self._scapy(batch, np.flatnonzero(encapsulated), slow, vlan, inner)
            self.stats.non_ip += int(np.count_nonzero(other & ~encapsulated))
        ip0 = off + l3
        ver = buf[ip0] >> 4
        bad_version = (is4 & (ver != 4)) | (is6 & (ver != 6))
        self._error("bad_ip_version", bad_version)
        is4 &= ~bad_version
        is6 &= ~bad_version

        proto = np.zeros(n, dtype=np.int64)
        src_hi = np.zeros(n, dtype=np.uint64)
        dst_hi = np.zeros(n, dtype=np.uint64)
        src_lo = np.zeros(n, dtype=np.uint64)
        dst_lo = np.zeros(n, dtype=np.uint64)
        ip_len = np.zeros(n, dtype=np.int64)
        l4 = np.zeros(n, dtype=np.int64)

        if is4.any():
            short = is4 & (caplen < l3 + 20)
            self._error("truncated_ip", short)
            is4 &= ~short
            ihl = (buf[ip0] & 0xF).astype(np.int64) * 4
            total = _be16(buf, ip0 + 2)
            total = np.where(total == 0, caplen - l3, total)  # TSO captures leave it 0
            bad = is4 & ((ihl < 20) | (total < ihl))
            self._error("bad_ip_header", bad)
            is4 &= ~bad
            frag = _be16(buf, ip0 + 6) & 0x3FFF
            fragment = is4 & (frag != 0) & (frag != 0x4000)  # MF set or offset > 0 (DF alone is fine)
            if fragment.any():
                self.stats.fragments += int(np.count_nonzero(fragment))
                is4 &= ~fragment
                if slow is not None:
                    for row in np.flatnonzero(fragment):
                        self.defrag.add_ipv4(batch, int(row), int(l3[row]), slow, int(vlan[row]), int(inner[row]))
            proto = np.where(is4, buf[ip0 + 9], proto)
            src_lo = np.where(is4, V4_MAPPED | _be32(buf, ip0 + 12).astype(np.uint64), src_lo)
            dst_lo = np.where(is4, V4_MAPPED | _be32(buf, ip0 + 16).astype(np.uint64), dst_lo)
            ip_len = np.where(is4, total, ip_len)
            l4 = np.where(is4, l3 + ihl, l4)

        if is6.any():
            rows = np.flatnonzero(is6)
            p = ip0[rows]
            short = caplen[rows] < l3[rows] + 40
            self._error("truncated_ip", short)
            is6[rows[short]] = False
            plen = _be16(buf, p + 4)
            plen = np.where(plen == 0, caplen[rows] - l3[rows] - 40, plen)  # jumbogram
            proto[rows] = buf[p + 6]
            src_hi[rows], src_lo[rows] = _be64(buf, p + 8), _be64(buf, p + 16)
            dst_hi[rows], dst_lo[rows] = _be64(buf, p + 24), _be64(buf, p + 32)
            ip_len[rows] = plen + 40
            l4[rows] = l3[rows] + 40
            ext = is6 & np.isin(proto, tuple(IPV6_EXTENSIONS))
            for row in np.flatnonzero(ext):
                self._walk_ipv6(batch, int(row), int(l3[row]), proto, l4, is6, slow, vlan, inner)

        ip = is4 | is6
        self.stats.ip_packets += int(np.count_nonzero(ip))
        ip_end = l3 + ip_len  # the datagram's end by its header
        cap_end = np.minimum(ip_end, caplen)
        sport = np.zeros(n, dtype=np.int64)
        dport = np.zeros(n, dtype=np.int64)
        flags = np.zeros(n, dtype=np.int64)
        seq = np.zeros(n, dtype=np.int64)
        payload = l4.copy()
        reverse = np.zeros(n, dtype=bool)
        l4p = off + l4

        tcp = ip & (proto == TCP)
        if tcp.any():
            short = tcp & (cap_end < l4 + 20)
            self._error("truncated_tcp", short)
            tcp &= ~short
            doff = (buf[l4p + 12] >> 4).astype(np.int64) * 4
            bad = tcp & (doff < 20)
            self._error("bad_tcp_header", bad)
            tcp &= ~bad
            ip &= ~(short | bad)
            sport = np.where(tcp, _be16(buf, l4p), sport)
            dport = np.where(tcp, _be16(buf, l4p + 2), dport)
            seq = np.where(tcp, _be32(buf, l4p + 4), seq)
            flags = np.where(tcp, buf[l4p + 13], flags)
            payload = np.where(tcp, l4 + doff, payload)
        udp = ip & (proto == UDP)
        if udp.any():
            short = udp & (cap_end < l4 + 8)
            self._error("truncated_udp", short)
            udp &= ~short
            ip &= ~short
            sport = np.where(udp, _be16(buf, l4p), sport)
            dport = np.where(udp, _be16(buf, l4p + 2), dport)
            payload = np.where(udp, l4 + 8, payload)
        icmp = ip & (((proto == ICMP) & is4) | ((proto == ICMP6) & is6))
        if icmp.any():
            short = icmp & (cap_end < l4 + 4)
            self._error("truncated_icmp", short)
            icmp &= ~short
            ip &= ~short
            icmp_type = buf[l4p].astype(np.int64)
            request = _REPLY_TO_REQUEST[is6.astype(np.int64), icmp_type]
            reverse = icmp & (request >= 0)
            sport = np.where(icmp, np.where(reverse, request, icmp_type), sport)
            dport = np.where(icmp, buf[l4p + 1], dport)
            payload = np.where(icmp, l4 + 8, payload)

        rows = np.flatnonzero(ip)
        # an ICMP reply is filed as if sent by the requester: swap its addresses, mark it reverse
        s_hi, s_lo = np.where(reverse, dst_hi, src_hi), np.where(reverse, dst_lo, src_lo)
        d_hi, d_lo = np.where(reverse, src_hi, dst_hi), np.where(reverse, src_lo, dst_lo)
        payload_len = np.maximum(ip_end - payload, 0)
        pcap_len = np.maximum(cap_end - payload, 0)
        return Packets(batch.data, rows, number[rows], batch.ts_us[rows], batch.wirelen[rows], vlan[rows],
                       inner[rows], proto[rows], s_hi[rows], s_lo[rows], d_hi[rows], d_lo[rows], sport[rows],
                       dport[rows], reverse[rows], flags[rows], seq[rows], ip_len[rows], payload_len[rows],
                       off[rows] + payload[rows], pcap_len[rows])

    # -- slow paths ------------------------------------------------------------------------------

    def _walk_ipv6(self, batch: Batch, row: int, l3: int, proto: np.ndarray, l4: np.ndarray, is6: np.ndarray,
                   slow: list | None, vlan: np.ndarray, inner: np.ndarray) -> None:
        """Follow one packet's IPv6 extension headers to its transport header (or its fragment)."""
        start = int(batch.off[row])
        end = start + int(batch.caplen[row])
        data = batch.data
        nh, pos = int(proto[row]), start + l3 + 40
        for _ in range(16):
            if nh not in IPV6_EXTENSIONS:
                proto[row], l4[row] = nh, pos - start
                return
            if pos + 8 > end:
                break
            if nh == 44:  # fragment header
                offset_flags = struct.unpack_from(">H", data, pos + 2)[0]
                if offset_flags & 0xFFF9:  # offset > 0 or more fragments: a real fragment
                    self.stats.fragments += 1
                    is6[row] = False
                    if slow is not None:
                        self.defrag.add_ipv6(batch, row, l3, pos - start, slow, int(vlan[row]), int(inner[row]))
                    return
                nh, pos = data[pos], pos + 8
                continue
            length = (data[pos + 1] + 2) * 4 if nh == 51 else (data[pos + 1] + 1) * 8
            nh, pos = data[pos], pos + length
        self.stats.errors["bad_ipv6_extension"] += 1
        is6[row] = False

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
