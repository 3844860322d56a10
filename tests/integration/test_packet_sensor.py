"""The packet sensor end to end on the real engines: real pcaps through a Kafka broker into a ClickHouse
server — every flow and protocol event stored once, queryable by the columns the rules use."""

from __future__ import annotations

import glob

import pytest

from pipeline.writer import Writer
from sensors.packet.capture import read_file
from sensors.packet.sensor import PacketSensor
from tests.conftest import SHARED_DATA
from tests.integration.test_kafka_clickhouse import _stored_ids, _write_until
from tests.integration.test_log_sensors import TeeSink

PCAPS = SHARED_DATA / "pcaps" / "suricata-verify" / "tests"


@pytest.mark.skipif(not PCAPS.is_dir(), reason="needs ../shared/data/pcaps")
def test_pcaps_through_kafka_into_clickhouse(kafka_bus, server_store, unique_name) -> None:  # type: ignore[no-untyped-def]
    sink = TeeSink(kafka_bus)
    pcaps = sorted(glob.glob(str(PCAPS / "dns" / "**" / "*.pcap"), recursive=True))
    pcaps += sorted(glob.glob(str(PCAPS / "tls" / "**" / "*.pcap"), recursive=True))
    pcaps += sorted(glob.glob(str(PCAPS / "http-*" / "*.pcap")))[:20]
    assert len(pcaps) > 30
    for path in pcaps:
        PacketSensor(sink, sensor="it-packet", origin=path).run(read_file(path))
    published = sink.seen.events
    kinds = {e["source_type"] for e in published}
    assert {"packet_conn", "packet_dns", "packet_http", "packet_tls", "sensor_health"} <= kinds
    # identical packets (suricata-verify copies some pcaps between tests) make identical events, stored once
    expected = {e["event_id"] for e in published}
    writer = Writer(kafka_bus, server_store, group=unique_name)
    _write_until(writer, server_store, len(expected))
    ids = _stored_ids(server_store)
    assert len(ids) == len(set(ids)) and set(ids) == expected
    rows = server_store.query(
        "SELECT source_type, count(), countIf(extra['community_id'] != '') FROM events "
        "WHERE sensor = 'it-packet' GROUP BY source_type ORDER BY source_type").rows
    by_type = {r[0]: (r[1], r[2]) for r in rows}
    assert by_type["packet_conn"][0] == by_type["packet_conn"][1] > 0
    sni = server_store.query("SELECT count() FROM events WHERE source_type = 'packet_tls' AND tls_sni != '' "
                             "AND length(tls_ja4) = 36").scalar()
    assert sni > 0
    joined = server_store.query(
        "SELECT count() FROM events d JOIN events c ON d.extra['community_id'] = c.extra['community_id'] "
        "WHERE d.source_type = 'packet_dns' AND c.source_type = 'packet_conn' AND d.src_ip = c.src_ip").scalar()
    assert joined > 0
