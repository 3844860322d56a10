"""Log parser throughput: lines/s per parser on one core; for the JSON formats the native reader against
the Python parser (orjson, and stdlib json) in the same run.

Inputs are real where ../shared/data has them (wrccdc Zeek dns JSON, SigmaHQ's Windows events, loghub
OpenSSH syslog) and generated otherwise (EVE, nginx access). Each parser turns lines into validated canonical
events. Zeek JSON, EVE and Windows event JSON lines go through the native reader (sensors/logs/native) with the
Python parser behind it; the baselines are the Python parser alone, with orjson and with its decoder swapped
for stdlib `json`. The run checks both give the same events. A second figure per JSON format adds the wire
encoding into bus messages, the rest of what a sensor does before the broker (native writer vs
pipeline.schema.dumps).

    python bench/logs.py [--lines 200000] [--record]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from bench.common import record_results
from pipeline.codec import encode_events
from pipeline.native import event_dumps
from pipeline.schema import dumps
from sensors.logs.parsers import ParseContext, ParseError, Parser, base, eve, make_parser, native, windows, zeek
from sensors.logs.parsers.windows import read_json_documents

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
STDLIB_JSON = SimpleNamespace(loads=json.loads, JSONDecodeError=json.JSONDecodeError,
                              dumps=lambda v, **_: json.dumps(v, separators=(",", ":")).encode())


def _repeat(lines: list[str], n: int) -> list[str]:
    return (lines * (n // len(lines) + 1))[:n]


def zeek_json(n: int) -> list[str]:
    path = SHARED / "zeek" / "wrccdc-2018" / "zeek-json" / "dns.json.gz"
    if path.exists():
        with gzip.open(path, "rt") as fh:
            return _repeat([line.rstrip("\n") for _, line in zip(range(n), fh, strict=False)], n)
    return _repeat(['{"_path":"dns","ts":"2018-03-24T17:15:20.865716Z","uid":"C","id.orig_h":"10.47.1.100",'
                    '"id.orig_p":41772,"id.resp_h":"10.0.0.100","id.resp_p":53,"proto":"udp","query":"ise.wrccdc.org",'
                    '"qtype_name":"A","rcode_name":"NOERROR","answers":["1.2.3.4"],"TTLs":[2230.0]}'], n)


def eve_json(n: int) -> list[str]:
    rng = random.Random(1)
    out = []
    for i in range(min(n, 20_000)):
        kind = ("flow", "dns", "http", "tls", "alert")[i % 5]
        doc = {"timestamp": f"2024-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:06d}+0800", "flow_id": i,
               "event_type": kind, "src_ip": f"10.{rng.randrange(40)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
               "src_port": rng.randrange(1024, 65535), "dest_ip": f"203.0.113.{rng.randrange(1, 255)}",
               "dest_port": (53, 80, 443)[i % 3], "proto": "TCP"}
        if kind == "flow":
            doc["flow"] = {"pkts_toserver": 5, "pkts_toclient": 4, "bytes_toserver": 500, "bytes_toclient": 4000,
                           "start": "2024-03-01T10:00:00.000000+0800", "end": "2024-03-01T10:00:01.000000+0800",
                           "state": "closed"}
        elif kind == "dns":
            doc["dns"] = {"type": "query", "rrname": f"h{i}.example.gov.cn", "rrtype": "A"}
        elif kind == "http":
            doc["http"] = {"hostname": "oa.gov.cn", "url": f"/a?id={i}", "http_method": "GET", "status": 200,
                           "http_user_agent": "Mozilla/5.0", "length": 1234}
        elif kind == "tls":
            doc["tls"] = {"sni": "mail.gov.cn", "version": "TLS 1.3", "ja3": {"hash": "e7d705a3286e19ea42f587b34"}}
        else:
            doc["alert"] = {"signature_id": 2019401, "signature": "ET POLICY", "severity": 2, "action": "allowed"}
        out.append(orjson.dumps(doc).decode())
    return _repeat(out, n)


def windows_json(n: int) -> list[str]:
    """SigmaHQ's regression events (real Sysmon/Security records, ~1.4 KB each) as JSON lines."""
    root = SHARED / "sigma" / "sigmahq" / "regression_data"
    docs = [doc for path in sorted(root.rglob("*.json")) for doc in read_json_documents(path.read_text("utf-8"))]
    if not docs:
        docs = [{"Event": {"System": {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational",
                                      "TimeCreated": {"#attributes": {"SystemTime": "2025-11-26T05:11:27.927693Z"}},
                                      "Computer": "pc1"},
                           "EventData": {"Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami",
                                         "User": "pc1\\alice", "ProcessId": 4242}}}]
    return _repeat([orjson.dumps(doc).decode() for doc in docs], n)


def nginx(n: int) -> list[str]:
    rng = random.Random(2)
    return _repeat([f'203.0.113.{rng.randrange(1, 255)} - - [01/Mar/2024:10:{i // 60 % 60:02d}:{i % 60:02d} +0800] '
                    f'"GET /app/{rng.randrange(1000)}?id={i} HTTP/1.1" 200 {rng.randrange(100, 99999)} '
                    f'"https://oa.gov.cn/" "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"' for i in range(20_000)], n)


def sshd_syslog(n: int) -> list[str]:
    path = SHARED / "logs" / "loghub" / "OpenSSH" / "OpenSSH_2k.log"
    if path.exists():
        return _repeat(path.read_text().splitlines(), n)
    return _repeat(["Dec 10 06:55:46 LabSZ sshd[24200]: Failed password for root from 1.2.3.4 port 22 ssh2"], n)


def bench_parser(fmt: str, filename: str = "", python_only: bool = False) -> Parser:
    """The parser a sensor would use; `python_only` without its native reader (the baseline)."""
    parser = make_parser(fmt, ParseContext.make(sensor="bench", year=2017), filename)
    if python_only:
        parser._native = None  # type: ignore[attr-defined]
    return parser


def measure(fmt: str, lines: list[str], filename: str = "", python_only: bool = False) -> tuple[float, int]:
    parse = bench_parser(fmt, filename, python_only).parse
    events = 0
    started = time.perf_counter()
    for i, line in enumerate(lines):
        try:
            if parse(line, str(i)) is not None:
                events += 1
        except ParseError:
            pass
    return len(lines) / (time.perf_counter() - started), events


def measure_publish(fmt: str, lines: list[str], filename: str = "", python_only: bool = False) -> float:
    """lines/s through parse + wire encoding into bus messages: all a sensor does before the broker."""
    parse = bench_parser(fmt, filename, python_only).parse
    dump = dumps if python_only else event_dumps()
    started = time.perf_counter()
    for chunk in range(0, len(lines), 2000):  # the sensor's batch
        events = []
        for i, line in enumerate(lines[chunk:chunk + 2000], chunk):
            try:
                event = parse(line, str(i))
            except ParseError:
                continue
            if event is not None:
                events.append(event)
        for _ in encode_events(events, dump=dump):
            pass
    return len(lines) / (time.perf_counter() - started)


def same_events(fmt: str, lines: list[str], filename: str) -> None:
    """The native reader and the Python parser give equal events for these lines (else the figures are moot)."""
    fast, slow = bench_parser(fmt, filename), bench_parser(fmt, filename, python_only=True)
    for i, line in enumerate(lines):
        if fast.parse(line, str(i)) != slow.parse(line, str(i)):
            raise SystemExit(f"{fmt}: the native reader and the Python parser disagree on line {i}: {line[:200]}")


def with_json(module_objs: list[object], impl: object, run: Callable[[], tuple[float, int]]) -> tuple[float, int]:
    saved = [m.orjson for m in module_objs]  # type: ignore[attr-defined]
    for m in module_objs:
        m.orjson = impl  # type: ignore[attr-defined]
    try:
        return run()
    finally:
        for m, s in zip(module_objs, saved, strict=True):
            m.orjson = s  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--record", action="store_true", help="write the output into bench/RESULTS.md")
    args = ap.parse_args()
    n = args.lines
    out = [f"lines per parser: {n:,}; one core; {platform.python_implementation()} {platform.python_version()}, "
           f"{os.cpu_count()} cores on the machine"]

    def say(line: str) -> None:
        print(line, flush=True)
        out.append(line)

    print(out[0])
    # JSON objects are loaded in parsers.base; zeek and eve also dump nested values to text
    cases = [("zeek JSON (wrccdc dns)", "zeek", zeek_json(n), "dns.json", [base, zeek]),
             ("suricata EVE JSON", "eve", eve_json(n), "", [base, eve]),
             ("Windows event JSON (SigmaHQ)", "windows", windows_json(n), "", [base, windows])]
    if not native.available():
        say("the native reader is not built (make setup builds it): the first column is the Python parser too")
    json_rates = []
    for name, fmt, lines, filename, modules in cases:
        same_events(fmt, lines[:20_000], filename)
        fast, events = measure(fmt, lines, filename)
        py, _ = measure(fmt, lines, filename, python_only=True)
        slow, _ = with_json(modules, STDLIB_JSON,
                            lambda f=fmt, ls=lines, fn=filename: measure(f, ls, fn, python_only=True))
        mean_bytes = sum(len(line) for line in lines[:20_000]) / min(len(lines), 20_000)
        say(f"{name:29} native {fast:>9,.0f} lines/s ({fast * mean_bytes / 1e6:,.0f} MB/s, {mean_bytes:,.0f} B/line)   "
            f"Python parser: orjson {py:>8,.0f}, stdlib json {slow:>8,.0f} lines/s   ratio native/Python "
            f"{fast / py:.2f}x, orjson/stdlib {py / slow:.2f}x   ({events:,} events)")
        json_rates.append((name, fast))
    for name, fmt, lines, filename, _ in cases:
        fast, py = (measure_publish(fmt, lines, filename, python_only=flag) for flag in (False, True))
        say(f"{name:29} parse + wire encoding (a sensor's work before the broker): native {fast:>9,.0f} lines/s, "
            f"Python {py:>8,.0f} lines/s, ratio {fast / py:.2f}x")
    for name, fmt, lines in (("nginx access (combined)", "nginx", nginx(n)),
                             ("syslog sshd (loghub)", "syslog", sshd_syslog(n))):
        rate, events = measure(fmt, lines)
        say(f"{name:29} {rate:>9,.0f} lines/s   ({events:,} events)")
    # the goal names Zeek JSON and EVE; Windows event JSON (1.4 KB a line here) is measured beside them
    goal = [rate for name, rate in json_rates if not name.startswith("Windows")]
    say(f"goal: >= 200,000 lines/s per core for the JSON formats (Zeek JSON, EVE): "
        f"{'met' if min(goal) >= 200_000 else 'NOT met'}; Windows event JSON, measured beside them: "
        f"{json_rates[-1][1]:,.0f} lines/s")
    if args.record:
        record_results("logs", "python bench/logs.py " + " ".join(sys.argv[1:]), out)


if __name__ == "__main__":
    main()
