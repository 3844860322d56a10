"""A ClickHouse server for tests and demos: chDB (ClickHouse 26.x) serving native TCP + HTTP.

How (see DESIGN.md): a subprocess chdirs into a work directory holding a `config.xml` with the ports,
then runs `SYSTEM START LISTEN TCP; SYSTEM START LISTEN HTTP;` followed by a blocking read of a FIFO
through chDB's module-level `_chdb.query`. Writing a line to the FIFO ends the read, the query
returns, and the server exits cleanly. Data lives in `<workdir>/data` and survives restarts.
This uses a private chDB API: the chdb version is pinned in pyproject.toml.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from deploy.local.process import ServerProcess, free_port, port_open, wait_until

_CONFIG = """<clickhouse>
  <tcp_port>{tcp_port}</tcp_port>
  <http_port>{http_port}</http_port>
  <listen_host>127.0.0.1</listen_host>
  <max_concurrent_queries>64</max_concurrent_queries>
</clickhouse>
"""

# Runs in the subprocess: argv = workdir. Never create a Kafka-engine table on chDB (DESIGN.md).
_SERVE = """
import os, sys
workdir = sys.argv[1]
os.chdir(workdir)
import chdb._chdb as engine
fifo = os.path.join(workdir, "stop.fifo")
engine.query(
    "SYSTEM START LISTEN TCP; SYSTEM START LISTEN HTTP; "
    f"SELECT count() FROM file('{fifo}', 'LineAsString')",
    "CSV",
    path=os.path.join(workdir, "data"),
)
"""


class LocalClickHouse(ServerProcess):
    def __init__(self, workdir: Path, tcp_port: int | None = None, http_port: int | None = None):
        self.workdir = Path(workdir).resolve()
        self.tcp_port = tcp_port or free_port()
        self.http_port = http_port or free_port()

    @property
    def url(self) -> str:
        return f"clickhouse://127.0.0.1:{self.tcp_port}/ganzhi"

    def url_for(self, database: str) -> str:
        return f"clickhouse://127.0.0.1:{self.tcp_port}/{database}"

    @property
    def fifo(self) -> Path:
        return self.workdir / "stop.fifo"

    def start(self, timeout_s: float = 60) -> LocalClickHouse:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "config.xml").write_text(_CONFIG.format(tcp_port=self.tcp_port, http_port=self.http_port))
        if self.fifo.exists():
            self.fifo.unlink()
        os.mkfifo(self.fifo)
        self._spawn([sys.executable, "-c", _SERVE, str(self.workdir)], self.workdir / "server.log")
        wait_until(self._ready, timeout_s, f"ClickHouse (chDB) on port {self.tcp_port}", self.alive,
                   logs=(self.workdir / "server.log",))
        return self

    def _ready(self) -> bool:
        from clickhouse_driver import Client

        if not port_open(self.tcp_port):  # probe first: the driver logs a traceback per refused connect
            return False
        client = Client("127.0.0.1", port=self.tcp_port, connect_timeout=1)
        try:
            return client.execute("SELECT 1") == [(1,)]
        finally:
            client.disconnect()

    def version(self) -> str:
        from clickhouse_driver import Client

        client = Client("127.0.0.1", port=self.tcp_port)
        try:
            return str(client.execute("SELECT version()")[0][0])
        finally:
            client.disconnect()

    def _request_stop(self) -> None:
        # a line on the FIFO ends the server's blocking read: it returns and exits cleanly
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"stop\n")
            os.close(fd)
        except OSError:  # no reader on the FIFO (not in its blocking read yet): fall back to SIGTERM
            super()._request_stop()
