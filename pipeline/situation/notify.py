"""Notifications of warning-level changes and new high-severity incidents: webhook (JSON), email (SMTP) and
syslog (CEF) to other SOC tools.

- Deduplicated: every message has a key (e.g. `level:民政局:2:<at>`, `incident:<id>:critical`); a key already
  sent on a channel is never sent there again, also across restarts (the `notifications` table).
- Rate-limited per channel (`per_minute`); messages over the limit are kept as `deferred`.
- Retried: each delivery is tried `attempts` times with doubling back-off; what still fails is kept as
  `failed`. `retry_pending()` (run at the start of every evaluation cycle) sends deferred and failed
  messages again, up to `max_total_attempts`.

Configuration (environment): GANZHI_NOTIFY_WEBHOOK (URL), GANZHI_NOTIFY_SMTP (host:port),
GANZHI_NOTIFY_EMAIL_FROM, GANZHI_NOTIFY_EMAIL_TO (comma-separated), GANZHI_NOTIFY_SMTP_USER/_PASSWORD,
GANZHI_NOTIFY_SMTP_STARTTLS=1, GANZHI_NOTIFY_SYSLOG (udp://host:514 or tcp://host:514),
GANZHI_NOTIFY_PER_MINUTE (default 30).
"""

from __future__ import annotations

import os
import smtplib
import socket
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from pipeline.store.base import Store

TIMEOUT_S = 10.0


class NotifyError(RuntimeError):
    """A delivery failed; the message says where and why."""


@dataclass(frozen=True)
class Message:
    key: str
    kind: str  # warning_level, incident
    title: str
    text: str
    severity: int  # 0-10, CEF scale
    at_ms: int
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "title": self.title, "text": self.text,
                "severity": self.severity, "at": datetime.fromtimestamp(self.at_ms / 1000, UTC).isoformat(),
                "detail": self.detail}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Message:
        at = int(datetime.fromisoformat(doc["at"]).timestamp() * 1000)
        return cls(doc["key"], doc["kind"], doc["title"], doc["text"], doc["severity"], at, doc["detail"])


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> None: ...


@dataclass
class WebhookChannel:
    url: str
    name: str = "webhook"

    def send(self, message: Message) -> None:
        request = urllib.request.Request(self.url, data=orjson.dumps(message.as_json()), method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "ganzhi"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                if response.status >= 300:
                    raise NotifyError(f"webhook {self.url} answered {response.status}")
        except (urllib.error.URLError, OSError) as exc:
            raise NotifyError(f"webhook {self.url}: {exc}") from None


@dataclass
class EmailChannel:
    host: str
    port: int
    sender: str
    recipients: list[str]
    user: str = ""
    password: str = ""
    starttls: bool = False
    name: str = "email"

    def send(self, message: Message) -> None:
        mail = EmailMessage()
        mail["Subject"] = f"[Ganzhi 感知] {message.title}"
        mail["From"], mail["To"] = self.sender, ", ".join(self.recipients)
        mail["Message-ID"] = f"<{abs(hash(message.key))}.{message.at_ms}@ganzhi>"
        mail.set_content(f"{message.text}\n\n{orjson.dumps(message.detail, option=orjson.OPT_INDENT_2).decode()}\n")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_S) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.user:
                    smtp.login(self.user, self.password)
                smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"SMTP {self.host}:{self.port}: {exc}") from None


def _cef_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|")


def _cef_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "").replace("\n", "\\n")


def cef(message: Message) -> str:
    """ArcSight CEF: CEF:0|vendor|product|version|signature|name|severity|extension."""
    extension = {"rt": str(message.at_ms), "cs1Label": "key", "cs1": message.key, "msg": message.text,
                 "cs2Label": "detail", "cs2": orjson.dumps(message.detail).decode()}
    header = "|".join(_cef_header(v) for v in ("Ganzhi", "Ganzhi", "1", message.kind, message.title))
    return f"CEF:0|{header}|{message.severity}|" + " ".join(f"{k}={_cef_value(v)}" for k, v in extension.items())


@dataclass
class SyslogChannel:
    """RFC 5424 over UDP or TCP (newline-framed), carrying CEF."""

    host: str
    port: int
    transport: str = "udp"
    name: str = "syslog"

    def send(self, message: Message) -> None:
        stamp = datetime.fromtimestamp(message.at_ms / 1000, UTC).isoformat(timespec="milliseconds")
        pri = 8 * 4 + (2 if message.severity >= 8 else 4)  # facility auth(4); crit or warning
        line = f"<{pri}>1 {stamp.replace('+00:00', 'Z')} {socket.gethostname()} ganzhi - - - {cef(message)}"
        data = line.encode("utf-8")
        try:
            if self.transport == "tcp":
                with socket.create_connection((self.host, self.port), timeout=TIMEOUT_S) as sock:
                    sock.sendall(data + b"\n")
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.sendto(data, (self.host, self.port))
        except OSError as exc:
            raise NotifyError(f"syslog {self.transport}://{self.host}:{self.port}: {exc}") from None


def channels_from_env(env: dict[str, str] | None = None) -> list[Channel]:
    env = dict(os.environ if env is None else env)
    channels: list[Channel] = []
    if env.get("GANZHI_NOTIFY_WEBHOOK"):
        channels.append(WebhookChannel(env["GANZHI_NOTIFY_WEBHOOK"]))
    if env.get("GANZHI_NOTIFY_SMTP"):
        host, _, port = env["GANZHI_NOTIFY_SMTP"].rpartition(":")
        recipients = [r.strip() for r in env.get("GANZHI_NOTIFY_EMAIL_TO", "").split(",") if r.strip()]
        if not recipients:
            raise NotifyError("GANZHI_NOTIFY_SMTP is set but GANZHI_NOTIFY_EMAIL_TO names no recipient")
        channels.append(EmailChannel(host or "localhost", int(port or 25),
                                     env.get("GANZHI_NOTIFY_EMAIL_FROM", "ganzhi@localhost"), recipients,
                                     env.get("GANZHI_NOTIFY_SMTP_USER", ""), env.get("GANZHI_NOTIFY_SMTP_PASSWORD", ""),
                                     env.get("GANZHI_NOTIFY_SMTP_STARTTLS") == "1"))
    if env.get("GANZHI_NOTIFY_SYSLOG"):
        url = urlsplit(env["GANZHI_NOTIFY_SYSLOG"])
        if url.scheme not in ("udp", "tcp") or not url.hostname:
            raise NotifyError("GANZHI_NOTIFY_SYSLOG must look like udp://host:514 or tcp://host:514")
        channels.append(SyslogChannel(url.hostname, url.port or 514, url.scheme))
    return channels


@dataclass
class Outcome:
    sent: int = 0
    duplicate: int = 0
    deferred: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class Notifier:
    def __init__(self, store: Store, channels: list[Channel], per_minute: int | None = None, attempts: int = 3,
                 backoff_s: float = 0.5, max_total_attempts: int = 10):
        self.store, self.channels = store, channels
        self.per_minute = per_minute or int(os.environ.get("GANZHI_NOTIFY_PER_MINUTE", 30))
        self.attempts, self.backoff_s, self.max_total_attempts = attempts, backoff_s, max_total_attempts
        self._sent_at: dict[str, deque[float]] = {c.name: deque() for c in channels}

    def _state(self, keys: list[str]) -> dict[tuple[str, str], tuple[str, int]]:
        result = self.store.query(
            "SELECT key, channel, argMax(status, version), argMax(attempts, version) FROM notifications "
            "WHERE key IN {keys:Array(String)} GROUP BY key, channel", {"keys": keys})
        return {(k, c): (s, n) for k, c, s, n in result.rows}

    def _save(self, rows: list[tuple[Message, str, str, int, str]]) -> None:
        if not rows:
            return
        version = time.time_ns()
        self.store.insert_columns("notifications", {
            "key": [m.key for m, *_ in rows], "channel": [r[1] for r in rows], "status": [r[2] for r in rows],
            "attempts": [r[3] for r in rows], "error": [r[4][:1000] for r in rows],
            "payload": [orjson.dumps(m.as_json()).decode() for m, *_ in rows],
            "updated_at": [int(time.time() * 1000)] * len(rows), "version": [version + i for i in range(len(rows))]},
            {"key": "str", "channel": "str", "status": "str", "attempts": "u16", "error": "str", "payload": "str",
             "updated_at": "ts", "version": "u64"})

    def _allowed(self, channel: str) -> bool:
        window, now = self._sent_at[channel], time.monotonic()
        while window and now - window[0] > 60:
            window.popleft()
        return len(window) < self.per_minute

    def _deliver(self, channel: Channel, message: Message) -> tuple[bool, int, str]:
        error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                channel.send(message)
                self._sent_at[channel.name].append(time.monotonic())
                return True, attempt, ""
            except NotifyError as exc:
                error = str(exc)
                if attempt < self.attempts:
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
        return False, self.attempts, error

    def send(self, messages: list[Message], resend: bool = False) -> Outcome:
        """Deliver on every channel what was not delivered there yet; `resend` retries deferred/failed ones."""
        outcome = Outcome()
        if not messages or not self.channels:
            return outcome
        state = self._state([m.key for m in messages])
        rows = []
        for message in messages:
            for channel in self.channels:
                status, tried = state.get((message.key, channel.name), ("", 0))
                if status == "sent" or (status and not resend):
                    outcome.duplicate += 1  # sent already, or queued for retry_pending
                    continue
                if not self._allowed(channel.name):
                    outcome.deferred += 1
                    rows.append((message, channel.name, "deferred", tried, "rate limit"))
                else:
                    ok, attempts, error = self._deliver(channel, message)
                    if ok:
                        outcome.sent += 1
                        rows.append((message, channel.name, "sent", tried + attempts, ""))
                    else:
                        outcome.failed += 1
                        outcome.errors.append(error)
                        rows.append((message, channel.name, "failed", tried + attempts, error))
                state[(message.key, channel.name)] = (rows[-1][2], rows[-1][3])  # a repeat in this batch is a duplicate
        self._save(rows)
        return outcome

    def retry_pending(self) -> Outcome:
        """Send deferred and failed messages again (those not past `max_total_attempts`)."""
        result = self.store.query(
            "SELECT key, argMax(payload, version), argMax(status, version) AS s, argMax(attempts, version) AS n "
            "FROM notifications GROUP BY key, channel HAVING s IN ('deferred', 'failed') AND n < {max:UInt16} "
            "ORDER BY key", {"max": self.max_total_attempts})
        messages = {key: Message.from_json(orjson.loads(payload)) for key, payload, _, _ in result.rows}
        return self.send(list(messages.values()), resend=True)


def level_message(change: Any, at_ms: int) -> Message:
    """A warning-level change (early_warning.Change) as a message."""
    doc = change.as_json()
    raised = change.level and (not change.previous or change.level < change.previous)
    verb = "raised to" if raised else ("lifted" if not change.level else "lowered to")
    title = (f"预警 {doc['scope']}: {verb} {doc['level_name']}" if change.level
             else f"预警 {doc['scope']}: warning lifted (was {doc['previous_name']})")
    text = "; ".join(r["detail"] for r in doc["reasons"][:5]) or "no trigger fires any more"
    severity = {1: 10, 2: 8, 3: 6, 4: 4}.get(change.level, 2)
    return Message(f"level:{change.scope}:{change.level}:{at_ms}", "warning_level", title, text, severity, at_ms, doc)


def incident_message(incident: Any, at_ms: int) -> Message:
    severity = {"critical": 10, "high": 8}.get(incident.severity, 5)
    return Message(f"incident:{incident.incident_id}:{incident.severity}", "incident",
                   f"{incident.severity} incident: {incident.title}",
                   f"{incident.severity} incident {incident.incident_id} in {', '.join(incident.org_units) or '-'}, "
                   f"assets {', '.join(incident.assets) or '-'}, {incident.alert_count} alerts",
                   severity, at_ms, {"incident_id": incident.incident_id, "severity": incident.severity,
                                     "org_units": incident.org_units, "assets": incident.assets,
                                     "rule_ids": incident.rule_ids})
