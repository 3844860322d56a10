"""Packet sensor output as normalized events (pipeline.schema), Zeek-named where a field has no column.

Source types mirror Zeek's logs (`packet_conn`, `packet_dns`, `packet_http`, `packet_tls`, `packet_ssh`), so
Sigma rules for Zeek's conn/dns/http/ssl/ssh logs apply to them (rules.mapping.logsource_filter). Every
event carries the flow's Community ID, the standard hash that joins it to Zeek, Suricata and other sensors.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import socket
import struct
from functools import lru_cache
from typing import Any

from pipeline.schema import REQUIRED, event_id
from sensors.packet.decode import ICMP, ICMP6, TCP, UDP

PROTO_NAMES = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMP6: "icmp6", 2: "igmp", 47: "gre", 50: "esp", 51: "ah",
               89: "ospf", 132: "sctp"}
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


def _packed(hi: int, lo: int) -> bytes:
    if hi == 0 and lo >> 32 == 0xFFFF:
        return struct.pack(">I", lo & 0xFFFF_FFFF)
    return struct.pack(">QQ", hi, lo)


def community_id(orig: tuple[int, int, int], resp: tuple[int, int, int], proto: int, seed: int = 0) -> str:
    """Community ID v1 of a flow given as (addr hi, addr lo, port) endpoints."""
    a, b = (_packed(orig[0], orig[1]), orig[2]), (_packed(resp[0], resp[1]), resp[2])
    one_way = False
    if proto in _ICMP_PAIRS:
        icmp_type, code = orig[2], resp[2]
        pair = _ICMP_PAIRS[proto].get(icmp_type)
        one_way = pair is None
        a, b = (a[0], icmp_type), (b[0], code if one_way else pair)
    if not one_way and (a[0], a[1]) > (b[0], b[1]):
        a, b = b, a
    data = struct.pack(">H", seed) + a[0] + b[0] + struct.pack(">BB", proto, 0)
    if proto in (TCP, UDP, ICMP, ICMP6, 132):
        data += struct.pack(">HH", a[1], b[1])
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


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
