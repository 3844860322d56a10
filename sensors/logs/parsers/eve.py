"""Suricata EVE JSON: alert, flow, netflow, dns (v1 and v2 layouts), http, tls, ssh, fileinfo, anomaly, ...

The common fields (addresses, ports, protocols, the flow counters and each protocol's key fields) go to
columns; every other leaf is kept in `extra` under its dotted EVE path (`alert.signature_id`,
`tls.subject`, ...). `source_type` is `suricata_eve`; `event_category` follows `event_type`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from pipeline.schema import parse_ts
from sensors.logs.parsers import native
from sensors.logs.parsers.base import ParseError, Parser, load_object, put

SOURCE_TYPE = "suricata_eve"
CATEGORIES = {
    "alert": "alert", "flow": "network_connection", "netflow": "network_connection", "dns": "dns",
    "http": "http", "tls": "tls", "ssh": "ssh", "fileinfo": "file", "anomaly": "anomaly", "smtp": "email",
    "smb": "smb", "dcerpc": "rpc", "krb5": "auth", "rdp": "rdp", "dhcp": "dhcp", "ftp": "ftp",
    "ftp_data": "ftp", "quic": "tls", "snmp": "snmp", "sip": "sip", "stats": "sensor_health",
    "drop": "firewall",
}
# Suricata alert severity 1 (highest) .. 4 -> syslog severity names
SEVERITIES = {1: "critical", 2: "error", 3: "warning", 4: "notice"}
# dotted EVE path -> column
COLUMNS = {
    "src_ip": "src_ip", "src_port": "src_port", "dest_ip": "dst_ip", "dest_port": "dst_port",
    "app_proto": "app_protocol",
    "flow.pkts_toserver": "packets_out", "flow.pkts_toclient": "packets_in",
    "flow.bytes_toserver": "bytes_out", "flow.bytes_toclient": "bytes_in",
    "netflow.pkts": "packets_out", "netflow.bytes": "bytes_out",
    "dns.rrname": "dns_query", "dns.rrtype": "dns_qtype", "dns.rcode": "dns_rcode",
    "dns.queries.0.rrname": "dns_query", "dns.queries.0.rrtype": "dns_qtype",
    "http.hostname": "http_host", "http.url": "http_uri", "http.http_method": "http_method",
    "http.status": "http_status", "http.http_user_agent": "http_user_agent", "http.http_refer": "http_referrer",
    "tls.sni": "tls_sni", "tls.version": "tls_version", "tls.ja3.hash": "tls_ja3", "tls.ja4": "tls_ja4",
    "quic.sni": "tls_sni", "quic.ja4": "tls_ja4",
    "fileinfo.filename": "file_path", "fileinfo.sha256": "file_hash", "fileinfo.md5": "file_hash",
    "ssh.client.software_version": "message", "smtp.helo": "host_name",
    "krb5.cname": "user_name", "ftp.command_data": "message",
    "alert.signature": "message",
}


def _flatten(prefix: str, node: Any, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(f"{prefix}.{key}" if prefix else key, value, out)
    elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        for i, value in enumerate(node):
            _flatten(f"{prefix}.{i}", value, out)
    else:
        out[prefix] = node


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """An object of the record (`alert`, `flow`, `dns`, ...); empty when absent or not an object."""
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _rdata(value: Any) -> str:
    return orjson.dumps(value).decode() if isinstance(value, dict) else str(value)


def _answers(dns: dict[str, Any]) -> list[str]:
    """Answer data of a dns record: v2 `answers` list or `grouped` map, or a v1 answer's rdata."""
    out: list[str] = []
    answers = dns.get("answers")
    if isinstance(answers, list):
        out.extend(_rdata(a["rdata"]) for a in answers if isinstance(a, dict) and "rdata" in a)
    grouped = dns.get("grouped")
    if isinstance(grouped, dict):
        for values in grouped.values():
            out.extend(_rdata(v) for v in (values if isinstance(values, list) else [values]))
    if not out and dns.get("type") == "answer" and "rdata" in dns:
        out.append(_rdata(dns["rdata"]))
    return out


class EveParser(Parser):
    name = "eve"
    source_type = SOURCE_TYPE

    def __init__(self, ctx: Any = None):
        super().__init__(ctx)
        self._native = native.eve_reader(self.ctx, COLUMNS, CATEGORIES, SEVERITIES, SOURCE_TYPE)

    def parse(self, line: str, origin: str) -> dict[str, Any] | None:
        if self._native is not None and type(origin) is str:
            event = self._native.parse(line, origin)
            if event is not None:
                return event
        doc = load_object(line, "an EVE record")
        event_type = doc.get("event_type")
        if not isinstance(event_type, str) or "timestamp" not in doc:
            raise ParseError("not an EVE record: no event_type or timestamp")
        record: dict[str, Any] = {"ts": doc.pop("timestamp"), "event_category": CATEGORIES.get(event_type, event_type)}
        if isinstance(doc.get("proto"), str):
            record["protocol"] = doc.pop("proto").lower().replace("ipv6-icmp", "icmp6")
        flat: dict[str, Any] = {}
        _flatten("", doc, flat)
        extra: dict[str, str] = {}
        for path, value in flat.items():
            column = COLUMNS.get(path)
            if column is None or isinstance(value, list | bool):
                if value is not None and value != "" and value != []:
                    extra[path] = value if isinstance(value, str) else orjson.dumps(value).decode()
            else:
                put(record, column, value, extra, path)
        self._specifics(event_type, doc, record, extra)
        record["extra"] = extra
        return self.event(record, line, origin)

    @staticmethod
    def _specifics(event_type: str, doc: dict[str, Any], record: dict[str, Any], extra: dict[str, str]) -> None:
        if event_type == "alert":
            alert = _section(doc, "alert")
            severity = alert.get("severity")
            record["severity"] = SEVERITIES.get(severity, "") if type(severity) is int else ""
            record["action"] = alert.get("action", "")
        elif event_type in ("flow", "netflow"):
            flow = _section(doc, event_type)
            if "start" in flow and "end" in flow:
                with contextlib.suppress(ValueError):
                    record["duration"] = max(0, parse_ts(flow["end"]) - parse_ts(flow["start"])) / 1000
            record["action"] = flow.get("state", "")
        elif event_type == "dns":
            dns = _section(doc, "dns")
            record["dns_answers"] = _answers(dns)
            record["action"] = "query" if dns.get("type") in ("query", "request") else "answer"
        elif event_type == "http":
            record["action"] = "request"
        elif event_type == "drop":
            record["action"] = "denied"
