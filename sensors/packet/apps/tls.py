"""TLS handshakes: ClientHello and ServerHello → SNI, versions, cipher, ALPN, JA3/JA3S and JA4 fingerprints.

Records are read from both reassembled directions; handshake messages may span records (and records
segments). Parsing stops after the ServerHello: with TLS 1.3 the rest is encrypted, and what an analyst
needs from the clear part is there. Cipher names come from scapy's IANA table.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from scapy.layers.tls.crypto.suites import _tls_cipher_suites

MAX_HANDSHAKE = 64 * 1024
VERSIONS = {0x0200: "SSLv2", 0x0300: "SSLv3", 0x0301: "TLSv10", 0x0302: "TLSv11", 0x0303: "TLSv12",
            0x0304: "TLSv13", 0xFEFF: "DTLSv10", 0xFEFD: "DTLSv12", 0xFEFC: "DTLSv13"}
_JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0200: "s2",
                 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}


def looks_like_tls(data: bytes) -> bool:
    return len(data) >= 3 and data[0] == 0x16 and data[1] == 3 and data[2] <= 4


def grease(value: int) -> bool:
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def version_name(version: int) -> str:
    if 0x7F00 < version <= 0x7FFF:
        return f"TLSv13-draft{version & 0xFF}"
    return VERSIONS.get(version, f"0x{version:04x}")


def _u16s(data: bytes) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", data[:len(data) // 2 * 2]))


def _extensions(data: bytes, pos: int) -> list[tuple[int, bytes]]:
    if pos + 2 > len(data):
        return []
    end = min(len(data), pos + 2 + struct.unpack_from(">H", data, pos)[0])
    pos += 2
    out = []
    while pos + 4 <= end:
        etype, elen = struct.unpack_from(">HH", data, pos)
        out.append((etype, data[pos + 4:pos + 4 + elen]))
        pos += 4 + elen
    return out


def client_hello(body: bytes) -> dict[str, Any]:
    version = struct.unpack_from(">H", body)[0]
    pos = 34
    pos += 1 + body[pos]  # session id
    n = struct.unpack_from(">H", body, pos)[0]
    ciphers = _u16s(body[pos + 2:pos + 2 + n])
    pos += 2 + n
    pos += 1 + body[pos]  # compression methods
    exts = _extensions(body, pos)
    ext = dict(exts)
    sni = ""
    if 0 in ext and len(ext[0]) > 5:
        sni = ext[0][5:5 + struct.unpack_from(">H", ext[0], 3)[0]].decode("ascii", "backslashreplace")
    groups = _u16s(ext.get(10, b"")[2:])
    point_formats = list(ext.get(11, b"")[1:])
    alpn = _alpn(ext.get(16, b""))
    supported = [v for v in (_u16s(ext[43][1:]) if 43 in ext else []) if not grease(v)]
    sig_algs = _u16s(ext.get(13, b"")[2:])
    ext_types = [t for t, _ in exts]
    ja3 = ",".join((str(version), "-".join(str(c) for c in ciphers if not grease(c)),
                    "-".join(str(e) for e in ext_types if not grease(e)),
                    "-".join(str(g) for g in groups if not grease(g)), "-".join(str(p) for p in point_formats)))
    return {"version": version, "max_version": max(supported, default=version), "sni": sni, "alpn": alpn,
            "ciphers": ciphers, "ja3": ja3, "ja3_hash": hashlib.md5(ja3.encode()).hexdigest(),
            "ja4": ja4(version, supported, sni, ciphers, ext_types, alpn, sig_algs)}


def ja4(version: int, supported: list[int], sni: str, ciphers: list[int], exts: list[int], alpn: list[str],
        sig_algs: list[int], transport: str = "t") -> str:
    """FoxIO's JA4 client fingerprint (a_b_c)."""
    ciphers = [c for c in ciphers if not grease(c)]
    exts = [e for e in exts if not grease(e)]
    ver = _JA4_VERSIONS.get(max(supported) if supported else version, "00")
    first = alpn[0] if alpn else ""
    if not first:
        alpn_part = "00"
    elif first[0].isascii() and first[0].isalnum() and first[-1].isascii() and first[-1].isalnum():
        alpn_part = first[0] + first[-1]
    else:
        hexed = first.encode("latin-1", "replace").hex()
        alpn_part = hexed[0] + hexed[-1]
    a = f"{transport}{ver}{'d' if sni else 'i'}{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{alpn_part}"
    b = _sha12(",".join(f"{c:04x}" for c in sorted(ciphers))) if ciphers else "000000000000"
    rest = [e for e in exts if e not in (0x0000, 0x0010)]
    c_text = ",".join(f"{e:04x}" for e in sorted(rest))
    if sig_algs:
        c_text += "_" + ",".join(f"{s:04x}" for s in sig_algs)
    c = _sha12(c_text) if rest else "000000000000"
    return f"{a}_{b}_{c}"


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _alpn(data: bytes) -> list[str]:
    out, pos = [], 2
    while pos < len(data):
        n = data[pos]
        out.append(data[pos + 1:pos + 1 + n].decode("latin-1"))
        pos += 1 + n
    return out


def server_hello(body: bytes) -> dict[str, Any]:
    version = struct.unpack_from(">H", body)[0]
    pos = 34
    pos += 1 + body[pos]
    cipher = struct.unpack_from(">H", body, pos)[0]
    exts = _extensions(body, pos + 3)
    ext = dict(exts)
    selected = struct.unpack_from(">H", ext[43])[0] if len(ext.get(43, b"")) >= 2 else version
    ja3s = f"{version},{cipher},{'-'.join(str(t) for t, _ in exts)}"
    alpn = _alpn(ext.get(16, b""))
    return {"version": selected, "cipher": cipher, "ja3s": ja3s, "ja3s_hash": hashlib.md5(ja3s.encode()).hexdigest(),
            "alpn": alpn[0] if alpn else ""}


class TlsState:
    def __init__(self, emit):
        self.emit = emit  # emit(ts_us, fields)
        self.records = [b"", b""]  # unparsed record bytes per direction
        self.handshake = [b"", b""]  # handshake message bytes per direction
        self.client: dict[str, Any] | None = None
        self.server: dict[str, Any] | None = None
        self.ts = 0
        self.done = False

    def data(self, from_orig: bool, data: bytes, ts_us: int) -> None:
        d = 0 if from_orig else 1
        if not self.ts:
            self.ts = ts_us
        buf = self.records[d] + data
        while len(buf) >= 5 and not self.done:
            ctype, _version, length = struct.unpack_from(">BHH", buf)
            if len(buf) < 5 + length:
                break
            if ctype == 22:
                self.handshake[d] += buf[5:5 + length]
                self._messages(d)
            elif ctype not in (20, 21, 23, 24):
                self.done = True  # not TLS after all
            elif ctype == 23 and self.client is not None and d == 1:
                self.done = True  # application data from the server: the handshake is over
            buf = buf[5 + length:]
        self.records[d] = buf[:MAX_HANDSHAKE]
        if self.done:
            self.finish()

    def _messages(self, d: int) -> None:
        hs = self.handshake[d]
        while len(hs) >= 4:
            mtype = hs[0]
            length = int.from_bytes(hs[1:4], "big")
            if len(hs) < 4 + length:
                if length > MAX_HANDSHAKE:
                    self.done = True
                break
            body, hs = hs[4:4 + length], hs[4 + length:]
            try:
                if mtype == 1 and d == 0 and self.client is None:
                    self.client = client_hello(body)
                elif mtype == 2 and d == 1 and self.server is None:
                    self.server = server_hello(body)
                    self.done = True
            except (struct.error, IndexError, ValueError):  # a malformed hello: keep what was read, stop
                self.done = True
        self.handshake[d] = hs

    def finish(self) -> None:
        if self.client is None and self.server is None:
            return
        c, s = self.client or {}, self.server or {}
        version = s.get("version") or c.get("max_version") or 0
        extra = {}
        if c:
            extra.update(ja3_string=c["ja3"], client_version=version_name(c["version"]),
                         client_alpn=",".join(c["alpn"]))
        if s:
            extra.update(ja3s=s["ja3s_hash"], ja3s_string=s["ja3s"], next_protocol=s["alpn"])
        fields = {"tls_sni": c.get("sni", ""), "tls_version": version_name(version) if version else "",
                  "tls_cipher": _tls_cipher_suites.get(s["cipher"], f"0x{s['cipher']:04x}") if s else "",
                  "tls_ja3": c.get("ja3_hash", ""), "tls_ja4": c.get("ja4", ""), "extra": extra}
        self.emit(self.ts, fields)
        self.client = self.server = None
        self.done = True
