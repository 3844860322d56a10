"""Message parsers for authentication logs carried by syslog: OpenSSH `sshd`, `sudo`, `su` and PAM.

Each message kind sets `action`: success (accepted login, session opened, sudo command run), failure
(failed password/key, PAM authentication failure, too many attempts, sudo wrong password),
invalid_user (sshd names an unknown account; a failed attempt for it is logged separately as failure),
disconnect, probe (no/garbled SSH banner), failure_summary (PAM's "N more authentication failures").
Note that with UsePAM an attempt can be logged both by sshd
("Failed password") and by pam_unix ("authentication failure"); both are failures, so per-attempt counts
on such hosts are up to twice the attempts.
"""

from __future__ import annotations

import re
from typing import Any

_IP = r"(?P<ip>[0-9a-fA-F.:]*[0-9a-fA-F])"
_PORT = r"(?: port (?P<port>\d+))?"
SSHD = [
    (re.compile(rf"^Accepted (?P<method>\S+) for (?P<user>.+?) from {_IP}{_PORT}"), "success"),
    (re.compile(rf"^Failed (?P<method>\S+) for (?P<invalid>invalid user )?(?P<user>.*?) from {_IP}{_PORT}"),
     "failure"),
    (re.compile(rf"^error: maximum authentication attempts exceeded for (?P<invalid>invalid user )?(?P<user>.*?) "
                rf"from {_IP}{_PORT}"), "failure"),
    (re.compile(rf"^Invalid user (?P<user>.*?) from {_IP}{_PORT}"), "invalid_user"),
    (re.compile(r"^input_userauth_request: invalid user (?P<user>.*?)(?: \[preauth\])?$"), "invalid_user"),
    (re.compile(rf"^(?:error: )?PAM: [Aa]uthentication failure for (?P<invalid>illegal user )?(?P<user>.*?) "
                rf"from {_IP}"), "failure"),
    (re.compile(rf"^Connection closed by (?:authenticating user (?P<user>\S+) |invalid user (?P<user2>\S*) )?{_IP}"
                rf"{_PORT}"), "disconnect"),
    (re.compile(rf"^Disconnected from (?:authenticating |invalid )?(?:user (?P<user>\S+) )?{_IP}{_PORT}"),
     "disconnect"),
    (re.compile(rf"^Received disconnect from {_IP}{_PORT}"), "disconnect"),
    (re.compile(rf"^Connection reset by (?:authenticating user (?P<user>\S+) )?{_IP}{_PORT}"), "disconnect"),
    (re.compile(rf"^Did not receive identification string from {_IP}{_PORT}"), "probe"),
    (re.compile(rf"^Bad protocol version identification .* from {_IP}{_PORT}"), "probe"),
    (re.compile(rf"^reverse mapping checking getaddrinfo for (?P<rhost>\S+) \[{_IP}\] failed"), "dns_mismatch"),
    (re.compile(rf"^Address {_IP} maps to (?P<rhost>\S+), but this does not map back"), "dns_mismatch"),
    (re.compile(rf"^(?:fatal: )?Unable to negotiate with {_IP}{_PORT}"), "failure_negotiation"),
    (re.compile(rf"^Connection from {_IP}{_PORT}"), "connect"),
]
_PAM = re.compile(r"^(?:pam_unix\((?P<svc>[\w-]+):(?P<kind>\w+)\): )?(?P<what>authentication failure|"
                  r"session opened|session closed|check pass; user unknown|PAM \d+ more authentication failures?)"
                  r"(?P<rest>.*)$")
_KV = re.compile(r"(\w+)=(\S*)")
_SESSION_USER = re.compile(r"for user (\S+?)(?:\(uid=\d+\))?(?: by|$|\s)")
_SUDO = re.compile(r"^\s*(?P<user>\S+) : (?:(?P<fail>\d+ incorrect password attempts?|user NOT in sudoers|"
                   r"command not allowed) ; )?(?P<kv>TTY=.*)$")


def _pam(message: str, record: dict[str, Any], extra: dict[str, str]) -> bool:
    m = _PAM.match(message)
    if not m:
        return False
    what = m.group("what")
    if m.group("svc"):
        extra["pam_service"] = m.group("svc")
    if what.startswith("session"):
        record["action"] = "session_opened" if what == "session opened" else "session_closed"
        um = _SESSION_USER.search(m.group("rest"))
        if um:
            record["user_name"] = um.group(1)
        return True
    # "PAM 2 more authentication failures" sums up attempts already logged one by one
    record["action"] = "failure_summary" if "more" in what else "failure" if "failure" in what else "invalid_user"
    extra["auth_method"] = "pam"
    for key, value in _KV.findall(m.group("rest")):
        if not value:
            continue
        if key == "rhost":
            if value.replace(".", "").isdigit() or ":" in value:
                record["src_ip"] = value
            else:
                extra["rhost"] = value
        elif key == "user":
            record["user_name"] = value
        else:
            extra[key] = value
    return True


def parse_sshd(program: str, message: str, record: dict[str, Any], extra: dict[str, str]) -> str | None:
    """sshd messages -> auth events (source_type `sshd`)."""
    if not program.startswith("sshd"):
        return None
    record["event_category"] = "auth"
    record["app_protocol"] = "ssh"
    text = message.strip()
    for pattern, action in SSHD:
        m = pattern.match(text)
        if m:
            g = m.groupdict()
            record["action"] = action
            user = g.get("user") or g.get("user2")
            if user:
                record["user_name"] = user
            if g.get("ip"):
                record["src_ip"] = g["ip"]
            if g.get("port"):
                record["src_port"] = int(g["port"])
            if g.get("method"):
                extra["auth_method"] = g["method"]
            if g.get("invalid"):
                extra["invalid_user"] = "true"
            if g.get("rhost"):
                extra["rhost"] = g["rhost"]
            return "sshd"
    _pam(text, record, extra)
    return "sshd"


def parse_linux_auth(program: str, message: str, record: dict[str, Any], extra: dict[str, str]) -> str | None:
    """sudo, su, login and other PAM users -> auth events (source_type `linux_auth`)."""
    base = program.split("(", 1)[0]
    if base not in ("sudo", "su", "login", "passwd", "systemd-logind", "polkitd", "pkexec", "unix_chkpwd") and \
            not message.lstrip().startswith("pam_unix("):
        return None
    text = message.strip()
    if base == "sudo":
        m = _SUDO.match(text)
        if m:
            record["user_name"] = m.group("user")
            record["action"] = "failure" if m.group("fail") else "success"
            if m.group("fail"):
                extra["failure"] = m.group("fail")
            for part in m.group("kv").split(" ; "):
                key, _, value = part.partition("=")
                if key == "COMMAND":
                    record["process_command_line"] = value
                elif key:
                    extra[f"sudo_{key.lower()}"] = value
            record["event_category"] = "auth"
            return "linux_auth"
    if base == "su":
        m = re.match(r"^(?:FAILED SU|FAILED su for (?P<target>\S+) by (?P<user>\S+))", text)
        if m:
            record["action"] = "failure"
            if m.group("user"):
                record["user_name"] = m.group("user")
                extra["target_user"] = m.group("target")
            record["event_category"] = "auth"
            return "linux_auth"
    if _pam(text, record, extra):
        record["event_category"] = "auth"
        return "linux_auth"
    return None
