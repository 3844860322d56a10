"""Live capture for real: a veth pair made for the test, packets sent by scapy on one end, captured on the other."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid

import pytest
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.sendrecv import sendp

from sensors.packet.capture import LiveCapture, LiveOptions
from sensors.packet.sensor import PacketSensor
from sensors.sink import ListSink


@pytest.fixture
def veth():
    a, b = f"gzA{uuid.uuid4().hex[:8]}", f"gzB{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], capture_output=True, text=True)
    if made.returncode != 0 or os.geteuid() != 0:
        pytest.skip(f"cannot create a veth pair here (needs root and CAP_NET_ADMIN): {made.stderr.strip()}")
    try:
        for name in (a, b):
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
        time.sleep(0.2)
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)


def test_live_capture_on_a_veth_pair(veth: tuple[str, str]) -> None:
    send_on, capture_on = veth
    capture = LiveCapture(LiveOptions(capture_on, bpf="udp port 53 or tcp port 8080", batch_seconds=0.1))
    sink = ListSink()
    sensor = PacketSensor(sink, origin=capture_on, drops=capture.kernel_drops)
    stop = threading.Event()
    worker = threading.Thread(target=sensor.run, args=(capture.batches(stop),))
    worker.start()
    try:
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        packets = [eth / IP(src="10.9.0.1", dst="10.9.0.53") / UDP(sport=40000 + i, dport=53) /
                   DNS(id=i, qd=DNSQR(qname=f"host{i}.live.example")) for i in range(5)]
        packets += [eth / IP(src="10.9.0.1", dst="10.9.0.80") / TCP(sport=41000, dport=8080, flags="S"),
                    eth / IP(src="10.9.0.1", dst="10.9.0.80") / TCP(sport=41000, dport=22, flags="S")]  # filtered
        time.sleep(0.3)
        sendp(packets, iface=send_on, verbose=False)
        deadline = time.monotonic() + 10
        while sensor.decoder.stats.packets < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(10)
        capture.close()
    names = sorted(e["dns_query"] for e in sink.events if e["source_type"] == "packet_dns")
    assert names == [f"host{i}.live.example" for i in range(5)]
    conns = [e for e in sink.events if e["source_type"] == "packet_conn"]
    assert {c["dst_port"] for c in conns} == {53, 8080}  # the BPF filter kept port 22 out
    assert [c["conn_state"] for c in conns if c["dst_port"] == 8080] == ["S0"]
    health = sink.events[-1]
    assert health["source_type"] == "sensor_health" and health["extra"]["packets"] == "6"
