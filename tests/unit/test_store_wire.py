"""What the server store puts on the wire: IP columns as the 16 bytes ClickHouse's IPv6 type holds."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from pipeline.schema import normalize
from pipeline.store.server import _ip_bytes

addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)


@given(addresses)
def test_ip_bytes_match_the_driver_s_own_parsing(text: str) -> None:
    canonical = normalize({"ts": 0, "event_id": "e", "sensor": "s", "source_type": "t", "event_category": "c",
                           "src_ip": text}).get("src_ip", "")
    mapped = canonical if ":" in canonical or not canonical else "::ffff:" + canonical
    assert _ip_bytes(canonical) == ipaddress.IPv6Address(mapped or "::").packed


def test_unusual_forms_fall_back_to_the_driver() -> None:
    assert _ip_bytes("") == bytes(16)
    assert _ip_bytes("fe80::1%eth0") == "fe80::1%eth0"  # a zone index: the driver parses it (and drops the zone)
