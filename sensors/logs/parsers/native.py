"""The native JSON readers (sensors/logs/native, Rust; see pipeline.native) in front of the Zeek JSON, EVE and
Windows JSON parsers.

They are handed the schema and the very mapping tables the Python parsers use, and for each line they return
exactly the event the Python parser would, or None when they are not certain to agree (invalid JSON,
uncommon timestamp or number forms, ...): the Python parser then reads that line and writes any error.
"""

from __future__ import annotations

from typing import Any

from pipeline.native import available, ganzhi_jsonlogs
from pipeline.native import schema_args as _schema
from sensors.logs.parsers.base import ParseContext


def _context(ctx: ParseContext) -> tuple[str, str] | None:
    """(sensor, host) for a reader, or None for no reader: the module is not here or switched off, or a name
    Python cannot encode as the UTF-8 the readers hash and copy."""
    if not available():
        return None
    try:
        ctx.sensor.encode("utf-8")
        ctx.host.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return (ctx.sensor, ctx.host) if ctx.sensor else None


def zeek_reader(ctx: ParseContext, fields: dict[str, str], log_fields: dict[str, dict[str, str]],
                categories: dict[str, str]) -> Any:
    """A `ZeekJson` reader (`.parse(line, origin, log) -> event | None`), or None without the module."""
    names = _context(ctx)
    if names is None:
        return None
    return ganzhi_jsonlogs.ZeekJson(_schema(), *names, fields, log_fields, categories)


def eve_reader(ctx: ParseContext, columns: dict[str, str], categories: dict[str, str],
               severities: dict[int, str], source_type: str) -> Any:
    """An `EveJson` reader (`.parse(line, origin) -> event | None`), or None without the module."""
    names = _context(ctx)
    if names is None:
        return None
    return ganzhi_jsonlogs.EveJson(_schema(), *names, columns, categories, severities, source_type)


def windows_reader(ctx: ParseContext, fields: dict[str, str], sysmon: dict[int, str],
                   channels: dict[tuple[str, int], str], auth_events: frozenset[int], success_events: tuple[int, ...],
                   failure_events: tuple[int, ...], nxlog_head: dict[str, str], source_type: str) -> Any:
    """A `WindowsJson` reader (`.parse(line, origin) -> event | None`), or None without the module."""
    names = _context(ctx)
    if names is None:
        return None
    return ganzhi_jsonlogs.WindowsJson(_schema(), names[0], fields, sysmon,
                                       [(c, i, cat) for (c, i), cat in channels.items()], sorted(auth_events),
                                       list(success_events), list(failure_events), nxlog_head, source_type)
