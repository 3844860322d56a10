"""Proxifier client logs: which program opened or closed which connection through which proxy.

`[10.30 16:49:06] chrome.exe - host:5070 open through proxy proxy:5070 HTTPS`
`[10.30 16:49:07] chrome.exe *64 - host:5070 close, 403 bytes (1.2 KB) sent, 426 bytes received, lifetime 00:01`
The time has no year (see ParseContext.year). Events are `event_category = 'network_connection'`.
"""

from __future__ import annotations

import re
from typing import Any

from sensors.logs.parsers.base import ParseError, Parser

LINE = re.compile(r"^\[(?P<mon>\d{1,2})\.(?P<day>\d{1,2}) (?P<time>\d{2}:\d{2}:\d{2})\] (?P<program>.+?)"
                  r"(?: \*(?P<bits>64))? - (?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+) (?P<what>.*)$")
_CLOSE = re.compile(r"^close, (?P<sent>\d+) bytes(?: \([^)]*\))? sent, (?P<recv>\d+) bytes(?: \([^)]*\))? received, "
                    r"lifetime (?P<life>.+)$")
_OPEN = re.compile(r"^open through proxy (?P<proxy>\S+):(?P<pport>\d+) (?P<kind>\S+)$")


def _lifetime(text: str) -> float:
    if text.startswith("<"):
        return 0.0
    seconds = 0
    for part in text.split(":"):
        if not part.isdigit():
            return 0.0
        seconds = seconds * 60 + int(part)
    return float(seconds)


class ProxifierParser(Parser):
    name = "proxifier"
    source_type = "proxifier"

    def parse(self, line: str, origin: str) -> dict[str, Any] | None:
        m = LINE.match(line)
        if not m:
            raise ParseError("not a Proxifier log line")
        hh, mm, ss = (int(x) for x in m.group("time").split(":"))
        ts = self.ctx.yearless_ms(int(m.group("mon")), int(m.group("day")), hh, mm, ss)
        record: dict[str, Any] = {"ts": ts, "event_category": "network_connection", "protocol": "tcp",
                                  "process_image": m.group("program"), "dst_port": int(m.group("port"))}
        extra: dict[str, str] = {"dst_host": m.group("host").strip("[]")}
        if m.group("bits"):
            extra["arch"] = "64-bit"
        what = m.group("what")
        close = _CLOSE.match(what)
        opened = _OPEN.match(what)
        if close:
            record.update(action="close", bytes_out=int(close.group("sent")), bytes_in=int(close.group("recv")),
                          duration=_lifetime(close.group("life")))
        elif opened:
            record["action"] = "open"
            extra.update(proxy=f"{opened.group('proxy')}:{opened.group('pport')}", proxy_type=opened.group("kind"))
        elif what.startswith("error"):
            record["action"] = "error"
            record["message"] = what.partition(":")[2].strip()
        else:
            record["message"] = what
        record["extra"] = extra
        return self.event(record, line, origin)
