"""Packet sensor output as normalized events (pipeline.schema), Zeek-named where a field has no column.

Source types mirror Zeek's logs (`packet_conn`, `packet_dns`, `packet_http`, `packet_tls`, `packet_ssh`), so
Sigma rules for Zeek's conn/dns/http/ssl/ssh logs apply to them (rules.mapping.logsource_filter). Every
event carries the flow's Community ID, the standard hash that joins it to Zeek, Suricata and other sensors.
"""

from __future__ import annotations

import binascii
import hashlib
import ipaddress
import socket
import struct
from functools import lru_cache
from typing import Any

from pipeline.schema import REQUIRED, event_id
from sensors.packet.decode import ICMP, ICMP6, TCP, UDP
from sensors.packet.flows import conn_state

PROTO_NAMES = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMP6: "icmp6", 2: "igmp", 47: "gre", 50: "esp", 51: "ah",
               89: "ospf", 132: "sctp"}
_CONN_COLUMNS = ("proto", "orig_hi", "orig_lo", "orig_port", "resp_hi", "resp_lo", "resp_port", "orig_pkts",
                 "resp_pkts", "orig_bytes", "resp_bytes", "orig_ip_bytes", "resp_ip_bytes", "orig_marks", "resp_marks",
                 "orig_tcp_flags", "resp_tcp_flags", "first_us", "last_us", "first_number", "vlan", "inner_vlan")
CATEGORY = {"conn": "network_connection", "dns": "dns", "http": "http", "tls": "tls", "ssh": "ssh"}
# Community ID: ICMP request/reply counterparts (v4, v6)
_ICMP_PAIRS = {ICMP: {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17, 10: 9, 9: 10},
               ICMP6: {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130,
                       144: 145, 145: 144}}


@lru_cache(maxsize=65536)
def address(hi: int, lo: int) -> str:
    if hi == 0 and lo >> 32 == 0xFFFF:
        return socket.inet_ntop(socket.AF_INET, struct.pack(">I", lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))  # compressed the way the schema writes it


@lru_cache(maxsize=65536)
def _packed(hi: int, lo: int) -> bytes:
    if hi == 0 and lo >> 32 == 0xFFFF:
        return struct.pack(">I", lo & 0xFFFF_FFFF)
    return struct.pack(">QQ", hi, lo)


_PORTED = frozenset((TCP, UDP, ICMP, ICMP6, 132))  # protocols whose ports (ICMP: type/code) enter the hash
_two_ports = struct.Struct(">HH").pack


def community_id(orig: tuple[int, int, int], resp: tuple[int, int, int], proto: int, seed: int = 0) -> str:
    """Community ID v1 of a flow given as (addr hi, addr lo, port) endpoints."""
    a_ip, a_port, b_ip, b_port = _packed(orig[0], orig[1]), orig[2], _packed(resp[0], resp[1]), resp[2]
    pairs = _ICMP_PAIRS.get(proto)
    one_way = False
    if pairs is not None:  # ports are (type, code); a request/reply type pairs with its counterpart
        pair = pairs.get(a_port)
        one_way = pair is None
        if not one_way:
            b_port = pair
    if not one_way and (a_ip, a_port) > (b_ip, b_port):
        a_ip, a_port, b_ip, b_port = b_ip, b_port, a_ip, a_port
    data = seed.to_bytes(2, "big") + a_ip + b_ip + bytes((proto, 0))
    if proto in _PORTED:
        data += _two_ports(a_port, b_port)
    return "1:" + binascii.b2a_base64(hashlib.sha1(data).digest(), newline=False).decode()


class EventFactory:
    """Builds events for one sensor instance; `origin` names the capture (file path or interface)."""

    def __init__(self, sensor: str, origin: str):
        self.sensor = sensor
        self.origin = origin

    def make(self, kind: str, ts_us: int, flow: dict[str, Any], cid: str, fields: dict[str, Any],
             number: int, seq: int = 0) -> dict[str, Any]:
        orig, resp = flow["orig"], flow["resp"]
        proto = flow["proto"]
        extra = dict(fields.pop("extra", {}))
        extra.update(community_id=cid, origin=self.origin, first_packet=str(number))
        if flow["vlan"]:
            extra["vlan"] = str(flow["vlan"])
        if flow["inner_vlan"]:
            extra["inner_vlan"] = str(flow["inner_vlan"])
        source_type = f"packet_{kind}"
        record = {
            "ts": ts_us // 1000, "sensor": self.sensor, "source_type": source_type,
            "event_category": CATEGORY[kind],
            "src_ip": address(orig[0], orig[1]), "src_port": orig[2],
            "dst_ip": address(resp[0], resp[1]), "dst_port": resp[2],
            "protocol": PROTO_NAMES.get(proto, str(proto)), "extra": extra,
            "event_id": event_id(f"{self.sensor}/{source_type}", cid.encode(), f"{flow['first_us']}/{number}/{seq}"),
            **fields,
        }
        # already canonical (types are the schema's, by construction): keep the non-default values, as
        # pipeline.schema.normalize would (tests check the two agree)
        return {k: v for k, v in record.items() if v or k in REQUIRED}

    def conns(self, c: dict[str, list], services: list[str], reasons: list[str], cids: list[str]) -> list[dict]:
        """Conn events for flows given as `FlowTable.columns`: what `make("conn", ...)` gives, built in one loop
        over the columns (the packet sensor's busiest output: one event per flow)."""
        sensor, origin = self.sensor, self.origin
        source = f"{sensor}/packet_conn"
        out = []
        for (proto, o_hi, o_lo, o_port, r_hi, r_lo, r_port, o_pkts, r_pkts, o_bytes, r_bytes, o_ip_bytes, r_ip_bytes,
             o_marks, r_marks, o_flags, r_flags, first_us, last_us, number, vlan, inner_vlan, service, reason,
             cid) in zip(*(c[k] for k in _CONN_COLUMNS), services, reasons, cids, strict=True):
            cid = cid or community_id((o_hi, o_lo, o_port), (r_hi, r_lo, r_port), proto)
            extra = {"orig_ip_bytes": str(o_ip_bytes), "resp_ip_bytes": str(r_ip_bytes), "flow_end_reason": reason}
            if o_flags or r_flags:
                extra["tcp_flags_ts"], extra["tcp_flags_tc"] = f"{o_flags:02x}", f"{r_flags:02x}"
            if proto in (ICMP, ICMP6):
                extra["icmp_type"], extra["icmp_code"] = str(o_port), str(r_port)
            extra["community_id"], extra["origin"], extra["first_packet"] = cid, origin, str(number)
            if vlan:
                extra["vlan"] = str(vlan)
            if inner_vlan:
                extra["inner_vlan"] = str(inner_vlan)
            # what make()'s filter keeps: these are never empty, the rest only when set
            event = {"ts": first_us // 1000, "sensor": sensor, "source_type": "packet_conn",
                     "event_category": "network_connection", "src_ip": address(o_hi, o_lo),
                     "dst_ip": address(r_hi, r_lo), "protocol": PROTO_NAMES.get(proto) or str(proto), "extra": extra,
                     "event_id": event_id(source, cid.encode(), f"{first_us}/{number}/0"),
                     "conn_state": conn_state(proto, o_marks, r_marks, o_bytes, r_bytes, o_pkts, r_pkts)}
            for key, value in (("src_port", o_port), ("dst_port", r_port), ("duration", (last_us - first_us) / 1e6),
                               ("bytes_out", o_bytes), ("bytes_in", r_bytes), ("packets_out", o_pkts),
                               ("packets_in", r_pkts), ("app_protocol", service)):
                if value or key in REQUIRED:
                    event[key] = value
            out.append(event)
        return out
