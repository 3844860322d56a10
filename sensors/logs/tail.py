"""File tailing: glob patterns, rotation (rename and copytruncate), gzip'd rotated files, persisted checkpoints.

A file is identified by (device, inode) plus a hash of its first bytes (`head`), so a reused inode or a
truncated file is recognized as new content. Each file is read through its own open handle: after a
rename rotation the old handle is drained to its end before it is closed, so the last lines written
before the rotation are not lost. A gzip'd file matching the pattern is read once; if its first bytes
are those of a file already followed (rotate, then compress), reading resumes where that file was left.

Checkpoints (`{dev:inode: {path, offset, head, head_len, generation}}`) are written atomically and only
after the sink's flush returned, so a restart neither loses nor repeats lines (a crash between the flush
and the checkpoint write can repeat the lines of that one flush; their event ids are the same, so the
writer's dedup can drop them).

Multi-line records: when the parser declares a `continuation` pattern, matching lines join the record
before them; a pending record is emitted when the next record starts, at end of file in `--once` mode, or
after `multiline_timeout_s` without new lines.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sensors.logs.parsers import ParseContext, Parser, detect_format, make_parser
from sensors.logs.parsers.base import decode_line
from sensors.logs.router import RecordRouter

log = logging.getLogger(__name__)
HEAD_BYTES = 256
READ_CHUNK = 1 << 20
MAX_LINE = 1 << 20  # longer lines are dead-lettered in pieces rather than held in memory


def _head_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass
class Checkpoint:
    path: str
    offset: int = 0
    head: str = ""
    head_len: int = 0
    generation: int = 0


@dataclass
class _Followed:
    key: str
    path: str
    fh: Any
    parser: Parser
    cp: Checkpoint
    buffer: bytes = b""
    pending: tuple[str, int] | None = None  # multi-line record being collected: (text, start offset)
    last_data: float = field(default_factory=time.monotonic)
    rotated: bool = False


@dataclass
class TailStats:
    files: int = 0
    rotations: int = 0
    truncations: int = 0
    bytes: int = 0


class Tailer:
    def __init__(self, patterns: list[str], fmt: str, router: RecordRouter, checkpoint: Path | None = None,
                 ctx: ParseContext | None = None, multiline_timeout_s: float = 1.0,
                 on_progress: Callable[[int], None] | None = None):
        self.patterns = patterns
        self.fmt = fmt
        self.router = router
        self.checkpoint_path = checkpoint
        self.ctx = ctx or ParseContext()
        self.multiline_timeout_s = multiline_timeout_s
        self.on_progress = on_progress
        self.stats = TailStats()
        self.checkpoints: dict[str, Checkpoint] = self._load()
        self._followed: dict[str, _Followed] = {}
        self._gz_done: set[str] = set()
        self.rotate_grace_s = 1.0  # a renamed file is read until it has been quiet this long

    # -- checkpoints ------------------------------------------------------------------------------

    def _load(self) -> dict[str, Checkpoint]:
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return {}
        try:
            raw = orjson.loads(self.checkpoint_path.read_bytes())
            return {k: Checkpoint(**v) for k, v in raw.items()}
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"checkpoint file {self.checkpoint_path} is corrupt ({exc}); move it away to "
                             "start over (files are then read from the beginning)") from None

    def save(self) -> None:
        """Flush the sink, then persist where every file was read up to."""
        self.router.sink.flush()
        if self.checkpoint_path is None:
            return
        snapshot = {k: dict(v.__dict__) for k, v in self.checkpoints.items()}
        for f in self._followed.values():  # a pending multi-line record is re-read after a restart
            if f.pending is not None:
                snapshot[f.key]["offset"] = f.pending[1]
        data = orjson.dumps(snapshot, option=orjson.OPT_INDENT_2)
        tmp = self.checkpoint_path.with_suffix(".tmp")
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.checkpoint_path)

    # -- discovery ---------------------------------------------------------------------------------

    def _paths(self) -> list[str]:
        out: set[str] = set()
        for pattern in self.patterns:
            out.update(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
        return sorted(out, key=lambda p: (os.path.getmtime(p) if os.path.exists(p) else 0, p))

    def _parser(self, path: str, first: bytes) -> Parser:
        fmt = self.fmt
        if fmt == "auto":
            fmt = detect_format(first.decode("utf-8", "replace").splitlines()) or ""
            if not fmt:
                raise ValueError(f"{path}: cannot tell the log format from its first lines; pass --format")
        return make_parser(fmt, self.ctx, filename=path)

    def _open_new(self, path: str) -> None:
        try:
            st = os.stat(path)
            fh = open(path, "rb")  # noqa: SIM115 - held open across polls to survive renames
        except OSError as exc:
            log.warning("cannot open %s: %s", path, exc)
            return
        key = f"{st.st_dev}:{st.st_ino}"
        head = fh.read(HEAD_BYTES)
        fh.seek(0)
        cp = self.checkpoints.get(key)
        if cp is not None and cp.head_len and (len(head) < cp.head_len or _head_hash(head[:cp.head_len]) != cp.head):
            cp = Checkpoint(path=path, generation=cp.generation + 1)  # inode reused for other content
        if cp is None:
            cp = Checkpoint(path=path)
        if cp.offset > st.st_size:
            self.stats.truncations += 1
            cp = Checkpoint(path=path, generation=cp.generation + 1)
        cp.path = path
        if head and len(head) > cp.head_len:
            cp.head, cp.head_len = _head_hash(head), len(head)
        self.checkpoints[key] = cp
        try:
            parser = self._parser(path, head + fh.read(64 * 1024) if self.fmt == "auto" else head)
        except ValueError as exc:
            fh.close()
            self.router.reject("tail", str(exc), "", path)
            self.checkpoints[key].offset = st.st_size  # reported once, not on every poll
            return
        fh.seek(cp.offset)
        self._followed[key] = _Followed(key, path, fh, parser, cp)
        self.stats.files += 1

    def _read_gz(self, path: str, final: bool) -> None:
        """A compressed (rotated) file: read once, resuming where its uncompressed original was left."""
        if path in self._gz_done:
            return
        try:
            with gzip.open(path, "rb") as gz:
                sample = gz.read(64 * 1024)  # enough whole lines to detect the format
                head = sample[:HEAD_BYTES]
                while gz.read(READ_CHUNK):  # the whole stream must be intact before anything is emitted
                    pass
        except (OSError, EOFError) as exc:
            if final:  # still being compressed, or damaged: say so once
                self.router.reject("tail", f"unreadable gzip file: {exc}", "", path)
                self._gz_done.add(path)
            return
        self._gz_done.add(path)
        key = f"gz:{_head_hash(head)}:{len(head)}"
        if key in self.checkpoints:
            return
        start = 0
        for cp in self.checkpoints.values():
            if cp.head_len and cp.head_len <= len(head) and cp.head == _head_hash(head[:cp.head_len]):
                start = max(start, cp.offset)
        try:
            parser = self._parser(path, sample)
        except ValueError as exc:
            self.router.reject("tail", str(exc), "", path)
            return
        cp = Checkpoint(path=path, offset=start, head=_head_hash(head), head_len=len(head))
        with gzip.open(path, "rb") as gz:
            gz.seek(start)
            f = _Followed(key, path, gz, parser, cp)
            self._drain(f, final=True)
        self.checkpoints[key] = f.cp
        self.stats.files += 1

    # -- reading -------------------------------------------------------------------------------------

    def _emit(self, f: _Followed, text: str, offset: int) -> None:
        self.router.route(f.parser, text, f"{f.path}:{offset}")

    def _line(self, f: _Followed, raw: bytes, offset: int) -> None:
        text = decode_line(raw.rstrip(b"\r"))
        cont = f.parser.continuation
        if cont is None:
            if text.strip():
                self._emit(f, text, offset)
            return
        if f.pending is not None and cont.match(text):
            f.pending = (f.pending[0] + "\n" + text, f.pending[1])
            return
        if f.pending is not None:
            self._emit(f, *f.pending)
        f.pending = (text, offset) if text.strip() else None

    def _flush_pending(self, f: _Followed) -> None:
        if f.pending is not None:
            self._emit(f, *f.pending)
            f.pending = None

    def _drain(self, f: _Followed, final: bool) -> int:
        """Read what is new; returns the bytes read. `final`: the file will not grow (a partial last line counts)."""
        total = 0
        while True:
            chunk = f.fh.read(READ_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            data = f.buffer + chunk
            start = 0
            base = f.cp.offset
            while True:
                nl = data.find(b"\n", start)
                if nl < 0:
                    break
                self._line(f, data[start:nl], base + start)
                start = nl + 1
            f.cp.offset = base + start
            f.buffer = data[start:]
            if len(f.buffer) > MAX_LINE:  # a line without end: keep memory bounded
                self.router.reject(f.parser.name, f"line longer than {MAX_LINE} bytes", f.buffer[:4096].decode(
                    "utf-8", "replace"), f"{f.path}:{f.cp.offset}")
                f.cp.offset += len(f.buffer)
                f.buffer = b""
        if final and f.buffer:
            self._line(f, f.buffer, f.cp.offset)
            f.cp.offset += len(f.buffer)
            f.buffer = b""
        if final:
            self._flush_pending(f)
        if total:
            f.last_data = time.monotonic()
            self.stats.bytes += total
            if self.on_progress is not None:
                self.on_progress(total)
        elif f.pending is not None and time.monotonic() - f.last_data > self.multiline_timeout_s:
            self._flush_pending(f)
        return total

    def poll(self, final: bool = False) -> int:
        """One pass: discover files, detect rotation/truncation, read new data. Returns bytes read."""
        total = 0
        at_path: dict[str, str] = {}  # path -> key of the file there now
        for path in self._paths():
            if path.endswith(".gz"):
                self._read_gz(path, final)
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = f"{st.st_dev}:{st.st_ino}"
            at_path[path] = key
            if key not in self._followed:
                self._open_new(path)
        path_of = {key: path for path, key in at_path.items()}
        for key, f in list(self._followed.items()):
            try:
                size = os.fstat(f.fh.fileno()).st_size
            except OSError:
                size = f.cp.offset
            if size < f.cp.offset + len(f.buffer):  # copytruncate: start over on the same inode
                self.stats.truncations += 1
                f.fh.seek(0)
                f.buffer, f.pending = b"", None
                f.cp = Checkpoint(path=f.path, generation=f.cp.generation + 1)
                self.checkpoints[key] = f.cp
            if key in path_of:  # still matched (perhaps renamed to another matching name)
                f.path = f.cp.path = path_of[key]
            elif not f.rotated:
                f.rotated = True
                self.stats.rotations += 1
            read = self._drain(f, final=final)
            total += read
            # renamed away or deleted: keep reading the old handle until the writer has let go of it
            if f.rotated and (final or (not read and time.monotonic() - f.last_data > self.rotate_grace_s)):
                self._drain(f, final=True)
                f.fh.close()
                del self._followed[key]
        return total

    def run_once(self) -> None:
        """Read every matching file to its end (batch import) and save the checkpoint."""
        self.poll(final=True)
        self.save()
        self.close()

    def follow(self, stop: threading.Event, interval_s: float = 0.25, checkpoint_every_s: float = 1.0) -> None:
        last_save = time.monotonic()
        while not stop.is_set():
            read = self.poll()
            if time.monotonic() - last_save >= checkpoint_every_s:
                self.save()
                last_save = time.monotonic()
            if not read:
                stop.wait(interval_s)
        self.poll()
        self.save()
        self.close()

    def close(self) -> None:
        for f in self._followed.values():
            f.fh.close()
        self._followed.clear()
