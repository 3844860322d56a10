"""Regenerates extranet-sample.jsonl: a small, seeded slice of a district extranet's normalized events.

Background DNS, web, TLS and SSH from three departments, an SSH password-guessing burst from outside,
and one malformed line (to show that bad input is dead-lettered, not dropped).
Run: python deploy/samples/make_sample.py > deploy/samples/extranet-sample.jsonl
"""

from __future__ import annotations

import random
import sys

import orjson

START_MS = 1_714_550_400_000  # 2024-05-01T08:00:00Z
rng = random.Random(20240501)
departments = {"10.10.1": "民政局", "10.10.2": "卫健委", "10.20.5": "街道办/东湖街道"}
domains = ["www.gov.cn", "mail.district.gov.cn", "oa.district.gov.cn", "updates.microsoft.com", "api.weixin.qq.com"]


def emit(offset_ms: int, **fields: object) -> None:
    record = {"ts": START_MS + offset_ms, "sensor": fields.pop("sensor", "edge-1"), **fields}
    sys.stdout.buffer.write(orjson.dumps(record) + b"\n")


for i in range(360):
    t = i * 10_000 + rng.randrange(10_000)
    net = rng.choice(list(departments))
    host = f"{net}.{rng.randrange(10, 200)}"
    kind = rng.random()
    if kind < 0.45:
        q = rng.choice(domains)
        emit(t, source_type="zeek_dns", event_category="dns", action="query", src_ip=host,
             src_port=rng.randrange(20000, 60000), dst_ip="10.0.0.53", dst_port=53, protocol="udp",
             app_protocol="dns", dns_query=q, dns_qtype="A", dns_rcode="NOERROR", dns_answers=["203.0.113.10"])
    elif kind < 0.75:
        emit(t, source_type="nginx_access", event_category="http", action="request", src_ip=host,
             dst_ip="10.30.0.8", dst_port=443, protocol="tcp", app_protocol="http", http_method="GET",
             http_host="oa.district.gov.cn", http_uri=rng.choice(["/", "/notice/list", "/login", "/doc/2024-17"]),
             http_status=rng.choice([200, 200, 200, 304, 404]), http_user_agent="Mozilla/5.0 (Windows NT 10.0)",
             bytes_in=rng.randrange(500, 90000), department=departments[net])
    elif kind < 0.95:
        emit(t, source_type="zeek_ssl", event_category="tls", src_ip=host, src_port=rng.randrange(20000, 60000),
             dst_ip="203.0.113.10", dst_port=443, protocol="tcp", app_protocol="tls", tls_sni=rng.choice(domains),
             tls_version="TLSv1.3", tls_cipher="TLS_AES_128_GCM_SHA256")
    else:
        emit(t, source_type="sshd", event_category="auth", action="success", host_name="jump-01",
             src_ip=host, dst_ip="10.30.0.22", dst_port=22, protocol="tcp", app_protocol="ssh",
             user_name="ops", message="Accepted publickey for ops")

# an SSH password-guessing burst from outside against the jump host
for i in range(40):
    user = rng.choice(["root", "admin", "oracle", "test", "ops"])
    emit(1_800_000 + i * 1500, sensor="jump-01", source_type="sshd", event_category="auth", action="failure",
         host_name="jump-01", src_ip="198.51.100.23", src_port=rng.randrange(30000, 60000), dst_ip="10.30.0.22",
         dst_port=22, protocol="tcp", app_protocol="ssh", user_name=user,
         message=f"Failed password for {user} from 198.51.100.23 port 51234 ssh2")

sys.stdout.buffer.write(b'{"ts": "not-a-time", "sensor": "edge-1", "source_type": "zeek_dns"\n')
