"""Log sensors end to end on the real engines: syslog over real sockets and tailed files with real rotation,
through a Kafka broker, into a ClickHouse server — every parsed record stored once, every bad one
dead-lettered with the parser and the reason."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from pipeline.writer import Writer
from sensors.logs.parsers import ParseContext
from sensors.logs.router import RecordRouter
from sensors.logs.syslog_server import Listen, SyslogServer
from sensors.logs.tail import Tailer
from sensors.sink import BusSink, ListSink
from tests.conftest import SHARED_DATA
from tests.integration.test_kafka_clickhouse import _stored_ids, _write_until

CTX = ParseContext.make(sensor="it", year=2024)


class TeeSink(BusSink):
    """Publishes to the bus and remembers what it published, to compare with the table."""

    def __init__(self, bus):  # type: ignore[no-untyped-def]
        super().__init__(bus, batch_events=100)
        self.seen = ListSink()

    def emit(self, event):  # type: ignore[no-untyped-def]
        self.seen.emit(event)
        super().emit(event)

    def dead(self, record):  # type: ignore[no-untyped-def]
        self.seen.dead(record)
        super().dead(record)


def test_syslog_over_sockets_into_clickhouse(kafka_bus, server_store, unique_name) -> None:  # type: ignore[no-untyped-def]
    sink = TeeSink(kafka_bus)
    srv = SyslogServer(Listen(udp=0, tcp=0, host="127.0.0.1"), RecordRouter(sink), CTX).start()
    lines = [f"<38>Mar  1 10:00:{n % 60:02d} bastion sshd[{n}]: Failed password for root from 198.51.100.{n % 200} "
             f"port {1000 + n} ssh2" for n in range(300)]
    lines += ['<134>Mar 10 12:00:00 2024 H3C %%10FILTER/6/FILTER_ZONE_IPV4_EXECUTION: Protocol(1001)=TCP;'
              'SrcIPAddr(1003)=10.1.1.2;SrcPort(1004)=5000;DstIPAddr(1007)=1.1.1.1;DstPort(1008)=443;'
              'Event(1048)=(8)Session denied;', "<999>broken priority"]
    try:
        with socket.create_connection(("127.0.0.1", srv.ports["tcp"])) as tcp:
            for line in lines:
                data = line.encode()
                tcp.sendall(str(len(data)).encode() + b" " + data)  # octet counting
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for n in range(20):
            udp.sendto(f"<13>Mar  1 11:00:00 web1 nginx: udp message {n}".encode(), ("127.0.0.1", srv.ports["udp"]))
            time.sleep(0.002)
        deadline = time.monotonic() + 30
        while srv.router.stats.records < len(lines) + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        srv.stop()  # flushes the sink
    assert srv.router.stats.records == len(lines) + 20
    expected = {e["event_id"] for e in sink.seen.events}
    assert len(expected) == len(lines) - 1 + 20
    _write_until(Writer(kafka_bus, server_store, group=unique_name), server_store, len(expected))
    assert sorted(_stored_ids(server_store)) == sorted(expected)
    rows = server_store.query("SELECT source_type, action, count() FROM events GROUP BY 1, 2 ORDER BY 1, 2").rows
    assert rows == [("h3c_fw", "denied", 1), ("linux_syslog", "", 20), ("sshd", "failure", 300)]
    dead = server_store.query("SELECT source, reason, payload FROM deadletter").rows
    assert dead == [("syslog", "PRI 999 out of range (0-191)", "<999>broken priority")]
    peers = server_store.query("SELECT DISTINCT extra['peer'] FROM events").rows
    assert peers == [("127.0.0.1",)]


def test_tailed_files_with_rotation_into_clickhouse(kafka_bus, server_store, unique_name, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    logs = tmp_path / "logs"
    logs.mkdir()
    access = logs / "access.log"

    def write(start: int, stop: int) -> None:
        with open(access, "a") as fh:
            for n in range(start, stop):
                fh.write(f'203.0.113.{n % 250} - - [01/Mar/2024:10:{n // 60 % 60:02d}:{n % 60:02d} +0800] '
                         f'"GET /item?id={n} HTTP/1.1" 200 {n} "-" "curl/8"\n')
            fh.write("this line is not an access log line\n")

    sink = TeeSink(kafka_bus)
    tailer = Tailer([str(logs / "access.log*")], "nginx", RecordRouter(sink), tmp_path / "cp.json", CTX)
    tailer.rotate_grace_s = 0.0
    write(0, 500)
    tailer.poll()
    os.rename(access, logs / "access.log.1")  # rename rotation; the old name still matches the pattern
    write(500, 800)
    tailer.poll()
    tailer.save()
    tailer.close()
    restarted = Tailer([str(logs / "access.log*")], "nginx", RecordRouter(sink), tmp_path / "cp.json", CTX)
    write(800, 1000)
    restarted.poll(final=True)
    restarted.save()
    ids = [e["event_id"] for e in sink.seen.events]
    assert len(ids) == len(set(ids)) == 1000
    _write_until(Writer(kafka_bus, server_store, group=unique_name), server_store, 1000)
    assert sorted(_stored_ids(server_store)) == sorted(ids)
    uris = server_store.query("SELECT count(), uniqExact(http_uri), min(http_status), max(bytes_in) FROM events").rows
    assert uris == [(1000, 1000, 200, 999)]
    dead = server_store.query("SELECT source, count() FROM deadletter GROUP BY 1").rows
    assert dead == [("nginx", 3)]


def test_zeek_json_real_data_into_clickhouse(kafka_bus, server_store, unique_name, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = SHARED_DATA / "zeek" / "wrccdc-2018" / "zeek-json" / "rdp.json.gz"
    if not path.exists():
        import pytest

        pytest.skip("../shared/data absent")
    sink = TeeSink(kafka_bus)
    Tailer([str(path)], "auto", RecordRouter(sink), None, CTX).run_once()
    assert len(sink.seen.events) == 4122 and not sink.seen.dead_letters
    _write_until(Writer(kafka_bus, server_store, group=unique_name), server_store, 4122)
    rows = server_store.query("SELECT source_type, count(), countIf(user_name != '') FROM events GROUP BY 1").rows
    assert rows[0][:2] == ("zeek_rdp", 4122) and rows[0][2] > 0
