"""Syslog receiver: UDP, TCP (newline/NUL-framed and RFC 6587 octet-counted) and TLS (RFC 5425).

Memory stays bounded under floods: received messages wait in one bounded queue. A full queue makes TCP
and TLS readers wait (the kernel's window then pushes back on the sender) and makes UDP datagrams count as
dropped (`drops['queue_full']`) — UDP has no way to push back. Frames longer than `max_message` bytes are
dead-lettered (first 4 KiB kept) instead of held. Each message records the sender address in
`extra['peer']`; messages without a timestamp get their arrival time.
"""

from __future__ import annotations

import asyncio
import logging
import queue as queue_mod
import ssl
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from sensors.logs.parsers.base import ParseContext, decode_line
from sensors.logs.parsers.syslog import SyslogParser
from sensors.logs.router import RecordRouter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listen:
    udp: int | None = None
    tcp: int | None = None
    tls: int | None = None
    host: str = "0.0.0.0"
    tls_cert: str | None = None
    tls_key: str | None = None


class SyslogServer:
    def __init__(self, listen: Listen, router: RecordRouter, ctx: ParseContext | None = None,
                 queue_size: int = 10_000, max_message: int = 64 * 1024, flush_interval_s: float = 0.5):
        if listen.tls is not None and not (listen.tls_cert and listen.tls_key):
            raise ValueError("TLS needs a certificate and key: pass --tls-cert FILE --tls-key FILE")
        if listen.udp is None and listen.tcp is None and listen.tls is None:
            raise ValueError("nothing to listen on: pass --udp PORT, --tcp PORT and/or --tls PORT")
        self.listen = listen
        self.router = router
        self.ctx = ctx or ParseContext()
        self.queue_size = queue_size
        self.max_message = max_message
        self.flush_interval_s = flush_interval_s
        self.ports: dict[str, int] = {}
        self.connections = 0
        self.backpressure_waits = 0  # times a TCP/TLS reader waited for room in the queue
        self._parser = SyslogParser(self.ctx)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> SyslogServer:
        """Run in a background thread; returns once the sockets are bound (see `ports`)."""
        self._thread = threading.Thread(target=self._run_thread, name="syslog-server", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _run_thread(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:  # surfaced to start() / stop()
            self._error = exc
            self._ready.set()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        queue: queue_mod.Queue[tuple[bytes, str, int]] = queue_mod.Queue(self.queue_size)
        closers: list[Any] = []
        host = self.listen.host
        if self.listen.udp is not None:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Udp(self, queue), local_addr=(host, self.listen.udp))
            self.ports["udp"] = transport.get_extra_info("sockname")[1]
            closers.append(transport)
        for kind, port in (("tcp", self.listen.tcp), ("tls", self.listen.tls)):
            if port is None:
                continue
            context = None
            if kind == "tls":
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(self.listen.tls_cert or "", self.listen.tls_key)
            server = await asyncio.start_server(lambda r, w: self._stream(r, w, queue), host, port, ssl=context,
                                                limit=self.max_message + 16)
            self.ports[kind] = server.sockets[0].getsockname()[1]
            closers.append(server)
        self._ready.set()
        done = threading.Event()
        consumer = threading.Thread(target=self._consume, args=(queue, done), name="syslog-consumer", daemon=True)
        consumer.start()
        await self._stop.wait()
        for closer in closers:
            closer.close()
        done.set()
        await asyncio.to_thread(consumer.join)

    # -- input --------------------------------------------------------------------------------------------

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      queue: queue_mod.Queue[tuple[bytes, str, int]]) -> None:
        peer = writer.get_extra_info("peername")
        peer_text = peer[0] if isinstance(peer, tuple) else str(peer)
        self.connections += 1
        try:
            while True:
                frame = await self._frame(reader, peer_text)
                if frame is None:
                    break
                if frame:
                    item = (frame, peer_text, int(time.time() * 1000))
                    try:
                        queue.put_nowait(item)
                    except queue_mod.Full:  # stop reading until there is room: TCP pushes back on the sender
                        self.backpressure_waits += 1
                        await asyncio.to_thread(queue.put, item)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.info("syslog connection from %s ended: %s", peer_text, exc)
        finally:
            self.connections -= 1
            writer.close()

    async def _frame(self, reader: asyncio.StreamReader, peer: str) -> bytes | None:
        """The next message of a stream, b'' for one that was rejected, None at the end of the stream."""
        first = await reader.read(1)
        if not first:
            return None
        if first.isdigit():  # RFC 6587 octet counting: "LEN SP MSG"
            digits = first + await reader.readuntil(b" ")
            text = digits[:-1]
            if text.isdigit() and len(text) <= 9:
                length = int(text)
                if length > self.max_message:
                    kept = await reader.readexactly(min(length, 4096))
                    await _skip(reader, length - len(kept))
                    self._oversize(kept, peer, length)
                    return b""
                return await reader.readexactly(length)
            rest = digits  # not a count after all: a newline-framed line that starts with digits
        else:
            rest = first
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            kept = await reader.read(4096)
            size = len(kept)
            while True:  # discard to the end of the line
                try:
                    size += len(await reader.readuntil(b"\n"))
                    break
                except asyncio.LimitOverrunError as exc:
                    size += len(await reader.readexactly(exc.consumed))
                except asyncio.IncompleteReadError as exc:
                    size += len(exc.partial)
                    break
            self._oversize(rest + kept, peer, size)
            return b""
        except asyncio.IncompleteReadError as exc:  # last line without newline
            line = exc.partial
        return (rest + line).rstrip(b"\r\n\x00")

    def _oversize(self, kept: bytes, peer: str, size: int) -> None:
        self.router.stats.drops["oversized"] += 1
        self.router.reject("syslog", f"message of {size} bytes exceeds the {self.max_message}-byte limit "
                           "(first 4 KiB kept)", kept.decode("utf-8", "replace"), f"syslog://{peer}")

    # -- processing ---------------------------------------------------------------------------------------

    def _consume(self, queue: queue_mod.Queue[tuple[bytes, str, int]], done: threading.Event) -> None:
        """Parsing and publishing run in their own thread, so a slow sink never stalls the sockets."""
        last_flush = time.monotonic()
        sink = self.router.sink
        while True:
            try:
                data, peer, received = queue.get(timeout=self.flush_interval_s)
            except queue_mod.Empty:
                sink.flush()
                last_flush = time.monotonic()
                if done.is_set():
                    return
                continue
            self._handle(data, peer, received)
            if time.monotonic() - last_flush > self.flush_interval_s:
                sink.flush()
                last_flush = time.monotonic()

    def _handle(self, data: bytes, peer: str, received: int) -> None:
        text = decode_line(data).rstrip("\r\n\x00")
        if not text.strip():
            return
        self._parser.ctx = replace(self.ctx, received_ms=received)
        # arrival time and peer make the id: the same line sent twice is two events
        self.router.route(self._parser, text, f"syslog://{peer}@{received}#{self.router.stats.records}", peer=peer)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: SyslogServer, queue: queue_mod.Queue[tuple[bytes, str, int]]):
        self.server = server
        self.queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.queue.put_nowait((data, addr[0], int(time.time() * 1000)))
        except queue_mod.Full:
            self.server.router.stats.drops["queue_full"] += 1


async def _skip(reader: asyncio.StreamReader, count: int) -> None:
    while count > 0:
        chunk = await reader.read(min(count, 65536))
        if not chunk:
            return
        count -= len(chunk)
