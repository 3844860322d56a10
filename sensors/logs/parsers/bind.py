"""BIND (named) query logs: from named's own file channel (`21-Nov-2026 10:00:00.123 queries: info: client ...`)
or carried by syslog (`named[812]: client @0x7f.. 10.0.0.5#53412 (example.com): query: example.com IN A +E(0)K
(10.0.0.53)`). Each query becomes `event_category = 'dns'`, `source_type = 'bind'`."""

from __future__ import annotations

import re
from typing import Any

from sensors.logs.parsers.base import Parser, severity_name

QUERY = re.compile(
    r"client (?:@0x[0-9a-f]+ )?(?P<ip>[0-9a-fA-F.:]+)#(?P<port>\d+)(?: \((?P<name>[^)]*)\))?: "
    r"(?:view (?P<view>[^:]+): )?query: (?P<query>\S+) (?P<qclass>\S+) (?P<qtype>\S+) (?P<flags>\S*)"
    r"(?: \((?P<server>[0-9a-fA-F.:]+)\))?"
)
# 21-Nov-2026 10:00:00.123 [category: ][severity: ]message
FILE_LINE = re.compile(r"^(?P<ts>\d{2}-\w{3}-\d{4} \d{2}:\d{2}:\d{2}(?:\.\d{1,6})?) (?:(?P<cat>[a-z-]+): )?"
                       r"(?:(?P<sev>debug|info|notice|warning|error|critical)(?: \d+)?: )?(?P<msg>.*)$")


def parse_query(message: str, record: dict[str, Any], extra: dict[str, str]) -> bool:
    m = QUERY.search(message)
    if not m:
        return False
    g = m.groupdict()
    record.update(event_category="dns", action="query", src_ip=g["ip"], src_port=int(g["port"]),
                  dns_query=g["query"].rstrip(".") or ".", dns_qtype=g["qtype"].upper(), app_protocol="dns")
    if g["server"]:
        record["dst_ip"] = g["server"]
        record["dst_port"] = 53
    flags = g["flags"]
    record["protocol"] = "tcp" if "T" in flags else "udp"
    extra["qclass"] = g["qclass"]
    extra["flags"] = flags
    extra["recursion_desired"] = "true" if flags.startswith("+") else "false"
    if g["view"]:
        extra["view"] = g["view"]
    return True


def parse_named(program: str, message: str, record: dict[str, Any], extra: dict[str, str]) -> str | None:
    """Syslog message parser: named's query lines."""
    if not program.startswith("named") or not parse_query(message, record, extra):
        return None
    return "bind"


class BindParser(Parser):
    """A BIND query log file (named's file channel); syslog-framed lines are handed to the syslog parser."""

    name = "bind"
    source_type = "bind"

    def __init__(self, ctx: Any = None):
        super().__init__(ctx)
        from sensors.logs.parsers.syslog import SyslogParser

        self._syslog = SyslogParser(ctx)

    def parse(self, line: str, origin: str) -> dict[str, Any] | None:
        m = FILE_LINE.match(line)
        if not m:
            return self._syslog.parse(line, origin)
        ts = self.ctx.strptime_ms(m.group("ts").split(".")[0], "%d-%b-%Y %H:%M:%S")
        if "." in m.group("ts"):
            ts += int(m.group("ts").rsplit(".", 1)[1].ljust(3, "0")[:3])
        record: dict[str, Any] = {"ts": ts, "message": m.group("msg")}
        extra: dict[str, str] = {}
        if m.group("cat"):
            extra["bind_category"] = m.group("cat")
        if m.group("sev"):
            record["severity"] = severity_name(m.group("sev"))
        if not parse_query(m.group("msg"), record, extra):
            record["event_category"] = "dns_server"
        record["extra"] = extra
        return self.event(record, line, origin)
