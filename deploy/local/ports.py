"""Free loopback ports and readiness waits shared by the local servers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


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


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, alive: Callable[[], bool]) -> None:
    """Poll `check` until it is true; fail fast if the process died, or after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited during start-up")
        try:
            if check():
                return
        except Exception as exc:  # not ready yet: connection refused, broker not elected, ...
            last_error = exc
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s (last error: {last_error})")
