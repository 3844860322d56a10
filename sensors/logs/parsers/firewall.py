"""Message parsers for firewall logs carried by syslog.

- netfilter: iptables / nftables / ufw kernel log lines (`IN= OUT= SRC= DST= PROTO= SPT= DPT=`), the
  action read from the log prefix (DROP/REJECT/BLOCK -> denied, ACCEPT/ALLOW -> allowed);
- Huawei USG (`%%01POLICY/6/POLICYPERMIT(l):source-ip=..., ...`, `%%01SECLOG/6/SESSION_TEARDOWN(l):SourceIP=...`);
- H3C SecPath (`%%10FILTER/6/FILTER_ZONE_IPV4_EXECUTION: SrcIPAddr(1003)=...;DstIPAddr(1007)=...;`);
- Hillstone (`SESSION: 10.0.0.1:5000->8.8.8.8:53(UDP), application DNS, policy 1, send bytes 74, ...`);
- generic `key=value` firewall logs (FortiGate-style `srcip= dstip= action=` and the many vendors alike).

All become `event_category = 'firewall'` with the 5-tuple, action, counters and the vendor's own keys in
`extra`. Key names of all vendors meet in one alias table (`KEY_ALIASES`).
"""

from __future__ import annotations

import re
from typing import Any

from sensors.logs.parsers.base import put

# normalized key (lower-case, only letters and digits) -> column
KEY_ALIASES = {
    **dict.fromkeys(("src", "srcip", "sourceip", "srcipaddr", "sip", "srcaddr", "source", "clientip", "srcipv4"),
                    "src_ip"),
    **dict.fromkeys(("dst", "dstip", "destinationip", "dstipaddr", "dip", "dstaddr", "destination", "destip",
                     "serverip", "dstipv4"), "dst_ip"),
    **dict.fromkeys(("spt", "srcport", "sourceport", "sport", "srcportnum"), "src_port"),
    **dict.fromkeys(("dpt", "dstport", "destinationport", "dport", "destport", "dstportnum"), "dst_port"),
    **dict.fromkeys(("proto", "protocol", "transport"), "protocol"),
    **dict.fromkeys(("action", "act", "policyaction", "fwaction", "result"), "action"),
    **dict.fromkeys(("sentbyte", "sendbytes", "initbytecount", "bytesout", "sentbytes", "bytessent"), "bytes_out"),
    **dict.fromkeys(("rcvdbyte", "rcvbytes", "rplybytecount", "bytesin", "receivedbytes", "bytesreceived",
                     "receivebytes"), "bytes_in"),
    **dict.fromkeys(("sentpkt", "sendpkts", "initpktcount", "packetsout", "sendpackets"), "packets_out"),
    **dict.fromkeys(("rcvdpkt", "rcvpkts", "rplypktcount", "packetsin", "receivepackets"), "packets_in"),
    **dict.fromkeys(("user", "username", "usrname", "srcuser", "suser"), "user_name"),
    **dict.fromkeys(("app", "application", "applicationname", "appname", "service"), "app_protocol"),
    **dict.fromkeys(("duration", "elapsedtime"), "duration"),
}
PROTOCOL_NUMBERS = {"1": "icmp", "6": "tcp", "17": "udp", "58": "icmp6", "47": "gre", "50": "esp", "132": "sctp"}
DENY_WORDS = ("deny", "denied", "drop", "block", "reject", "discard", "refuse", "fail")
ALLOW_WORDS = ("accept", "permit", "allow", "pass", "close", "start", "teardown", "end", "create", "built",
               "session")


def action_word(text: str) -> str:
    low = text.lower()
    if any(w in low for w in DENY_WORDS):
        return "denied"
    if any(w in low for w in ALLOW_WORDS):
        return "allowed"
    return ""


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def column_value(column: str, key: str, value: str, extra: dict[str, str]) -> str:
    """A vendor's value in the vocabulary of its column: protocol numbers to names, action words to
    allowed/denied (the vendor's word kept in extra under its key), names lower-cased."""
    if column == "protocol":
        return PROTOCOL_NUMBERS.get(value, value.lower())
    if column == "action":
        extra[key] = value
        return action_word(value) or value.lower()
    if column == "app_protocol":
        return value.lower()
    return value


def apply_pairs(pairs: list[tuple[str, str]], record: dict[str, Any], extra: dict[str, str]) -> None:
    """Put vendor key/value pairs into columns (via KEY_ALIASES) or extra."""
    for key, value in pairs:
        value = value.strip().strip('"')
        if not key or value in ("", "-"):
            continue
        column = KEY_ALIASES.get(_norm(key))
        if column is None:
            extra[key] = value
        else:
            put(record, column, column_value(column, key, value, extra), extra, key)


# -- netfilter ---------------------------------------------------------------------------------
_NETFILTER = re.compile(r"(?:^|\s)IN=\S*\s+OUT=\S*")
_NF_PAIR = re.compile(r"([A-Z]+)=(\S*)")
_NF_PREFIX = re.compile(r"^(?:\[\s*\d+\.\d+\]\s*)?(?P<prefix>.*?)\s*IN=")
_NF_FLAGS = ("SYN", "ACK", "FIN", "RST", "PSH", "URG", "DF")


def parse_netfilter(program: str, message: str, record: dict[str, Any], extra: dict[str, str]) -> str | None:
    if "SRC=" not in message or not _NETFILTER.search(message):
        return None
    prefix = _NF_PREFIX.match(message)
    label = prefix.group("prefix").strip(" :[]") if prefix else ""
    if label:
        extra["log_prefix"] = label
    record["action"] = action_word(label) or "logged"
    pairs = _NF_PAIR.findall(message)
    mapped = {"SRC": "src_ip", "DST": "dst_ip", "SPT": "src_port", "DPT": "dst_port", "PROTO": "protocol"}
    for key, value in pairs:
        if key in mapped and value:
            column = mapped[key]
            put(record, column, value.lower() if column == "protocol" else value, extra, key)
        elif value:
            extra[key] = value
    flags = [w for w in message.split() if w in _NF_FLAGS]
    if flags:
        extra["flags"] = ",".join(flags)
    if record.get("protocol") == "icmpv6":
        record["protocol"] = "icmp6"
    record["event_category"] = "firewall"
    return "iptables"


# -- Huawei USG / H3C: the tag names the log, pairs follow --------------------------------------------
_HUAWEI = re.compile(r"^%%\d+(?P<module>[A-Z_]+)/\d/(?P<name>[A-Z_0-9]+)(?:\([a-z]\))?$")
_H3C_PAIR = re.compile(r"([A-Za-z_]+)\(\d+\)=([^;]*);?")
_HUAWEI_PAIR = re.compile(r"([A-Za-z][\w-]*)=([^,;]*)")


def parse_vendor_tag(program: str, message: str, record: dict[str, Any], extra: dict[str, str]) -> str | None:
    m = _HUAWEI.match(program)
    if not m:
        return None
    extra["log_module"], extra["log_name"] = m.group("module"), m.group("name")
    if "(10" in message and _H3C_PAIR.search(message):  # H3C: Name(id)=value;
        vendor = "h3c_fw"
        pairs = _H3C_PAIR.findall(message)
    else:
        vendor = "huawei_usg"
        pairs = _HUAWEI_PAIR.findall(message.rstrip(". "))
    apply_pairs(pairs, record, extra)
    name = m.group("name")
    if "action" not in record:
        record["action"] = action_word(name) or action_word(extra.get("Event", "")) or "logged"
    if "SecurityPolicy" in extra:
        extra["rule_name"] = extra["SecurityPolicy"]
    record["event_category"] = "firewall"
    return vendor


# -- Hillstone -------------------------------------------------------------------------------------
_HILLSTONE = re.compile(r"SESSION: (?P<src>[0-9a-fA-F.:]+?):(?P<sport>\d+)->(?P<dst>[0-9a-fA-F.:]+?):(?P<dport>\d+)"
                        r"\((?P<proto>\w+)\)(?P<rest>.*)$")
_HILLSTONE_PAIR = re.compile(r"^([a-z]+(?: [a-z]+)*) (\S.*)$")  # "send bytes 74", "start time 2024-03-10 11:59:59"


def parse_hillstone(program: str, message: str, record: dict[str, Any], extra: dict[str, str]) -> str | None:
    m = _HILLSTONE.search(message)
    if not m:
        return None
    record.update(src_ip=m.group("src"), src_port=int(m.group("sport")), dst_ip=m.group("dst"),
                  dst_port=int(m.group("dport")), protocol=m.group("proto").lower())
    pairs: list[tuple[str, str]] = []
    flags: list[str] = []
    for part in m.group("rest").split(","):
        part = part.strip()
        pm = _HILLSTONE_PAIR.match(part)
        if pm and pm.group(1) not in ("session",):
            pairs.append((pm.group(1), pm.group(2)))
        elif part:
            flags.append(part)
    apply_pairs(pairs, record, extra)
    if flags:
        extra["flags"] = ",".join(flags)
    policy = extra.get("policy", "")
    record["action"] = "denied" if "deny" in policy or any("deny" in f for f in flags) else "allowed"
    record["event_category"] = "firewall"
    return "hillstone_fw"


# -- generic key=value ------------------------------------------------------------------------------
_KV_PAIR = re.compile(r'([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_keyvalue(program: str, message: str, record: dict[str, Any], extra: dict[str, str]) -> str | None:
    """Any message of key=value pairs that names at least a source and a destination address."""
    pairs = _KV_PAIR.findall(message)
    if len(pairs) < 3:
        return None
    keys = {KEY_ALIASES.get(_norm(k)) for k, _ in pairs}
    if "src_ip" not in keys or "dst_ip" not in keys:
        return None
    apply_pairs(pairs, record, extra)
    record.setdefault("action", "logged")
    record["event_category"] = "firewall"
    return "firewall_kv"
