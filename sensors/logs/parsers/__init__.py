"""Log parsers by format name, and format detection from a file's first lines.

| format | reads | source_type |
|---|---|---|
| zeek | Zeek TSV (`#fields` headers) and JSON logs | zeek_<log> |
| eve | Suricata EVE JSON | suricata_eve |
| nginx, apache | access logs, combined/common | nginx_access, apache_access |
| weberror | Apache 2.2/2.4 and nginx error logs | apache_error, nginx_error |
| syslog | RFC 3164/5424 lines; messages of sshd, sudo/su/PAM, named, netfilter, Huawei USG, H3C, |
|        | Hillstone, key=value firewalls, embedded CEF/LEEF (parsers.syslog) | sshd, linux_auth, bind, iptables, ... |
| journald | `journalctl -o json` (messages dispatched like syslog) | journald or the message's |
| bind | named query log files | bind |
| cef | bare CEF/LEEF lines (or syslog-framed) | cef, leef |
| windows | Windows events as JSON lines (Winlogbeat, NXLog, evtx_dump) | windows |
| evtx | `.evtx` files (whole-file reader, see sensors.logs.files) | windows |
| proxifier | Proxifier logs | proxifier |
| cbs | Windows CBS/CSI servicing logs | windows_cbs |
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import orjson

from sensors.logs.parsers import bind, cbs, cef, eve, proxifier, syslog, web, windows, zeek
from sensors.logs.parsers.base import ParseContext, ParseError, Parser

PARSERS: dict[str, type[Parser]] = {
    "zeek": zeek.ZeekParser,
    "eve": eve.EveParser,
    "nginx": web.AccessParser,
    "apache": web.ApacheAccessParser,
    "weberror": web.ErrorLogParser,
    "syslog": syslog.SyslogParser,
    "journald": syslog.JournaldParser,
    "bind": bind.BindParser,
    "cef": cef.CefParser,
    "windows": windows.WindowsJsonParser,
    "proxifier": proxifier.ProxifierParser,
    "cbs": cbs.CbsParser,
}
ALIASES = {
    "suricata": "eve", "access": "nginx", "nginx_access": "nginx", "apache_access": "apache",
    "nginx_error": "weberror", "apache_error": "weberror", "sshd": "syslog", "auth": "syslog", "linux": "syslog",
    "iptables": "syslog", "nftables": "syslog", "firewall": "syslog", "huawei": "syslog", "h3c": "syslog",
    "hillstone": "syslog", "leef": "cef", "winlogbeat": "windows", "nxlog": "windows",
}
FORMATS = (*PARSERS, "evtx")

__all__ = ["FORMATS", "PARSERS", "ParseContext", "ParseError", "Parser", "canonical_format", "detect_format",
           "make_parser"]


def canonical_format(name: str) -> str:
    """A format name or alias -> the registry name. Raises ValueError listing the choices."""
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in PARSERS and key != "evtx":
        raise ValueError(f"unknown log format {name!r}; choose one of: {', '.join(sorted(FORMATS))} "
                         f"(or auto to detect it)")
    return key


def make_parser(fmt: str, ctx: ParseContext | None = None, filename: str = "") -> Parser:
    fmt = canonical_format(fmt)
    if fmt == "zeek":
        return zeek.ZeekParser(ctx, log=zeek.log_from_filename(filename))
    return PARSERS[fmt](ctx)


def _json_format(line: str) -> str | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    if "_path" in doc or "id.orig_h" in doc or ("uid" in doc and "ts" in doc):
        return "zeek"
    if "event_type" in doc and "timestamp" in doc:
        return "eve"
    if "__REALTIME_TIMESTAMP" in doc:
        return "journald"
    if windows.looks_like(doc):
        return "windows"
    return None


def line_format(line: str) -> str | None:
    """The format one line looks like, or None."""
    if line.startswith(("#separator", "#fields", "#path")):
        return "zeek"
    if line.startswith("{"):
        return _json_format(line)
    if line.startswith(("CEF:", "LEEF:")):
        return "cef"
    if web.ACCESS.match(line):
        return "nginx"
    if web.APACHE_ERROR.match(line) or web.NGINX_ERROR.match(line):
        return "weberror"
    if proxifier.LINE.match(line):
        return "proxifier"
    if cbs.LINE.match(line):
        return "cbs"
    if bind.FILE_LINE.match(line):
        return "bind"
    if re.match(r"^<\d{1,3}>", line) or syslog.BSD_TIME.match(line) or syslog.ISO_TIME.match(line):
        return "syslog"
    return None


def detect_format(lines: Iterable[str], sample: int = 50) -> str | None:
    """The most common format among the first `sample` non-empty lines (None if none is recognized)."""
    votes: Counter[str] = Counter()
    for n, line in enumerate(lines):
        if n >= sample:
            break
        line = line.strip()
        if line:
            fmt = line_format(line)
            if fmt is not None:
                votes[fmt] += 1
                if fmt == "zeek" and line.startswith("#"):
                    return "zeek"
    return votes.most_common(1)[0][0] if votes else None
