from __future__ import annotations

import orjson

from pipeline.bus.base import Message
from pipeline.codec import (
    EVENT_HEADERS,
    dead_letter,
    decode_dead_letter,
    decode_events,
    encode_dead_letter,
    encode_events,
)
from tests.conftest import make_events


def _msg(value: bytes, headers: tuple = tuple(EVENT_HEADERS), topic: str = "ganzhi.events") -> Message:
    return Message(topic, 0, 42, value, None, headers)


def test_events_round_trip_in_size_bounded_messages() -> None:
    events = make_events(3000)
    values = list(encode_events(events, max_bytes=64 * 1024))
    assert len(values) > 1
    assert all(len(v) <= 64 * 1024 for v in values)
    decoded = []
    for v in values:
        good, bad = decode_events(_msg(v))
        assert bad == []
        decoded.extend(good)
    assert decoded == events


def test_bad_lines_become_dead_letters_and_the_rest_survive() -> None:
    good = make_events(2)
    value = b"\n".join([orjson.dumps({**good[0], "ts": 1714550400000, "dns_answers": []}), b"{broken",
                        b'{"ts": 1, "sensor": "s", "source_type": "x", "event_category": "c", "event_id": "i",'
                        b' "dst_port": 99999}'])
    events, dead = decode_events(_msg(value))
    assert len(events) == 1
    assert [d["stage"] for d in dead] == ["writer.decode", "writer.decode"]
    assert "invalid JSON" in dead[0]["reason"] and dead[0]["payload"] == "{broken"
    assert dead[1]["field"] == "dst_port" and "out of range" in dead[1]["reason"]
    assert dead[0]["origin"] == "ganzhi.events/0/42#1"


def test_unknown_schema_version_dead_letters_the_whole_message() -> None:
    events, dead = decode_events(_msg(b'{"a": 1}', headers=(("ganzhi-schema", b"99"),)))
    assert events == [] and len(dead) == 1 and "schema version" in dead[0]["reason"]


def test_binary_garbage_is_kept_as_base64() -> None:
    events, dead = decode_events(_msg(b"\xff\xfe\x00garbage"))
    assert events == [] and dead[0]["payload"].startswith("base64:")


def test_dead_letter_ids_are_deterministic_and_round_trip() -> None:
    a = dead_letter("s", "src", "why", b"payload", "f:1", now_ms=5)
    b = dead_letter("s", "src", "why", b"payload", "f:1", now_ms=9)
    assert a["dl_id"] == b["dl_id"]
    back = decode_dead_letter(Message("ganzhi.deadletter", 0, 1, encode_dead_letter(a)))
    assert back == a
    wrapped = decode_dead_letter(Message("ganzhi.deadletter", 0, 1, b"not json"))
    assert wrapped["stage"] == "writer.deadletter" and wrapped["payload"] == "not json"
