"""Syslog: RFC 5424 and RFC 3164 messages (with or without `<PRI>`, as received or as written to
/var/log files), journald JSON (`journalctl -o json`), and the message parsers that read their content.

The header gives time, host, program, pid, facility and severity; the message then goes through
`MESSAGE_PARSERS` in order (CEF/LEEF, sshd, sudo/su/PAM, BIND queries, netfilter, vendor firewalls,
generic key=value firewall logs). The first that recognizes it sets `source_type` and fills the fields;
a message none recognizes is a plain `linux_syslog` event. RFC 5424 structured data is kept in `extra`
as `sd.<id>.<param>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from pipeline.schema import SchemaError, parse_ts
from sensors.logs.parsers import auth, bind, cef, firewall
from sensors.logs.parsers.base import SYSLOG_SEVERITIES, ParseError, Parser, load_object

MessageParser = Callable[[str, str, dict[str, Any], dict[str, str]], "str | None"]
MESSAGE_PARSERS: tuple[MessageParser, ...] = (
    cef.parse_embedded,
    auth.parse_sshd,
    auth.parse_linux_auth,
    bind.parse_named,
    firewall.parse_netfilter,
    firewall.parse_vendor_tag,
    firewall.parse_hillstone,
    firewall.parse_keyvalue,
)
FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
              "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3", "local4",
              "local5", "local6", "local7")
_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                       "nov", "dec"), start=1)}

_PRI = re.compile(r"^<(\d{1,3})>")
RFC5424 = re.compile(r"^(?P<version>[1-9]\d{0,2}) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
                     r"(?P<msgid>\S+) (?P<rest>.*)$", re.S)
# Mmm dd hh:mm:ss[.frac] [yyyy]  |  Mmm dd yyyy hh:mm:ss (Huawei)  |  ISO 8601 (rsyslog high precision)
BSD_TIME = re.compile(r"^(?P<mon>[A-Za-z]{3}) +(?P<day>\d{1,2}) (?:(?P<year1>\d{4}) )?(?P<time>\d{2}:\d{2}:\d{2})"
                      r"(?:\.(?P<frac>\d{1,6}))?(?: (?P<year2>\d{4})(?= ))? ")
ISO_TIME = re.compile(r"^(?P<iso>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?) ")
# prog[pid]: / prog: / prog 1.4.1: / -- root[1]: (login); vendor tags (%%01POLICY/6/POLICYDENY(l):) may run
# straight into the message
_TAG = re.compile(r"^(?P<tag>%%[^\s:]{1,128}|(?:-- )?[^\s\[:]{1,128}(?: \d[\w.]{0,31})?"
                  r"(?:\[(?P<pid>[^\]\s]{0,32})\])?):(?: |$|(?<=\):))")
_HOST = re.compile(r"^(?P<host>[A-Za-z0-9][\w.:-]{0,254}) ")
_SD_ELEMENT = re.compile(r'\[(?P<id>[^\s\]=]+)(?P<params>(?: [^\s=\]]+="(?:[^"\\]|\\.)*")*)\]')
_SD_PARAM = re.compile(r'([^\s=\]]+)="((?:[^"\\]|\\.)*)"')


def dispatch(program: str, message: str, record: dict[str, Any], extra: dict[str, str]) -> str:
    """Run the message parsers; returns the source type (linux_syslog when none recognizes the message)."""
    for parse in MESSAGE_PARSERS:
        scratch: dict[str, Any] = {}
        scratch_extra: dict[str, str] = {}
        source = parse(program, message, scratch, scratch_extra)
        if source:
            record.update({k: v for k, v in scratch.items() if k != "ts" or "ts" not in record})
            extra.update(scratch_extra)
            return source
    record.setdefault("event_category", "syslog")
    return "linux_syslog"


def structured_data(text: str, extra: dict[str, str]) -> str:
    """Parse RFC 5424 STRUCTURED-DATA at the start of `text` into extra; returns the MSG after it."""
    if text.startswith("- ") or text == "-":
        return text[2:]
    pos = 0
    while pos < len(text) and text[pos] == "[":
        m = _SD_ELEMENT.match(text, pos)
        if not m:
            raise ParseError("malformed RFC 5424 structured data")
        for key, value in _SD_PARAM.findall(m.group("params")):
            extra[f"sd.{m.group('id')}.{key}"] = re.sub(r'\\([\\"\]])', r"\1", value)
        pos = m.end()
    if pos == 0:
        raise ParseError("RFC 5424 message without structured data or '-'")
    return text[pos + 1:] if text[pos:pos + 1] == " " else text[pos:]


class SyslogParser(Parser):
    name = "syslog"
    source_type = "linux_syslog"

    def parse(self, line: str, origin: str, peer: str = "") -> dict[str, Any] | None:
        record: dict[str, Any] = {}
        extra: dict[str, str] = {}
        text = line.rstrip("\r\n")
        pri = _PRI.match(text)
        if pri:
            value = int(pri.group(1))
            if value > 191:
                raise ParseError(f"PRI {value} out of range (0-191)")
            extra["facility"] = FACILITIES[value >> 3]
            record["severity"] = SYSLOG_SEVERITIES[value & 7]
            text = text[pri.end():]
        if peer:
            extra["peer"] = peer
        m5424 = RFC5424.match(text) if pri else None
        if m5424 and (m5424.group("ts") == "-" or m5424.group("ts")[:4].isdigit()):
            program, message = self._rfc5424(m5424, record, extra)
        else:
            program, message = self._rfc3164(text, record, extra)
        record["message"] = message
        source = dispatch(program, message, record, extra)
        record["extra"] = extra
        return self.event(record, line, origin, source_type=source)

    def _rfc5424(self, m: re.Match[str], record: dict[str, Any], extra: dict[str, str]) -> tuple[str, str]:
        g = m.groupdict()
        if g["ts"] == "-":
            record["ts"] = self._received()
        else:
            try:
                record["ts"] = parse_ts(g["ts"])
            except SchemaError as exc:
                raise ParseError(f"RFC 5424 timestamp: {exc.reason}") from None
        if g["host"] != "-":
            record["host_name"] = g["host"]
        program = "" if g["app"] == "-" else g["app"]
        if program:
            extra["program"] = program
        if g["procid"] != "-":
            extra["pid"] = g["procid"]
        if g["msgid"] != "-":
            extra["msgid"] = g["msgid"]
        message = structured_data(g["rest"], extra)
        return program, message.removeprefix("\ufeff")

    def _rfc3164(self, text: str, record: dict[str, Any], extra: dict[str, str]) -> tuple[str, str]:
        m = BSD_TIME.match(text)
        iso = None
        if m:
            record["ts"] = self._bsd_time(m)
            text = text[m.end():]
        else:
            iso = ISO_TIME.match(text)
            if iso:
                record["ts"] = self._iso_time(iso.group("iso"))
                text = text[iso.end():]
            else:
                record["ts"] = self._received()
        # HOST then TAG; some devices leave the host out ("<13>Mar  1 12:00:00 sshd[1]: ..."), and a message
        # without a timestamp has no host either
        tag = _TAG.match(text)
        if not tag and (m or iso):
            host = _HOST.match(text)
            if host:
                record["host_name"] = host.group("host")
                text = text[host.end():].lstrip(" ")
                tag = _TAG.match(text)
        if not tag:
            return "", text
        program = tag.group("tag").split("[", 1)[0]
        extra["program"] = program
        if tag.group("pid") is not None:
            extra["pid"] = tag.group("pid")
        return program, text[tag.end():]

    def _bsd_time(self, m: re.Match[str]) -> int:
        month = _MONTHS.get(m.group("mon").lower())
        if month is None:
            raise ParseError(f"bad month {m.group('mon')!r}")
        hh, mm, ss = (int(x) for x in m.group("time").split(":"))
        micro = int((m.group("frac") or "0").ljust(6, "0"))
        year = m.group("year1") or m.group("year2")
        if year:
            return self.ctx.at(int(year), month, int(m.group("day")), hh, mm, ss, micro)
        if hh > 23 or mm > 59 or ss > 60:
            raise ParseError(f"impossible time {m.group('time')}")
        return self.ctx.yearless_ms(month, int(m.group("day")), hh, mm, min(ss, 59), micro)

    def _iso_time(self, text: str) -> int:
        text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace(" ", "T", 1)).replace("Z", "+00:00")
        try:
            return self.ctx.local_ms(datetime.fromisoformat(text))
        except ValueError as exc:
            raise ParseError(f"bad timestamp {text!r}: {exc}") from None

    def _received(self) -> int:
        if self.ctx.received_ms is None:
            raise ParseError("no timestamp in the syslog header")
        return self.ctx.received_ms


class JournaldParser(Parser):
    """`journalctl -o json` lines; the message is dispatched like a syslog message."""

    name = "journald"
    source_type = "journald"

    def parse(self, line: str, origin: str) -> dict[str, Any] | None:
        doc = load_object(line, "a journald record")
        if "__REALTIME_TIMESTAMP" not in doc:
            raise ParseError("not a journald JSON record: no __REALTIME_TIMESTAMP")
        try:
            ts = int(doc["__REALTIME_TIMESTAMP"]) // 1000
        except (TypeError, ValueError):
            raise ParseError(f"bad __REALTIME_TIMESTAMP {doc['__REALTIME_TIMESTAMP']!r}") from None
        message = doc.get("MESSAGE", "")
        if isinstance(message, list):  # journald writes non-UTF-8 messages as byte arrays
            message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode("utf-8", "replace")
        record: dict[str, Any] = {"ts": ts, "message": str(message)}
        extra: dict[str, str] = {}
        for key, value in doc.items():
            if key not in ("MESSAGE", "__REALTIME_TIMESTAMP") and not key.startswith("__"):
                extra[key] = value if isinstance(value, str) else orjson.dumps(value).decode()
        if doc.get("_HOSTNAME"):
            record["host_name"] = str(doc["_HOSTNAME"])
        priority = str(doc.get("PRIORITY", ""))
        if priority.isdigit() and int(priority) < 8:
            record["severity"] = SYSLOG_SEVERITIES[int(priority)]
        program = str(doc.get("SYSLOG_IDENTIFIER") or doc.get("_COMM") or "")
        source = dispatch(program, record["message"], record, extra)
        record["extra"] = extra
        return self.event(record, line, origin, source_type="journald" if source == "linux_syslog" else source)
