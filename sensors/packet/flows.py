"""Bidirectional flow accounting over decoded batches, in columns.

Flows are keyed by (VLAN, inner VLAN, protocol, both endpoints) with the endpoints in a canonical order
(side a < side b), so both directions of a connection share one row. Rows live in columns; an open-addressing
hash index (linear probing, tombstones on release) finds a packet's row by its exact key. The per-packet work
is one loop compiled with numba, so the table keeps up with the decoder at millions of packets per second
where per-flow Python (a dict lookup, a tuple) would not.

The originator is decided like Zeek does: the sender of the first packet, unless that packet is a SYN-ACK,
or is not a SYN and goes from a likely server port to a non-server port. `conn_state` follows Zeek's
`conn_state` function, evaluated on the endpoint states the flag marks imply.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numba import njit

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

_KEY = ("vlan", "inner_vlan", "proto", "a_hi", "a_lo", "b_hi", "b_lo", "a_port", "b_port")
_PER_SIDE = ("pkts", "bytes", "ip_bytes", "marks", "tcp_flags")  # columns of shape (capacity, 2): side a, side b
EMPTY, TOMBSTONE = -1, -2  # index entries that hold no slot
MAX_LOAD = 0.5  # of the index: live entries + tombstones


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
    """Flow rows in columns (slot = row), found through an open-addressing hash index on the exact key.

    The per-packet work — find or create the flow, add the packet to its counters — is one compiled loop
    (`_account`); Python only grows the columns or rebuilds the index when the loop asks for it.
    """

    def __init__(self, timeouts: Timeouts | None = None, capacity: int = 4096):
        self.timeouts = timeouts or Timeouts()
        # size: slots ever used; free_top: slots in `free`; used: index entries; tombstones: deleted entries
        self.state = np.zeros(4, dtype=np.int64)
        self.capacity = 0
        self._alloc(capacity)
        self.index = np.full(_index_size(capacity), EMPTY, dtype=np.int64)

    def _alloc(self, capacity: int) -> None:
        def grow(name: str, dtype: type, shape: tuple = ()) -> None:
            new = np.zeros((capacity, *shape), dtype=dtype)
            old = getattr(self, name, None)
            if old is not None:
                new[:len(old)] = old
            setattr(self, name, new)

        for name in _KEY:
            grow(name, np.uint64 if name.endswith(("_hi", "_lo")) else np.int64)
        for name in ("first_us", "last_us", "first_number", "free"):
            grow(name, np.int64)
        for name in ("orig_is_a", "active", "inspect"):
            grow(name, bool)
        for name in _PER_SIDE:
            grow(name, np.int64, (2,))
        self.capacity = capacity

    @property
    def size(self) -> int:
        return int(self.state[0])

    @property
    def active_count(self) -> int:
        return int(self.state[2])

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (*(getattr(self, k) for k in _KEY), self.first_us, self.last_us, self.first_number, self.orig_is_a,
                self.active, self.inspect, self.pkts, self.bytes, self.ip_bytes, self.marks, self.tcp_flags)

    # -- accounting ---------------------------------------------------------------------------------

    def account(self, p: Packets) -> Accounted:
        n = len(p)
        slot = np.empty(n, dtype=np.int64)
        from_orig = np.empty(n, dtype=bool)
        packets = (p.vlan, p.inner_vlan, p.proto, p.src_hi, p.src_lo, p.dst_hi, p.dst_lo, p.sport, p.dport,
                   p.reverse, p.flags, p.payload_len, p.ip_len, p.ts_us, p.number)
        start = 0
        while True:
            start = _account(*packets, start, slot, from_orig, self.index, self.state, self.free, _SERVER_PORTS,
                             *self._columns())
            if start == n:
                return Accounted(slot, from_orig)
            # the loop stopped: a full table, or an index too loaded to take another entry
            if self.size == self.capacity and not self.state[1]:
                self._alloc(self.capacity * 2)
            self._reindex()

    def _reindex(self) -> None:
        self.index = np.full(_index_size(self.capacity), EMPTY, dtype=np.int64)
        _reindex(self.index, self.state, *self._columns()[:len(_KEY)], self.active)

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
        _release(slots.astype(np.int64), self.index, self.state, self.free, *self._columns()[:len(_KEY)],
                 self.active, self.inspect)

    # -- reading a flow -----------------------------------------------------------------------------

    def identity(self, slot: int) -> dict[str, Any]:
        """What never changes in a flow: its endpoints as (addr hi, addr lo, port) from the originator's point of
        view, protocol, VLANs, start (one flow: scalar reads, cheaper than `columns`)."""
        a = (int(self.a_hi[slot]), int(self.a_lo[slot]), int(self.a_port[slot]))
        b = (int(self.b_hi[slot]), int(self.b_lo[slot]), int(self.b_port[slot]))
        orig, resp = (a, b) if self.orig_is_a[slot] else (b, a)
        return {"orig": orig, "resp": resp, "proto": int(self.proto[slot]), "vlan": int(self.vlan[slot]),
                "inner_vlan": int(self.inner_vlan[slot]), "first_us": int(self.first_us[slot]),
                "first_number": int(self.first_number[slot])}

    def columns(self, slots: np.ndarray) -> dict[str, list]:
        """Flows as columns from the originator's point of view: `orig_hi`, `orig_lo`, `orig_port`, the same
        for `resp`, `proto`, `vlan`, `inner_vlan`, `first_us`, `last_us`, `first_number`, and `orig_X`/`resp_X`
        for X in pkts, bytes, ip_bytes, marks, tcp_flags."""
        o = np.where(self.orig_is_a[slots], 0, 1)
        r = 1 - o
        a_is_orig = o == 0
        cols: dict[str, list] = {name: getattr(self, name)[slots].tolist() for name in (
            "proto", "vlan", "inner_vlan", "first_us", "last_us", "first_number")}
        for end, pick_a in (("orig", a_is_orig), ("resp", ~a_is_orig)):
            for field in ("hi", "lo", "port"):
                cols[f"{end}_{field}"] = np.where(pick_a, getattr(self, f"a_{field}")[slots],
                                                  getattr(self, f"b_{field}")[slots]).tolist()
        for name in _PER_SIDE:
            column = getattr(self, name)
            cols[f"orig_{name}"] = column[slots, o].tolist()
            cols[f"resp_{name}"] = column[slots, r].tolist()
        return cols

    def records(self, slots: np.ndarray) -> list[dict[str, Any]]:
        """`orig_resp` for many flows: endpoints as (addr hi, addr lo, port), counters as (orig, resp)."""
        c = self.columns(slots)
        return [{
            "orig": (c["orig_hi"][i], c["orig_lo"][i], c["orig_port"][i]),
            "resp": (c["resp_hi"][i], c["resp_lo"][i], c["resp_port"][i]),
            **{name: c[name][i] for name in ("proto", "vlan", "inner_vlan", "first_us", "last_us", "first_number")},
            **{name: (c[f"orig_{name}"][i], c[f"resp_{name}"][i]) for name in _PER_SIDE},
        } for i in range(len(slots))]


# -- the compiled per-packet loop ------------------------------------------------------------------------

_M = tuple(np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                                  0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB))
_M0, _M1, _M2, _M3, _M4, _M5, _M6 = _M


def _index_size(capacity: int) -> int:
    return 1 << max(int(capacity / MAX_LOAD) - 1, 1).bit_length()


@njit(cache=True, inline="always")
def _hash(vlan, inner, proto, a_hi, a_lo, b_hi, b_lo, a_port, b_port):
    h = np.uint64(vlan) * _M0 ^ np.uint64(inner) * _M6 ^ np.uint64(proto) * _M1
    h ^= a_hi * _M2 ^ a_lo * _M3 ^ b_hi * _M4 ^ b_lo * _M5
    h ^= (np.uint64(a_port) << np.uint64(16) | np.uint64(b_port)) * _M6
    return h ^ (h >> np.uint64(31))


@njit(cache=True, nogil=True)
def _account(p_vlan, p_inner, p_proto, src_hi, src_lo, dst_hi, dst_lo, sport, dport, reverse, flags, payload_len,
             ip_len, ts_us, number, start, slot_out, from_orig_out, index, state, free, server_ports,
             vlan, inner, proto, a_hi, a_lo, b_hi, b_lo, a_port, b_port, first_us, last_us, first_number,
             orig_is_a, active, inspect, pkts, nbytes, ip_bytes, marks, tcp_flags):
    """Packets `start`..: each is added to its flow (created on its first packet). Returns where it stopped:
    the batch's end, or the first packet whose new flow needs a bigger table or a rebuilt index."""
    mask = np.uint64(len(index) - 1)
    limit = len(index) * MAX_LOAD
    capacity = len(vlan)
    for i in range(start, len(p_vlan)):
        sw = src_hi[i] > dst_hi[i] or (src_hi[i] == dst_hi[i] and (
            src_lo[i] > dst_lo[i] or (src_lo[i] == dst_lo[i] and sport[i] > dport[i])))
        kv, ki, kp = p_vlan[i], p_inner[i], p_proto[i]
        if sw:  # the key's side a is the lower endpoint
            ka_hi, ka_lo, ka_port = dst_hi[i], dst_lo[i], dport[i]
            kb_hi, kb_lo, kb_port = src_hi[i], src_lo[i], sport[i]
        else:
            ka_hi, ka_lo, ka_port = src_hi[i], src_lo[i], sport[i]
            kb_hi, kb_lo, kb_port = dst_hi[i], dst_lo[i], dport[i]
        side = 1 if sw != reverse[i] else 0  # 0: the packet travels a -> b
        j = np.int64(_hash(kv, ki, kp, ka_hi, ka_lo, kb_hi, kb_lo, ka_port, kb_port) & mask)
        hole = -1
        s = -1
        while True:
            e = index[j]
            if e == EMPTY:
                break
            if e == TOMBSTONE:
                if hole < 0:
                    hole = j
            elif (a_lo[e] == ka_lo and b_lo[e] == kb_lo and a_port[e] == ka_port and b_port[e] == kb_port
                  and a_hi[e] == ka_hi and b_hi[e] == kb_hi and proto[e] == kp and vlan[e] == kv and inner[e] == ki):
                s = e
                break
            j = np.int64((np.uint64(j) + np.uint64(1)) & mask)
        pr = p_proto[i]
        f = flags[i]
        if s < 0:  # the flow's first packet
            if state[1] == 0 and state[0] == capacity:
                return i
            if hole < 0 and state[2] + state[3] + 1 > limit:
                return i
            if state[1] > 0:
                state[1] -= 1
                s = free[state[1]]
            else:
                s = state[0]
                state[0] += 1
            if hole >= 0:
                j = hole
                state[3] -= 1
            index[j] = s
            state[2] += 1
            vlan[s], inner[s], proto[s] = kv, ki, kp
            a_hi[s], a_lo[s], b_hi[s], b_lo[s], a_port[s], b_port[s] = ka_hi, ka_lo, kb_hi, kb_lo, ka_port, kb_port
            for x in range(2):
                pkts[s, x] = nbytes[s, x] = ip_bytes[s, x] = marks[s, x] = tcp_flags[s, x] = 0
            # the originator, like Zeek: the sender, unless this is a SYN-ACK or it looks like a server's reply
            tcp = pr == TCP
            synack = tcp and (f & (SYN | ACK)) == (SYN | ACK)
            pure_syn = tcp and (f & (SYN | ACK)) == SYN
            sender, receiver = (dport[i], sport[i]) if reverse[i] else (sport[i], dport[i])
            icmp = pr in (ICMP, ICMP6)
            looks_reversed = not pure_syn and not icmp and server_ports[sender] and not server_ports[receiver]
            sender_is_a = side == 0
            if icmp:  # the (logical) requester originates, whichever packet came first
                orig_is_a[s] = sender_is_a != reverse[i]
            else:
                orig_is_a[s] = (not sender_is_a) if (synack or looks_reversed) else sender_is_a
            first_us[s] = last_us[s] = ts_us[i]
            first_number[s] = number[i]
            active[s] = True
            inspect[s] = tcp or pr == UDP
        m = M_DATA if payload_len[i] > 0 else 0
        if pr == TCP:
            syn, ack = (f & SYN) != 0, (f & ACK) != 0
            m |= (M_SYN if syn and not ack else 0) | (M_SYNACK if syn and ack else 0) | (
                M_FIN if f & FIN else 0) | (M_RST if f & RST else 0) | (M_ACK if ack and not syn else 0)
        pkts[s, side] += 1
        nbytes[s, side] += payload_len[i]
        ip_bytes[s, side] += ip_len[i]
        marks[s, side] |= m
        tcp_flags[s, side] |= f
        if ts_us[i] > last_us[s]:
            last_us[s] = ts_us[i]
        slot_out[i] = s
        from_orig_out[i] = (side == 0) == orig_is_a[s]
    return len(p_vlan)


@njit(cache=True, nogil=True)
def _reindex(index, state, vlan, inner, proto, a_hi, a_lo, b_hi, b_lo, a_port, b_port, active):
    mask = np.uint64(len(index) - 1)
    used = 0
    for s in range(state[0]):
        if active[s]:
            j = np.int64(_hash(vlan[s], inner[s], proto[s], a_hi[s], a_lo[s], b_hi[s], b_lo[s], a_port[s],
                               b_port[s]) & mask)
            while index[j] != EMPTY:
                j = np.int64((np.uint64(j) + np.uint64(1)) & mask)
            index[j] = s
            used += 1
    state[2] = used
    state[3] = 0


@njit(cache=True, nogil=True)
def _release(slots, index, state, free, vlan, inner, proto, a_hi, a_lo, b_hi, b_lo, a_port, b_port, active,
             inspect):
    mask = np.uint64(len(index) - 1)
    for s in slots:
        j = np.int64(_hash(vlan[s], inner[s], proto[s], a_hi[s], a_lo[s], b_hi[s], b_lo[s], a_port[s],
                           b_port[s]) & mask)
        while index[j] != s:
            j = np.int64((np.uint64(j) + np.uint64(1)) & mask)
        index[j] = TOMBSTONE
        state[2] -= 1
        state[3] += 1
        free[state[1]] = s
        state[1] += 1
        active[s] = False
        inspect[s] = False


def conn_state(proto: int, orig_marks: int, resp_marks: int, orig_bytes: int, resp_bytes: int,
               orig_pkts: int, resp_pkts: int) -> str:
    """Zeek's conn_state from what each endpoint was seen sending (byte and packet counts only as to whether
    they are zero, so the few distinct inputs are remembered)."""
    return _conn_state(proto, orig_marks, resp_marks, orig_bytes > 0, resp_bytes > 0, orig_pkts > 0,
                       resp_pkts > 0)


@lru_cache(maxsize=4096)
def _conn_state(proto: int, orig_marks: int, resp_marks: int, orig_bytes: bool, resp_bytes: bool,
                orig_pkts: bool, resp_pkts: bool) -> str:
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
