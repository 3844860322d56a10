"""The main job end to end: `ganzhi demo --no-serve` on embedded defaults — every stage of the simulated
campaign detected, linked into the expected incidents on the right assets and org units, the background quiet,
the warning level raised and the bulletin written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ATTACKER_STAGES = ["Vertical port scan (many ports of one host)", "SSH password brute force",
                   "Password spraying (many accounts from one source)",
                   "SSH brute force followed by a successful login", "Path traversal attempt in a web request",
                   "SQL injection attempt in a web request", "Web shell access"]
PORTAL_STAGES = ["Traffic matches a threat-intelligence indicator",
                 "Possible beaconing (regular connections to one external service)",
                 "Lateral movement over SMB/RPC/WinRM (one host to many)",
                 "DNS query with a long encoded label (possible tunnelling)",
                 "Burst of unique DNS names from one host (possible tunnelling)"]


def _ganzhi(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GANZHI_HOME": str(home), "COLUMNS": "200"}
    env.pop("GANZHI_KAFKA", None)
    env.pop("GANZHI_CLICKHOUSE", None)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:  # type: ignore[type-arg]
    home = tmp_path_factory.mktemp("demo")
    done = _ganzhi(home, "demo", "--no-serve", "--day", "2026-11-20")
    assert done.returncode == 0, done.stderr[-3000:]
    return home / "demo", orjson.loads((home / "demo" / "summary.json").read_bytes()), done.stdout


def test_every_stage_is_detected_and_linked_into_its_incident(demo) -> None:  # type: ignore[no-untyped-def]
    _, summary, stdout = demo
    fired = {a["title"] for a in summary["alerts_by_rule"]}
    assert set(ATTACKER_STAGES + PORTAL_STAGES) <= fired
    by_key = {i["group_key"]: i for i in summary["incidents"]}
    attacker, portal = by_key["src_ip=203.0.113.66"], by_key["src_asset=政务门户网站"]
    chain = [s["title"] for s in attacker["stages"]]
    assert set(ATTACKER_STAGES) <= set(chain) and chain[0] == ATTACKER_STAGES[0]  # reconnaissance came first
    assert chain.index("Web shell access") > chain.index("Path traversal attempt in a web request")
    assert {"政务门户网站", "政务邮件系统"} <= set(attacker["assets"]) and attacker["severity"] == "critical"
    assert attacker["org_units"] == ["区政务服务数据管理局"]
    assert set(PORTAL_STAGES) <= {s["title"] for s in portal["stages"]} and portal["severity"] == "critical"
    assert "政务门户网站" in portal["assets"]
    tactics = {t for s in attacker["stages"] + portal["stages"] for t in s["tactics"]}
    assert {"discovery", "credential_access", "initial_access", "persistence", "command_and_control",
            "exfiltration"} <= tactics
    assert "CRITICAL incident" in stdout and "→" in stdout


def test_background_traffic_stays_quiet(demo) -> None:  # type: ignore[no-untyped-def]
    home, summary, _ = demo
    # ~9,000 background events (DNS, web, TLS, mail, SSH, SMB, logs) over a working day: 0 alerts outside the
    # two campaign incidents, and no other incident
    assert len(summary["incidents"]) == 2
    linked = sum(i["alert_count"] for i in summary["incidents"])
    assert sum(a["alerts"] for a in summary["alerts_by_rule"]) == linked
    assert sum(summary["events_by_source"].values()) > 8_000 and summary["dead_letters"] == 0
    stored = _ganzhi(home.parent / "demo-query", "--home", str(home), "query", "--json",
                     "SELECT count() AS n, uniqExact(source_type) AS sources FROM events")
    assert stored.returncode == 0, stored.stderr
    row = orjson.loads(stored.stdout)
    assert row["n"] == sum(summary["events_by_source"].values()) and row["sources"] >= 7


def test_warning_level_and_the_bulletin(demo) -> None:  # type: ignore[no-untyped-def]
    home, summary, _ = demo
    assert summary["warning"]["level"] == 2 and summary["extranet_index"] > 50
    pdf = Path(summary["bulletin"]["pdf"])
    assert pdf.read_bytes().startswith(b"%PDF")
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
        for section in ("预警等级", "态势指数", "重点事件", "受攻击单位", "规则活跃度", "Web shell access"):
            assert section in text, section
    assert (home / "scenario" / "capture" / "dmz-mirror.pcap").stat().st_size > 1_000_000


def test_the_same_seed_gives_the_same_day(demo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from pipeline.demo.scenario import generate

    home, _, _ = demo
    again = generate(tmp_path, datetime(2026, 11, 20, tzinfo=UTC))
    original = home / "scenario"
    for path in (again.pcap, again.auth_log, again.access_log, again.inventory):
        assert path.read_bytes() == (original / path.relative_to(tmp_path)).read_bytes(), path.name
