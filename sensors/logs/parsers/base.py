"""What every log parser shares: the parse context, the error type and the event builder.

A parser turns one record (a line, or one JSON document) into one canonical event, or says why it
cannot (`ParseError`, which the sensor dead-letters with the parser's name and the line). Parsers are
instantiated per stream because some formats carry state from header lines (Zeek's `#fields`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import orjson

from pipeline.schema import SchemaError, event_id, fits, normalize


class ParseError(ValueError):
    """A record this parser cannot read; the message says why."""


@dataclass(frozen=True)
class ParseContext:
    """Facts a record may not carry itself.

    sensor      -- the sensor instance name written into every event
    tz          -- time zone of timestamps written without one (syslog RFC 3164, nginx error logs, ...)
    year        -- year of year-less timestamps (RFC 3164); None: the current year, or the previous one
                   when the date would lie more than a day in the future (a log read just after New Year)
    received_ms -- for live receivers only: the arrival time, used when a record has no timestamp at all;
                   file readers leave it None so the same file always yields the same events
    host        -- the host whose files these are (`tail --host`): its name goes into records that name no
                   host (web access logs), so the inventory's hostname can place them
    """

    sensor: str = "ganzhi-logs"
    tz: tzinfo = field(default=UTC)
    year: int | None = None
    received_ms: int | None = None
    host: str = ""

    @classmethod
    def make(cls, sensor: str = "ganzhi-logs", timezone: str = "UTC", year: int | None = None,
             host: str = "") -> ParseContext:
        try:
            zone: tzinfo = UTC if timezone.upper() == "UTC" else ZoneInfo(timezone)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"unknown time zone {timezone!r} (use an IANA name such as Asia/Shanghai)") from exc
        return cls(sensor=sensor, tz=zone, year=year, host=host)

    def local_ms(self, dt: datetime) -> int:
        """Epoch ms of a timestamp; a naive one is read in this context's time zone."""
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.tz)
        return round(dt.timestamp() * 1000)

    def at(self, year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int = 0) -> int:
        """Epoch ms of a local time given by its parts; ParseError for a date that does not exist."""
        try:
            return self.local_ms(datetime(year, month, day, hour, minute, second, micro))
        except ValueError as exc:  # Feb 29 in a common year, day 31 of a 30-day month, ...
            raise ParseError(f"impossible date: {exc}") from None

    def strptime_ms(self, text: str, fmt: str) -> int:
        """Epoch ms of a local time in `fmt`; ParseError for a date that does not exist."""
        try:
            return self.local_ms(datetime.strptime(text, fmt))
        except ValueError as exc:
            raise ParseError(f"impossible date: {exc}") from None

    def yearless_ms(self, month: int, day: int, hour: int, minute: int, second: int, micro: int = 0) -> int:
        """Epoch ms of a timestamp without a year (see `year`)."""
        if self.year is not None:
            return self.at(self.year, month, day, hour, minute, second, micro)
        try:
            now = datetime.now(self.tz)
            dt = datetime(now.year, month, day, hour, minute, second, micro, tzinfo=self.tz)
            if (dt - now).total_seconds() > 86400:
                dt = dt.replace(year=now.year - 1)
            return round(dt.timestamp() * 1000)
        except ValueError as exc:  # Feb 29 in a common year, day 31 of a 30-day month, ...
            raise ParseError(f"impossible date: {exc}") from None


class Parser:
    """Base of line parsers. Subclasses set `name` and `source_type` and implement `parse`."""

    name: ClassVar[str] = ""
    source_type: ClassVar[str] = ""
    # Continuation lines (e.g. stack traces) join the record before them when this matches a line.
    continuation: ClassVar[Any] = None

    def __init__(self, ctx: ParseContext | None = None):
        self.ctx = ctx or ParseContext()

    def parse(self, line: str, origin: str) -> dict[str, Any] | None:
        """One record -> canonical event; None for lines that are not records (headers, comments)."""
        raise NotImplementedError

    def event(self, record: dict[str, Any], raw: str, origin: str, source_type: str | None = None) -> dict[str, Any]:
        """Validate a parsed record into a canonical event with a deterministic id and the raw line."""
        source_type = source_type or record.get("source_type") or self.source_type
        try:
            raw_bytes = raw.encode("utf-8")
        except UnicodeEncodeError:  # readers decode with backslashreplace; only a caller's str can hold these
            raise ParseError("text holds lone surrogates (not valid Unicode)") from None
        record["source_type"] = source_type
        record["sensor"] = self.ctx.sensor
        if self.ctx.host and not record.get("host_name"):
            record["host_name"] = self.ctx.host
        record["raw"] = raw
        record["event_id"] = event_id(f"{self.ctx.sensor}/{source_type}", raw_bytes, origin)
        try:
            return normalize(record)
        except SchemaError as exc:
            raise ParseError(f"{exc.field}: {exc.reason}") from None


def load_object(line: str, what: str) -> dict[str, Any]:
    """The JSON object on one line; ParseError for invalid JSON or any other JSON type."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ParseError(f"{what} must be a JSON object")
    return doc


def put(record: dict[str, Any], column: str, value: Any, extra: dict[str, str], name: str) -> None:
    """Set a schema column when the value fits it, else keep the value in `extra` under its source name."""
    if value is None or value == "" or value == "-":
        return
    if column not in record and fits(column, value):
        record[column] = value
    else:
        extra[name] = value if isinstance(value, str) else str(value)


def decode_line(data: bytes) -> str:
    """Bytes of a log record -> text: UTF-8, else GB18030 (Chinese network devices often log in GBK), else
    UTF-8 with the undecodable bytes written as \\xNN (never a lone surrogate, which JSON cannot carry)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        return data.decode("utf-8", "backslashreplace")


SYSLOG_SEVERITIES = ("emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug")
SEVERITY_ALIASES = {
    "emerg": "emergency", "panic": "emergency", "crit": "critical", "err": "error", "warn": "warning",
    "info": "informational", "information": "informational", "fatal": "critical", "trace": "debug",
}


def severity_name(text: str) -> str:
    """A level word in any common spelling -> the syslog severity name ('' when unknown)."""
    word = text.strip().lower()
    word = SEVERITY_ALIASES.get(word, word)
    return word if word in SYSLOG_SEVERITIES else ""
