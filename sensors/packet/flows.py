"""Bidirectional flow accounting over decoded batches, in columns.

Flows are keyed by (VLAN, inner VLAN, protocol, both endpoints) with the endpoints in a canonical order
(side a < side b), so both directions of a connection share one row. A batch is grouped by a 64-bit hash of
that key (one sort), aggregated per group with numpy reductions (packets, bytes, TCP flag marks per side) and
added to the table's columns; the only per-flow Python work is one dict lookup. Hash collisions inside a
batch are detected and the batch is then grouped by the exact key instead.

The originator is decided like Zeek does: the sender of the first packet, unless that packet is a SYN-ACK,
or is not a SYN and goes from a likely server port to a non-server port. `conn_state` follows Zeek's
`conn_state` function, evaluated on the endpoint states the flag marks imply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sensors.packet.decode import ICMP, ICMP6, TCP, UDP, Packets

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
# per-side marks, OR-ed over a flow's packets
M_SYN, M_SYNACK, M_FIN, M_RST, M_DATA, M_ACK = 1, 2, 4, 8, 16, 32

# Zeek's likely_server_ports heuristic, widened to the usual service ports
_SERVER_PORTS = np.zeros(65536, dtype=bool)
_SERVER_PORTS[:1024] = True
_SERVER_PORTS[[1080, 1194, 1433, 1434, 1521, 1723, 1812, 1813, 2049, 2375, 2376, 3128, 3268, 3306, 3389, 4500,
               5060, 5061, 5222, 5353, 5355, 5432, 5671, 5672, 5900, 5985, 5986, 6379, 6443, 6881, 8000, 8008,
               8080, 8081, 8443, 8888, 9000, 9092, 9200, 9300, 11211, 27017]] = True

_C = [np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                             0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB)]
_KEY = ("vlan", "inner_vlan", "proto", "a_hi", "a_lo", "b_hi", "b_lo", "a_port", "b_port")


@dataclass
class Timeouts:
    tcp_idle_s: float = 300.0  # Zeek's tcp_inactivity_timeout
    udp_idle_s: float = 60.0
    other_idle_s: float = 60.0
    closed_s: float = 5.0  # after FIN from both sides or a RST (Zeek's tcp_close_delay)
    active_s: float = 1800.0  # long flows are reported in pieces


@dataclass
class Accounted:
    """Per packet of a batch: its flow's slot and whether it travels originator -> responder."""

    slot: np.ndarray
    from_orig: np.ndarray


class FlowTable:
    def __init__(self, timeouts: Timeouts | None = None, capacity: int = 4096):
        self.timeouts = timeouts or Timeouts()
        self.index: dict[tuple, int] = {}
        self.free: list[int] = []
        self.size = 0  # slots ever used
        self.collisions = 0
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        def grow(name: str, dtype: type, shape: tuple = ()) -> None:
            new = np.zeros((capacity, *shape), dtype=dtype)
            old = getattr(self, name, None)
            if old is not None:
                new[:len(old)] = old
            setattr(self, name, new)

        for name in _KEY:
            grow(name, np.uint64 if name.endswith(("_hi", "_lo")) else np.int64)
        for name in ("first_us", "last_us", "first_number"):
            grow(name, np.int64)
        for name in ("orig_is_a", "active", "inspect"):
            grow(name, bool)
        for name in ("pkts", "bytes", "ip_bytes"):
            grow(name, np.int64, (2,))
        grow("marks", np.int64, (2,))
        grow("tcp_flags", np.int64, (2,))
        self.capacity = capacity

    @property
    def active_count(self) -> int:
        return len(self.index)

    # -- accounting ---------------------------------------------------------------------------------

    def account(self, p: Packets) -> Accounted:
        n = len(p)
        swap = (p.src_hi > p.dst_hi) | ((p.src_hi == p.dst_hi) & (
            (p.src_lo > p.dst_lo) | ((p.src_lo == p.dst_lo) & (p.sport > p.dport))))
        cols = {
            "vlan": p.vlan, "inner_vlan": p.inner_vlan, "proto": p.proto,
            "a_hi": np.where(swap, p.dst_hi, p.src_hi), "a_lo": np.where(swap, p.dst_lo, p.src_lo),
            "b_hi": np.where(swap, p.src_hi, p.dst_hi), "b_lo": np.where(swap, p.src_lo, p.dst_lo),
            "a_port": np.where(swap, p.dport, p.sport), "b_port": np.where(swap, p.sport, p.dport),
        }
        side = (swap ^ p.reverse).astype(np.int64)  # 0: the packet travels a -> b
        order, starts, group = self._group(cols, n)
        first = order[starts]
        ends = np.r_[starts[1:], n]
        last = order[ends - 1]

        s_side = side[order]
        on_b = s_side.astype(bool)
        pk_b = np.add.reduceat(s_side, starts)
        pk_a = (ends - starts) - pk_b
        marks = _marks(p.proto, p.flags, p.payload_len)[order]
        size = p.payload_len[order]
        ip_size = p.ip_len[order]
        flags = p.flags[order]
        zero = np.zeros_like(size)
        per_side = {
            "bytes": (np.add.reduceat(np.where(on_b, zero, size), starts),
                      np.add.reduceat(np.where(on_b, size, zero), starts)),
            "ip_bytes": (np.add.reduceat(np.where(on_b, zero, ip_size), starts),
                         np.add.reduceat(np.where(on_b, ip_size, zero), starts)),
            "marks": (np.bitwise_or.reduceat(np.where(on_b, zero, marks), starts),
                      np.bitwise_or.reduceat(np.where(on_b, marks, zero), starts)),
            "tcp_flags": (np.bitwise_or.reduceat(np.where(on_b, zero, flags), starts),
                          np.bitwise_or.reduceat(np.where(on_b, flags, zero), starts)),
        }
        keys = list(zip(*(cols[k][first].tolist() for k in _KEY), strict=True))
        get = self.index.get
        slots = np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        fresh = np.flatnonzero(slots < 0)
        if len(fresh):
            slots[fresh] = self._create(p, cols, side, first[fresh], [keys[i] for i in fresh])
        self.pkts[slots, 0] += pk_a
        self.pkts[slots, 1] += pk_b
        for name, (a, b) in per_side.items():
            column = getattr(self, name)
            if name in ("marks", "tcp_flags"):
                column[slots, 0] |= a
                column[slots, 1] |= b
            else:
                column[slots, 0] += a
                column[slots, 1] += b
        self.last_us[slots] = np.maximum(self.last_us[slots], p.ts_us[last])
        slot = slots[group]
        slot_by_packet = np.empty(n, dtype=np.int64)
        slot_by_packet[order] = slot
        from_orig = (side == 0) == self.orig_is_a[slot_by_packet]
        return Accounted(slot_by_packet, from_orig)

    def _group(self, cols: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sort order, group starts and each sorted packet's group: by key hash, or by the exact key if two
        keys share a hash."""
        h = cols["vlan"].astype(np.uint64) * _C[0] ^ cols["inner_vlan"].astype(np.uint64) * _C[6]
        h ^= cols["proto"].astype(np.uint64) * _C[1]
        h ^= cols["a_hi"] * _C[2] ^ cols["a_lo"] * _C[3]
        h ^= (cols["b_hi"] * _C[4]) ^ (cols["b_lo"] * _C[5])
        h ^= (cols["a_port"].astype(np.uint64) << np.uint64(16) | cols["b_port"].astype(np.uint64)) * _C[6]
        h ^= h >> np.uint64(31)
        order = np.argsort(h, kind="stable")
        hs = h[order]
        change = np.empty(n, dtype=bool)
        change[0] = True
        np.not_equal(hs[1:], hs[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        group = np.cumsum(change) - 1
        for name in _KEY:
            sorted_col = cols[name][order]
            if np.any(sorted_col != sorted_col[starts][group]):
                self.collisions += 1
                order = np.lexsort([cols[k] for k in reversed(_KEY)])
                change[1:] = False
                for k in _KEY:
                    s = cols[k][order]
                    change[1:] |= s[1:] != s[:-1]
                return order, np.flatnonzero(change), np.cumsum(change) - 1
        return order, starts, group

    def _create(self, p: Packets, cols: dict[str, np.ndarray], side: np.ndarray, rows: np.ndarray,
                keys: list[tuple]) -> np.ndarray:
        count = len(rows)
        reuse = min(count, len(self.free))
        slots = [self.free.pop() for _ in range(reuse)]
        if self.size + count - reuse > self.capacity:
            self._alloc(max(self.capacity * 2, self.size + count))
        slots.extend(range(self.size, self.size + count - reuse))
        self.size += count - reuse
        slots_arr = np.asarray(slots, dtype=np.int64)
        for key, slot in zip(keys, slots, strict=True):
            self.index[key] = slot
        for name in _KEY:
            getattr(self, name)[slots_arr] = cols[name][rows]
        for name in ("pkts", "bytes", "ip_bytes", "marks", "tcp_flags"):
            getattr(self, name)[slots_arr] = 0
        proto, flags = p.proto[rows], p.flags[rows]
        tcp = proto == TCP
        synack = tcp & ((flags & (SYN | ACK)) == (SYN | ACK))
        pure_syn = tcp & ((flags & (SYN | ACK)) == SYN)
        # ports in the packet's own direction: the sender's and the receiver's
        sender_port = np.where(p.reverse[rows], p.dport[rows], p.sport[rows])
        receiver_port = np.where(p.reverse[rows], p.sport[rows], p.dport[rows])
        looks_reversed = (~pure_syn & (proto != ICMP) & (proto != ICMP6)
                          & _SERVER_PORTS[sender_port] & ~_SERVER_PORTS[receiver_port])
        sender_is_a = side[rows] == 0
        # ICMP: the (logical) requester originates, whichever packet came first
        icmp = (proto == ICMP) | (proto == ICMP6)
        requester_is_a = sender_is_a ^ p.reverse[rows]
        orig_is_a = np.where(icmp, requester_is_a, np.where(synack | looks_reversed, ~sender_is_a, sender_is_a))
        self.orig_is_a[slots_arr] = orig_is_a
        self.first_us[slots_arr] = p.ts_us[rows]
        self.last_us[slots_arr] = p.ts_us[rows]
        self.first_number[slots_arr] = p.number[rows]
        self.active[slots_arr] = True
        self.inspect[slots_arr] = (proto == TCP) | (proto == UDP)
        return slots_arr

    # -- expiry -------------------------------------------------------------------------------------

    def expired(self, now_us: int) -> tuple[np.ndarray, np.ndarray]:
        """Slots whose flow ended by `now_us`, and for each whether it was cut by the active timeout."""
        t = self.timeouts
        n = self.size
        active = self.active[:n]
        proto = self.proto[:n]
        idle = now_us - self.last_us[:n]
        limit = np.where(proto == TCP, t.tcp_idle_s, np.where(proto == UDP, t.udp_idle_s, t.other_idle_s)) * 1e6
        marks = self.marks[:n]
        closed = (proto == TCP) & ((((marks[:, 0] & M_FIN) != 0) & ((marks[:, 1] & M_FIN) != 0))
                                   | (((marks[:, 0] | marks[:, 1]) & M_RST) != 0))
        long = (now_us - self.first_us[:n]) > t.active_s * 1e6
        done = active & ((idle > limit) | (closed & (idle > t.closed_s * 1e6)) | long)
        slots = np.flatnonzero(done)
        return slots, long[slots] & ~(idle[slots] > limit[slots])

    def all_active(self) -> np.ndarray:
        return np.flatnonzero(self.active[:self.size])

    def release(self, slots: np.ndarray) -> None:
        index = self.index
        for key in zip(*(getattr(self, k)[slots].tolist() for k in _KEY), strict=True):
            del index[key]
        self.free.extend(slots.tolist())
        self.active[slots] = False
        self.inspect[slots] = False

    # -- reading a flow -----------------------------------------------------------------------------

    def orig_resp(self, slot: int) -> dict[str, Any]:
        """The flow's endpoints and counters from the originator's point of view."""
        return self.records(np.asarray([slot]))[0]

    def records(self, slots: np.ndarray) -> list[dict[str, Any]]:
        """`orig_resp` for many flows at once (one column read each, not one per flow)."""
        cols = {name: getattr(self, name)[slots].tolist() for name in (
            *_KEY, "orig_is_a", "first_us", "last_us", "first_number", "pkts", "bytes", "ip_bytes", "marks",
            "tcp_flags")}
        out = []
        for i in range(len(slots)):
            o, r = (0, 1) if cols["orig_is_a"][i] else (1, 0)
            ends = ((cols["a_hi"][i], cols["a_lo"][i], cols["a_port"][i]),
                    (cols["b_hi"][i], cols["b_lo"][i], cols["b_port"][i]))
            out.append({
                "orig": ends[o], "resp": ends[r], "proto": cols["proto"][i], "vlan": cols["vlan"][i],
                "inner_vlan": cols["inner_vlan"][i], "first_us": cols["first_us"][i],
                "last_us": cols["last_us"][i], "first_number": cols["first_number"][i],
                **{name: (cols[name][i][o], cols[name][i][r]) for name in (
                    "pkts", "bytes", "ip_bytes", "marks", "tcp_flags")},
            })
        return out


def _marks(proto: np.ndarray, flags: np.ndarray, payload: np.ndarray) -> np.ndarray:
    tcp = proto == TCP
    syn = (flags & SYN) != 0
    ack = (flags & ACK) != 0
    marks = np.where(payload > 0, M_DATA, 0)
    marks |= np.where(tcp & syn & ~ack, M_SYN, 0)
    marks |= np.where(tcp & syn & ack, M_SYNACK, 0)
    marks |= np.where(tcp & ((flags & FIN) != 0), M_FIN, 0)
    marks |= np.where(tcp & ((flags & RST) != 0), M_RST, 0)
    marks |= np.where(tcp & ack & ~syn, M_ACK, 0)
    return marks


def conn_state(proto: int, orig_marks: int, resp_marks: int, orig_bytes: int, resp_bytes: int,
               orig_pkts: int, resp_pkts: int) -> str:
    """Zeek's conn_state from what each endpoint was seen sending."""
    if proto == UDP:
        if orig_pkts:
            return "SF" if resp_pkts else "S0"
        return "SHR" if resp_pkts else "OTH"
    if proto != TCP:
        return "OTH"
    handshake = bool(orig_marks & M_SYN) and bool(resp_marks & M_SYNACK)

    def state(marks: int, pkts: int, opened: int) -> str:
        if marks & M_RST:
            return "RESET"
        if marks & M_FIN:
            return "CLOSED"
        if handshake:
            return "ESTABLISHED"
        if marks & opened:
            return "SYN_SENT" if opened == M_SYN else "SYN_ACK_SENT"
        return "PARTIAL" if pkts else "INACTIVE"

    os_, rs = state(orig_marks, orig_pkts, M_SYN), state(resp_marks, resp_pkts, M_SYNACK)
    o_inactive = os_ in ("INACTIVE", "PARTIAL")
    r_inactive = rs in ("INACTIVE", "PARTIAL")
    if rs == "RESET":
        if os_ in ("SYN_SENT", "SYN_ACK_SENT") or (os_ == "RESET" and not orig_bytes and not resp_bytes):
            return "REJ"
        if o_inactive:
            return "RSTRH"
        return "RSTR"
    if os_ == "RESET":
        if r_inactive:  # Zeek: RSTOS0 when the history reads SYN ... RST with no reply, else OTH
            syn_then_rst = orig_marks & M_SYN and not orig_marks & (M_ACK | M_FIN)
            return "RSTOS0" if syn_then_rst and not resp_marks & M_SYNACK else "OTH"
        return "RSTO"
    if rs == "CLOSED" and os_ == "CLOSED":
        return "SF"
    if os_ == "CLOSED":
        return "SH" if r_inactive else "S2"
    if rs == "CLOSED":
        return "SHR" if o_inactive else "S3"
    if os_ == "SYN_SENT" and rs == "INACTIVE":
        return "S0"
    if os_ == "ESTABLISHED" and rs == "ESTABLISHED":
        return "S1"
    return "OTH"
