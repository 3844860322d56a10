"""ArcSight CEF and IBM QRadar LEEF (1.0 and 2.0), bare or inside a syslog message.

CEF:  `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|k=v k=v ...` (header escapes `\\|`, `\\\\`;
extension escapes `\\=`, `\\\\`, `\\n`; a value runs until the next ` key=`).
LEEF: `LEEF:1.0|Vendor|Product|Version|EventID|k=v<TAB>k=v` and `LEEF:2.0|...|EventID|<delimiter>|k=v...`.
Standard keys map to columns (src, dst, spt, dpt, suser, act, request, ...; LEEF srcPort, usrName, ...);
custom `csN`/`cnN` values are also stored under their `csNLabel`. `source_type` is `cef` / `leef`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pipeline.schema import parse_ts
from sensors.logs.parsers.base import ParseError, Parser, put
from sensors.logs.parsers.firewall import KEY_ALIASES, column_value

CEF_KEYS = {
    "src": "src_ip", "dst": "dst_ip", "spt": "src_port", "dpt": "dst_port", "proto": "protocol",
    "suser": "user_name", "act": "action", "request": "http_uri", "requestMethod": "http_method",
    "requestClientApplication": "http_user_agent", "msg": "message", "fname": "file_path", "filePath": "file_path",
    "fileHash": "file_hash", "in": "bytes_in", "out": "bytes_out", "dvchost": "host_name", "sproc": "process_image",
    "sourceProcessName": "process_image", "app": "app_protocol", "c6a2": "src_ip", "c6a3": "dst_ip",
    "usrName": "user_name", "srcPort": "src_port", "dstPort": "dst_port", "identSrc": "src_ip",
    "url": "http_uri", "userAgent": "http_user_agent", "method": "http_method", "identHostName": "host_name",
    "srcBytes": "bytes_out", "dstBytes": "bytes_in", "srcPackets": "packets_out", "dstPackets": "packets_in",
}
_TIME_KEYS = ("rt", "devTime", "end", "start")
_EXT_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z0-9_.\[\]-]+)=")
_CEF_UNESCAPE = {"\\=": "=", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\|": "|"}
_ESCAPED = re.compile(r"\\[=\\nr|]")


def _unescape(text: str) -> str:
    return _ESCAPED.sub(lambda m: _CEF_UNESCAPE[m.group(0)], text) if "\\" in text else text


def split_header(text: str, count: int) -> list[str]:
    """The first `count` unescaped-pipe separated fields, then the rest (unsplit)."""
    parts: list[str] = []
    start = i = 0
    while i < len(text) and len(parts) < count:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "|":
            parts.append(text[start:i].replace("\\|", "|").replace("\\\\", "\\"))
            start = i + 1
        i += 1
    if len(parts) < count:
        raise ParseError(f"header has {len(parts)} of {count} '|'-separated fields")
    parts.append(text[start:])
    return parts


def cef_extension(text: str) -> list[tuple[str, str]]:
    """`k=v k2=v with spaces k3=v\\=x` -> pairs. An '=' escaped as '\\=' never starts a key."""
    keys = [m for m in _EXT_KEY.finditer(text) if m.start(1) == 0 or text[m.start(1) - 1] != "\\"]
    pairs = []
    for n, m in enumerate(keys):
        end = keys[n + 1].start(1) if n + 1 < len(keys) else len(text)
        pairs.append((m.group(1), _unescape(text[m.end():end].rstrip())))
    return pairs


def _cef_severity(text: str) -> str:
    text = text.strip().lower()
    if text.isdigit():
        n = int(text)
        return "critical" if n >= 9 else "error" if n >= 7 else "warning" if n >= 4 else "notice"
    return {"low": "notice", "medium": "warning", "high": "error", "very-high": "critical"}.get(text, "")


def _time(value: str, fmt: str = "") -> int:
    value = value.strip()
    if value.isdigit():
        return parse_ts(int(value))
    for pattern in ("%b %d %Y %H:%M:%S.%f", "%b %d %Y %H:%M:%S", "%b %d %H:%M:%S %Y"):
        try:
            return round(datetime.strptime(value.rsplit(" ", 1)[0] if value.count(" ") > 3 else value,
                                           pattern).timestamp() * 1000)
        except ValueError:
            continue
    return parse_ts(value)


def _apply(pairs: list[tuple[str, str]], record: dict[str, Any], extra: dict[str, str]) -> None:
    labels = {k[:-5]: v for k, v in pairs if k.endswith("Label")}
    for key, value in pairs:
        if key.endswith("Label") or value == "":
            continue
        if key in labels:
            extra[labels[key]] = value
        if key in _TIME_KEYS:
            try:
                record.setdefault("ts", _time(value))
            except ValueError:
                extra[key] = value
            if key in ("rt", "devTime"):
                continue
        column = CEF_KEYS.get(key) or KEY_ALIASES.get(key.lower())
        if column is None:
            extra[key] = value
        else:
            put(record, column, column_value(column, key, value, extra), extra, key)


def parse_cef_text(text: str, record: dict[str, Any], extra: dict[str, str]) -> str | None:
    """Fill a record from CEF/LEEF text (starting at 'CEF:'/'LEEF:'); returns the source type."""
    if text.startswith("CEF:"):
        vendor, product, version, sig, name, severity, ext = split_header(text[4:], 7)[1:]
        extra.update(cef_version=text[4:text.index("|")], device_vendor=vendor, device_product=product,
                     device_version=version, signature_id=sig)
        record["message"] = name
        record["severity"] = _cef_severity(severity)
        _apply(cef_extension(ext), record, extra)
        source = "cef"
    elif text.startswith("LEEF:"):
        version = text[5:text.index("|")] if "|" in text else ""
        if version.startswith("2"):
            head = split_header(text[5:], 6)
            vendor, product, dev_version, event, delim, ext = head[1:]
            if delim.lower().startswith(("x", "0x")):
                delim = chr(int(delim.lower().lstrip("0x") or "9", 16))
            delim = delim or "\t"
        else:
            vendor, product, dev_version, event, ext = split_header(text[5:], 5)[1:]
            delim = "\t"
        extra.update(leef_version=version, device_vendor=vendor, device_product=product,
                     device_version=dev_version, event_id=event)
        pairs = [(k, v) for k, _, v in (p.partition("=") for p in ext.split(delim)) if k]
        sev = dict(pairs).get("sev", "")
        if sev.isdigit():
            record["severity"] = _cef_severity(sev)
        record["message"] = event
        _apply([(k, v) for k, v in pairs if k != "sev"], record, extra)
        source = "leef"
    else:
        return None
    record.setdefault("event_category", "firewall" if "src_ip" in record and "dst_ip" in record else "security")
    cat = extra.get("cat")
    if cat:
        record["event_category"] = re.sub(r"[^a-z0-9_]+", "_", cat.lower()).strip("_") or record["event_category"]
    return source


def parse_embedded(program: str, message: str, record: dict[str, Any], extra: dict[str, str]) -> str | None:
    """Syslog message parser: a CEF or LEEF payload anywhere in the message."""
    for marker in ("CEF:", "LEEF:"):
        at = message.find(marker)
        if at >= 0 and "|" in message[at:]:
            return parse_cef_text(message[at:], record, extra)
    return None


class CefParser(Parser):
    """Lines of bare CEF/LEEF, or syslog-framed ones (handed to the syslog parser)."""

    name = "cef"
    source_type = "cef"

    def __init__(self, ctx: Any = None):
        super().__init__(ctx)
        from sensors.logs.parsers.syslog import SyslogParser

        self._syslog = SyslogParser(ctx)

    def parse(self, line: str, origin: str) -> dict[str, Any] | None:
        if not line.startswith(("CEF:", "LEEF:")):
            return self._syslog.parse(line, origin)
        record: dict[str, Any] = {}
        extra: dict[str, str] = {}
        source = parse_cef_text(line, record, extra)
        if "ts" not in record:
            if self.ctx.received_ms is None:
                raise ParseError("CEF/LEEF record without rt/devTime and no receive time")
            record["ts"] = self.ctx.received_ms
        record["extra"] = extra
        return self.event(record, line, origin, source_type=source)
