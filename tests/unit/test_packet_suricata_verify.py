"""The packet sensor against Suricata's expectations on real pcaps (OISF suricata-verify).

Each `test.yaml` lists checks on Suricata's EVE output. A check is comparable when it is about an event type
the sensor also produces (dns, http, tls, ssh, flow) and every field it matches translates to a field the
sensor emits (or is Suricata bookkeeping such as pcap_cnt). For dns/http/tls/ssh a comparable check agrees
when some event of the sensor carries all its values (Suricata logs queries and answers separately, the
sensor one event per transaction, so counts differ by design); for flow checks the number of matching flows
must equal the expected count. The agreement rate is printed and must stay above 95 %.
"""

from __future__ import annotations

import glob
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from sensors.packet.capture import read_file
from sensors.packet.sensor import PacketSensor
from sensors.sink import ListSink

TESTS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pcaps" / "suricata-verify" / "tests"
pytestmark = pytest.mark.skipif(not TESTS.is_dir(), reason=f"{TESTS} is absent (needs ../shared)")

KINDS = {"dns": "packet_dns", "http": "packet_http", "tls": "packet_tls", "ssh": "packet_ssh",
         "flow": "packet_conn"}
IGNORED = {"pcap_cnt", "tx_id", "dns.version", "dns.tx_id", "flow.state", "flow.reason", "flow.alerted", "flow_id",
           "flow.age", "flow.start", "flow.end", "timestamp", "direction", "dns.flags", "dns.qr", "in_iface",
           "flow.bytes_toserver", "flow.bytes_toclient", "app_proto_orig", "app_proto_ts", "app_proto_tc",
           "http.http_port", "tcp.state", "tcp.syn", "tcp.ack", "tcp.fin", "tcp.psh", "tcp.rst", "tcp.tcp_flags",
           "tcp.tcp_flags_ts", "tcp.tcp_flags_tc", "flow.emergency", "flow.wrong_thread", "pkt_src", "dns.z"}
ENDPOINTS = {"src_ip": "dest_ip", "dest_ip": "src_ip", "src_port": "dest_port", "dest_port": "src_port"}
TLS_VERSIONS = {"TLS 1.0": "TLSv10", "TLS 1.1": "TLSv11", "TLS 1.2": "TLSv12", "TLS 1.3": "TLSv13",
                "TLSv1.3": "TLSv13", "SSLv3": "SSLv3", "SSLv2": "SSLv2"}
APP_PROTOS = {"dns": "dns", "http": "http", "http1": "http", "tls": "tls", "ssh": "ssh"}


def _extra_list(e: dict[str, Any], key: str) -> list[str]:
    return e.get("extra", {}).get(key, "").split(",") if e.get("extra", {}).get(key) else []


def _indexed(name: str) -> tuple[str, int] | None:
    if "[" in name and name.endswith("]"):
        base, index = name[:-1].split("[", 1)
        if index.isdigit():
            return base, int(index)
    return None


def _bool_text(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def predicate(name: str, value: Any):
    """A test on one of our events for one EVE field = value, or None when we do not produce that field."""
    simple = {"src_ip": "src_ip", "dest_ip": "dst_ip", "src_port": "src_port", "dest_port": "dst_port",
              "dns.rrname": "dns_query", "dns.queries[0].rrname": "dns_query", "dns.rrtype": "dns_qtype",
              "dns.queries[0].rrtype": "dns_qtype", "dns.rcode": "dns_rcode", "http.hostname": "http_host",
              "http.url": "http_uri", "http.http_method": "http_method", "http.status": "http_status",
              "http.http_user_agent": "http_user_agent", "tls.sni": "tls_sni", "tls.ja3.hash": "tls_ja3",
              "tls.ja4": "tls_ja4", "flow.pkts_toserver": "packets_out", "flow.pkts_toclient": "packets_in",
              "http.http_refer": "http_referrer"}
    if name == "http.hostname":  # Suricata drops the port from the Host header
        return lambda e: re.sub(r":\d+$", "", e.get("http_host", "")) == str(value)
    if name in simple:
        column = simple[name]
        return lambda e: str(e.get(column, "")) == str(value)
    if name == "proto":
        return lambda e: e.get("protocol") == str(value).lower().replace("ipv6-icmp", "icmp6")
    if name == "app_proto":
        if str(value) not in APP_PROTOS:
            return None
        return lambda e: e.get("app_protocol") == APP_PROTOS[str(value)]
    if name == "dns.type":
        if value in ("answer", "response"):
            return lambda e: e.get("action") == "response"
        return lambda e: bool(e.get("dns_query"))
    if name == "dns.id":
        return lambda e: e.get("extra", {}).get("trans_id") == str(value)
    if name in ("dns.opcode",):
        return lambda e: e.get("extra", {}).get("opcode") == str(value)
    if name in ("dns.rd", "dns.ra", "dns.aa", "dns.tc"):
        key = name.split(".")[1].upper()
        return lambda e: e.get("extra", {}).get(key, "false") == _bool_text(value)
    if name.startswith("dns.grouped."):
        return lambda e: str(value) in e.get("dns_answers", ())
    idx = _indexed(name.rsplit(".", 1)[0]) if name.startswith("dns.answers[") else None
    if idx is not None:
        i, leaf = idx[1], name.rsplit(".", 1)[1]
        sources = {"rrname": lambda e: _extra_list(e, "answer_names"),
                   "rrtype": lambda e: _extra_list(e, "answer_types"), "ttl": lambda e: _extra_list(e, "TTLs"),
                   "rdata": lambda e: list(e.get("dns_answers", ()))}
        if leaf not in sources:
            return None
        get = sources[leaf]
        return lambda e: len(get(e)) > i and get(e)[i] == str(value)
    if name == "tls.version":
        if value not in TLS_VERSIONS:
            return None
        return lambda e: e.get("tls_version") == TLS_VERSIONS[value]
    extra = {"tls.ja3.string": "ja3_string", "tls.ja3s.hash": "ja3s", "tls.ja3s.string": "ja3s_string",
             "ssh.client.hassh.hash": "hassh", "ssh.server.hassh.hash": "hasshServer",
             "ssh.client.hassh.string": "hasshString", "ssh.server.hassh.string": "hasshServerString",
             "http.http_content_type": "resp_mime_types", "http.length": "response_body_len"}
    if name in extra:
        key = extra[name]
        if name == "http.http_content_type":
            return lambda e: e.get("extra", {}).get(key, "") == str(value).split(";")[0].strip()
        return lambda e: e.get("extra", {}).get(key) == str(value)
    if name in ("ssh.client.software_version", "ssh.server.software_version"):
        key = name.split(".")[1]
        return lambda e: e.get("extra", {}).get(key, "").split("-", 2)[-1].split(" ")[0] == str(value)
    if name in ("ssh.client.proto_version", "ssh.server.proto_version"):
        key = name.split(".")[1]
        return lambda e: e.get("extra", {}).get(key, "").split("-")[1:2] == [str(value)]
    if name == "http.protocol":
        return lambda e: "HTTP/" + e.get("extra", {}).get("version", "") == str(value)
    return None


def _requires_old(requires: Any) -> bool:
    return isinstance(requires, dict) and "lt-version" in requires


def _pcap_of(test_dir: Path, spec: dict[str, Any]) -> Path | None:
    pcap = spec.get("pcap")
    if pcap is False:
        return None
    if isinstance(pcap, str):
        return (test_dir / pcap).resolve()
    found = sorted(p for p in test_dir.iterdir() if p.suffix in (".pcap", ".pcapng"))
    return found[0] if found else None


def _events(pcap: Path, cache: dict[Path, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    if pcap not in cache:
        sink = ListSink()
        PacketSensor(sink, origin=str(pcap)).run(read_file(pcap))
        cache[pcap] = sink.events
    return cache[pcap]


def compare_all() -> tuple[int, int, list[str], Counter[str]]:
    agreed = comparable = 0
    disagreements: list[str] = []
    skipped: Counter[str] = Counter()
    cache: dict[Path, list[dict[str, Any]]] = {}
    for test_yaml in sorted(glob.glob(str(TESTS / "**" / "test.yaml"), recursive=True)):
        test_dir = Path(test_yaml).parent
        try:
            spec = yaml.safe_load(Path(test_yaml).read_text()) or {}
        except yaml.YAMLError:
            skipped["unreadable test.yaml"] += 1
            continue
        if _requires_old(spec.get("requires")):
            skipped["test for an older Suricata"] += 1
            continue
        pcap = _pcap_of(test_dir, spec)
        if pcap is not None and not pcap.is_file():
            skipped["pcap not in the data set"] += len(spec.get("checks") or [])
            continue
        for check in spec.get("checks") or []:
            flt = check.get("filter") if isinstance(check, dict) else None
            if not flt or flt.get("filename", "eve.json") != "eve.json" or _requires_old(flt.get("requires")):
                skipped["not an eve.json check"] += 1
                continue
            match = flt.get("match") or {}
            kind = KINDS.get(match.get("event_type"))
            count = flt.get("count")
            if kind is None or count == 0 or pcap is None:
                skipped["event type or absence check"] += 1
                continue
            tests, swapped, missing = [], [], []
            for name, value in match.items():
                if name == "event_type" or name in IGNORED:
                    if kind == "packet_conn" and name != "event_type":
                        missing.append(name)  # an unread restriction would make the flow count meaningless
                    continue
                test = predicate(name, value)
                (missing.append(name) if test is None else tests.append(test))
                swapped.append(predicate(ENDPOINTS.get(name, name), value))
            if missing:
                skipped["fields the sensor does not produce"] += 1
                continue
            if kind != "packet_conn" and not tests:
                skipped["nothing to compare"] += 1
                continue
            events = [e for e in _events(pcap, cache) if e["source_type"] == kind]
            # Suricata versions log a DNS answer from either side; the sensor's transaction is client -> server
            either = kind == "packet_dns" and match.get("dns.type") != "query"
            hits = sum(1 for e in events if all(t(e) for t in tests) or (either and all(t(e) for t in swapped)))
            ok = hits == count if kind == "packet_conn" and count is not None else hits > 0
            comparable += 1
            agreed += ok
            if not ok:
                disagreements.append(f"{test_dir.relative_to(TESTS)}: {match} expected {count}, sensor {hits}")
    return agreed, comparable, disagreements, skipped


def test_agreement_with_suricata_verify() -> None:
    agreed, comparable, disagreements, skipped = compare_all()
    rate = agreed / comparable if comparable else 0.0
    print(f"\nsuricata-verify: {agreed}/{comparable} comparable checks agree ({rate:.1%}); not compared: "
          f"{dict(skipped)}")
    for line in disagreements:
        print("  disagrees:", line)
    assert comparable >= 300, "the comparison lost its checks: is ../shared complete?"
    assert rate > 0.95, f"agreement {rate:.1%} <= 95%"


def test_every_pcap_is_processed_without_crashing() -> None:
    """Every pcap under ../shared/data/pcaps is read to its end; decode problems are counted, never raised."""
    pcaps = [Path(p) for p in glob.glob(str(TESTS.parent / "**" / "*"), recursive=True)
             if os.path.isfile(p) and p.endswith((".pcap", ".pcapng"))]
    assert len(pcaps) > 200
    packets = 0
    for pcap in pcaps:
        sink = ListSink()
        sensor = PacketSensor(sink, origin=str(pcap))
        sensor.run(read_file(pcap))
        packets += sensor.decoder.stats.packets
        assert sink.events[-1]["source_type"] == "sensor_health"
    assert packets > 10_000
