"""HTTP/1.x: requests and responses from both reassembled directions, paired into transactions.

Headers are read up to `MAX_HEADER` bytes; bodies are skipped by Content-Length or chunked framing (their
lengths counted) so keep-alive connections yield one record per transaction, up to `MAX_TRANSACTIONS`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"CONNECT ", b"TRACE ", b"PATCH ",
           b"PROPFIND ", b"PROPPATCH ", b"MKCOL ", b"COPY ", b"MOVE ", b"LOCK ", b"UNLOCK ", b"SEARCH ")
MAX_HEADER = 16 * 1024
MAX_TRANSACTIONS = 64


def is_request(data: bytes) -> bool:
    return data.startswith(METHODS)


class _Side:
    """One direction's framing state: reading headers, or skipping a body."""

    def __init__(self) -> None:
        self.buffer = b""
        self.body_left = 0  # bytes of the current body still to skip (-1: until close)
        self.chunked = False
        self.chunk_buffer = b""
        self.body_len = 0
        self.current: dict[str, Any] | None = None
        self.resync = False  # after a gap: skip to the next message start


class HttpState:
    def __init__(self, emit):
        self.emit = emit  # emit(ts_us, fields)
        self.sides = (_Side(), _Side())  # [0] requests (originator), [1] responses
        self.requests: deque[dict[str, Any]] = deque()
        self.done = False
        self.transactions = 0
        self.tunnel = False  # CONNECT answered 2xx: the rest is another protocol

    def data(self, from_orig: bool, data: bytes, ts_us: int) -> None:
        side = self.sides[0 if from_orig else 1]
        while data and not self.done and not self.tunnel:
            if side.body_left or side.chunked:
                data = self._body(side, data, from_orig)
                continue
            side.buffer = (side.buffer + data).lstrip(b"\r\n")  # stray line ends between messages
            data = b""
            if side.resync:
                start = _message_start(side.buffer, from_orig)
                if start < 0:
                    side.buffer = side.buffer[-16:]
                    return
                side.buffer, side.resync = side.buffer[start:], False
            end = side.buffer.find(b"\r\n\r\n")
            sep = 4
            if end < 0:
                end, sep = side.buffer.find(b"\n\n"), 2
            if end < 0:
                if len(side.buffer) > MAX_HEADER:
                    self.done = True
                return
            head, data = side.buffer[:end], side.buffer[end + sep:]
            side.buffer = b""
            if from_orig:
                self._request(head, ts_us)
            else:
                self._response(head, ts_us)

    def gap(self, from_orig: bool, size: int) -> None:
        """`size` bytes of this direction were lost: inside a body they are counted, else resynchronise."""
        side = self.sides[0 if from_orig else 1]
        if side.body_left > 0 and not side.chunked and size < side.body_left:
            side.body_left -= size
            side.body_len += size
            return
        if side.body_left > 0 and not side.chunked:
            side.body_len += side.body_left
            side.body_left = 0
            self._body_done(side, from_orig)
        elif side.body_left == -1:
            side.body_len += size
            return
        side.buffer, side.chunk_buffer, side.chunked, side.body_left = b"", b"", False, 0
        side.resync = True

    def _body(self, side: _Side, data: bytes, from_orig: bool) -> bytes:
        if side.body_left == -1:  # until the connection closes
            side.body_len += len(data)
            return b""
        if side.body_left:
            take = min(side.body_left, len(data))
            side.body_left -= take
            side.body_len += take
            data = data[take:]
            if side.body_left == 0 and not side.chunked:
                self._body_done(side, from_orig)
            return data
        # chunked: read a size line, then skip that many bytes and its CRLF
        side.chunk_buffer += data
        line_end = side.chunk_buffer.find(b"\n")
        if line_end < 0:
            if len(side.chunk_buffer) > 1024:
                self.done = True
            return b""
        line, rest = side.chunk_buffer[:line_end].strip(), side.chunk_buffer[line_end + 1:]
        side.chunk_buffer = b""
        if not line:  # the CRLF after a chunk
            return rest
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError:
            self.done = True
            return b""
        if size == 0:
            side.chunked = False
            self._body_done(side, from_orig)
            # the trailer's final CRLF
            return rest[2:] if rest.startswith(b"\r\n") else rest
        side.body_left = size
        return rest

    def _body_done(self, side: _Side, from_orig: bool) -> None:
        if side.current is not None:
            side.current["extra"]["request_body_len" if from_orig else "response_body_len"] = str(side.body_len)
            if not from_orig:
                self._emit(side.current)
            side.current = None

    def _frame(self, side: _Side, headers: dict[str, str], has_body: bool) -> None:
        side.body_len = 0
        side.chunked = has_body and "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length", "")
        side.body_left = 0
        if has_body and not side.chunked:
            if length.strip().isdigit():
                side.body_left = int(length)
            elif side is self.sides[1]:
                side.body_left = -1

    def _request(self, head: bytes, ts_us: int) -> None:
        lines = head.decode("latin-1").split("\n")
        parts = lines[0].strip().split(" ")
        if len(parts) < 2:
            self.done = True
            return
        headers = _headers(lines[1:])
        record = {"ts": ts_us, "http_method": parts[0], "http_uri": parts[1], "http_host": headers.get("host", ""),
                  "http_user_agent": headers.get("user-agent", ""), "http_referrer": headers.get("referer", ""),
                  "extra": {"version": parts[2].removeprefix("HTTP/") if len(parts) > 2 else "0.9",
                            "trans_depth": str(self.transactions + len(self.requests) + 1),
                            "request_body_len": "0", "response_body_len": "0"}}
        for name, key in (("origin", "origin"), ("x-forwarded-for", "x_forwarded_for"),
                          ("content-type", "request_content_type")):
            if name in headers:
                record["extra"][key] = headers[name]
        self.requests.append(record)
        side = self.sides[0]
        self._frame(side, headers, True)
        if side.body_left or side.chunked:
            side.current = record

    def _response(self, head: bytes, ts_us: int) -> None:
        lines = head.decode("latin-1").split("\n")
        parts = lines[0].strip().split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            self.done = True
            return
        status = int(parts[1])
        headers = _headers(lines[1:])
        if 100 <= status < 200:
            return  # interim response: the real one follows
        record = self.requests.popleft() if self.requests else {
            "ts": ts_us, "extra": {"request_body_len": "0", "response_body_len": "0"}}
        record["http_status"] = status
        record["extra"].update(status_msg=parts[2].strip() if len(parts) > 2 else "",
                               version=parts[0].removeprefix("HTTP/"))
        if "content-type" in headers:
            record["extra"]["resp_mime_types"] = headers["content-type"].split(";")[0].strip()
        if "server" in headers:
            record["extra"]["server"] = headers["server"]
        side = self.sides[1]
        has_body = record.get("http_method") != "HEAD" and status not in (204, 304)
        if record.get("http_method") == "CONNECT" and 200 <= status < 300:
            self.tunnel = True
            has_body = False
        self._frame(side, headers, has_body)
        if side.body_left or side.chunked:
            side.current = record
        else:
            self._emit(record)

    def _emit(self, record: dict[str, Any]) -> None:
        self.transactions += 1
        if self.transactions >= MAX_TRANSACTIONS:
            self.done = True
        ts = record.pop("ts")
        self.emit(ts, record)

    def finish(self) -> None:
        for side in self.sides:
            if side.current is not None and side is self.sides[1]:
                side.current["extra"]["response_body_len"] = str(side.body_len)
                self._emit(side.current)
                side.current = None
        while self.requests:
            self._emit(self.requests.popleft())


def _message_start(buffer: bytes, request: bool) -> int:
    """Where the first request (or response) line begins in `buffer` (-1: none yet)."""
    if not request:
        return buffer.find(b"HTTP/1.")
    found = [i for i in (buffer.find(m) for m in METHODS) if i >= 0 and (i == 0 or buffer[i - 1:i] == b"\n")]
    return min(found, default=-1)


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), value.strip())
    return headers
