"""Zeek logs, TSV (with `#fields` headers) and JSON (one object per line, `_path` naming the log).

Fields map to columns through `rules.mapping.zeek_fields(log)` — the table Sigma's Zeek rules are
mapped with; everything else stays in `extra` under its Zeek name. `source_type` is `zeek_<log>`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson

from rules.mapping import ZEEK_FIELDS, ZEEK_LOG_FIELDS, zeek_fields
from sensors.logs.parsers import native
from sensors.logs.parsers.base import ParseError, Parser, load_object, put

CATEGORIES = {
    "conn": "network_connection", "dns": "dns", "http": "http", "ssl": "tls", "x509": "certificate",
    "ssh": "ssh", "files": "file", "notice": "notice", "weird": "weird", "dce_rpc": "rpc",
    "smb_files": "smb", "smb_mapping": "smb", "smb_cmd": "smb", "kerberos": "auth", "ntlm": "auth",
    "rdp": "rdp", "smtp": "email", "ftp": "ftp", "syslog": "syslog", "snmp": "snmp", "dhcp": "dhcp",
    "sip": "sip", "ntp": "ntp", "modbus": "ics", "dnp3": "ics", "rfb": "vnc", "ldap": "ldap",
    "ldap_search": "ldap", "mysql": "database", "pe": "file", "ocsp": "certificate",
    "software": "inventory", "known_hosts": "inventory", "known_services": "inventory",
    "known_certs": "inventory", "tunnel": "tunnel", "irc": "irc", "radius": "auth", "quic": "tls",
}
_PATH_NAME = re.compile(r"^([a-z0-9_]+?)(?:\.\d{2}[:\d.-]*)?\.(?:log|json)(?:\.gz)?$")


def log_from_filename(name: str) -> str:
    """`dns.log`, `conn.09:00:00-10:00:00.log.gz`, `ssl.json` -> the log name ('' if it does not look like one)."""
    m = _PATH_NAME.match(name.rsplit("/", 1)[-1])
    return m.group(1) if m else ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class ZeekParser(Parser):
    name = "zeek"
    source_type = "zeek"

    def __init__(self, ctx: Any = None, log: str = ""):
        super().__init__(ctx)
        self.log = log  # from the file name; a TSV `#path` or a JSON `_path` overrides it
        self.separator = "\t"
        self.set_separator = ","
        self.empty = "(empty)"
        self.unset = "-"
        self.opened: str | None = None  # the #open header: the time of records without ts
        self.fields: list[str] = []
        self.types: list[str] = []
        self._maps: dict[str, dict[str, str]] = {}
        self._native = native.zeek_reader(self.ctx, ZEEK_FIELDS, ZEEK_LOG_FIELDS, CATEGORIES)

    def _columns(self, log: str) -> dict[str, str]:
        columns = self._maps.get(log)
        if columns is None:
            columns = self._maps[log] = zeek_fields(log)
        return columns

    def parse(self, line: str, origin: str) -> dict[str, Any] | None:
        if not line:
            return None
        if line[0] == "{":
            if self._native is not None and type(origin) is str:  # the common case, without a call more
                event = self._native.parse(line, origin, self.log)
                if event is not None:
                    return event
            return self._json(line, origin)
        if line[0] == "#":
            self._header(line)
            return None
        return self._tsv(line, origin)

    # -- TSV -----------------------------------------------------------------------------------

    def _header(self, line: str) -> None:
        if line.startswith("#separator"):
            value = line.split(" ", 1)[1].strip() if " " in line else "\\x09"
            self.separator = value.encode().decode("unicode_escape") if value.startswith("\\x") else value
            return
        key, _, value = line[1:].partition(self.separator)
        if key == "fields":
            self.fields = value.split(self.separator)
        elif key == "types":
            self.types = value.split(self.separator)
        elif key == "path":
            self.log = value
        elif key == "open":
            try:
                self.opened = str(self.ctx.local_ms(datetime.strptime(value, "%Y-%m-%d-%H-%M-%S")))
            except ValueError:
                self.opened = None
        elif key == "set_separator":
            self.set_separator = value
        elif key == "empty_field":
            self.empty = value
        elif key == "unset_field":
            self.unset = value

    def _tsv(self, line: str, origin: str) -> dict[str, Any]:
        if not self.fields:
            raise ParseError("Zeek TSV row before any #fields header")
        values = line.split(self.separator)
        if len(values) != len(self.fields):
            raise ParseError(f"{len(values)} values for {len(self.fields)} #fields")
        doc: dict[str, Any] = {}
        types = self.types if len(self.types) == len(self.fields) else [""] * len(self.fields)
        for name, kind, value in zip(self.fields, types, values, strict=True):
            if value == self.unset:
                continue
            if kind.startswith(("vector", "set")):
                doc[name] = [] if value == self.empty else value.split(self.set_separator)
            elif value == self.empty:
                doc[name] = ""
            elif kind == "bool":
                doc[name] = value == "T"
            else:
                doc[name] = value
        return self._build(doc, self.log, line, origin)

    # -- JSON ----------------------------------------------------------------------------------

    def _json(self, line: str, origin: str) -> dict[str, Any]:
        doc = load_object(line, "a Zeek JSON record")
        log = doc.pop("_path", None) or self.log
        return self._build(doc, log, line, origin)

    # -- both --------------------------------------------------------------------------------------

    def _build(self, doc: dict[str, Any], log: Any, line: str, origin: str) -> dict[str, Any]:
        if not isinstance(log, str) or not log:
            raise ParseError("unknown Zeek log: no #path / _path and the file name does not say")
        # logs without ts (loaded_scripts, ...) are timed by when Zeek wrote them
        ts = doc.pop("ts", None) or doc.get("_write_ts") or self.opened
        if ts is None:
            raise ParseError("Zeek record without ts, _write_ts or #open header")
        columns = self._columns(log)
        record: dict[str, Any] = {"ts": ts, "event_category": CATEGORIES.get(log, log)}
        extra: dict[str, str] = {}
        for name, value in doc.items():
            column = columns.get(name)
            if column is None:
                if type(value) is str:
                    if value:
                        extra[name] = value
                elif value is not None:
                    extra[name] = _text(value)
            elif column == "dns_answers" or isinstance(value, list | dict | bool):
                if column == "dns_answers" and isinstance(value, list):
                    record[column] = value
                else:
                    extra[name] = _text(value)
            else:
                put(record, column, value, extra, name)
        if log == "ssh" and "auth_success" in doc:
            record["action"] = "success" if doc["auth_success"] in (True, "T") else "failure"
        elif log in ("kerberos", "ntlm") and "success" in doc:
            record["action"] = "success" if doc["success"] in (True, "T") else "failure"
        elif log == "dns":
            record["action"] = "query"
        if log == "conn" and isinstance(doc.get("proto"), str):
            record["protocol"] = doc["proto"].lower()
        record["extra"] = extra
        return self.event(record, line, origin, source_type=f"zeek_{log}")
