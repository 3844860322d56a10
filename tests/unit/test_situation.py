"""Situation assessment on four seeded weeks (tests/situation_support.py) in the embedded store: baselines and
anomalies, scores and their factors, forecasts and their measured error, warning levels, exposures, bulletin."""

from __future__ import annotations

import math
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.incidents.model import get_incident, save_incidents
from pipeline.situation import assess, baseline, cycle, early_warning, elements, exposure, forecast, report
from pipeline.store.ddl import ALERT_HIT_KINDS
from pipeline.store.embedded import EmbeddedStore
from tests import situation_support as seed
from tests.conftest import SHARED_DATA

HOUR_MS = seed.HOUR_MS
FEED = Path(__file__).resolve().parents[1] / "data" / "cve"
NVD, KEV = FEED / "nvdcve-2.0-synthetic.json", FEED / "kev-synthetic.json"


def _fresh(chdb_path: Path) -> EmbeddedStore:
    store = EmbeddedStore(chdb_path, database=f"sit_{uuid.uuid4().hex[:10]}")
    store.ensure_schema()
    seed.seed(store)
    exposure.load_feed(store, [NVD], [KEV])
    assess.backfill(store, assess.AssetBook(seed.INVENTORY.blocks()), seed.START_MS, seed.END_MS - HOUR_MS)
    return store


@pytest.fixture(scope="module")
def _world(chdb_path: Path) -> Iterator[tuple[EmbeddedStore, cycle.CycleResult]]:
    store = _fresh(chdb_path)
    result = cycle.run_cycle(store, seed.END_MS, seed.INVENTORY)
    yield store, result
    store.execute(f"DROP DATABASE IF EXISTS {store.database}")


@pytest.fixture
def world(_world: tuple[EmbeddedStore, cycle.CycleResult]) -> tuple[EmbeddedStore, cycle.CycleResult]:
    """Seeded, assessed up to the end of the four weeks. Read-only: tests that change things use `changing`."""
    _world[0].use_database()  # chDB has one default database per process; other tests' stores move it
    return _world


@pytest.fixture
def changing(chdb_path: Path) -> Iterator[EmbeddedStore]:
    store = _fresh(chdb_path)
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {store.database}")


# -- baselines ------------------------------------------------------------------------------------------------


def test_baseline_finds_the_burst_and_nothing_else_in_a_week(world) -> None:  # type: ignore[no-untyped-def]
    store, _ = world
    week = baseline.find_anomalies(store, (seed.END_MS - 7 * 24 * HOUR_MS) // 1000, seed.END_MS // 1000)
    found = {(a.org_unit, a.metric, a.hour_s * 1000) for a in week}
    # 168 hours x 3 scopes x 4 metrics judged; only the password-guessing burst stands out
    assert found == {(seed.UNIT_A, "failed_logins", seed.SPIKE_MS), ("", "failed_logins", seed.SPIKE_MS)}
    burst = next(a for a in week if a.org_unit == seed.UNIT_A)
    assert burst.observed >= 150 and burst.low <= burst.expected <= 3 < burst.high < 30 and burst.level == "high"
    assert "failed logins 15" in burst.title() and f"{burst.low:,.0f}-{burst.high:,.0f}" in burst.title()


def test_anomalies_are_alerts_and_rerunning_adds_none(world) -> None:  # type: ignore[no-untyped-def]
    store, result = world
    assert result.anomalies == 2
    count = "SELECT count() FROM (SELECT alert_id FROM alerts WHERE kind = 'anomaly')"
    assert store.query(count).scalar() == 2
    again = baseline.find_anomalies(store, (seed.END_MS - 24 * HOUR_MS) // 1000, seed.END_MS // 1000)
    baseline.save_anomalies(store, again, seed.END_MS + 1)
    assert store.query(count).scalar() == 2
    title = store.query("SELECT rule_title FROM alerts WHERE kind = 'anomaly' AND entity != 'extranet'").scalar()
    assert "above the expected" in title and seed.UNIT_A in title


def test_a_quiet_hour_in_a_busy_unit_is_a_drop_anomaly(changing) -> None:  # type: ignore[no-untyped-def]
    hour = seed.END_MS - 7 * 24 * HOUR_MS + 3 * HOUR_MS  # Monday 11:00 Beijing time, a busy office hour
    changing.execute("DELETE FROM events WHERE dst_org_unit = {u:String} AND ts >= fromUnixTimestamp64Milli({h:Int64}) "
                     "AND ts < fromUnixTimestamp64Milli({e:Int64})", {"u": seed.UNIT_B, "h": hour, "e": hour + HOUR_MS})
    found = baseline.find_anomalies(changing, hour // 1000, (hour + HOUR_MS) // 1000)
    drops = {(a.org_unit, a.metric) for a in found if a.observed < a.low}
    assert {(seed.UNIT_B, "connections"), (seed.UNIT_B, "bytes"), (seed.UNIT_B, "dns_queries")} <= drops
    assert not any(a.org_unit == seed.UNIT_A for a in found)


def test_expected_range_is_robust_and_never_zero_width() -> None:
    median, _, high = baseline.expected_range([10, 11, 9, 500], k=4)  # one past incident does not widen it much
    assert median == 10.5 and high < 40
    assert baseline.expected_range([0, 0, 0], k=4) == (0.0, 0.0, 4.0)


# -- scores ---------------------------------------------------------------------------------------------------


def test_scores_are_bounded_and_explained_by_their_factors(world) -> None:  # type: ignore[no-untyped-def]
    store, result = world
    latest = {(s["scope_kind"], s["scope"]): s for s in assess.latest(store)}
    extranet, health = latest[("extranet", "")], latest[("org_unit", seed.UNIT_B)]
    assert 0 <= extranet["score"] <= 100 and extranet["score"] == result.extranet_index
    for score in latest.values():
        contributions = [f["contribution"] for f in score["factors"]]
        assert contributions == sorted(contributions, reverse=True)
        for f in score["factors"]:  # every contribution is the product of its named factors
            assert f["contribution"] == pytest.approx(min(95, 100 * math.prod(f["factors"].values())), rel=0.005)
        # the top factors alone cannot exceed the score they explain
        assert 100 * (1 - math.prod(1 - c / 100 for c in contributions)) <= score["score"] + 0.05
    top = health["factors"][0]
    assert top["ref"] == "inc-5" and top["factors"]["severity"] == 0.8 and top["factors"]["criticality"] == 1.0
    assert any(f["kind"] == "exposure" and "CVE-2021-41773" in f["title"] for f in health["factors"])
    assert latest[("asset", "卫健门户网站")]["score"] > latest[("asset", "低保审批系统")]["score"] > 0
    assert latest[("org_unit", "民政局")]["score"] == latest[("org_unit", seed.UNIT_A)]["score"]  # rolled up


def test_history_follows_incidents_opening_and_closing(world) -> None:  # type: ignore[no-untyped-def]
    store, _ = world
    points = dict(assess.history(store, "org_unit", seed.UNIT_A, seed.START_MS, seed.END_MS))
    day = 24 * HOUR_MS
    assert len(points) >= 28 * 24 - 1
    before, during = points[seed.START_MS + 3 * day - HOUR_MS], points[seed.START_MS + 3 * day + HOUR_MS]
    after = points[seed.START_MS + 4 * day + HOUR_MS]  # incident 1 resolved
    # high (.5) x criticality 4 (.8) x internal zone (.75) x fresh (1) = 30
    assert before == 0 and during == 30.0 and after == 0
    assert assess.band(during) == "elevated" and assess.band(80) == "severe"


# -- forecasts ------------------------------------------------------------------------------------------------


def test_forecast_error_is_measured_on_held_back_history() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(24 * 21)
    calm = 50 + 20 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1.5, len(t))
    f = forecast.forecast("test", calm.tolist(), 0, 24)
    assert f.model.startswith("ETS") and len(f.points()) == 24
    assert f.error["held_back_hours"] == 24 and f.error["mape_pct"] < 10 and f.error["interval_coverage_pct"] >= 70
    assert all(p["low"] <= p["mean"] <= p["high"] for p in f.points())
    broken = calm.copy()
    broken[-24:] += 60  # the held-back day is unlike the history: the measured error must say so
    assert forecast.forecast("test", broken.tolist(), 0, 24).error["mape_pct"] > 5 * f.error["mape_pct"]
    with pytest.raises(forecast.ForecastError, match="at least 48"):
        forecast.forecast("short", [1.0] * 30, 0, 24)


def test_forecasts_of_every_series_are_stored_with_their_error(world) -> None:  # type: ignore[no-untyped-def]
    store, result = world
    stored = {f["series"]: f for f in forecast.latest_forecasts(store)}
    assert result.forecasts == len(stored) >= 6 and not result.forecast_skipped
    assert {"index:extranet", "alerts:extranet", f"alerts:{seed.UNIT_A}", f"index:{seed.UNIT_B}"} <= set(stored)
    alerts = stored["alerts:extranet"]
    assert len(alerts["points"]) == cycle.FORECAST_HORIZON_H and alerts["model"].endswith("season 168 h")
    assert {"mae", "smape_pct", "mape_pct", "interval_coverage_pct", "seasonal_naive_mae"} <= set(alerts["error"])
    assert all(p["low"] >= 0 for p in alerts["points"])
    assert all(0 <= p["low"] <= p["high"] <= 100 for p in stored["index:extranet"]["points"])


# -- early warning ----------------------------------------------------------------------------------------------


def test_levels_follow_the_trigger_rules(world) -> None:  # type: ignore[no-untyped-def]
    store, result = world
    levels = {scope: w["level"] for scope, w in early_warning.current(store).items()}
    # a critical incident on a criticality-5 asset: II; the street's high incident alone: IV
    assert levels == {"": 2, seed.UNIT_B: 2, "民政局": 4, seed.UNIT_A: 4}
    reasons = {r["trigger"] for r in early_warning.current(store)[seed.UNIT_B]["reasons"]}
    assert {"critical-asset-compromised", "kev-on-critical-asset", "unit-index-high"} <= reasons
    assert {c["scope"] for c in result.changes} == {"extranet", seed.UNIT_B, "民政局", seed.UNIT_A}


def test_level_changes_are_recorded_once_and_lowered_when_resolved(changing) -> None:  # type: ignore[no-untyped-def]
    cycle.run_cycle(changing, seed.END_MS, seed.INVENTORY)
    assert cycle.run_cycle(changing, seed.END_MS + 60_000, seed.INVENTORY).changes == []  # nothing new
    incident = get_incident(changing, "inc-5")
    incident.status, incident.updated_at = "resolved", seed.END_MS + 2 * 60_000
    save_incidents(changing, [incident])
    later = cycle.run_cycle(changing, seed.END_MS + 3 * 60_000, seed.INVENTORY)
    change = next(c for c in later.changes if c["scope"] == seed.UNIT_B)
    assert change["previous"] == 2 and change["level"] == 3  # the KEV exposure on the portal still warns
    history = early_warning.history(changing, seed.START_MS)
    assert [h["level"] for h in history if h["scope"] == seed.UNIT_B] == [2, 3]


def test_spread_and_forecast_triggers() -> None:
    triggers = early_warning.load_triggers()
    ctx = early_warning.Context(at_ms=0, scores=[], incidents=[],
                                rule_departments={"r-worm": ["卫健委", "教育局", "民政局"], "r-one": ["民政局"]},
                                forecasts=[{"series": "index:教育局", "points": [{"ts": HOUR_MS, "mean": 80.0}]}])
    fired = {(f.trigger, f.units) for f in early_warning.evaluate(triggers, ctx)}
    assert fired == {("spread-across-departments", ("卫健委", "教育局", "民政局")), ("forecast-crossing", ("教育局",))}
    assert early_warning.scope_levels(early_warning.evaluate(triggers, ctx))[""][0] == 2


@pytest.mark.parametrize("text, message", [
    ("triggers: [{id: a, level: 5, kind: index, scope: extranet, at_least: 1}]", "level must be 1"),
    ("triggers: [{id: a, level: 1, kind: nonsense}]", "unknown kind"),
    ("triggers: [{id: a, level: 1, kind: index, scope: extranet}]", "takes exactly"),
    ("triggers: [{id: a, level: 1, kind: index, scope: extranet, at_least: high}]", "wrong type"),
    ("triggers: [{id: a, level: 1, kind: index, scope: planet, at_least: 1}]", "scope must be"),
    ("triggers: {}", "triggers` list"),
])
def test_bad_trigger_rules_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(early_warning.WarningRulesError, match=message):
        early_warning.load_triggers(path)


# -- exposures ------------------------------------------------------------------------------------------------


def test_banners_and_versions() -> None:
    assert exposure.identify("Apache/2.4.49 (Unix) OpenSSL/1.1.1k") == [
        ("apache", "http_server", "2.4.49"), ("openssl", "openssl", "1.1.1k")]
    assert exposure.identify("SSH-2.0-OpenSSH_7.4p1 Raspbian-10+deb9u3")[0] == ("openbsd", "openssh", "7.4p1")
    assert exposure.identify("Microsoft-IIS/7.5") == [("microsoft", "internet_information_services", "7.5")]
    assert exposure.identify("nginx") == []  # no version, nothing to match
    order = ["1.1.0", "1.1.1-rc1", "1.1.1", "1.1.1k", "1.1.1l", "1.1.10", "7.4", "7.4p1", "9.3p2", "10.0"]
    keyed = sorted(order, key=lambda v: [exposure._compare(v, w) for w in order].count(1))
    assert keyed == order
    rng = {"version": "*", "versionStartIncluding": "7.3.0", "versionEndExcluding": "7.3.11"}
    assert exposure.version_matches("7.3.10", rng) and not exposure.version_matches("7.3.11", rng)
    assert not exposure.version_matches("7.4.3", rng) and not exposure.version_matches("1", {"version": "*"})


def test_exposures_match_the_feed_exactly(world) -> None:  # type: ignore[no-untyped-def]
    store, result = world
    found = exposure.exposures(store, seed.END_MS, seed.INVENTORY)
    assert [(e["cve_id"], e["ip"], e["kev"]) for e in found] == [
        ("CVE-2021-41773", "10.30.0.10", True),  # KEV first
        ("CVE-2021-3711", "10.30.0.10", False), ("CVE-2023-38408", "10.20.3.15", False),  # CVSS 9.8, crit 5 then 4
        ("CVE-2022-31625", "10.30.0.10", False)]
    # not: OpenSSH 7.4 >= 7.3 (CVE-2016-6210), PHP 7.4.3 outside 7.3.x (CVE-2019-11043), nginx without a range
    portal = found[0]
    assert portal["asset"] == "卫健门户网站" and portal["criticality"] == 5 and portal["org_unit"] == seed.UNIT_B
    assert result.exposures == 4


def test_exclusions_are_scoped_expiring_and_revocable(changing) -> None:  # type: ignore[no-untyped-def]
    cycle.run_cycle(changing, seed.END_MS, seed.INVENTORY)
    now = seed.END_MS

    def cves(at: int = now) -> set[str]:
        return {e["cve_id"] for e in exposure.exposures(changing, at, seed.INVENTORY)}

    one = exposure.add_exclusion(changing, "CVE-2021-3711", "ip", "10.30.0.10", "false_positive",
                                 "OpenSSL built without SM2", "resp", 4_102_444_800_000)
    assert "CVE-2021-3711" not in cves() and "CVE-2021-41773" in cves()
    exposure.add_exclusion(changing, "", "org_unit", "民政局", "accepted_risk", "isolated network, replaced in Q1",
                           "resp", now + HOUR_MS + 10**12)
    assert cves() == {"CVE-2021-41773", "CVE-2022-31625"}
    assert cves(now + HOUR_MS + 10**12 + 1) >= {"CVE-2023-38408"}  # expired
    everything = exposure.exposures(changing, now, seed.INVENTORY, include_excluded=True)
    assert {e["excluded_by"] for e in everything if e["cve_id"] == "CVE-2021-3711"} == {one.exclusion_id}
    assert exposure.revoke_exclusion(changing, one.exclusion_id, 4_000_000_000_000)
    assert "CVE-2021-3711" in cves(4_000_000_000_001)
    for bad in [("CVE-1", "ip", "x"), ("", "planet", "x"), ("", "all", "x"), ("", "ip", "")]:
        with pytest.raises(ValueError):
            exposure.add_exclusion(changing, *bad, "accepted_risk", "r", "resp", 4_102_444_800_000)


def test_bad_feed_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"not": "nvd"}')
    (tmp_path / "b.json").write_text("{broken")
    for name in ("a.json", "b.json"):
        with pytest.raises(exposure.FeedError, match=name):
            exposure.parse_nvd(tmp_path / name)
    with pytest.raises(exposure.FeedError, match="KEV"):
        exposure.parse_kev(NVD)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is absent")
def test_exposures_from_real_zeek_software_and_ssh_logs(embedded_store) -> None:  # type: ignore[no-untyped-def]
    from sensors.logs.parsers import ParseContext
    from sensors.logs.router import RecordRouter
    from sensors.logs.tail import Tailer
    from sensors.sink import ListSink

    zeek = SHARED_DATA / "zeek" / "wrccdc-2018" / "zeek-json"
    sink = ListSink()
    Tailer([str(zeek / "software.json.gz"), str(zeek / "ssh.json.gz")], "zeek", RecordRouter(sink), None,
           ParseContext.make(sensor="wrccdc")).run_once()
    embedded_store.insert_events(sink.events)
    exposure.load_feed(embedded_store, [NVD], [KEV])
    assert exposure.refresh_inventory(embedded_store, 0, 4_102_444_800_000) > 0
    observed = {(r["ip"], r["port"], r["kind"], r["product"]) for r in exposure.inventory(embedded_store)}
    assert ("10.47.27.80", 8080, "software", "Microsoft-IIS/7.5") in observed
    assert any(kind == "ssh" and "OpenSSH_6.7p1" in product for _, _, kind, product in observed)
    found = exposure.exposures(embedded_store, 0)
    iis = {(e["ip"], e["port"]) for e in found if e["cve_id"] == "CVE-2010-3972"}
    assert ("10.47.27.80", 8080) in iis
    ssh = {e["cve_id"] for e in found if e["kind"] == "ssh" and "OpenSSH_6.7p1" in e["product"]}
    assert ssh == {"CVE-2016-6210", "CVE-2023-38408"}
    newer = {e["cve_id"] for e in found if e["kind"] == "ssh" and "OpenSSH_7.4p1" in e["product"]}
    assert newer == {"CVE-2023-38408"}


# -- the bulletin --------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils missing: run `make system-deps`")
def test_bulletin_renders_html_and_pdf_with_every_section(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, _ = world
    bulletin = report.render(store, "week", seed.END_MS, seed.INVENTORY)
    assert bulletin.pdf.startswith(b"%PDF") and bulletin.data["level"]["level"] == 2
    pdf = tmp_path / "b.pdf"
    pdf.write_bytes(bulletin.pdf)
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    for section in report.SECTIONS:
        assert section.split(" ")[0] in text, f"section {section} missing from the PDF"
        assert section in bulletin.html
    for expected in ("II 重大", "CVE-2021-41773", "卫健门户网站", seed.UNIT_A, "seeded incident 5", "ETS(A,N,A)",
                     "discovery"):
        assert expected in text, expected
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 2 and all(p.stat().st_size > 5_000 for p in pages)
    assert bulletin.html.count("data:image/png;base64,") == 4
    day = report.render(store, "day", seed.END_MS, seed.INVENTORY)
    assert day.data["start_ms"] == seed.END_MS - 24 * HOUR_MS and day.data["incident_count"] == 2
    with pytest.raises(report.ReportError, match="period"):
        report.gather(store, "year", seed.END_MS)


def test_elements_name_assets_threats_vulnerabilities_and_traffic(changing) -> None:  # type: ignore[no-untyped-def]
    store = changing
    cycle.run_cycle(store, seed.END_MS, seed.INVENTORY)
    store.insert_columns("alert_hits", {
        "alert_id": ["tactic-1"], "rule_id": ["r-brute"], "rule_title": ["brute force"], "level": ["high"],
        "tags": [["attack.credential-access", "attack.t1110"]], "kind": ["rule"], "ruleset_version": ["x"],
        "entity": ["src_ip=10.66.6.6"], "window_start": [seed.SPIKE_MS], "event_id": ["e1"],
        "event_ts": [seed.SPIKE_MS], "src_ip": ["10.66.6.6"], "dst_ip": ["10.20.3.15"], "host_name": [""],
        "user_name": [""], "src_org_unit": [""], "dst_org_unit": [seed.UNIT_A], "src_asset": [""],
        "dst_asset": [""], "suppression_id": [""]}, ALERT_HIT_KINDS)
    day = elements.elements(store, seed.END_MS - 24 * HOUR_MS, seed.END_MS, "", seed.INVENTORY)
    assert {a["org_unit"] for a in day["assets"]} == {seed.UNIT_A, seed.UNIT_B}
    portal = next(a for a in day["assets"] if a["org_unit"] == seed.UNIT_B)
    assert "Apache/2.4.49 (Unix) OpenSSL/1.1.1k" in portal["software"] and portal["services"] == 1
    assert day["threats"]["by_tactic"] == {"discovery": day["threats"]["by_kind"]["rule"] - 1, "credential_access": 1}
    assert day["threats"]["by_kind"]["anomaly"] == 2
    assert day["threats"]["top_sources"][0]["source"] == "10.66.6.6"
    assert day["vulnerabilities"] == {"exposures": 4, "known_exploited": 1, "addresses": 2,
                                      "by_severity": {"high": 2, "critical": 2}}
    traffic = {t["org_unit"]: t for t in day["traffic"]}
    assert traffic[seed.UNIT_A]["failed_logins"]["now"] > 5 * traffic[seed.UNIT_A]["failed_logins"]["week_before"]
    assert 0.5 < traffic[seed.UNIT_B]["connections"]["now"] / traffic[seed.UNIT_B]["connections"]["week_before"] < 2
    mine = elements.elements(store, seed.END_MS - 24 * HOUR_MS, seed.END_MS, "民政局", seed.INVENTORY)
    assert [a["org_unit"] for a in mine["assets"]] == [seed.UNIT_A] and mine["vulnerabilities"]["exposures"] == 1
    assert {t["org_unit"] for t in mine["traffic"]} == {seed.UNIT_A}
    assert [i["severity"] for i in mine["incidents"]] == ["high"]
