"""Notifications against real local receivers the tests start: an HTTP server (webhook), an SMTP server
(aiosmtpd) and syslog listeners (UDP and TCP). Deduplication, retries, the rate limit, CEF."""

from __future__ import annotations

import email
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.situation import cycle, exposure, notify
from tests import situation_support as seed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Webhook:
    """An HTTP receiver that fails the first `fail` requests with 500."""

    def __init__(self, fail: int = 0):
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        self.fail = fail
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                if receiver.requests <= receiver.fail:
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[bytes]]]:
    from aiosmtpd.controller import Controller

    received: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope.original_content or envelope.content)
            return "250 OK"

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, received
    controller.stop()


class SyslogReceiver:
    def __init__(self, transport: str):
        self.lines: list[str] = []
        receiver = self
        if transport == "udp":
            class UDP(socketserver.BaseRequestHandler):
                def handle(self) -> None:
                    receiver.lines.append(self.request[0].decode())
            self.server: socketserver.BaseServer = socketserver.ThreadingUDPServer(("127.0.0.1", 0), UDP)
        else:
            class TCP(socketserver.StreamRequestHandler):
                def handle(self) -> None:
                    receiver.lines.extend(line.decode().rstrip("\n") for line in self.rfile)
            self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), TCP)
        self.port = self.server.server_address[1]  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.lines

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # type: ignore[attr-defined]


def _message(n: int = 1, title: str = "预警 民政局: raised to II 重大 (orange)") -> notify.Message:
    return notify.Message(f"level:民政局:2:{n}", "warning_level", title, "critical incident inc-5 on 卫健门户网站",
                          8, seed.END_MS + n, {"scope": "民政局", "level": 2})


def test_every_channel_delivers_to_a_real_receiver(embedded_store, webhook, smtp) -> None:  # type: ignore[no-untyped-def]
    port, mails = smtp
    udp, tcp = SyslogReceiver("udp"), SyslogReceiver("tcp")
    try:
        channels = notify.channels_from_env({
            "GANZHI_NOTIFY_WEBHOOK": webhook.url, "GANZHI_NOTIFY_SMTP": f"127.0.0.1:{port}",
            "GANZHI_NOTIFY_EMAIL_TO": "soc@example.gov.cn, duty@example.gov.cn",
            "GANZHI_NOTIFY_SYSLOG": f"udp://127.0.0.1:{udp.port}"})
        channels.append(notify.SyslogChannel("127.0.0.1", tcp.port, "tcp", name="syslog-tcp"))
        outcome = notify.Notifier(embedded_store, channels).send([_message()])
        assert (outcome.sent, outcome.failed) == (4, 0), outcome.errors
        assert webhook.bodies[0]["title"].startswith("预警 民政局") and webhook.bodies[0]["detail"]["level"] == 2
        mail = email.message_from_bytes(mails[0], policy=policy.default)
        assert "预警 民政局" in str(mail["Subject"]) and mail["To"] == "soc@example.gov.cn, duty@example.gov.cn"
        assert "卫健门户网站" in mail.get_content()
        for line in (udp.wait(1)[0], tcp.wait(1)[0]):
            assert line.startswith("<34>1 ") and " ganzhi - - - CEF:0|Ganzhi|Ganzhi|1|warning_level|" in line
            assert "|8|rt=" in line and "cs1=level:民政局:2:1" in line
    finally:
        udp.close()
        tcp.close()


def test_a_message_is_sent_once_per_channel_even_after_a_restart(embedded_store, webhook) -> None:  # type: ignore[no-untyped-def]
    channels = [notify.WebhookChannel(webhook.url)]
    first = notify.Notifier(embedded_store, channels).send([_message(1), _message(1), _message(2)])
    again = notify.Notifier(embedded_store, channels).send([_message(1), _message(2)])  # a new process
    assert (first.sent, first.duplicate, again.sent, again.duplicate) == (2, 1, 0, 2)
    assert [b["key"] for b in webhook.bodies] == ["level:民政局:2:1", "level:民政局:2:2"]


def test_failures_are_retried_with_backoff_then_kept_for_later(embedded_store) -> None:  # type: ignore[no-untyped-def]
    flaky = Webhook(fail=2)
    try:
        notifier = notify.Notifier(embedded_store, [notify.WebhookChannel(flaky.url)], backoff_s=0.01)
        assert notifier.send([_message(1)]).sent == 1 and flaky.requests == 3
    finally:
        flaky.close()
    down = notify.Notifier(embedded_store, [notify.WebhookChannel(f"http://127.0.0.1:{_free_port()}/")],
                           backoff_s=0.01)
    outcome = down.send([_message(2)])
    assert outcome.failed == 1 and "webhook" in outcome.errors[0]
    state = embedded_store.query("SELECT argMax(status, version), argMax(attempts, version) FROM notifications "
                                 "WHERE key = 'level:民政局:2:2' GROUP BY key").rows
    assert state == [("failed", 3)]
    back = Webhook()
    try:  # the receiver is back (the same channel name): the next cycle's retry delivers it
        retried = notify.Notifier(embedded_store, [notify.WebhookChannel(back.url)]).retry_pending()
        assert retried.sent == 1 and [b["key"] for b in back.bodies] == ["level:民政局:2:2"]
        assert notify.Notifier(embedded_store, [notify.WebhookChannel(back.url)]).retry_pending().sent == 0
    finally:
        back.close()


def test_rate_limit_defers_and_the_retry_sends_later(embedded_store, webhook) -> None:  # type: ignore[no-untyped-def]
    channels = [notify.WebhookChannel(webhook.url)]
    outcome = notify.Notifier(embedded_store, channels, per_minute=2).send([_message(n) for n in range(5)])
    assert (outcome.sent, outcome.deferred) == (2, 3) and len(webhook.bodies) == 2
    assert notify.Notifier(embedded_store, channels, per_minute=2).send([_message(4)]).duplicate == 1  # queued
    later = notify.Notifier(embedded_store, channels, per_minute=10).retry_pending()
    assert later.sent == 3 and sorted(b["key"] for b in webhook.bodies) == [f"level:民政局:2:{n}" for n in range(5)]


def test_cef_escapes_its_separators() -> None:
    line = notify.cef(notify.Message("k=1", "incident", "a|b\\c", "x=y\nz", 10, 0, {}))
    assert line.startswith("CEF:0|Ganzhi|Ganzhi|1|incident|a\\|b\\\\c|10|")
    assert "cs1=k\\=1" in line and "msg=x\\=y\\nz" in line


def test_bad_configuration_is_refused_with_what_to_set() -> None:
    with pytest.raises(notify.NotifyError, match="EMAIL_TO"):
        notify.channels_from_env({"GANZHI_NOTIFY_SMTP": "localhost:25"})
    with pytest.raises(notify.NotifyError, match="udp://host:514"):
        notify.channels_from_env({"GANZHI_NOTIFY_SYSLOG": "localhost:514"})
    assert notify.channels_from_env({}) == []


def test_the_cycle_notifies_level_changes_and_new_severe_incidents_once(embedded_store, webhook) -> None:  # type: ignore[no-untyped-def]
    seed.seed(embedded_store)
    exposure.load_feed(embedded_store, [seed_feed("nvdcve-2.0-synthetic.json")], [seed_feed("kev-synthetic.json")])
    notifier = notify.Notifier(embedded_store, [notify.WebhookChannel(webhook.url)])
    first = cycle.run_cycle(embedded_store, seed.END_MS, seed.INVENTORY, notifier=notifier)
    keys = sorted(b["key"] for b in webhook.bodies)
    assert first.notified.sent == len(keys) == 6
    assert [k for k in keys if k.startswith("incident:")] == ["incident:inc-4:high", "incident:inc-5:critical"]
    assert {k.split(":")[1] for k in keys if k.startswith("level:")} == {"", "卫健委", "民政局", seed.UNIT_A}
    extranet = next(b for b in webhook.bodies if b["key"].startswith("level::"))
    assert extranet["title"] == "预警 extranet: raised to II 重大 (orange)" and extranet["severity"] == 8
    second = cycle.run_cycle(embedded_store, seed.END_MS + 60_000, seed.INVENTORY, notifier=notifier)
    assert second.notified.sent == 0 and len(webhook.bodies) == 6


def seed_feed(name: str) -> Path:
    return Path(__file__).resolve().parents[1] / "data" / "cve" / name
