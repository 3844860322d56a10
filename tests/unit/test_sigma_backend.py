"""Sigma semantics of Ganzhi's ClickHouse backend, checked by running the SQL on ClickHouse (chDB)."""

from __future__ import annotations

import pytest
from sigma.collection import SigmaCollection

from pipeline.detect.backend import GanzhiClickHouseBackend
from pipeline.schema import event_id, normalize

EVENTS = {
    "admin": {"user_name": "admin", "host_name": "admin"},
    "Admin": {"user_name": "Admin", "CommandLine": "powershell -enc AAAA", "EventID": "4688"},
    "administrator": {"user_name": "administrator", "EventID": "4624"},
    "ad_min": {"user_name": "ad_min", "CommandLine": "curl http://x/50%_off?a=1"},
    "adxmin": {"user_name": "adxmin", "CommandLine": "curl http://x/50xyoff?a=1"},
    "star": {"CommandLine": "echo a*b", "Image": "C:\\Windows\\System32\\CMD.EXE"},
    "nostar": {"CommandLine": "echo axxb", "Image": "C:\\Windows\\System32\\cmd.exe.bak"},
    "quote": {"user_name": "O'Brien", "EventID": "not-a-number"},
    "v4": {"src_ip": "10.1.2.3", "dst_port": 22, "ClientAddress": "10.9.9.9"},
    "v6": {"src_ip": "2001:db8::7", "dst_port": 443, "ClientAddress": "-"},
    "web": {"http_uri": "/Admin42/shell.PHP",
            "raw": "GET /Admin42/shell.PHP HTTP/1.1 Mimikatz.exe sekurlsa::logonpasswords"},
    "cyr": {"user_name": "Дмитрий"},
    "dns": {"dns_answers": ["198.51.100.7", "ns1.Example.org"], "message": "query for evil.example"},
}


@pytest.fixture
def loaded(embedded_store):  # type: ignore[no-untyped-def]
    events = []
    for mark, fields in EVENTS.items():
        events.append(normalize({"ts": 1714550400000, "event_id": event_id("t", mark, 0), "sensor": "s",
                                 "source_type": "t", "event_category": "test", "mark": mark, **fields}))
    embedded_store.insert_events(events)
    return embedded_store


def hits(store, detection: str) -> set[str]:  # type: ignore[no-untyped-def]
    rule = f"title: t\nlogsource: {{product: test}}\ndetection:\n{detection}"
    where = GanzhiClickHouseBackend().convert(SigmaCollection.from_yaml(rule))[0]
    rows = store.query(f"SELECT extra['mark'] FROM events WHERE {where}").rows
    return {r[0] for r in rows}


CASES = [
    # equality is case-insensitive and whole-value
    ("  sel: {user_name: ADMIN}\n  condition: sel", {"admin", "Admin"}),
    ("  sel: {user_name|cased: Admin}\n  condition: sel", {"Admin"}),
    # wildcards * and ?, case-insensitive
    ("  sel: {user_name: 'ADM*'}\n  condition: sel", {"admin", "Admin", "administrator"}),
    ("  sel: {user_name: 'ad?min'}\n  condition: sel", {"ad_min", "adxmin"}),
    # an escaped wildcard is a literal star
    ("  sel: {CommandLine|endswith: 'a\\*b'}\n  condition: sel", {"star"}),
    # % and _ are literal characters, in patterns and in lists
    ("  sel: {CommandLine|contains: '50%_off'}\n  condition: sel", {"ad_min"}),
    ("  sel: {user_name: ['ad_min', '100%']}\n  condition: sel", {"ad_min"}),
    ("  sel: {user_name: ['AD_MIN', 'o''brien']}\n  condition: sel", {"ad_min", "quote"}),
    # a prefix or suffix (startsWith/endsWith on the lower-cased text): % and _ in it are literal too, the
    # folding is equality's (Cyrillic included), arrays match on any element
    ("  sel: {CommandLine|endswith: '%_OFF?a=1'}\n  condition: sel", {"ad_min"}),
    ("  sel: {user_name|startswith: 'AD_'}\n  condition: sel", {"ad_min"}),
    ("  sel: {user_name|startswith: 'дМи'}\n  condition: sel", {"cyr"}),
    ("  sel: {user_name|endswith: 'ИЙ'}\n  condition: sel", {"cyr"}),
    ("  sel: {dns_answers|endswith: '.EXAMPLE.org'}\n  condition: sel", {"dns"}),
    ("  sel: {Image|endswith: '\\cmd.exe'}\n  condition: not sel", set(EVENTS) - {"star"}),
    # backslashes in Windows paths
    ("  sel: {Image|endswith: '\\cmd.exe'}\n  condition: sel", {"star"}),
    ("  sel: {Image: 'c:\\windows\\system32\\cmd.exe'}\n  condition: sel", {"star"}),
    # regular expressions: case-sensitive unless |i
    ("  sel: {http_uri|re: '^/admin\\d{2}/'}\n  condition: sel", set()),
    ("  sel: {http_uri|re|i: '^/admin\\d{2}/.*\\.php$'}\n  condition: sel", {"web"}),
    # CIDR on the address columns (IPv4 and IPv6) and on text, where non-IP text is simply no match
    ("  sel: {src_ip|cidr: '10.0.0.0/8'}\n  condition: sel", {"v4"}),
    ("  sel: {src_ip|cidr: '2001:db8::/32'}\n  condition: sel", {"v6"}),
    ("  sel: {ClientAddress|cidr: ['10.9.0.0/16', '2001:db8::/32']}\n  condition: sel", {"v4"}),
    # numbers: on numeric columns, and on text (unparsable text is no match, and NOT of it is a match)
    ("  sel: {dst_port: 22}\n  condition: sel", {"v4"}),
    ("  sel: {dst_port|gte: 100}\n  condition: sel", {"v6"}),
    ("  sel: {EventID|gt: 4600}\n  condition: sel", {"Admin", "administrator"}),
    ("  sel: {EventID: 4688}\n  condition: sel", {"Admin"}),
    # exists / null / missing fields under NOT
    ("  sel: {EventID|exists: true}\n  condition: sel", {"Admin", "administrator", "quote"}),
    ("  sel: {src_ip|exists: true}\n  condition: sel", {"v4", "v6"}),
    ("  sel: {user_name: null}\n  condition: sel", set(EVENTS) - {"admin", "Admin", "administrator", "ad_min",
                                                                    "adxmin", "quote", "cyr"}),
    ("  sel: {NoSuchField: 'x'}\n  condition: not sel", set(EVENTS)),
    ("  sel: {EventID|lt: 10}\n  condition: not sel", set(EVENTS)),
    # keywords: substrings of the raw record or message, case-insensitive, spaces and dots allowed
    ("  kw: ['mimikatz.EXE']\n  condition: kw", {"web"}),
    ("  kw: ['sekurlsa::logonpasswords', 'query for EVIL']\n  condition: kw", {"web", "dns"}),
    # arrays: any element
    ("  sel: {dns_answers: 'NS1.example.ORG'}\n  condition: sel", {"dns"}),
    ("  sel: {dns_answers|cidr: '198.51.100.0/24'}\n  condition: sel", {"dns"}),
    # field references
    ("  sel: {user_name|fieldref: host_name}\n  condition: sel", {"admin"}),
    # modifiers pySigma expands: all, base64offset, windash
    ("  sel: {CommandLine|contains|all: ['POWERSHELL', '-enc']}\n  condition: sel", {"Admin"}),
    ("  sel: {CommandLine|windash|contains: ' -enc '}\n  condition: sel", {"Admin"}),
    # boolean structure
    ("  a: {user_name|startswith: ad}\n  b: {CommandLine|contains: curl}\n  condition: a and not b",
     {"admin", "Admin", "administrator"}),
    ("  a: {user_name: admin}\n  b: {src_ip|cidr: 10.0.0.0/8}\n  condition: 1 of them", {"admin", "Admin", "v4"}),
]


@pytest.mark.parametrize(("detection", "expected"), CASES, ids=[c[0].split("\n")[0].strip() for c in CASES])
def test_sigma_semantics(loaded, detection: str, expected: set[str]) -> None:
    assert hits(loaded, detection) == expected
