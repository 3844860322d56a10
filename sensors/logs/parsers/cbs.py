"""Windows servicing text logs (CBS.log / CSI): `2016-09-28 04:30:30, Info   CBS    message`.

Lines without the timestamp prefix continue the record before them (CBS writes multi-line entries)."""

from __future__ import annotations

import re
from typing import Any

from sensors.logs.parsers.base import ParseError, Parser, severity_name

LINE = re.compile(r"^(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}), (?P<level>\w+)\s+(?P<component>\S+)\s+"
                  r"(?P<message>.*)$", re.S)


class CbsParser(Parser):
    name = "cbs"
    source_type = "windows_cbs"
    continuation = re.compile(r"^(?!\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}, )")

    def parse(self, line: str, origin: str) -> dict[str, Any] | None:
        m = LINE.match(line)
        if not m:
            raise ParseError("not a CBS log line (yyyy-mm-dd hh:mm:ss, Level Component message)")
        record = {"ts": self.ctx.strptime_ms(m.group("ts"), "%Y-%m-%d %H:%M:%S"), "event_category": "windows_servicing",
                  "message": m.group("message"),
                  "severity": severity_name(m.group("level")) or "informational",
                  "extra": {"component": m.group("component"), "level": m.group("level")}}
        return self.event(record, line, origin)
