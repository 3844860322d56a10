"""The log inputs for real: file tailing (rename and copytruncate rotation, gzip'd rotations, checkpoints
across restarts, multi-line records) and the syslog receiver on real sockets (UDP, TCP newline and
octet-counted framing, TLS, oversized frames, floods)."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from sensors.logs.parsers import ParseContext
from sensors.logs.router import RecordRouter
from sensors.logs.syslog_server import Listen, SyslogServer
from sensors.logs.tail import Tailer
from sensors.sink import ListSink

CTX = ParseContext.make(sensor="t", year=2024)


def sshd_line(n: int) -> str:
    return f"Mar  1 10:{n // 60 % 60:02d}:{n % 60:02d} bastion sshd[{n}]: Failed password for u{n} from 10.0.0.1 port 2"


def users(sink: ListSink) -> list[int]:
    return [int(e["user_name"][1:]) for e in sink.events]


def append(path: Path, start: int, stop: int) -> None:
    with open(path, "a") as fh:
        fh.writelines(sshd_line(n) + "\n" for n in range(start, stop))


def make_tailer(tmp_path: Path, sink: ListSink, pattern: str = "auth.log*") -> Tailer:
    tailer = Tailer([str(tmp_path / "logs" / pattern)], "syslog", RecordRouter(sink), tmp_path / "cp.json", CTX)
    tailer.rotate_grace_s = 0.0
    return tailer


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return tmp_path / "logs"


def test_tail_rename_rotation_loses_and_repeats_nothing(tmp_path: Path, logs: Path) -> None:
    sink = ListSink()
    tailer = make_tailer(tmp_path, sink, "auth.log")
    path = logs / "auth.log"
    append(path, 0, 100)
    tailer.poll()
    append(path, 100, 150)  # written just before the rotation: only the old handle still sees these
    os.rename(path, logs / "auth.log.1")
    append(path, 150, 200)  # the new file
    tailer.poll()
    tailer.poll()
    assert users(sink) == list(range(200))
    assert tailer.stats.rotations == 1


def test_tail_copytruncate(tmp_path: Path, logs: Path) -> None:
    sink = ListSink()
    tailer = make_tailer(tmp_path, sink, "auth.log")
    path = logs / "auth.log"
    append(path, 0, 50)
    tailer.poll()
    shutil.copy(path, logs / "auth.log.1")
    os.truncate(path, 0)
    tailer.poll()
    append(path, 50, 60)
    tailer.poll()
    assert users(sink) == list(range(60)) and tailer.stats.truncations == 1


def test_tail_checkpoint_restart_and_gzip_rotation(tmp_path: Path, logs: Path) -> None:
    path = logs / "auth.log"
    append(path, 0, 30)
    with open(path, "a") as fh:
        fh.write(sshd_line(30)[:20])  # a partial line: not read until it is complete
    first = ListSink()
    tailer = make_tailer(tmp_path, first)
    tailer.poll()
    tailer.save()
    tailer.close()
    assert users(first) == list(range(30))
    with open(path, "a") as fh:
        fh.write(sshd_line(30)[20:] + "\n")
    append(path, 31, 40)
    # rotate and compress while the sensor is down; a new file starts
    with open(path, "rb") as src, gzip.open(logs / "auth.log.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    append(path, 40, 45)
    second = ListSink()
    restarted = make_tailer(tmp_path, second)
    restarted.poll(final=True)
    restarted.save()
    assert sorted(users(second)) == list(range(30, 45))  # resumed inside the gzip'd rotation, nothing repeated
    third = ListSink()
    again = make_tailer(tmp_path, third)
    again.poll(final=True)
    assert third.events == []  # everything was checkpointed


def test_tail_multiline_records(tmp_path: Path, logs: Path) -> None:
    path = logs / "CBS.log"
    path.write_text("2016-09-28 04:30:30, Info                  CBS    first\n  continued here\n"
                    "2016-09-28 04:30:31, Error                 CBS    second\n")
    sink = ListSink()
    Tailer([str(path)], "auto", RecordRouter(sink), None, CTX).run_once()
    assert [e["message"] for e in sink.events] == ["first\n  continued here", "second"]


def test_tail_dead_letters_unknown_format(tmp_path: Path, logs: Path) -> None:
    (logs / "mystery.log").write_text("???\n!!!\n")
    sink = ListSink()
    Tailer([str(logs / "*.log")], "auto", RecordRouter(sink), None, CTX).run_once()
    assert sink.events == [] and len(sink.dead_letters) == 1 and "pass --format" in sink.dead_letters[0]["reason"]


# -- syslog receiver ------------------------------------------------------------------------------------

def _wait(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    sink = ListSink()
    srv = SyslogServer(Listen(udp=0, tcp=0, host="127.0.0.1"), RecordRouter(sink), CTX, max_message=2048).start()
    yield srv, sink
    srv.stop()


def test_syslog_udp_tcp_and_octet_counting(server) -> None:  # type: ignore[no-untyped-def]
    srv, sink = server
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.sendto(b"<38>" + sshd_line(1).encode(), ("127.0.0.1", srv.ports["udp"]))
    rfc5424 = b'<165>1 2024-03-01T10:00:00Z h app - - [a b="c"] octet counted\nwith a newline'
    with socket.create_connection(("127.0.0.1", srv.ports["tcp"])) as tcp:
        tcp.sendall(b"<38>" + sshd_line(2).encode() + b"\n" + b"<38>" + sshd_line(3).encode() + b"\n")
        tcp.sendall(str(len(rfc5424)).encode() + b" " + rfc5424)
        tcp.sendall(b"<13>no timestamp here\n")
    _wait(lambda: len(sink.events) == 5)
    by_message = {e["message"]: e for e in sink.events}
    assert by_message["octet counted\nwith a newline"]["extra"]["sd.a.b"] == "c"
    assert by_message["no timestamp here"]["ts"] > 1_700_000_000_000  # arrival time
    assert sorted(e.get("user_name", "") for e in sink.events if e["source_type"] == "sshd") == ["u1", "u2", "u3"]
    assert all(e["extra"]["peer"] == "127.0.0.1" for e in sink.events)


def test_syslog_oversized_frames_are_dead_lettered(server) -> None:  # type: ignore[no-untyped-def]
    srv, sink = server
    with socket.create_connection(("127.0.0.1", srv.ports["tcp"])) as tcp:
        tcp.sendall(b"<13>Mar  1 10:00:00 h x: " + b"A" * 10_000 + b"\n")
        tcp.sendall(b"5000 " + b"B" * 5000)
        tcp.sendall(b"<13>Mar  1 10:00:00 h x: after\n")
    _wait(lambda: len(sink.dead_letters) == 2 and len(sink.events) == 1)
    assert sink.events[0]["message"] == "after"
    assert all("exceeds the 2048-byte limit" in d["reason"] for d in sink.dead_letters)
    assert srv.router.stats.drops["oversized"] == 2


def test_syslog_udp_flood_is_bounded_and_counted() -> None:
    sink = ListSink()
    gate = threading.Event()

    class SlowSink(ListSink):
        def emit(self, event):  # type: ignore[no-untyped-def]
            gate.wait()
            sink.emit(event)

    srv = SyslogServer(Listen(udp=0, host="127.0.0.1"), RecordRouter(SlowSink()), CTX, queue_size=100).start()
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sent = 3000
        for n in range(sent):
            udp.sendto(b"<38>" + sshd_line(n).encode(), ("127.0.0.1", srv.ports["udp"]))
        time.sleep(0.5)
        drops_while_stalled = srv.router.stats.drops["queue_full"]
        gate.set()
        settled = -1
        while settled != srv.router.stats.records:  # until the receiver has caught up
            settled = srv.router.stats.records
            time.sleep(0.5)
        drops = srv.router.stats.drops["queue_full"]
        # while the sink stalled, at most the queue's bound (+1 being handled) waited; the rest was counted
        assert drops_while_stalled > 0 and drops >= drops_while_stalled
        assert len(sink.events) >= 100 and len(sink.events) + drops <= sent
    finally:
        gate.set()
        srv.stop()


def test_syslog_tls(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    sink = ListSink()
    srv = SyslogServer(Listen(tls=0, host="127.0.0.1", tls_cert=str(tmp_path / "server.pem"),
                              tls_key=str(tmp_path / "server.pem")), RecordRouter(sink), CTX).start()
    try:
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        with socket.create_connection(("127.0.0.1", srv.ports["tls"])) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            message = b"<38>" + sshd_line(7).encode()
            tls.sendall(str(len(message)).encode() + b" " + message)
        _wait(lambda: len(sink.events) == 1)
        assert sink.events[0]["user_name"] == "u7" and sink.events[0]["source_type"] == "sshd"
    finally:
        srv.stop()
