"""Windows event logs -> normalized events: EVTX/evtx_dump JSON, Winlogbeat and NXLog JSON shapes.

Event data fields go to schema columns through `rules.mapping.WINDOWS_FIELDS` (the table Sigma rules
are mapped with), everything else into `extra` under its Windows name (EventID, Channel, Provider_Name,
LogonType, ...). The Sigma category (process_creation, registry_set, ...) is derived from the channel and
event id. A value that does not fit its column (e.g. IpAddress "-") stays in `extra` under its own name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from pipeline.schema import SchemaError, event_id, fits, normalize
from rules.mapping import CHANNEL_CATEGORIES, SECURITY_AUTH_EVENTS, SYSMON_CATEGORIES, WINDOWS_FIELDS, windows_category
from sensors.logs.parsers import native
from sensors.logs.parsers.base import ParseError, Parser, load_object

__all__ = ["ParseError", "WindowsJsonParser", "looks_like", "read_evtx", "read_json_documents", "to_event"]

SOURCE_TYPE = "windows"
# Security log events whose outcome the event id states
SUCCESS_EVENTS = (4624, 4648, 4672, 4768, 4769, 4776)
FAILURE_EVENTS = (4625, 4771)


def _text(node: Any) -> Any:
    """The value of an XML-derived node: `{"#text": v, "#attributes": ...}` -> v."""
    if isinstance(node, dict):
        return node.get("#text", node.get("Value", ""))
    return node


def _flatten_data(node: Any, out: dict[str, Any]) -> None:
    """EventData / UserData in their JSON renderings -> name: value."""
    if node is None:
        return
    if isinstance(node, list):
        for item in node:
            _flatten_data(item, out)
        return
    if not isinstance(node, dict):
        out.setdefault("Data", node)
        return
    if "Data" in node and len(node) <= 2:  # python-evtx style: Data list of {"#attributes": {"Name"}, "#text"}
        data = node["Data"]
        items = data if isinstance(data, list) else [data]
        for i, item in enumerate(items):
            if isinstance(item, dict) and "#attributes" in item and "Name" in item["#attributes"]:
                out[item["#attributes"]["Name"]] = item.get("#text", "")
            elif isinstance(item, dict) and "Name" in item:
                out[item["Name"]] = item.get("#text", item.get("Value", ""))
            else:
                out["Data" if len(items) == 1 else f"Data{i}"] = _text(item)
        return
    for key, value in node.items():
        if key == "#attributes":
            continue
        if isinstance(value, dict) and "#text" not in value and set(value) != {"#attributes"}:
            _flatten_data(value, out)  # UserData wraps fields in one named element
        else:
            out[key] = _text(value)


def _attributes(node: Any) -> dict[str, Any]:
    """The XML attributes of a node (`{"#attributes": {...}}`), empty when it has none."""
    return node.get("#attributes") or {} if isinstance(node, dict) else {}


def _from_evtx(event: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    system = event.get("System") or {}
    head = {
        "EventID": _text(system.get("EventID")),
        "Channel": system.get("Channel", ""),
        "Computer": system.get("Computer", ""),
        "Provider_Name": _attributes(system.get("Provider")).get("Name", ""),
        "EventRecordID": system.get("EventRecordID", ""),
        "Level": system.get("Level", ""),
        "Task": system.get("Task", ""),
        "TimeCreated": _attributes(system.get("TimeCreated")).get("SystemTime", ""),
        "UserID": _attributes(system.get("Security")).get("UserID", ""),
    }
    data: dict[str, Any] = {}
    _flatten_data(event.get("EventData"), data)
    _flatten_data(event.get("UserData"), data)
    return head, data


def _from_winlogbeat(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    winlog = doc["winlog"]
    head = {
        "EventID": winlog.get("event_id", ""),
        "Channel": winlog.get("channel", ""),
        "Computer": winlog.get("computer_name", "") or (doc.get("host") or {}).get("name", ""),
        "Provider_Name": winlog.get("provider_name", ""),
        "EventRecordID": winlog.get("record_id", ""),
        "TimeCreated": doc.get("@timestamp", ""),
    }
    data: dict[str, Any] = {}
    for part in ("event_data", "user_data"):
        fields = winlog.get(part) or {}
        if not isinstance(fields, dict):
            raise ParseError(f"winlog.{part} is not an object")
        data.update(fields)
    return head, data


_NXLOG_HEAD = {"EventID": "EventID", "Channel": "Channel", "Hostname": "Computer", "SourceName": "Provider_Name",
               "ProviderName": "Provider_Name", "RecordNumber": "EventRecordID", "EventTime": "TimeCreated"}


def _from_nxlog(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    head: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _NXLOG_HEAD:
            head[_NXLOG_HEAD[key]] = value
        else:
            data[key] = value
    return head, data


def split(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header fields, event data) of a Windows event in any supported JSON shape."""
    if isinstance(doc.get("Event"), dict):
        return _from_evtx(doc["Event"])
    if isinstance(doc.get("winlog"), dict):
        return _from_winlogbeat(doc)
    if "EventID" in doc and ("Channel" in doc or "SourceName" in doc):
        return _from_nxlog(doc)
    raise ParseError("not a Windows event: no Event/System, winlog or EventID+Channel")


def looks_like(doc: Any) -> bool:
    return isinstance(doc, dict) and (isinstance(doc.get("Event"), dict) or isinstance(doc.get("winlog"), dict)
                                      or ("EventID" in doc and ("Channel" in doc or "SourceName" in doc)))


def to_event(doc: dict[str, Any], sensor: str, origin: str, raw: str | None = None) -> dict[str, Any]:
    """One Windows event (any supported shape) -> a canonical event. Raises ParseError."""
    try:
        head, data = split(doc)
    except (TypeError, AttributeError, KeyError) as exc:  # a value of the wrong JSON type where structure belongs
        raise ParseError(f"unexpected Windows event structure: {type(exc).__name__}: {exc}") from None
    try:
        eid = int(str(head.get("EventID", "")).strip() or "0")
    except ValueError:
        raise ParseError(f"EventID is not a number: {head.get('EventID')!r}") from None
    if not head.get("TimeCreated"):
        raise ParseError("no event time (System/TimeCreated)")
    raw = raw if raw is not None else orjson.dumps(doc).decode()
    channel = str(head.get("Channel", ""))
    record: dict[str, Any] = {
        "ts": str(head["TimeCreated"]).replace(" ", "T"),
        "event_id": event_id(f"{sensor}/{SOURCE_TYPE}", raw, origin),
        "sensor": sensor,
        "source_type": SOURCE_TYPE,
        "event_category": windows_category(channel, eid, str(data.get("EventType", ""))) or "windows_event",
        "raw": raw,
    }
    extra: dict[str, str] = {}
    for key, value in {**head, **data}.items():
        if key == "TimeCreated" or value is None:
            continue
        column = WINDOWS_FIELDS.get(key)
        as_column = value if isinstance(value, str | int) else orjson.dumps(value).decode()
        if column is not None and column not in record and fits(column, as_column):
            record[column] = as_column
        else:
            extra[key] = value if isinstance(value, str) else orjson.dumps(value).decode()
    extra["EventID"] = str(eid)
    if eid in SUCCESS_EVENTS and channel.lower() == "security":
        record["action"] = "success"
    elif eid in FAILURE_EVENTS and channel.lower() == "security":
        record["action"] = "failure"
    record["extra"] = extra
    try:
        return normalize(record)
    except SchemaError as exc:
        raise ParseError(f"{exc.field}: {exc.reason}") from None


class WindowsJsonParser(Parser):
    """One Windows event per line as JSON (Winlogbeat, NXLog im_msvistalog, evtx_dump -o jsonl)."""

    name = "windows"
    source_type = SOURCE_TYPE

    def __init__(self, ctx: Any = None):
        super().__init__(ctx)
        self._native = native.windows_reader(
            self.ctx, WINDOWS_FIELDS, SYSMON_CATEGORIES, CHANNEL_CATEGORIES, SECURITY_AUTH_EVENTS,
            SUCCESS_EVENTS, FAILURE_EVENTS, _NXLOG_HEAD, SOURCE_TYPE)

    def parse(self, line: str, origin: str) -> dict[str, Any] | None:
        if self._native is not None and type(origin) is str:
            event = self._native.parse(line, origin)
            if event is not None:
                return event
        return to_event(load_object(line, "a Windows event"), self.ctx.sensor, origin, raw=line)


def read_json_documents(text: str) -> Iterator[Any]:
    """JSON documents in a file: one document, a JSON array, JSON lines, or concatenated objects."""
    decoder = json.JSONDecoder()
    stripped = text.strip()
    if stripped.startswith("["):
        yield from orjson.loads(stripped)
        return
    pos = 0
    while pos < len(stripped):
        while pos < len(stripped) and stripped[pos].isspace():
            pos += 1
        if pos >= len(stripped):
            break
        doc, end = decoder.raw_decode(stripped, pos)
        yield doc
        pos = end


def read_evtx(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(record number, event JSON) for each record of an .evtx file."""
    from evtx import PyEvtxParser  # Rust reader: ~100x python-evtx

    for record in PyEvtxParser(str(path)).records_json():
        yield int(record["event_record_id"]), orjson.loads(record["data"])
