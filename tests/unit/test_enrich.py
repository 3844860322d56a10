"""Enrichment: longest-prefix match, the inventory format, IOC loaders and matching, geo, reload."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.enrich import Enricher
from pipeline.enrich.geo import GeoDatabases, GeoError
from pipeline.enrich.inventory import Inventory, InventoryError
from pipeline.enrich.ioc import IocError, load_csv, load_file, load_misp, load_paths, load_stix
from pipeline.enrich.iptable import PrefixTable
from tests.conftest import make_events

INVENTORY_YAML = """
networks:
  - cidr: 10.20.0.0/16
    department: 民政局
    zone: internal
    criticality: 2
  - cidr: 10.20.3.0/24
    street: 东城街道
    committee: 花园社区居委会
  - cidr: 10.20.3.15
    asset: 低保审批系统
    owner: 张伟
    criticality: 4
  - cidr: 10.20.3.128/25
    department: 卫健委
  - cidr: 2001:db8:20::/48
    department: 民政局
    street: 西城街道
    zone: internal
  - cidr: 2001:db8:20:5::/64
    committee: 幸福里居委会
    zone: dmz
  - cidr: 0.0.0.0/0
    zone: external
"""


# -- prefix table ---------------------------------------------------------------------------


def test_most_specific_block_wins_for_ipv4_and_ipv6() -> None:
    table = PrefixTable([("10.0.0.0/8", "a"), ("10.1.0.0/16", "b"), ("10.1.2.0/24", "c"), ("10.1.2.3", "d"),
                         ("2001:db8::/32", "v6"), ("2001:db8:1::/48", "v6-inner")])
    assert [table.lookup(a) for a in ("10.9.9.9", "10.1.9.9", "10.1.2.9", "10.1.2.3", "10.1.2.4", "11.0.0.1")] == \
        ["a", "b", "c", "d", "c", None]
    assert table.lookup("2001:db8:1::99") == "v6-inner"
    assert table.lookup("2001:db8:2::1") == "v6"
    assert table.lookup("::ffff:10.1.2.3") == "d"  # IPv4-mapped form of the same address
    assert table.lookup("not an address") is None
    assert table.lookup("10.1") is None  # no legacy shorthand


def test_identical_blocks_later_wins_and_bad_blocks_are_refused() -> None:
    assert PrefixTable([("192.0.2.0/24", "first"), ("192.0.2.0/24", "second")]).lookup("192.0.2.7") == "second"
    with pytest.raises(ValueError, match="host bits"):
        PrefixTable([("192.0.2.1/24", "x")])


prefixes = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)).map(
        lambda t: str(ipaddress.ip_network((t[0] >> (32 - t[1]) << (32 - t[1]), t[1])))),
    min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(prefixes, st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=30))
def test_prefix_table_agrees_with_a_linear_longest_prefix_scan(nets: list[str], probes: list[int]) -> None:
    table = PrefixTable([(net, i) for i, net in enumerate(nets)])
    parsed = [ipaddress.ip_network(n) for n in nets]
    # probe inside every block too, and at its edges
    addrs = [ipaddress.ip_address(p) for p in probes]
    for net in parsed:
        addrs += [net.network_address, net.broadcast_address]
    for addr in addrs:
        best = None
        for i, net in enumerate(parsed):
            if addr in net and (best is None or net.prefixlen >= parsed[best].prefixlen):
                best = i
        assert table.lookup(str(addr)) == best, (str(addr), nets)


# -- inventory ---------------------------------------------------------------------------------


def test_inventory_yaml_nesting_and_inheritance(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY_YAML, encoding="utf-8")
    inv = Inventory.load(path)
    asset = inv.lookup("10.20.3.15")
    assert (asset.org_unit, asset.asset, asset.owner, asset.criticality, asset.zone) == \
        ("民政局/东城街道/花园社区居委会", "低保审批系统", "张伟", 4, "internal")
    street = inv.lookup("10.20.3.16")
    assert (street.org_unit, street.asset, street.criticality) == ("民政局/东城街道/花园社区居委会", "", 2)
    # a block naming a department starts its own org path (it does not keep the outer street)
    assert inv.lookup("10.20.3.200").org_unit == "卫健委"
    assert inv.lookup("10.20.200.1").org_unit == "民政局"
    v6 = inv.lookup("2001:db8:20:5::1")
    assert (v6.org_unit, v6.zone) == ("民政局/西城街道/幸福里居委会", "dmz")
    assert inv.lookup("2001:db8:20:6::1").org_unit == "民政局/西城街道"
    outside = inv.lookup("8.8.8.8")
    assert (outside.org_unit, outside.zone) == ("", "external")
    assert inv.lookup("2001:db9::1") is None  # the catch-all is IPv4 only
    assert asset.columns["src"] == {"src_org_unit": "民政局/东城街道/花园社区居委会", "src_asset": "低保审批系统",
                                    "src_zone": "internal", "src_criticality": 4}


def test_inventory_csv_matches_yaml(tmp_path: Path) -> None:
    csv_path = tmp_path / "inventory.csv"
    csv_path.write_text("cidr,department,street,committee,asset,owner,criticality,zone\n"
                        "10.20.0.0/16,民政局,,,,,2,internal\n"
                        "10.20.3.0/24,,东城街道,花园社区居委会,,,,\n"
                        "10.20.3.15,,,,低保审批系统,张伟,4,\n", encoding="utf-8")
    yaml_path = tmp_path / "inventory.yaml"
    yaml_path.write_text(INVENTORY_YAML, encoding="utf-8")
    from_csv, from_yaml = Inventory.load(csv_path), Inventory.load(yaml_path)
    for address in ("10.20.3.15", "10.20.3.16", "10.20.9.9"):
        assert from_csv.lookup(address).columns == from_yaml.lookup(address).columns


@pytest.mark.parametrize(("text", "message"), [
    ("networks:\n  - cidr: 10.0.0.0/8\n    zone: lobby\n", "zone 'lobby' is not one of"),
    ("networks:\n  - cidr: 10.0.0.0/8\n    criticality: 9\n", "criticality must be 1-5"),
    ("networks:\n  - department: x\n", "'cidr' is missing"),
    ("networks:\n  - cidr: 10.0.0.1/8\n", "host bits set"),
    ("networks:\n  - cidr: 10.0.0.0/8\n    dept: x\n", "unknown key"),
    ("hosts: []\n", "top-level 'networks:'"),
])
def test_inventory_errors_name_the_entry_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InventoryError, match=message) as info:
        Inventory.load(path)
    assert "bad.yaml" in str(info.value)


# -- indicators --------------------------------------------------------------------------------


def _bundle(*objects: dict) -> bytes:
    return orjson.dumps({"type": "bundle", "id": "bundle--1", "objects": list(objects)})


def _indicator(ident: str, pattern: str, **extra: object) -> dict:
    return {"type": "indicator", "spec_version": "2.1", "id": f"indicator--{ident}", "pattern": pattern,
            "pattern_type": "stix", "valid_from": "2024-01-01T00:00:00Z", **extra}


def test_stix_bundle_equalities_subsets_and_what_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "feed.json"
    path.write_bytes(_bundle(
        {"type": "identity", "id": "identity--cert", "name": "CNCERT"},
        _indicator("a", "[ipv4-addr:value = '198.51.100.7']", confidence=85, created_by_ref="identity--cert"),
        _indicator("b", "[domain-name:value = 'evil.example'] OR [url:value = 'http://bad.example/x.php']"),
        _indicator("c", "[file:hashes.'SHA-256' = 'AB" + "0" * 62 + "']"),
        _indicator("d", "[ipv4-addr:value ISSUBSET '203.0.113.0/24']"),
        _indicator("e", "[ipv6-addr:value = '2001:db8:bad::1']"),
        _indicator("f", "[ipv4-addr:value = '192.0.2.1' AND network-traffic:dst_port = 443]"),
        _indicator("g", "[ipv4-addr:value = '192.0.2.2']", revoked=True),
        _indicator("h", "[ipv4-addr:value = '192.0.2.3']", valid_until="2020-01-01T00:00:00Z"),
        _indicator("i", "[domain-name:value LIKE '%.evil']"),
    ))
    indicators, report = load_stix(path)
    by_value = {i.value: i for i in indicators}
    assert set(by_value) == {"198.51.100.7", "evil.example", "bad.example/x.php", "ab" + "0" * 62,
                             "203.0.113.0/24", "2001:db8:bad::1"}
    assert (by_value["198.51.100.7"].source, by_value["198.51.100.7"].confidence) == ("CNCERT", 85)
    assert by_value["198.51.100.7"].id == "indicator--a"
    assert by_value["evil.example"].id == "indicator--b#0"
    assert report.skipped == {"pattern is not a plain OR of value comparisons": 2, "revoked": 1,
                              "expired (valid_until passed)": 1}


def test_misp_export_attributes_objects_composites_and_to_ids(tmp_path: Path) -> None:
    path = tmp_path / "misp.json"
    path.write_bytes(orjson.dumps({"response": [{"Event": {
        "info": "phishing wave", "threat_level_id": "1", "Orgc": {"name": "CIRCL"},
        "Attribute": [
            {"uuid": "u1", "type": "ip-dst", "value": "198.51.100.9", "to_ids": True},
            {"uuid": "u2", "type": "domain", "value": "Phish.Example.", "to_ids": True},
            {"uuid": "u3", "type": "ip-dst|port", "value": "203.0.113.5|8443", "to_ids": True},
            {"uuid": "u4", "type": "comment", "value": "hello", "to_ids": False},
            {"uuid": "u5", "type": "ip-src", "value": "192.0.2.200", "to_ids": False},
            {"uuid": "u6", "type": "ip-src", "value": "not-an-ip", "to_ids": True},
        ],
        "Object": [{"name": "file", "Attribute": [
            {"uuid": "u7", "type": "filename|sha1", "value": "dropper.exe|" + "1" * 40, "to_ids": True}]}],
    }}]}))
    indicators, report = load_misp(path)
    assert {(i.id, i.kind, i.value) for i in indicators} == {
        ("u1", "ip", "198.51.100.9"), ("u2", "domain", "phish.example"), ("u3", "ip", "203.0.113.5"),
        ("u7", "hash", "1" * 40)}
    assert {i.source for i in indicators} == {"misp:CIRCL"} and {i.confidence for i in indicators} == {90}
    assert report.skipped == {"not for detection (to_ids false) or deleted": 2, "invalid ip value": 1}


def test_csv_feed_and_the_loader_picks_the_format(tmp_path: Path) -> None:
    path = tmp_path / "local.csv"
    path.write_text("type,value,id,source,confidence\nip,192.0.2.0/28,,soc,70\ndomain,*.c2.example,,,\n"
                    "sha256," + "f" * 64 + ",h1,vt,101\nemail,a@b.c,,,\n")
    indicators, report = load_csv(path)
    assert [(i.kind, i.value, i.source, i.confidence) for i in indicators] == [
        ("ip", "192.0.2.0/28", "soc", 70), ("domain", "c2.example", "local", 50), ("hash", "f" * 64, "vt", 100)]
    assert indicators[0].id.startswith("ioc-") and indicators[2].id == "h1"
    assert report.skipped == {"unsupported type 'email'": 1}
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(IocError, match="not a MISP export"):
        load_file(bad)


def test_indicator_matching_on_events(tmp_path: Path) -> None:
    path = tmp_path / "iocs.csv"
    path.write_text("type,value,id\nip,198.51.100.0/24,net\nip,198.51.100.7,host\nip,2001:db8:bad::/48,v6\n"
                    "domain,evil.example,dom\nurl,http://shop.example/login.php,url\nmd5," + "a" * 32 + ",md5\n")
    index, _ = load_paths([path])
    assert [i.id for i in index.match({"src_ip": "10.0.0.1", "dst_ip": "198.51.100.7"})] == ["host"]
    assert [i.id for i in index.match({"dst_ip": "198.51.100.8"})] == ["net"]
    assert [i.id for i in index.match({"src_ip": "2001:db8:bad:1::1"})] == ["v6"]
    assert [i.id for i in index.match({"dns_query": "a.b.EVIL.example."})] == ["dom"]
    assert index.match({"dns_query": "notevil.example"}) == []
    assert [i.id for i in index.match({"http_host": "evil.example:8080", "http_uri": "/"})] == ["dom"]
    assert [i.id for i in index.match({"http_host": "shop.example", "http_uri": "/login.php?u=1"})] == ["url"]
    assert index.match({"http_host": "shop.example", "http_uri": "/login.phpx"}) == []
    assert [i.id for i in index.match({"file_hash": "A" * 32})] == ["md5"]


# -- geo ---------------------------------------------------------------------------------------


def _mmdb(path: Path, networks: dict[str, dict], kind: str) -> Path:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, database_type=kind, ipv4_compatible=True)
    for net, record in networks.items():
        writer.insert_network(IPSet([net]), record)
    writer.to_db_file(str(path))
    return path


def test_geo_country_and_asn_for_global_addresses_only(tmp_path: Path) -> None:
    country = _mmdb(tmp_path / "country.mmdb", {"1.0.0.0/24": {"country": {"iso_code": "AU"}},
                                                "2001:4860::/32": {"country": {"iso_code": "US"}},
                                                "10.0.0.0/8": {"country": {"iso_code": "XX"}}}, "GeoLite2-Country")
    asn = _mmdb(tmp_path / "asn.mmdb", {"1.0.0.0/24": {"autonomous_system_number": 13335}}, "GeoLite2-ASN")
    geo = GeoDatabases([country, asn])
    assert geo.lookup("1.0.0.1") == ("AU", 13335)
    assert geo.lookup("2001:4860::8888") == ("US", 0)
    assert geo.lookup("10.1.1.1") == ("", 0)  # private: never looked up
    assert geo.lookup("9.9.9.9") == ("", 0)
    with pytest.raises(GeoError, match="cannot open"):
        GeoDatabases([tmp_path / "missing.mmdb"])


# -- the enricher ------------------------------------------------------------------------------


def test_enricher_fills_both_sides_iocs_and_geo(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(INVENTORY_YAML, encoding="utf-8")
    iocs = tmp_path / "iocs.csv"
    iocs.write_text("type,value,id,source,confidence\nip,1.0.0.9,bad-ip,feedA,60\ndomain,evil.example,bad-dom,feedB,80\n")
    geo = _mmdb(tmp_path / "c.mmdb", {"1.0.0.0/24": {"country": {"iso_code": "AU"}}}, "GeoLite2-Country")
    enricher = Enricher(inventory, [iocs], [geo])
    events = [{"src_ip": "10.20.3.15", "dst_ip": "1.0.0.9", "dns_query": "x.evil.example"},
              {"src_ip": "10.99.0.1"}, {"message": "no addresses"}]
    enricher.enrich(events)
    assert events[0] == {
        "src_ip": "10.20.3.15", "dst_ip": "1.0.0.9", "dns_query": "x.evil.example",
        "src_org_unit": "民政局/东城街道/花园社区居委会", "src_asset": "低保审批系统", "src_zone": "internal",
        "src_criticality": 4, "dst_zone": "external", "dst_country": "AU",
        "ioc_ids": ["bad-dom", "bad-ip"], "ioc_sources": ["feedA", "feedB"], "ioc_confidence": 80}
    assert events[1] == {"src_ip": "10.99.0.1", "src_zone": "external"}  # private, not in the inventory: no geo
    assert enricher.stats.ioc_hits == 1 and enricher.stats.inventory_hits == 3 and enricher.stats.geo_hits == 1


def test_enricher_without_sources_changes_nothing() -> None:
    events = make_events(20)
    before = [dict(e) for e in events]
    Enricher().enrich(events)
    assert events == before


def test_reload_without_restart_and_a_broken_file_keeps_the_old_one(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.csv"
    inventory.write_text("cidr,department\n10.0.0.0/8,财政局\n", encoding="utf-8")
    enricher = Enricher(inventory, reload_check_s=3600)

    def org_unit_after(rows: str, later_s: float) -> str:
        if rows:  # rewrite the file with a later modification time, then let the enricher look
            inventory.write_text("cidr,department\n" + rows, encoding="utf-8")
            os.utime(inventory, (time.time() + later_s, time.time() + later_s))
            enricher.maybe_reload(force=True)
        event = {"src_ip": "10.1.1.1"}
        enricher.enrich([event])
        return event["src_org_unit"]

    assert org_unit_after("", 0) == "财政局"
    assert org_unit_after("10.0.0.0/8,审计局\n", 5) == "审计局" and enricher.stats.reloads == 1
    assert org_unit_after("10.0.0.0/99,x\n", 10) == "审计局" and enricher.stats.reload_errors == 1


def test_a_hosts_own_log_is_enriched_by_its_hostname(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text("networks:\n  - cidr: 10.20.0.0/16\n    department: 民政局\n    zone: dmz\n"
                    "  - cidr: 10.20.1.25\n    asset: 邮件系统\n    criticality: 4\n"
                    "    hostname: Mail.district.gov.cn\n", encoding="utf-8")
    enricher = Enricher(inventory=path)
    events = [{"event_id": "1", "host_name": "mail", "src_ip": "203.0.113.66"},
              {"event_id": "2", "host_name": "mail.district.gov.cn"},
              {"event_id": "3", "host_name": "mail", "dst_ip": "10.99.0.1"},  # an address wins over the name
              {"event_id": "4", "host_name": "other"}]
    enricher.enrich(events)
    assert events[0]["dst_asset"] == events[1]["dst_asset"] == "邮件系统"
    assert events[0]["dst_org_unit"] == "民政局" and events[0]["dst_criticality"] == 4
    assert events[0]["dst_zone"] == "dmz"
    assert "dst_asset" not in events[2] and "dst_asset" not in events[3]
    with pytest.raises(InventoryError, match="unknown key"):
        Inventory.load(_write(tmp_path / "bad.yaml", "networks:\n  - cidr: 10.0.0.1\n    host: x\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
