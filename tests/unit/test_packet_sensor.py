"""Packet sensor decoders, flows and application parsers on packets built with scapy."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.utils import PcapNgWriter, wrpcap

from sensors.packet.capture import LINKTYPE_ETHERNET, PAD, Batch, CaptureError, read_file
from sensors.packet.flows import conn_state
from sensors.packet.sensor import PacketSensor
from sensors.packet.stream import Stream
from sensors.sink import ListSink

C, S = "10.1.1.10", "10.2.2.20"
T0 = 1_700_000_000.0


def _run(packets, tmp_path: Path | None = None, pcapng: bool = False) -> tuple[list[dict], PacketSensor]:
    for i, p in enumerate(packets):
        p.time = T0 + i * 0.01
    sink = ListSink()
    sensor = PacketSensor(sink, origin="test")
    if tmp_path is not None:
        path = tmp_path / ("t.pcapng" if pcapng else "t.pcap")
        if pcapng:
            with PcapNgWriter(str(path)) as w:
                for p in packets:
                    w.write(p)
        else:
            wrpcap(str(path), packets)
        sensor.run(read_file(path))
    else:
        sensor.run([Batch.pack([(bytes(p), len(p), int(p.time * 1e6)) for p in packets], LINKTYPE_ETHERNET, 1)])
    return sink.events, sensor


def _kind(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["source_type"] == f"packet_{kind}"]


def _http_session(sport: int = 40000, ether=lambda: Ether()) -> list:
    request = b"GET /index.html?q=1 HTTP/1.1\r\nHost: portal.gov.example\r\nUser-Agent: curl/8.0\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello"
    c, s = 1000, 5000

    def pkt(src, dst, sp, dp, flags, seq, ack, data=b""):
        return ether() / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack) / data

    return [
        pkt(C, S, sport, 80, "S", c, 0),
        pkt(S, C, 80, sport, "SA", s, c + 1),
        pkt(C, S, sport, 80, "A", c + 1, s + 1),
        # the request in two segments, the second one first
        pkt(C, S, sport, 80, "PA", c + 1 + 20, s + 1, request[20:]),
        pkt(C, S, sport, 80, "PA", c + 1, s + 1, request[:20]),
        pkt(S, C, 80, sport, "PA", s + 1, c + 1 + len(request), response),
        pkt(C, S, sport, 80, "FA", c + 1 + len(request), s + 1 + len(response)),
        pkt(S, C, 80, sport, "FA", s + 1 + len(response), c + 2 + len(request)),
        pkt(C, S, sport, 80, "A", c + 2 + len(request), s + 2 + len(response)),
    ]


def test_http_over_reordered_segments_and_the_flow_record(tmp_path: Path) -> None:
    events, _sensor = _run(_http_session(), tmp_path)
    [http] = _kind(events, "http")
    assert (http["http_method"], http["http_host"], http["http_uri"]) == ("GET", "portal.gov.example",
                                                                          "/index.html?q=1")
    assert (http["http_status"], http["http_user_agent"]) == (200, "curl/8.0")
    assert http["extra"]["resp_mime_types"] == "text/html" and http["extra"]["response_body_len"] == "5"
    [conn] = _kind(events, "conn")
    assert (conn["src_ip"], conn["dst_ip"], conn["dst_port"], conn["conn_state"]) == (C, S, 80, "SF")
    assert (conn["packets_out"], conn["packets_in"], conn["app_protocol"]) == (6, 3, "http")
    assert conn["bytes_in"] == len(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                                   b"Content-Length: 5\r\n\r\nhello")
    assert conn["extra"]["community_id"] == http["extra"]["community_id"]
    assert events[-1]["source_type"] == "sensor_health" and events[-1]["extra"]["packets"] == "9"


def test_vlan_and_qinq_tags_are_kept_and_separate_flows() -> None:
    single = _http_session(40001, lambda: Ether() / Dot1Q(vlan=100))
    double = _http_session(40001, lambda: Ether() / Dot1AD(vlan=200) / Dot1Q(vlan=300))
    events, _ = _run(single + double)
    conns = sorted(_kind(events, "conn"), key=lambda e: e["extra"]["vlan"])
    assert [(c["extra"]["vlan"], c["extra"].get("inner_vlan")) for c in conns] == [("100", None), ("200", "300")]
    assert len(_kind(events, "http")) == 2


def test_linux_cooked_capture_and_pcapng(tmp_path: Path) -> None:
    cooked = [CookedLinux(proto=0x0800) / p[IP] for p in _http_session()]
    events, _ = _run(cooked, tmp_path)
    assert len(_kind(events, "http")) == 1
    events, _ = _run(_http_session(), tmp_path, pcapng=True)
    assert _kind(events, "conn")[0]["conn_state"] == "SF"


def _dns_pair(qname: str = "update.example.cn", tid: int = 7) -> list:
    query = IP(src=C, dst="10.0.0.53") / UDP(sport=53001, dport=53) / DNS(id=tid, rd=1, qd=DNSQR(qname=qname))
    answer = IP(src="10.0.0.53", dst=C) / UDP(sport=53, dport=53001) / DNS(
        id=tid, qr=1, rd=1, ra=1, qd=DNSQR(qname=qname),
        an=[DNSRR(rrname=qname, type="CNAME", ttl=60, rdata="cdn." + qname),
            DNSRR(rrname="cdn." + qname, type="A", ttl=30, rdata="198.51.100.7")])
    return [Ether() / query, Ether() / answer]


def test_dns_transaction_with_answers() -> None:
    events, _ = _run(_dns_pair())
    [dns] = _kind(events, "dns")
    assert (dns["dns_query"], dns["dns_qtype"], dns["dns_rcode"]) == ("update.example.cn", "A", "NOERROR")
    assert list(dns["dns_answers"]) == ["cdn.update.example.cn", "198.51.100.7"]
    assert dns["extra"]["TTLs"] == "60,30" and dns["extra"]["trans_id"] == "7"
    assert (dns["src_ip"], dns["dst_port"]) == (C, 53)


def test_ipv4_fragments_are_reassembled() -> None:
    big = IP(src=C, dst="10.0.0.53") / UDP(sport=53002, dport=53) / DNS(
        id=9, qd=DNSQR(qname="a" * 60 + ".example.org"), ar=DNSRR(rrname="x", type="TXT", rdata="y" * 900))
    frags = fragment(big, fragsize=256)
    assert len(frags) > 2
    random.Random(1).shuffle(frags)
    events, sensor = _run([Ether() / f for f in frags])
    [dns] = _kind(events, "dns")
    assert dns["dns_query"] == "a" * 60 + ".example.org"
    assert sensor.decoder.stats.reassembled == 1 and sensor.decoder.stats.fragments == len(frags)


def test_ipv6_extension_headers_and_fragments() -> None:
    src, dst = "2001:db8::10", "2001:db8::53"
    ext = Ether() / IPv6(src=src, dst=dst) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(
        sport=53003, dport=53) / DNS(id=3, qd=DNSQR(qname="v6.example.net"))
    frag = IPv6(src=src, dst=dst) / IPv6ExtHdrFragment() / UDP(sport=53004, dport=53) / DNS(
        id=4, qd=DNSQR(qname="b" * 50 + ".example.net"), ar=DNSRR(rrname="x", type="TXT", rdata="z" * 600))
    from scapy.layers.inet6 import fragment6

    pieces = [Ether() / p for p in fragment6(frag, 300)]
    events, sensor = _run([ext, *pieces])
    names = sorted(e["dns_query"] for e in _kind(events, "dns"))
    assert names == ["b" * 50 + ".example.net", "v6.example.net"]
    assert all(e["src_ip"] == src for e in _kind(events, "dns"))
    assert sensor.decoder.stats.reassembled == 1


def test_icmp_echo_and_reply_are_one_flow() -> None:
    events, _ = _run([Ether() / IP(src=C, dst=S) / ICMP(type=8, id=1), Ether() / IP(src=S, dst=C) / ICMP(type=0, id=1)])
    [conn] = _kind(events, "conn")
    assert (conn["protocol"], conn["src_ip"], conn["src_port"], conn["packets_out"], conn["packets_in"]) == (
        "icmp", C, 8, 1, 1)
    assert conn["extra"]["icmp_type"] == "8"


def test_originator_is_the_client_even_if_the_syn_ack_comes_first() -> None:
    packets = [Ether() / IP(src=S, dst=C) / TCP(sport=443, dport=51000, flags="SA"),
               Ether() / IP(src=C, dst=S) / TCP(sport=51000, dport=443, flags="A")]
    [conn] = _kind(_run(packets)[0], "conn")
    assert (conn["src_ip"], conn["dst_port"]) == (C, 443)


@pytest.mark.parametrize(("flags", "state"), [
    (["S"], "S0"), (["S", "RA<"], "REJ"), (["S", "SA<", "A", "R"], "RSTO"), (["S", "SA<", "A", "R<"], "RSTR"),
    (["S", "SA<", "A"], "S1"), (["S", "SA<", "A", "F", "F<"], "SF"), (["A", "A<"], "OTH"), (["S", "R"], "RSTOS0"),
    (["S", "SA<", "A", "F"], "S2"), (["S", "SA<", "A", "F<"], "S3"), (["S", "F"], "SH"),
])
def test_conn_state(flags: list[str], state: str) -> None:
    packets = []
    for f in flags:
        back = f.endswith("<")
        f = f.rstrip("<")
        packets.append(Ether() / IP(src=S if back else C, dst=C if back else S) / TCP(
            sport=80 if back else 52000, dport=52000 if back else 80, flags=f))
    [conn] = _kind(_run(packets)[0], "conn")
    assert conn["conn_state"] == state


def test_conn_state_udp() -> None:
    assert conn_state(17, 0, 0, 0, 0, 1, 1) == "SF" and conn_state(17, 0, 0, 0, 0, 1, 0) == "S0"


def test_stream_reassembles_out_of_order_and_overlapping_segments() -> None:
    s = Stream()
    s.syn(99)
    assert s.add(106, b"world") == b""
    assert s.add(100, b"hello ") == b"hello world"
    assert s.add(108, b"rld!!") == b"!!"  # retransmitted overlap: only the new bytes
    assert s.add(50, b"old") == b""


def test_truncated_and_garbage_packets_are_counted_never_raised() -> None:
    good = [bytes(p) for p in _http_session() + _dns_pair()]
    rng = random.Random(7)
    packets = []
    for _ in range(3000):
        data = bytearray(rng.choice(good))
        cut = rng.randrange(len(data) + 1)
        data = data[:cut]
        for _ in range(rng.randrange(4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        packets.append((bytes(data), len(data), 1_700_000_000_000_000 + len(packets)))
    sink = ListSink()
    sensor = PacketSensor(sink)
    sensor.run([Batch.pack(packets[i:i + 500], LINKTYPE_ETHERNET, i + 1) for i in range(0, len(packets), 500)])
    stats = sensor.decoder.stats
    assert stats.packets == 3000
    assert stats.errors["truncated_tcp"] > 0 and stats.errors["truncated_ip"] > 0
    assert sink.events[-1]["source_type"] == "sensor_health"
    assert "app_parser_bug" not in stats.errors


def test_not_a_capture_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"hello world, not a pcap")
    with pytest.raises(CaptureError, match="not a pcap"):
        read_file(bad)


def test_cut_short_file_keeps_the_complete_packets(tmp_path: Path) -> None:
    path = tmp_path / "t.pcap"
    wrpcap(str(path), _http_session())
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    sink = ListSink()
    sensor = PacketSensor(sink)
    sensor.run(read_file(path))
    assert sensor.decoder.stats.packets == 8


def test_packet_events_are_already_canonical() -> None:
    """The sensor builds events without pipeline.schema.normalize (speed); they must be what it would make."""
    from pipeline.schema import normalize

    events, _ = _run(_http_session() + _dns_pair() + [Ether() / IP(src=C, dst=S) / ICMP(type=8)])
    assert {e["source_type"] for e in events} >= {"packet_conn", "packet_http", "packet_dns"}
    for event in events:
        assert normalize(dict(event)) == event


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_reader_both_byte_orders_and_resolutions_across_batches(tmp_path: Path, endian: str, nano: bool) -> None:
    """The mapped reader against scapy's, in batches of 3 (so batch ends fall everywhere, the last one padded)."""
    import struct

    from scapy.utils import rdpcap

    frames = [bytes(p) for p in _http_session() + _dns_pair()]
    path = tmp_path / "t.pcap"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    with path.open("wb") as f:
        f.write(struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        for i, frame in enumerate(frames):
            frac = 123_456_789 if nano else 123_456
            f.write(struct.pack(endian + "IIII", 1_700_000_000 + i, frac, len(frame), len(frame) + i) + frame)
    batches = list(read_file(path, batch_packets=3))
    assert [len(b) for b in batches] == [3, 3, 3, 2]
    got = [(b.data[o:o + c], w, t) for b in batches
           for o, c, w, t in zip(b.off.tolist(), b.caplen.tolist(), b.wirelen.tolist(), b.ts_us.tolist(), strict=True)]
    assert [g[0] for g in got] == [bytes(p) for p in rdpcap(str(path))] == frames
    assert [g[1] for g in got] == [len(f) + i for i, f in enumerate(frames)]
    assert [g[2] for g in got] == [(1_700_000_000 + i) * 1_000_000 + 123_456 for i in range(len(frames))]
    assert batches[-1].data[-PAD:] == bytes(PAD)


def test_flow_table_under_churn_matches_a_reference() -> None:
    """Many more flows than the table's first capacity, released and reopened between batches: every packet
    lands in its own flow's counters, slots and index entries are reused, nothing is lost."""
    from sensors.packet.decode import Packets
    from sensors.packet.flows import FlowTable

    rng = np.random.default_rng(7)
    table = FlowTable(capacity=8)
    reference: dict[tuple, list[int]] = {}
    peak = 0
    for _round in range(6):
        n = 5000
        a, b = rng.integers(1, 300, n).astype(np.uint64), rng.integers(1, 300, n).astype(np.uint64)
        sport, dport = rng.integers(1, 5, n), rng.integers(1, 5, n)
        size = rng.integers(0, 1500, n)
        zero = np.zeros(n, dtype=np.int64)
        p = Packets(b"", np.arange(n), np.arange(n) + 1, np.arange(n) * 10, size + 40, zero, zero, np.full(n, 17),
                    np.zeros(n, dtype=np.uint64), a, np.zeros(n, dtype=np.uint64), b, sport, dport,
                    np.zeros(n, dtype=bool), zero, zero, size + 28, size, zero, size)
        acc = table.account(p)
        for i in range(n):
            ends = sorted([(int(a[i]), int(sport[i])), (int(b[i]), int(dport[i]))])
            reference.setdefault(tuple(ends), [0, 0])
            reference[tuple(ends)][0] += 1
            reference[tuple(ends)][1] += int(size[i])
        slots = table.all_active()
        assert len(slots) == table.active_count == len(reference)
        peak = max(peak, len(slots))
        for flow in table.records(slots):
            key = tuple(sorted([(int(flow["orig"][1]), flow["orig"][2]), (int(flow["resp"][1]), flow["resp"][2])]))
            assert [sum(flow["pkts"]), sum(flow["bytes"])] == reference[key]
        assert len(np.unique(acc.slot)) == len({tuple(sorted([(int(a[i]), int(sport[i])), (int(b[i]), int(dport[i]))]))
                                                for i in range(n)})
        # close half of the flows: their slots and index entries are reused by the next round
        done = slots[rng.random(len(slots)) < 0.5]
        for flow in table.records(done):
            del reference[tuple(sorted([(int(flow["orig"][1]), flow["orig"][2]),
                                        (int(flow["resp"][1]), flow["resp"][2])]))]
        table.release(done)
    assert table.size == peak  # freed slots are taken before new ones


def test_conn_events_built_from_columns_equal_the_generic_event_factory() -> None:
    """`EventFactory.conns` (the per-flow hot path) against `make("conn", ...)` on the same flows: TCP with
    flags, UDP, ICMP (ports are type/code), VLAN-tagged, a flow with no reply (zero counters dropped)."""
    from sensors.packet.events import EventFactory, community_id
    from sensors.packet.flows import conn_state

    packets = (_http_session() + _dns_pair() + [Ether() / IP(src=C, dst=S) / ICMP(type=8),
                                                Ether() / IP(src=S, dst=C) / ICMP(type=0),
                                                Ether() / Dot1Q(vlan=12) / IP(src=C, dst=S) / UDP(sport=5, dport=9)])
    for i, p in enumerate(packets):
        p.time = T0 + i * 0.01
    sensor = PacketSensor(ListSink(), origin="test", metadata=False)
    sensor.process(Batch.pack([(bytes(p), len(p), int(p.time * 1e6)) for p in packets], LINKTYPE_ETHERNET, 1))
    slots = sensor.flows.all_active()
    factory = EventFactory("s", "o")
    n = len(slots)
    fast = factory.conns(sensor.flows.columns(slots), ["http"] + [""] * (n - 1), ["inactive"] * n, [""] * n)
    reference = []
    for i, f in enumerate(sensor.flows.records(slots)):
        extra = {"orig_ip_bytes": str(f["ip_bytes"][0]), "resp_ip_bytes": str(f["ip_bytes"][1]),
                 "flow_end_reason": "inactive"}
        if f["tcp_flags"][0] or f["tcp_flags"][1]:
            extra.update(tcp_flags_ts=f"{f['tcp_flags'][0]:02x}", tcp_flags_tc=f"{f['tcp_flags'][1]:02x}")
        if f["proto"] in (1, 58):
            extra.update(icmp_type=str(f["orig"][2]), icmp_code=str(f["resp"][2]))
        fields = {"duration": (f["last_us"] - f["first_us"]) / 1e6, "bytes_out": f["bytes"][0],
                  "bytes_in": f["bytes"][1], "packets_out": f["pkts"][0], "packets_in": f["pkts"][1],
                  "conn_state": conn_state(f["proto"], *f["marks"], *f["bytes"], *f["pkts"]),
                  "app_protocol": "http" if i == 0 else "", "extra": extra}
        cid = community_id(f["orig"], f["resp"], f["proto"])
        reference.append(factory.make("conn", f["first_us"], f, cid, fields, f["first_number"]))
    assert n == 4
    assert fast == reference
    assert {e["protocol"] for e in fast} == {"tcp", "udp", "icmp"}
    assert any(e["extra"].get("vlan") == "12" for e in fast)


@pytest.mark.parametrize("linktype", [1, 113, 276, 0, 101])
def test_compiled_header_decoder_reads_only_inside_the_batch(linktype: int) -> None:
    """The compiled decoder does not check bounds; its Python source does (numpy indexing raises). Run both on
    mutated and cut packets of every framing the decoder reads itself: same answers, no read past the buffer."""
    from sensors.packet.decode import _REPLY_TO_REQUEST, _headers

    ip = [bytes(p[IP]) for p in _http_session() + _dns_pair() + [Ether() / IP(src=C, dst=S) / ICMP(type=0)]]
    ip += [bytes(IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP() / b"x"),
           bytes(IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrFragment(offset=0, m=1) / UDP() / (b"x" * 40))]
    framing = {1: lambda b: bytes(Ether() / Dot1Q(vlan=5)) + b if b[0] >> 4 == 4 else bytes(
                   Ether(type=0x86DD))[:14] + b,
               113: lambda b: bytes(14) + (b"\x08\x00" if b[0] >> 4 == 4 else b"\x86\xdd") + b,
               276: lambda b: (b"\x08\x00" if b[0] >> 4 == 4 else b"\x86\xdd") + bytes(18) + b,
               0: lambda b: (b"\x02" if b[0] >> 4 == 4 else b"\x1e") + bytes(3) + b,
               101: lambda b: b}[linktype]
    rng = random.Random(linktype)
    packets = []
    for _ in range(2000):
        data = bytearray(framing(rng.choice(ip)))
        for _ in range(rng.randrange(6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[:rng.randrange(len(data) + 1)]
        packets.append((bytes(data), len(data), 0))
    batch = Batch.pack(packets, linktype, 1)
    zero = np.zeros(0, dtype=np.int64)
    args = (batch.buf, batch.off, batch.caplen, linktype, False, zero, zero, _REPLY_TO_REQUEST)
    compiled, checked = _headers(*args), _headers.py_func(*args)
    for a, b in zip(compiled, checked, strict=True):
        assert np.array_equal(a, b)
    assert len(set(compiled[0].tolist())) > 4  # the mutations reached several outcomes, not one
