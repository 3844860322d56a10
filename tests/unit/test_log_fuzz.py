"""Fuzzing every log parser: random and mutated input never raises anything but ParseError, and whatever
parses is a valid event that survives the wire format unchanged (so the writer will not reject it).

The mutation fuzzer runs FUZZ_INPUTS (default 100,000; env GANZHI_FUZZ_INPUTS) seeded mutations of real-shaped
lines across all parsers; hypothesis adds generated text and JSON per parser.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.schema import dumps, loads
from sensors.logs.parsers import PARSERS, ParseContext, ParseError, detect_format, make_parser
from sensors.logs.router import RecordRouter
from sensors.sink import ListSink

FUZZ_INPUTS = int(os.environ.get("GANZHI_FUZZ_INPUTS", "100000"))
CTX = replace(ParseContext.make(sensor="fuzz", year=2024), received_ms=1_700_000_000_000)

SEEDS = [
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tquery\tanswers",
    "#types\ttime\tstring\taddr\tport\taddr\tport\tstring\tvector[string]",
    "1521911720.865716\tCq1\t10.47.1.100\t41772\t10.0.0.100\t53\tise.wrccdc.org\ta,b",
    '{"_path":"conn","ts":1521911720.5,"id.orig_h":"10.0.0.1","id.orig_p":5,"id.resp_h":"::1","id.resp_p":80,'
    '"proto":"tcp","duration":1.5,"orig_bytes":10,"conn_state":"SF","answers":["x"]}',
    '{"timestamp":"2024-03-01T10:00:00.123456+0800","event_type":"alert","src_ip":"10.0.0.5","src_port":5555,'
    '"dest_ip":"8.8.8.8","dest_port":80,"proto":"TCP","alert":{"signature_id":1,"severity":2},'
    '"flow":{"start":"2024-03-01T10:00:00Z","end":"2024-03-01T10:00:01Z","bytes_toserver":5},'
    '"dns":{"type":"answer","rrname":"a.b","answers":[{"rdata":"1.2.3.4"}],"grouped":{"A":["1.2.3.4"]}}}',
    '203.0.113.7 - alice [10/Oct/2023:13:55:36 +0800] "GET /index.php?id=1 HTTP/1.1" 200 2326 "http://r/" "UA" "1"',
    "[Wed Oct 11 14:32:52.123456 2023] [core:error] [pid 35708:tid 4328] [client 10.0.0.9:51234] AH00126: bad",
    '2024/01/02 12:00:00 [error] 1234#0: *5 open() failed, client: 10.0.0.7, server: x, request: "GET /x HTTP/1.1"',
    '<165>1 2024-03-01T10:00:00.123+08:00 fw01 app 42 ID47 [ex@32473 iut="3" s="A\\"b"] \ufeffmsg',
    "Dec 10 06:55:46 LabSZ sshd[24200]: Failed password for invalid user admin from 203.0.113.5 port 4242 ssh2",
    "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0 rhost=218.188.2.4 user=x",
    "Mar  1 10:00:00 h sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls",
    "Mar  1 10:00:00 gw kernel: [1.2] DROP: IN=eth0 OUT= SRC=198.51.100.9 DST=10.0.0.1 PROTO=TCP SPT=1 DPT=22 SYN",
    "<190>Mar 10 2024 12:00:00 USG %%01POLICY/6/POLICYDENY(l):protocol=6, source-ip=10.1.1.1, destination-ip=1.1.1.1.",
    "<134>Mar 10 12:00:00 2024 H3C %%10FILTER/6/X: Protocol(1001)=TCP;SrcIPAddr(1003)=10.1.1.2;DstIPAddr(1007)=1.1.1.1",
    "<190>Mar 10 12:00:00 SG Traffic@FLOW: SESSION: 10.0.0.1:5->8.8.8.8:53(UDP), send bytes 74,policy 1",
    '<189>Mar 10 12:00:00 fgt srcip=10.2.2.2 srcport=4 dstip=198.51.100.1 dstport=3389 proto=6 action="deny"',
    "21-Nov-2026 10:00:00.123 queries: info: client @0x7f 10.0.0.5#53412 (e.x): query: e.x IN TXT +E(0)K (10.0.0.53)",
    r"CEF:0|Sec|tm|1.0|100|worm stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232 msg=a\=b cs1Label=P cs1=S rt=1700000000",
    "LEEF:2.0|Lancope|SW|1.0|41|^|src=10.0.1.8^dst=10.0.0.5^srcPort=5000^usrName=joe^sev=5^devTime=1700000000000",
    '{"__REALTIME_TIMESTAMP":"1700000000123456","_HOSTNAME":"w","SYSLOG_IDENTIFIER":"sshd","MESSAGE":"Accepted '
    'password for a from 1.2.3.4 port 2 ssh2","PRIORITY":"6"}',
    '{"@timestamp":"2024-03-01T10:00:00Z","winlog":{"event_id":4625,"channel":"Security","event_data":'
    '{"TargetUserName":"admin","IpAddress":"10.9.9.9","CommandLine":"cmd"}}}',
    '{"Event":{"System":{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","TimeCreated":{"#attributes":'
    '{"SystemTime":"2024-03-01T10:00:00Z"}}},"EventData":{"Data":[{"#attributes":{"Name":"Image"},"#text":"a.exe"}]}}}',
    "[10.30 16:49:07] chrome.exe *64 - proxy.x:5070 close, 403 bytes (1.2 KB) sent, 426 bytes received, lifetime 00:01",
    "2016-09-28 04:30:31, Info                  CSI    00000001@2016/9/27:20:30:31.455 WcpInitialize",
]
SPECIAL = ['"', "|", "=", "\\", "[", "]", "{", "}", ":", ";", ",", "\t", " ", "\x00", "-", "%%", "\ufeff", "é", "漢",
           "\ud800", "999999999999999999999", "-1", "1e400", "NaN", "null", "::", "256.1.1.1", "#", "<999>", "\n"]


def _mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randint(0, len(text))
        if op == 0:
            text = text[:pos] + rng.choice(SPECIAL) + text[pos:]
        elif op == 1 and text:
            end = min(len(text), pos + rng.randint(1, 16))
            text = text[:pos] + text[end:]
        elif op == 2:
            text = text[:pos]
        elif op == 3 and text:
            start = rng.randrange(len(text))
            text = text[:pos] + text[start:start + rng.randint(1, 32)] + text[pos:]
        elif op == 4:
            other = rng.choice(SEEDS)
            text = text[:pos] + other[rng.randrange(len(other)):]
        elif op == 5 and text:
            i = rng.randrange(len(text))
            text = text[:i] + chr(rng.randrange(0x20, 0x7F) if rng.random() < 0.9 else rng.randrange(0x10FFFF)) + \
                text[i + 1:]
        else:
            text = "".join(chr(rng.randrange(0x20, 0x250)) for _ in range(rng.randint(0, 80)))
    return text


def _check(fmt: str, text: str, origin: str) -> str:
    """Parse with a fresh parser (state from a header line kept: the Zeek parser first sees #fields)."""
    parser = make_parser(fmt, CTX, "dns.log")
    if fmt == "zeek":
        parser.parse(SEEDS[0], "h")
    try:
        event = parser.parse(text, origin)
    except ParseError as exc:
        assert str(exc), "a ParseError must say why"
        return "rejected"
    if event is None:
        return "skipped"
    assert loads(dumps(event)) == event, (fmt, text)
    return "parsed"


def test_mutation_fuzz_every_parser() -> None:
    rng = random.Random(20261121)
    formats = sorted(PARSERS)
    outcomes: dict[str, int] = {"parsed": 0, "rejected": 0, "skipped": 0}
    for n in range(FUZZ_INPUTS):
        text = _mutate(rng, rng.choice(SEEDS))
        fmt = formats[n % len(formats)] if n % 5 else (detect_format([text]) or formats[n % len(formats)])
        try:
            outcomes[_check(fmt, text, f"fuzz:{n}")] += 1
        except AssertionError:
            raise
        except Exception as exc:  # the property under test: nothing but ParseError escapes
            raise AssertionError(f"{fmt} raised {type(exc).__name__}: {exc} on {text!r}") from exc
    print(f"mutation fuzz: {FUZZ_INPUTS:,} inputs over {len(formats)} parsers: {outcomes}")
    assert sum(outcomes.values()) == FUZZ_INPUTS
    assert outcomes["parsed"] > FUZZ_INPUTS // 10 and outcomes["rejected"] > FUZZ_INPUTS // 10  # both paths exercised


def test_router_dead_letters_everything_it_cannot_parse() -> None:
    rng = random.Random(7)
    sink = ListSink()
    router = RecordRouter(sink)
    parsers = {fmt: make_parser(fmt, CTX) for fmt in PARSERS}
    for n in range(5000):
        fmt = rng.choice(sorted(parsers))
        router.route(parsers[fmt], _mutate(rng, rng.choice(SEEDS)), f"r:{n}")
    stats = router.stats
    assert stats.records == 5000 == stats.events + stats.dead_letters + stats.skipped
    assert len(sink.events) == stats.events and len(sink.dead_letters) == stats.dead_letters
    assert all(d["source"] in parsers and d["reason"] and d["origin"].startswith("r:") for d in sink.dead_letters)


SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(SCALARS,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=10)
KEYS = st.sampled_from(["ts", "timestamp", "event_type", "_path", "src_ip", "dest_ip", "id.orig_h", "id.resp_p",
                        "query", "answers", "flow", "dns", "http", "tls", "alert", "__REALTIME_TIMESTAMP", "MESSAGE",
                        "winlog", "Event", "EventID", "Channel", "proto", "x"])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(PARSERS)), text=st.text(max_size=300))
def test_hypothesis_text(fmt: str, text: str) -> None:
    _check(fmt, text, "h")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(["zeek", "eve", "journald", "windows"]), doc=st.dictionaries(KEYS, JSON_VALUES, max_size=8))
def test_hypothesis_json_documents(fmt: str, doc: dict[str, Any]) -> None:
    _check(fmt, orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS).decode(), "h")
