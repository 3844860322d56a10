"""Wire format of Ganzhi's topics.

`ganzhi.events`: one Kafka message carries a batch of events as JSON lines (one normalized event per
line, schema of pipeline.schema), with headers `ganzhi-schema: <version>` and `content-type:
application/x-ndjson`. Batching matters: a Python producer pays ~80 µs per Kafka message, so one
event per message would cap a sensor at ~12 k events/s; batches of a few hundred KiB remove that cost.
Messages stay below MAX_MESSAGE_BYTES.

`ganzhi.deadletter`: one JSON object per message (see `dead_letter`): what was rejected, where, why.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any

import orjson

from pipeline.bus.base import Message
from pipeline.native import event_dumps, event_loads
from pipeline.schema import SCHEMA_VERSION, SchemaError, format_ts, parse_ts

SCHEMA_HEADER = "ganzhi-schema"
EVENT_HEADERS = [(SCHEMA_HEADER, str(SCHEMA_VERSION).encode()), ("content-type", b"application/x-ndjson")]
MAX_MESSAGE_BYTES = 512 * 1024


def encode_events(events: Iterable[dict[str, Any]], max_bytes: int = MAX_MESSAGE_BYTES,
                  dump: Callable[[dict[str, Any]], bytes] | None = None) -> Iterator[bytes]:
    """Canonical events -> message values of at most max_bytes (an oversized single event goes alone).
    `dump` writes one event's line: by default pipeline.schema.dumps' bytes, natively where it can."""
    dump = dump or _write_event()
    lines: list[bytes] = []
    size = 0
    for event in events:
        line = dump(event)
        if lines and size + len(line) + 1 > max_bytes:
            yield b"\n".join(lines)
            lines, size = [], 0
        lines.append(line)
        size += len(line) + 1
    if lines:
        yield b"\n".join(lines)


def _payload_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()


def dead_letter(stage: str, source: str, reason: str, payload: bytes | str, origin: str = "", field: str = "",
                now_ms: int | None = None) -> dict[str, Any]:
    """A dead-letter record. Its id is deterministic, so a re-delivered rejection is stored once."""
    text = payload if isinstance(payload, str) else _payload_text(payload)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot travel as JSON: keep them visible as \udXXX
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    dl_id = hashlib.blake2b(f"{stage}\x1f{origin}\x1f{reason}\x1f{text}".encode("utf-8", "surrogateescape"),
                            digest_size=16).hexdigest()
    ts = now_ms if now_ms is not None else int(time.time() * 1000)
    return {"ts": ts, "dl_id": dl_id, "stage": stage, "source": source, "reason": reason, "field": field,
            "origin": origin, "payload": text}


def encode_dead_letter(record: dict[str, Any]) -> bytes:
    return orjson.dumps({**record, "ts": format_ts(record["ts"])})


def decode_dead_letter(msg: Message) -> dict[str, Any]:
    """A dead-letter message -> record; a malformed one is itself kept, wrapped with the reason."""
    origin = f"{msg.topic}/{msg.partition}/{msg.offset}"
    try:
        record = orjson.loads(msg.value)
        out = {k: str(record.get(k, "")) for k in ("dl_id", "stage", "source", "reason", "field", "origin", "payload")}
        out["ts"] = parse_ts(record["ts"])
        if not out["dl_id"]:
            raise ValueError("dl_id missing")
        return out
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        return dead_letter("writer.deadletter", msg.topic, f"malformed dead-letter record: {exc}", msg.value, origin)


@lru_cache(maxsize=1)
def _write_event() -> Callable[[dict[str, Any]], bytes]:
    return event_dumps()


@lru_cache(maxsize=1)
def _read_event() -> Callable[[bytes], dict[str, Any]]:
    """pipeline.schema.loads, natively where the module is built (made once: it interns the schema's names)."""
    return event_loads()


def decode_events(msg: Message) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An events message -> (valid canonical events, dead-letter records for the lines that are not)."""
    origin = f"{msg.topic}/{msg.partition}/{msg.offset}"
    version = msg.header(SCHEMA_HEADER)
    if version is not None and version != str(SCHEMA_VERSION).encode():
        reason = f"unsupported schema version {version!r} (this writer speaks {SCHEMA_VERSION})"
        return [], [dead_letter("writer.decode", msg.topic, reason, msg.value, origin)]
    events: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    read = _read_event()
    for lineno, line in enumerate(msg.value.split(b"\n")):
        if not line.strip():
            continue
        try:
            events.append(read(line))
        except SchemaError as exc:
            rejects.append(dead_letter("writer.decode", msg.topic, exc.reason, line, f"{origin}#{lineno}", exc.field))
    return events, rejects
