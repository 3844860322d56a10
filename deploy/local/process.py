"""What the local servers share: free loopback ports, readiness waits, and the server process lifecycle."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, alive: Callable[[], bool],
               logs: tuple[Path, ...] = ()) -> None:
    """Poll `check` until it is true; fail fast if the process died, or after timeout_s. A failure quotes the
    end of the server's `logs` and the machine's load, so a CI log says why the server did not come up."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited during start-up{_diagnosis(logs)}")
        try:
            if check():
                return
        except Exception as exc:  # not ready yet: connection refused, broker not elected, ...
            last_error = exc
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s (last error: {last_error}){_diagnosis(logs)}")


def _diagnosis(logs: tuple[Path, ...], lines: int = 30) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    parts = [f"\nload average {load}"]
    for path in logs:
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- last {len(tail)} lines of {path}:\n" + "\n".join(tail))
    return "\n".join(parts)


class ServerProcess:
    """A server child process in its own session, so a stop or kill reaches everything it started."""

    _proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, command: list[str], log_path: Path) -> None:
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                          start_new_session=True)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _request_stop(self) -> None:
        """Ask the server to shut down cleanly (default: SIGTERM)."""
        assert self._proc is not None
        os.killpg(self._proc.pid, signal.SIGTERM)

    def stop(self, timeout_s: float = 30) -> None:
        """Clean shutdown; SIGKILL if it does not exit in time."""
        if self._proc is None:
            return
        if self.alive():
            self._request_stop()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None

    def kill(self) -> None:
        """Hard stop (SIGKILL), as a crash would."""
        if self._proc is not None and self.alive():
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None
