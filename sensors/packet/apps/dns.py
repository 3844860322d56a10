"""DNS messages (RFC 1035) over UDP and TCP, paired into transactions like Zeek's dns.log.

A query and its response (same transaction id in the same flow) become one record; a query never answered
and a response never asked for are records of their own. Names with compression pointers are followed
with a hop limit; anything malformed raises `DnsError` and the message is counted, not logged.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from scapy.layers.dns import dnsclasses, dnstypes

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
          7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}
PORTS = frozenset({53, 5353, 5355})
_NAME_TYPES = frozenset({2, 5, 12, 39})  # NS, CNAME, PTR, DNAME


class DnsError(ValueError):
    pass


def qtype_name(qtype: int) -> str:
    return dnstypes.get(qtype, str(qtype))


def _name(msg: bytes, pos: int) -> tuple[str, int]:
    """The name at `pos` and the position after it (after the first pointer, if any)."""
    labels: list[str] = []
    end = -1
    for _ in range(128):
        if pos >= len(msg):
            raise DnsError("name runs past the message")
        length = msg[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DnsError("cut-short compression pointer")
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            continue
        if length & 0xC0:
            raise DnsError(f"unsupported label type 0x{length:02x}")
        label = msg[pos + 1:pos + 1 + length]
        if len(label) < length:
            raise DnsError("label runs past the message")
        labels.append(label.decode("ascii", "backslashreplace").replace(".", "\\."))
        pos += 1 + length
    else:
        raise DnsError("compression loop")
    return ".".join(labels), end if end >= 0 else pos


def _rdata(msg: bytes, rtype: int, start: int, length: int) -> str:
    data = msg[start:start + length]
    if rtype == 1 and length == 4:
        return str(ipaddress.IPv4Address(data))
    if rtype == 28 and length == 16:
        return str(ipaddress.IPv6Address(data))
    if rtype in _NAME_TYPES:
        return _name(msg, start)[0]
    if rtype == 15 and length >= 3:  # MX: the exchange
        return _name(msg, start + 2)[0]
    if rtype == 33 and length >= 7:  # SRV: the target
        return _name(msg, start + 6)[0]
    if rtype == 6:  # SOA: the primary name server
        return _name(msg, start)[0]
    if rtype in (16, 99):  # TXT / SPF: the character-strings, joined
        parts, pos = [], 0
        while pos < len(data):
            n = data[pos]
            parts.append(data[pos + 1:pos + 1 + n].decode("utf-8", "backslashreplace"))
            pos += 1 + n
        return "".join(parts)
    return data.hex()


def parse(msg: bytes) -> dict[str, Any]:
    if len(msg) < 12:
        raise DnsError("shorter than a DNS header")
    tid, flags, qd, an, ns, ar = struct.unpack_from(">HHHHHH", msg)
    pos = 12
    questions = []
    for _ in range(min(qd, 16)):
        name, pos = _name(msg, pos)
        if pos + 4 > len(msg):
            raise DnsError("question cut short")
        qtype, qclass = struct.unpack_from(">HH", msg, pos)
        pos += 4
        questions.append((name, qtype, qclass))
    answers: list[tuple[str, int, int, str]] = []
    for _ in range(min(an, 256)):
        name, pos = _name(msg, pos)
        if pos + 10 > len(msg):
            break  # a truncated answer section keeps what was read
        rtype, _rclass, ttl, rdlen = struct.unpack_from(">HHIH", msg, pos)
        pos += 10
        if pos + rdlen > len(msg):
            break
        if rtype != 41:  # OPT is EDNS signalling, not an answer
            answers.append((name, rtype, ttl, _rdata(msg, rtype, pos, rdlen)))
        pos += rdlen
    return {"id": tid, "qr": flags >> 15, "opcode": (flags >> 11) & 0xF, "aa": bool(flags & 0x400),
            "tc": bool(flags & 0x200), "rd": bool(flags & 0x100), "ra": bool(flags & 0x80), "z": (flags >> 4) & 7,
            "rcode": flags & 0xF, "questions": questions, "answers": answers, "authorities": ns, "additionals": ar}


class DnsState:
    """Pairs a flow's queries and responses into transactions; `emit(ts_us, fields)` receives each one."""

    def __init__(self, emit):
        self.emit = emit
        self.pending: dict[int, tuple[int, dict[str, Any]]] = {}
        self.errors = 0

    def message(self, msg: bytes, ts_us: int) -> bool:
        try:
            m = parse(msg)
        except (DnsError, ValueError, struct.error):
            self.errors += 1
            return False
        if not m["qr"]:
            if m["id"] in self.pending:  # a retransmission of an unanswered query: report the first
                self._emit(*self.pending.pop(m["id"]), None, 0)
            self.pending[m["id"]] = (ts_us, m)
            return True
        query = self.pending.pop(m["id"], None)
        if query is None:
            self._emit(ts_us, None, m, 0)
        else:
            self._emit(query[0], query[1], m, ts_us - query[0])
        return True

    def finish(self) -> None:
        for ts_us, query in self.pending.values():
            self._emit(ts_us, query, None, 0)
        self.pending.clear()

    def _emit(self, ts_us: int, query: dict[str, Any] | None, response: dict[str, Any] | None, rtt_us: int) -> None:
        m = query or response
        assert m is not None
        name, qtype, qclass = (m["questions"] or [("", 0, 0)])[0]
        if not name and response and response["questions"]:
            name, qtype, qclass = response["questions"][0]
        extra = {"trans_id": str(m["id"]), "qtype": str(qtype), "qclass": str(qclass),
                 "qclass_name": dnsclasses.get(qclass, str(qclass)), "opcode": str(m["opcode"]),
                 "RD": _bool(m["rd"])}
        fields: dict[str, Any] = {"dns_query": name, "dns_qtype": qtype_name(qtype) if m["questions"] else "",
                                  "action": "query", "extra": extra}
        if response is not None:
            answers = response["answers"]
            fields.update(action="response", dns_rcode=RCODES.get(response["rcode"], str(response["rcode"])),
                          dns_answers=[a[3] for a in answers])
            extra.update(rcode=str(response["rcode"]), AA=_bool(response["aa"]), TC=_bool(response["tc"]),
                         RA=_bool(response["ra"]), Z=str(response["z"]),
                         TTLs=",".join(str(a[2]) for a in answers),
                         answer_types=",".join(qtype_name(a[1]) for a in answers),
                         answer_names=",".join(a[0] for a in answers))
            if query is not None:
                extra["rtt"] = f"{rtt_us / 1e6:.6f}"
        self.emit(ts_us, fields)


def _bool(value: bool) -> str:
    return "true" if value else "false"
