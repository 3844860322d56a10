"""Application-layer metadata: which protocol a flow speaks (by content, like Zeek's DPD) and its parser.

A `FlowApp` receives a flow's payload packets while the sensor keeps asking (`done` is False): TCP payload
through a `Stream` per direction, UDP datagrams as they come. Records (kind, ts_us, fields) collect in `out`.
"""

from __future__ import annotations

from typing import Any

from sensors.packet.apps.dns import PORTS as DNS_PORTS
from sensors.packet.apps.dns import DnsState
from sensors.packet.apps.http import HttpState, is_request
from sensors.packet.apps.ssh import SshState
from sensors.packet.apps.tls import TlsState, looks_like_tls
from sensors.packet.decode import TCP, UDP
from sensors.packet.stream import Stream

SYN = 0x02
DETECT_BYTES = 4096  # give up on a flow whose first bytes match nothing we read
UDP_DETECT_PACKETS = 4
GAP_SEGMENTS = 8  # segments waiting behind a hole before the hole is declared lost


class FlowApp:
    __slots__ = (
        "dns_buf",
        "done",
        "out",
        "parser",
        "ports",
        "proto",
        "seen",
        "service",
        "streams",
        "tcp_dns",
    )

    def __init__(self, proto: int, orig_port: int, resp_port: int):
        self.proto = proto
        self.ports = (orig_port, resp_port)
        self.service = ""
        self.parser: Any = None
        self.streams = (Stream(), Stream()) if proto == TCP else None
        self.out: list[tuple[str, int, dict[str, Any]]] = []
        self.done = False
        self.seen = 0  # payload bytes (TCP) or datagrams (UDP) looked at before a protocol matched
        self.tcp_dns = False
        self.dns_buf = [b"", b""]
        if proto == UDP and (orig_port in DNS_PORTS or resp_port in DNS_PORTS):
            self._use("dns", DnsState(self._emitter("dns")))

    def _emitter(self, kind: str):
        out = self.out
        return lambda ts_us, fields: out.append((kind, ts_us, fields))

    def _use(self, service: str, parser: Any) -> None:
        self.service, self.parser = service, parser

    def packet(self, from_orig: bool, seq: int, flags: int, payload: bytes, ts_us: int) -> None:
        if self.proto == TCP:
            stream = self.streams[0 if from_orig else 1]
            if flags & SYN:
                stream.syn(seq)
                seq += 1  # data on a SYN (TCP Fast Open) starts after it
            if payload:
                data = stream.add(seq, payload)
                if data:
                    # request/response: new data one way means the other way's missing bytes are not coming
                    self._gaps(not from_orig, ts_us)
                    self._tcp(from_orig, data, ts_us)
                elif len(stream.pending) >= GAP_SEGMENTS:
                    self._gaps(from_orig, ts_us)
            return
        if not payload:
            return
        if self.service == "dns":
            if not self.parser.message(payload, ts_us) and self.parser.errors > 8 and not self.out:
                self.done = True  # not DNS after all
            return
        self.seen += 1
        if self.seen >= UDP_DETECT_PACKETS:
            self.done = True

    def _gaps(self, from_orig: bool, ts_us: int) -> None:
        """Skip what the capture lost in one direction and go on with the bytes after it."""
        stream = self.streams[0 if from_orig else 1]
        while stream.pending and not self.done:
            gap, data = stream.skip_gap()
            if self.parser is None or not hasattr(self.parser, "gap") or self.tcp_dns:
                self.done = True  # no way to resynchronise: stop looking at this flow
                if self.parser is not None:
                    self.parser.finish()
                return
            self.parser.gap(from_orig, gap)
            if data:
                self._tcp(from_orig, data, ts_us)

    def _tcp(self, from_orig: bool, data: bytes, ts_us: int) -> None:
        if self.parser is None and not self._detect(from_orig, data):
            self.seen += len(data)
            if self.seen > DETECT_BYTES:
                self.done = True
            return
        if self.tcp_dns:
            self._dns_frames(from_orig, data, ts_us)
            return
        self.parser.data(from_orig, data, ts_us)
        if isinstance(self.parser, HttpState) and self.parser.tunnel:  # CONNECT: what follows is new
            self.parser.finish()
            self.parser, self.service = None, ""
            self.seen = 0
        elif self.parser.done:
            self.parser.finish()
            self.done = True

    def _detect(self, from_orig: bool, data: bytes) -> bool:
        if looks_like_tls(data):
            self._use("tls", TlsState(self._emitter("tls")))
        elif data.startswith(b"SSH-"):
            self._use("ssh", SshState(self._emitter("ssh")))
        elif (from_orig and is_request(data)) or (not from_orig and data.startswith(b"HTTP/1.")):
            self._use("http", HttpState(self._emitter("http")))
        elif self.ports[1] in DNS_PORTS or self.ports[0] in DNS_PORTS:
            self._use("dns", DnsState(self._emitter("dns")))
            self.tcp_dns = True
        else:
            return False
        return True

    def _dns_frames(self, from_orig: bool, data: bytes, ts_us: int) -> None:
        """DNS over TCP: each message behind a two-byte length."""
        d = 0 if from_orig else 1
        buf = self.dns_buf[d] + data
        while len(buf) >= 2:
            n = int.from_bytes(buf[:2], "big")
            if len(buf) < 2 + n:
                break
            self.parser.message(buf[2:2 + n], ts_us)
            buf = buf[2 + n:]
        self.dns_buf[d] = buf[:70_000]

    def finish(self) -> None:
        if self.streams is not None and not self.done:
            for from_orig in (True, False):
                self._gaps(from_orig, 0)
        if self.parser is not None:
            self.parser.finish()
        self.done = True
