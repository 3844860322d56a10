"""SSH: the identification banners of both sides and the KEXINIT algorithm lists (HASSH fingerprints)."""

from __future__ import annotations

import hashlib
import struct

MAX_BYTES = 16 * 1024


class SshState:
    def __init__(self, emit):
        self.emit = emit  # emit(ts_us, fields)
        self.buffers = [b"", b""]
        self.banners = ["", ""]
        self.hassh = ["", ""]
        self.hassh_strings = ["", ""]
        self.ts = 0
        self.done = False

    def data(self, from_orig: bool, data: bytes, ts_us: int) -> None:
        d = 0 if from_orig else 1
        self.ts = self.ts or ts_us
        buf = self.buffers[d] + data
        if not self.banners[d]:
            end = buf.find(b"\n")
            if end < 0:
                self.buffers[d] = buf[:MAX_BYTES]
                return
            line, buf = buf[:end].rstrip(b"\r"), buf[end + 1:]
            if not line.startswith(b"SSH-"):  # servers may print lines before the banner
                self.buffers[d] = buf
                if len(buf) > MAX_BYTES:
                    self.done = True
                return
            self.banners[d] = line.decode("utf-8", "backslashreplace")
        if not self.hassh[d] and len(buf) >= 6:
            length = struct.unpack_from(">I", buf)[0]
            if length > 35_000:
                self.hassh[d] = "-"  # not a KEXINIT we can read (encrypted or garbage)
            elif len(buf) >= 4 + length:
                self._kexinit(d, buf[5:4 + length])
        self.buffers[d] = buf[:MAX_BYTES]
        if all(self.hassh):
            self.finish()

    def _kexinit(self, d: int, payload: bytes) -> None:
        if not payload or payload[0] != 20:
            self.hassh[d] = "-"
            return
        lists, pos = [], 17
        for _ in range(10):
            if pos + 4 > len(payload):
                self.hassh[d] = "-"
                return
            n = struct.unpack_from(">I", payload, pos)[0]
            lists.append(payload[pos + 4:pos + 4 + n].decode("ascii", "replace"))
            pos += 4 + n
        kex, _hostkey, enc_cs, enc_sc, mac_cs, mac_sc, comp_cs, comp_sc = lists[:8]
        text = ";".join((kex, enc_cs, mac_cs, comp_cs) if d == 0 else (kex, enc_sc, mac_sc, comp_sc))
        self.hassh_strings[d] = text
        self.hassh[d] = hashlib.md5(text.encode()).hexdigest()

    def finish(self) -> None:
        if self.done or not any(self.banners):
            self.done = True
            return
        self.done = True
        client, server = self.banners
        proto = (client or server).split("-")[1] if "-" in (client or server)[4:] else ""
        extra = {"client": client, "server": server, "version": proto.split(".")[0]}
        for key, d in (("hassh", 0), ("hasshServer", 1)):
            if self.hassh[d] not in ("", "-"):
                extra[key] = self.hassh[d]
                extra[key + "String"] = self.hassh_strings[d]
        self.emit(self.ts, {"extra": extra})
