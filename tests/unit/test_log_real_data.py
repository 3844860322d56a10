"""The log parsers on real public logs (../shared/data): parse rates, dead-lettering, fields vs loghub's CSVs.

Skips cleanly when ../shared is absent.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.schema import format_ts
from sensors.logs.parsers import ParseContext, make_parser
from sensors.logs.parsers.base import ParseError
from sensors.logs.parsers.windows import read_json_documents, to_event
from sensors.logs.router import RecordRouter
from sensors.logs.tail import Tailer
from sensors.sink import ListSink
from tests.conftest import SHARED_DATA

LOGHUB = SHARED_DATA / "logs" / "loghub"
ZEEK = SHARED_DATA / "zeek" / "wrccdc-2018"
REGRESSION = SHARED_DATA / "sigma" / "sigmahq" / "regression_data"
pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is absent")
MIN_RATE = 0.995


def _tail_once(paths: list[Path], fmt: str = "auto", year: int | None = 2017) -> tuple[ListSink, RecordRouter]:
    sink = ListSink()
    router = RecordRouter(sink)
    Tailer([str(p) for p in paths], fmt, router, None, ParseContext.make(sensor="real", year=year)).run_once()
    return sink, router


def _assert_rate(name: str, router: RecordRouter, sink: ListSink) -> None:
    stats = router.stats
    parsed = stats.events / max(1, stats.records - stats.skipped)
    reasons = Counter(d["reason"] for d in sink.dead_letters)
    print(f"{name}: {stats.events}/{stats.records - stats.skipped} parsed ({parsed:.2%}); dead letters {reasons}")
    assert stats.events + stats.dead_letters + stats.skipped == stats.records  # nothing silently dropped
    assert len(sink.dead_letters) == stats.dead_letters and all(d["reason"] and d["payload"] for d in sink.dead_letters)
    assert parsed >= MIN_RATE, reasons.most_common(5)


def _structured(name: str) -> list[dict[str, str]]:
    with open(LOGHUB / name / f"{name}_2k.log_structured.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(("name", "fmt", "source_types"), [
    ("Apache", "weberror", {"apache_error"}),
    ("Linux", "syslog", {"linux_syslog", "sshd", "linux_auth"}),
    ("OpenSSH", "syslog", {"sshd"}),
    ("Proxifier", "proxifier", {"proxifier"}),
    ("Windows", "cbs", {"windows_cbs"}),
])
def test_loghub_parse_rate_and_fields(name: str, fmt: str, source_types: set[str]) -> None:
    sink, router = _tail_once([LOGHUB / name / f"{name}_2k.log"])  # format auto-detected
    _assert_rate(name, router, sink)
    assert {e["source_type"] for e in sink.events} <= source_types
    rows = _structured(name)
    assert len(rows) == len(sink.events)
    for row, event in zip(rows, sink.events, strict=True):
        content = row["Content"].strip()
        message = event.get("message", "").strip()
        if name == "Apache":
            client = re.match(r"^\[client ([^\]]+)\] ", content)
            if client:  # loghub keeps the client in the content; the parser makes it src_ip
                assert event["src_ip"] == client.group(1)
                content = content[client.end():]
            assert (event["severity"], message) == (row["Level"], content)
            assert format_ts(event["ts"]).startswith("2005-12-")
        elif name == "OpenSSH":
            assert (event["host_name"], event["extra"]["pid"], message) == (row["Component"], row["Pid"], content)
            assert format_ts(event["ts"])[5:19] == f"12-{int(row['Day']):02d}T{row['Time']}"
        elif name == "Linux":
            assert (event["host_name"], event["extra"]["program"], message) == (row["Level"], row["Component"], content)
            assert event["extra"].get("pid", "") == row["PID"]
        elif name == "Proxifier":
            program, _, bits = row["Program"].partition(" *")  # "svchost.exe *64": a 64-bit process
            assert event["process_image"] == program and (event["extra"].get("arch") == "64-bit") == (bits == "64")
        else:
            assert (event["extra"]["level"], event["extra"]["component"], message) == (
                row["Level"], row["Component"], content)


def test_loghub_openssh_attempts() -> None:
    """The auth fields a brute-force rule counts: failures by source address, with the account named."""
    sink, _ = _tail_once([LOGHUB / "OpenSSH" / "OpenSSH_2k.log"])
    failures = [e for e in sink.events if e.get("action") == "failure"]
    rows = _structured("OpenSSH")
    failed_rows = [r for r in rows if r["Content"].startswith(("Failed password", "Failed none", "Failed publickey"))]
    pam_rows = [r for r in rows if ("authentication failure;" in r["Content"] and "more authentication" not in
                                    r["Content"]) or "maximum authentication attempts" in r["Content"]]
    assert len(failures) == len(failed_rows) + len(pam_rows)
    assert all(e.get("src_ip") or e["extra"].get("rhost") for e in failures)  # PAM may name the host instead
    top = Counter(e.get("src_ip") for e in failures).most_common(1)[0]
    assert top[0] == "183.62.140.253" and top[1] > 100  # the sample's brute-forcer


ZEEK_LOGS = sorted(p.name.split(".")[0] for p in (ZEEK / "zeek-default").glob("*.log.gz")) if ZEEK.exists() else []


@pytest.mark.parametrize("log", ZEEK_LOGS)
def test_zeek_tsv_and_json_agree(log: str) -> None:
    tsv_sink, tsv_router = _tail_once([ZEEK / "zeek-default" / f"{log}.log.gz"], "zeek")
    json_sink, json_router = _tail_once([ZEEK / "zeek-json" / f"{log}.json.gz"], "zeek")
    _assert_rate(f"zeek {log} TSV", tsv_router, tsv_sink)
    _assert_rate(f"zeek {log} JSON", json_router, json_sink)
    assert len(tsv_sink.events) == len(json_sink.events)
    assert {e["source_type"] for e in tsv_sink.events + json_sink.events} == {f"zeek_{log}"}
    columns = ("src_ip", "src_port", "dst_ip", "dst_port", "dns_query", "dns_answers", "tls_sni", "tls_version",
               "user_name", "protocol", "conn_state")

    def key(e: dict[str, Any]) -> tuple[Any, ...]:
        ts = e["ts"] if log != "loaded_scripts" else 0  # timed by #open vs _write_ts
        return (ts, *(tuple(e[c]) if isinstance(e.get(c), list) else e.get(c) for c in columns))

    assert Counter(map(key, tsv_sink.events)) == Counter(map(key, json_sink.events))


def test_windows_regression_events_parse() -> None:
    if not REGRESSION.exists():
        pytest.skip("SigmaHQ regression data absent")
    parsed = failed = 0
    for path in sorted(REGRESSION.rglob("*.json")):
        for i, doc in enumerate(read_json_documents(path.read_text())):
            try:
                event = to_event(doc, "real", f"{path.name}#{i}", raw=orjson.dumps(doc).decode())
            except ParseError:
                failed += 1
                continue
            parsed += 1
            assert event["source_type"] == "windows" and event["extra"]["EventID"]
    print(f"windows regression samples: {parsed} parsed, {failed} failed")
    assert parsed / (parsed + failed) >= MIN_RATE


def test_windows_json_lines_via_tail(tmp_path: Path) -> None:
    if not REGRESSION.exists():
        pytest.skip("SigmaHQ regression data absent")
    docs = [d for p in sorted(REGRESSION.rglob("*.json"))[:20] for d in read_json_documents(p.read_text())]
    path = tmp_path / "winlog.json"
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in docs) + b"\n")
    sink, router = _tail_once([path])
    _assert_rate("windows jsonl", router, sink)
    assert len(sink.events) == len(docs)


def test_zeek_gz_lines_are_read_like_plain(tmp_path: Path) -> None:
    if not ZEEK.exists():
        pytest.skip("Zeek data absent")
    plain = tmp_path / "rdp.log"
    plain.write_bytes(gzip.decompress((ZEEK / "zeek-default" / "rdp.log.gz").read_bytes()))
    from_plain, _ = _tail_once([plain], "zeek")
    parser = make_parser("zeek", ParseContext.make(sensor="real"), "rdp.log")
    direct = [e for i, line in enumerate(plain.read_text().splitlines()) if (e := parser.parse(line, str(i)))]
    assert [e["src_ip"] for e in from_plain.events] == [e["src_ip"] for e in direct]
