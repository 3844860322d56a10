"""The `ganzhi` command as a user runs it, in embedded mode (a fresh GANZHI_HOME per test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import INVENTORY, SAMPLE, SHARED_DATA


def ganzhi(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GANZHI_HOME": str(home), "COLUMNS": "200"}
    env.pop("GANZHI_KAFKA", None)
    env.pop("GANZHI_CLICKHOUSE", None)
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_help_lists_the_subcommands(tmp_path: Path) -> None:
    out = ganzhi(tmp_path, "--help").stdout
    for command in ("ingest", "writer", "query", "events", "deadletters", "info", "schema"):
        assert command in out


def test_ingest_then_query_in_embedded_mode(tmp_path: Path) -> None:
    result = ganzhi(tmp_path, "ingest", str(SAMPLE))
    assert "400 events" in result.stdout and "1 dead-lettered" in result.stdout
    rows = [orjson.loads(line) for line in ganzhi(
        tmp_path, "query", "--json", "SELECT event_category, count() AS n FROM events GROUP BY 1 ORDER BY 1"
    ).stdout.splitlines()]
    assert sum(r["n"] for r in rows) == 400
    assert {r["event_category"] for r in rows} == {"auth", "dns", "http", "tls"}

    burst = ganzhi(tmp_path, "events", "--since", "2024-05-01T08:00", "--until", "2024-05-01T09:00",
                   "--src-ip", "198.51.100.23", "--limit", "1000", "--json").stdout.splitlines()
    assert len(burst) == 40 and all(orjson.loads(b)["action"] == "failure" for b in burst)

    params = ganzhi(tmp_path, "query", "--json", "-p", "u=root' OR '1'='1",
                    "SELECT count() AS n FROM events WHERE user_name = {u:String}").stdout
    assert orjson.loads(params)["n"] == 0

    dead = ganzhi(tmp_path, "deadletters", "--json").stdout.splitlines()
    assert len(dead) == 1 and "invalid JSON" in orjson.loads(dead[0])["reason"]

    # importing the same file again is idempotent once merged (same event ids)
    ganzhi(tmp_path, "ingest", str(SAMPLE))
    ganzhi(tmp_path, "query", "OPTIMIZE TABLE events FINAL")
    total = ganzhi(tmp_path, "query", "--json", "SELECT count() AS n FROM events").stdout
    assert orjson.loads(total)["n"] == 400


def test_ingest_enriches_with_the_inventory_and_indicators(tmp_path: Path) -> None:
    samples = SAMPLE.parent
    ganzhi(tmp_path, "--inventory", str(samples / "inventory.yaml"), "--ioc", str(samples / "iocs.csv"),
           "ingest", "--no-detect", str(SAMPLE))
    rows = {r["dst_ip"]: r for r in map(orjson.loads, ganzhi(
        tmp_path, "query", "--json", "SELECT dst_ip, any(dst_org_unit) AS ou, any(dst_asset) AS asset, "
        "any(dst_zone) AS zone, any(dst_criticality) AS crit FROM events GROUP BY dst_ip").stdout.splitlines())}
    assert (rows["10.30.0.8"]["ou"], rows["10.30.0.8"]["asset"], rows["10.30.0.8"]["crit"]) == \
        ("区政务服务数据管理局", "协同办公系统 (oa.district.gov.cn)", 5)
    assert rows["10.0.0.53"]["zone"] == "backbone" and rows["203.0.113.10"]["ou"] == ""
    hits = orjson.loads(ganzhi(tmp_path, "query", "--json", "SELECT count() AS n, any(ioc_ids) AS ids, "
                               "uniqExact(src_ip) AS sources FROM events WHERE notEmpty(ioc_ids)").stdout)
    assert hits == {"n": 40, "ids": ["district-soc-2024-0001"], "sources": 1}
    missing = ganzhi(tmp_path, "--inventory", str(tmp_path / "none.yaml"), "ingest", str(SAMPLE), check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    bad_sql = ganzhi(tmp_path, "query", "SELECT * FROM nowhere", check=False)
    assert bad_sql.returncode == 2 and "store error" in bad_sql.stderr and "Traceback" not in bad_sql.stderr
    no_kafka = ganzhi(tmp_path, "writer", check=False)
    assert no_kafka.returncode == 2 and "GANZHI_KAFKA" in no_kafka.stderr
    bad_time = ganzhi(tmp_path, "events", "--since", "last tuesday", check=False)
    assert bad_time.returncode == 2 and "duration like 15m" in bad_time.stderr
    bad_url = ganzhi(tmp_path, "--clickhouse", "http://x", "info", check=False)
    assert bad_url.returncode == 2 and "clickhouse://" in bad_url.stderr


def test_schema_ddl_is_printable(tmp_path: Path) -> None:
    ddl = ganzhi(tmp_path, "schema", "--ddl").stdout
    assert "CREATE TABLE IF NOT EXISTS ganzhi.events" in ddl and "ReplacingMergeTree" in ddl


def _ssh_log(path: Path) -> None:
    lines = [f"Mar  1 10:00:{n:02d} bastion sshd[{n}]: Failed password for root from 203.0.113.9 port {n} ssh2"
             for n in range(12)]
    lines += ["Mar  1 10:01:00 bastion sshd[99]: Accepted password for root from 203.0.113.9 port 99 ssh2",
              "garbage that is no syslog line"]
    path.write_text("\n".join(lines) + "\n")


def test_sensor_tail_jsonl_output(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    _ssh_log(log)
    proc = ganzhi(tmp_path, "sensor", "tail", str(log), "--once", "--output", "jsonl", "--year", "2024")
    events = [orjson.loads(line) for line in proc.stdout.splitlines()]
    dead = [orjson.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert [e["action"] for e in events] == ["failure"] * 12 + ["success"]
    assert len(dead) == 1 and dead[0]["source"] == "syslog" and "no timestamp" in dead[0]["reason"]


def test_sensor_tail_embedded_stores_and_detects(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    _ssh_log(log)
    ganzhi(tmp_path, "sensor", "tail", str(log), "--once", "--year", "2024")
    again = ganzhi(tmp_path, "sensor", "tail", str(log), "--once", "--year", "2024")  # checkpointed: nothing new
    assert "0 records" in again.stderr
    rows = ganzhi(tmp_path, "query", "--json", "SELECT action, count() AS n FROM events GROUP BY 1 ORDER BY 1").stdout
    assert [orjson.loads(r) for r in rows.splitlines()] == [{"action": "failure", "n": 12},
                                                            {"action": "success", "n": 1}]
    alerts = ganzhi(tmp_path, "query", "--json", "SELECT DISTINCT rule_id FROM alerts").stdout
    assert alerts.strip(), "the SSH brute-force rules should fire on 12 failures in 12 s"
    bad = ganzhi(tmp_path, "sensor", "tail", str(log), "--format", "nope", check=False)
    assert bad.returncode == 2 and "unknown log format" in bad.stderr


EVTX_SAMPLES = sorted((SHARED_DATA / "sigma" / "sigmahq" / "regression_data").rglob("*.evtx"))


@pytest.mark.skipif(not EVTX_SAMPLES, reason="../shared/data is absent")
def test_sensor_reads_evtx_files_into_the_store_and_as_jsonl(tmp_path: Path) -> None:
    files = EVTX_SAMPLES[:20]
    for f in files:  # a corrupt file beside them is a dead letter, not a crash
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "broken.evtx").write_bytes(b"ElfFile\x00" + b"\x00" * 100)
    pattern = str(tmp_path / "*.evtx")
    proc = ganzhi(tmp_path, "sensor", "tail", pattern, "--format", "evtx", "--once", "--output", "jsonl")
    events = [orjson.loads(line) for line in proc.stdout.splitlines()]
    dead = [orjson.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert len(events) >= len(files) and {e["source_type"] for e in events} == {"windows"}
    assert all(e["ts"].startswith("20") and e["extra"]["EventID"] for e in events)
    assert any(e.get("process_image") for e in events) and any(e["event_category"] == "process_creation"
                                                               for e in events)
    assert len(dead) == 1 and "broken.evtx" in dead[0]["origin"] and "unreadable" in dead[0]["reason"]

    ganzhi(tmp_path, "sensor", "tail", pattern, "--format", "evtx", "--once")
    stored = ganzhi(tmp_path, "query", "--json", "SELECT count() AS n FROM events WHERE source_type = 'windows'")
    assert orjson.loads(stored.stdout) == {"n": len(events)}


def test_situation_warnings_exposures_and_bulletin_commands(tmp_path: Path) -> None:
    inventory, feed = ("--inventory", str(INVENTORY)), Path(__file__).resolve().parents[1] / "data" / "cve"
    ganzhi(tmp_path, *inventory, "ingest", str(SAMPLE))
    update = ganzhi(tmp_path, *inventory, "situation", "update", "--no-notify").stdout
    assert "situation index" in update and "extranet warning now" in update
    scores = [orjson.loads(line) for line in ganzhi(tmp_path, *inventory, "situation", "show", "--json").stdout
              .splitlines()]
    extranet = next(s for s in scores if s["scope_kind"] == "extranet")
    assert extranet["score"] > 0 and extranet["factors"][0]["kind"] == "incident"
    levels = [orjson.loads(line) for line in ganzhi(tmp_path, "warnings", "list", "--json").stdout.splitlines()]
    assert {w["scope"] for w in levels} >= {"extranet"} and all(1 <= w["level"] <= 4 for w in levels)
    loaded = ganzhi(tmp_path, "exposures", "load-feed", str(feed / "nvdcve-2.0-synthetic.json"), "--kev",
                    str(feed / "kev-synthetic.json")).stdout
    assert "8 CVE(s)" in loaded and "2 known exploited" in loaded
    bad = ganzhi(tmp_path, "exposures", "load-feed", str(SAMPLE), check=False)
    assert bad.returncode == 2 and "nvd.nist.gov" in bad.stderr
    assert ganzhi(tmp_path, "exposures", "exclude", "--reason", "", "--value", "10.0.0.1", check=False).returncode == 2
    out = tmp_path / "reports"
    ganzhi(tmp_path, *inventory, "report", "--period", "week", "--out", str(out))
    pdf, html = next(out.glob("*.pdf")), next(out.glob("*.html"))
    assert pdf.read_bytes().startswith(b"%PDF") and "态势通报" in html.read_text(encoding="utf-8")
    assert ganzhi(tmp_path, "report", "--period", "year", check=False).returncode == 2
    broken = tmp_path / "w.yaml"
    broken.write_text("triggers: [{id: a, level: 9, kind: index, scope: extranet, at_least: 1}]")
    checked = ganzhi(tmp_path, "warnings", "check", str(broken), check=False)
    assert checked.returncode == 2 and "level must be 1" in checked.stderr


def test_rules_activate_makes_later_runs_follow_it(tmp_path: Path) -> None:
    rules = tmp_path / "custom"
    rules.mkdir()
    (rules / "root.yml").write_text(
        "title: Root logon attempt\nid: cccccccc-0000-0000-0000-000000000003\nstatus: test\n"
        "logsource: {category: auth}\ndetection:\n  sel:\n    user_name: root\n  condition: sel\nlevel: low\n")
    pinned = ganzhi(tmp_path, "ingest", str(SAMPLE), "--rules", str(rules))
    assert "(pinned by --rules)" in pinned.stderr
    version = pinned.stderr.split("rule set ", 1)[1].split()[0]
    refused = ganzhi(tmp_path, "rules", "activate", "0123456789abcdef", check=False)
    assert refused.returncode != 0 and "rules versions" in refused.stderr + refused.stdout
    done = ganzhi(tmp_path, "rules", "activate", version, "--reason", "root logons matter")
    assert f"activated rule set {version}" in done.stdout
    assert version in ganzhi(tmp_path, "rules", "versions").stdout
    following = ganzhi(tmp_path, "ingest", str(SAMPLE))
    assert f"rule set {version} (follows activations)" in following.stderr
    audit = ganzhi(tmp_path, "query", "--json", "SELECT action, target FROM audit_log").stdout
    assert {"action": "rules activate", "target": version} in [orjson.loads(line) for line in audit.splitlines()]
