"""Web server logs: nginx and Apache access logs (combined, common, and combined + extra quoted fields)
and error logs (Apache 2.2 and 2.4 layouts, nginx).

Access records become `event_category = 'http'` with the W3C names Sigma's webserver rules test
(`cs-uri-stem`, `cs-uri-query`) kept in `extra` next to the columns. The two servers write the same
access format, so the parser cannot tell them apart: choose `nginx` or `apache` to set `source_type`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sensors.logs.parsers.base import ParseError, Parser, severity_name

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), start=1)}
# %h %l %u [%t] "%r" %>s %b ["%{Referer}i" "%{User-Agent}i" [more quoted/plain fields]]
ACCESS = re.compile(
    r'^(?P<client>\S+) (?P<ident>\S+) (?P<user>\S+|"[^"]*") \[(?P<time>[^\]]+)\] '
    r'"(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}|-) (?P<size>\d+|-)'
    r'(?: "(?P<referrer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?(?P<rest>.*)$'
)
_CLF_TIME = re.compile(r"^(\d{2})/(\w{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))? ([+-]\d{4})$")
_REQUEST = re.compile(r"^(?P<method>[A-Za-z][A-Za-z0-9_-]{0,31}) (?P<target>\S+)(?: (?P<proto>[A-Z]+/[\d.]+))?$")


def clf_time(text: str) -> int:
    """`10/Oct/2000:13:55:36 -0700` -> epoch ms."""
    m = _CLF_TIME.match(text)
    if not m or m.group(2) not in _MONTHS:
        raise ParseError(f"bad access-log time {text[:40]!r}")
    day, mon, year, hh, mm, ss, frac, zone = m.groups()
    micro = int((frac or "0").ljust(6, "0"))
    try:
        dt = datetime.strptime(f"{year}-{_MONTHS[mon]:02d}-{day} {hh}:{mm}:{ss}.{micro:06d} {zone}",
                               "%Y-%m-%d %H:%M:%S.%f %z")
    except ValueError as exc:
        raise ParseError(f"impossible access-log time {text[:40]!r}: {exc}") from None
    return round(dt.timestamp() * 1000)


def _unescape(text: str | None) -> str:
    if not text or text == "-":
        return ""
    return text.replace('\\"', '"').replace("\\\\", "\\") if "\\" in text else text


class AccessParser(Parser):
    """nginx/Apache access log (combined or common)."""

    name = "nginx"
    source_type = "nginx_access"

    def parse(self, line: str, origin: str) -> dict[str, Any] | None:
        m = ACCESS.match(line)
        if not m:
            raise ParseError("not an access-log line (combined/common format)")
        g = m.groupdict()
        record: dict[str, Any] = {"ts": clf_time(g["time"]), "event_category": "http", "action": "request",
                                  "protocol": "tcp", "app_protocol": "http"}
        extra: dict[str, str] = {}
        client = g["client"]
        if client.count(".") == 3 or ":" in client:
            record["src_ip"] = client
        else:
            extra["c-dns"] = client
        if g["user"] not in ("-", '"-"'):
            record["user_name"] = g["user"].strip('"')
        request = _unescape(g["request"])
        rm = _REQUEST.match(request)
        if rm:
            record["http_method"] = rm.group("method").upper()
            target = rm.group("target")
            record["http_uri"] = target
            stem, _, query = target.partition("?")
            extra["cs-uri-stem"] = stem
            if query:
                extra["cs-uri-query"] = query
            if rm.group("proto"):
                extra["cs-version"] = rm.group("proto")
        elif request:
            extra["request"] = request  # garbage a scanner sent (TLS bytes on port 80, ...): keep it
        if g["status"] != "-":
            record["http_status"] = int(g["status"])
        if g["size"] != "-":
            record["bytes_in"] = int(g["size"])
        if g["referrer"]:
            record["http_referrer"] = _unescape(g["referrer"])
        if g["agent"]:
            record["http_user_agent"] = _unescape(g["agent"])
        rest = g["rest"].strip()
        if rest:
            extra["rest"] = rest  # e.g. nginx "$http_x_forwarded_for", request time
            fwd = re.match(r'^"([0-9a-fA-F.:]+)[",]', rest)
            if fwd:
                extra["x_forwarded_for"] = fwd.group(1)
        record["extra"] = extra
        return self.event(record, line, origin)


class ApacheAccessParser(AccessParser):
    name = "apache"
    source_type = "apache_access"


# Apache 2.2: [Sun Dec 04 04:47:44 2005] [error] [client 1.2.3.4] message
# Apache 2.4: [Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 4328636416] [client 1.2.3.4:5] message
APACHE_ERROR = re.compile(
    r"^\[(?:\w{3} )?(?P<mon>\w{3}) (?P<day>\d{1,2}) (?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,6}))? "
    r"(?P<year>\d{4})\] \[(?:(?P<module>[\w.-]+):)?(?P<level>\w+)\]"
    r"(?: \[pid (?P<pid>\d+)(?::tid (?P<tid>\d+))?\])?(?: \[client (?P<client>[^\]]+)\])? ?(?P<message>.*)$"
)
# nginx: 2024/01/02 12:00:00 [error] 1234#0: *5 message, client: 1.2.3.4, server: x, request: "GET / HTTP/1.1"
NGINX_ERROR = re.compile(
    r"^(?P<date>\d{4}/\d{2}/\d{2}) (?P<time>\d{2}:\d{2}:\d{2}) \[(?P<level>\w+)\] (?P<pid>\d+)#(?P<tid>\d+): "
    r"(?:\*(?P<conn>\d+) )?(?P<message>.*)$"
)
_NGINX_KV = re.compile(r', (client|server|request|upstream|host|referrer): ("(?:[^"\\]|\\.)*"|[^,]*)')


def _client_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host and (host.count(".") == 3 or host.startswith("[")):
        return host.strip("[]"), int(port)
    return text, 0


class ErrorLogParser(Parser):
    """Apache (2.2/2.4) and nginx error logs; the line itself says which."""

    name = "weberror"
    source_type = "apache_error"

    def parse(self, line: str, origin: str) -> dict[str, Any] | None:
        m = APACHE_ERROR.match(line)
        if m:
            return self._apache(m, line, origin)
        m = NGINX_ERROR.match(line)
        if m:
            return self._nginx(m, line, origin)
        raise ParseError("not an Apache or nginx error-log line")

    def _apache(self, m: re.Match[str], line: str, origin: str) -> dict[str, Any]:
        g = m.groupdict()
        if g["mon"] not in _MONTHS:
            raise ParseError(f"bad month {g['mon']!r}")
        hh, mm, ss = (int(x) for x in g["time"].split(":"))
        micro = int((g["frac"] or "0").ljust(6, "0"))
        ts = self.ctx.at(int(g["year"]), _MONTHS[g["mon"]], int(g["day"]), hh, mm, ss, micro)
        record: dict[str, Any] = {"ts": ts, "event_category": "web_error", "message": g["message"],
                                  "severity": severity_name(g["level"])}
        extra = {k: g[k] for k in ("module", "pid", "tid") if g[k]}
        if g["client"]:
            ip, port = _client_address(g["client"])
            record["src_ip"], record["src_port"] = ip, port
        record["extra"] = extra
        return self.event(record, line, origin, source_type="apache_error")

    def _nginx(self, m: re.Match[str], line: str, origin: str) -> dict[str, Any]:
        g = m.groupdict()
        ts = self.ctx.strptime_ms(f"{g['date']} {g['time']}", "%Y/%m/%d %H:%M:%S")
        message = g["message"]
        record: dict[str, Any] = {"ts": ts, "event_category": "web_error", "severity": severity_name(g["level"])}
        extra = {"pid": g["pid"], "tid": g["tid"]}
        if g["conn"]:
            extra["connection"] = g["conn"]
        first = _NGINX_KV.search(message)
        if first:
            for key, value in _NGINX_KV.findall(message[first.start():]):
                value = value[1:-1] if value.startswith('"') else value
                if key == "client":
                    record["src_ip"] = value
                elif key == "host":
                    record["http_host"] = value
                elif key == "request":
                    extra["request"] = value
                    parts = value.split(" ")
                    if len(parts) >= 2:
                        record["http_method"], record["http_uri"] = parts[0], parts[1]
                else:
                    extra[key] = value
            message = message[:first.start()]
        record["message"] = message
        record["extra"] = extra
        return self.event(record, line, origin, source_type="nginx_error")
