"""The situation, warnings, exposures and bulletins through the API: scoping by org unit, roles, audit."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from api.auth import create_token, save_user
from pipeline.config import Settings
from pipeline.situation import assess, cycle, exposure
from tests import situation_support as seed
from tests.api_support import USERS, Seeded

FEED = Path(__file__).resolve().parents[1] / "data" / "cve"


@pytest.fixture
def api(embedded_store, tmp_path: Path) -> Iterator[Seeded]:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    seed.seed(embedded_store)
    exposure.load_feed(embedded_store, [FEED / "nvdcve-2.0-synthetic.json"], [FEED / "kev-synthetic.json"])
    assess.backfill(embedded_store, assess.AssetBook(seed.INVENTORY.blocks()), seed.END_MS - 7 * 86_400_000,
                    seed.END_MS - seed.HOUR_MS)
    cycle.run_cycle(embedded_store, seed.END_MS, seed.INVENTORY)
    tokens = {}
    for name, (role, unit) in USERS.items():  # op_b is bound to 卫健委, resp_a to 民政局
        save_user(embedded_store, name, role, unit)
        tokens[name] = create_token(embedded_store, name, days=1)[1]
    settings = Settings(home=tmp_path, inventory=seed.write_inventory(tmp_path / "inventory.yaml"))
    app = create_app(settings, embedded_store, rate=10_000, burst=10_000)
    seeded = Seeded(TestClient(app, raise_server_exceptions=False), app, embedded_store, tokens)
    yield seeded
    seeded.close()


def test_situation_is_scoped_to_the_callers_org_unit(api: Seeded) -> None:
    everything = api.get("op", "/api/v1/situation").json()
    assert everything["at"] == seed.END_MS and everything["extranet"]["score"] > 0
    assert {u["scope"] for u in everything["org_units"]} == {"民政局", seed.UNIT_A, seed.UNIT_B}
    health = api.get("op_b", "/api/v1/situation").json()
    assert health["extranet"] is None and [u["scope"] for u in health["org_units"]] == [seed.UNIT_B]
    assert [a["scope"] for a in health["assets"]] == ["卫健门户网站"]
    assert health["org_units"][0]["factors"][0]["ref"] == "inc-5"
    history = api.get("op_b", "/api/v1/situation/history", params={"scope": seed.UNIT_B, "days": 30}).json()
    assert len(history) >= 7 * 24 and history[-1]["score"] == health["org_units"][0]["score"]
    assert api.get("op_b", "/api/v1/situation/history").status_code == 403  # the extranet-wide series
    assert api.get("op_b", "/api/v1/situation/history", params={"scope": "民政局"}).status_code == 404
    series = {f["series"] for f in api.get("op_b", "/api/v1/situation/forecast").json()}
    assert series == {f"index:{seed.UNIT_B}", f"alerts:{seed.UNIT_B}"}
    assert "index:extranet" in {f["series"] for f in api.get("op", "/api/v1/situation/forecast").json()}
    assert len(api.get("op", "/api/v1/situation/anomalies", params={"days": 30}).json()) == 2
    assert api.get("op_b", "/api/v1/situation/anomalies", params={"days": 30}).json() == []
    assert [a["org_unit"] for a in api.get("resp_a", "/api/v1/situation/anomalies", params={"days": 30}).json()] \
        == [seed.UNIT_A]


def test_warnings_are_scoped(api: Seeded) -> None:
    levels = {w["scope"]: w["level"] for w in api.get("op", "/api/v1/warnings").json()}
    assert levels == {"extranet": 2, seed.UNIT_B: 2, "民政局": 4, seed.UNIT_A: 4}
    assert {w["scope"] for w in api.get("op_b", "/api/v1/warnings").json()} == {seed.UNIT_B}
    history = api.get("resp_a", "/api/v1/warnings/history", params={"days": 400}).json()
    assert {h["scope"] for h in history} == {"民政局", seed.UNIT_A}


def test_exposures_and_their_exclusions(api: Seeded) -> None:
    def cves(user: str, **params: object) -> list[str]:
        response = api.get(user, "/api/v1/exposures", params=params)
        assert response.status_code == 200, response.text
        return [e["cve_id"] for e in response.json()]

    assert cves("op") == ["CVE-2021-41773", "CVE-2021-3711", "CVE-2023-38408", "CVE-2022-31625"]
    assert cves("op_b") == ["CVE-2021-41773", "CVE-2021-3711", "CVE-2022-31625"]
    assert cves("resp_a") == ["CVE-2023-38408"] and cves("op", kev=True) == ["CVE-2021-41773"]
    assert cves("op", min_cvss=9) == ["CVE-2021-3711", "CVE-2023-38408"]
    inventory = api.get("op_b", "/api/v1/exposures/inventory").json()
    assert {(r["ip"], r["kind"]) for r in inventory} >= {("10.30.0.10", "http_server"), ("10.30.0.10", "x_powered_by")}
    assert all(r["org_unit"] == seed.UNIT_B for r in inventory)

    body = {"cve_id": "CVE-2021-3711", "scope": "ip", "value": "10.30.0.10", "kind": "false_positive",
            "reason": "OpenSSL built without SM2", "days": 30}
    assert api.client.post("/api/v1/exposures/exclusions", json=body, headers=api.headers("op")).status_code == 403
    assert api.client.post("/api/v1/exposures/exclusions", json=body,
                           headers=api.headers("resp_a")).status_code == 403  # 卫健委's server, not 民政局's
    for bad in ({**body, "cve_id": "CVE-1"}, {**body, "scope": "planet"}, {**body, "value": "not-an-ip"},
                {**body, "reason": ""}, {**body, "days": 0}, {**body, "extra": 1}):
        response = api.client.post("/api/v1/exposures/exclusions", json=bad, headers=api.headers("resp"))
        assert response.status_code == 422 and response.json()["error"], bad
    created = api.client.post("/api/v1/exposures/exclusions", json=body, headers=api.headers("resp"))
    assert created.status_code == 201, created.text
    exclusion = created.json()["exclusion_id"]
    assert "CVE-2021-3711" not in cves("op") and "CVE-2021-3711" in cves("op", include_excluded=True)
    mine = api.client.post("/api/v1/exposures/exclusions", headers=api.headers("resp_a"), json={
        "scope": "org_unit", "value": "民政局", "kind": "accepted_risk", "reason": "replaced in Q1"})
    assert mine.status_code == 201 and cves("resp_a") == []
    assert [x["value"] for x in api.get("resp_a", "/api/v1/exposures/exclusions").json()] == ["民政局"]
    assert api.client.delete(f"/api/v1/exposures/exclusions/{exclusion}", headers=api.headers("resp_a")).status_code \
        == 404  # not in its scope
    assert api.client.delete(f"/api/v1/exposures/exclusions/{exclusion}", headers=api.headers("resp")).status_code \
        == 204
    assert "CVE-2021-3711" in cves("op")
    audit = api.get("aud", "/api/v1/audit", params={"limit": 100}).json()
    items = audit["items"] if isinstance(audit, dict) else audit
    actions = [(a["actor"], a["action"], a["result"]) for a in items]
    assert ("resp", "POST /api/v1/exposures/exclusions", "201") in actions
    assert ("resp", "DELETE /api/v1/exposures/exclusions/{exclusion_id}", "204") in actions


def test_bulletins_are_rendered_downloaded_and_audited(api: Seeded) -> None:
    assert api.client.post("/api/v1/reports", json={"period": "week"}, headers=api.headers("op")).status_code == 403
    assert api.client.post("/api/v1/reports", json={"period": "week"},
                           headers=api.headers("resp_a")).status_code == 403  # covers every department
    assert api.client.post("/api/v1/reports", json={"period": "year"}, headers=api.headers("resp")).status_code == 422
    created = api.client.post("/api/v1/reports", json={"period": "week", "end": seed.END_MS},
                              headers=api.headers("resp"))
    assert created.status_code == 201, created.text
    meta = created.json()
    assert meta["period_end"] == seed.END_MS and meta["generated_by"] == "resp"
    assert [r["report_id"] for r in api.get("aud", "/api/v1/reports").json()] == [meta["report_id"]]
    pdf = api.get("aud", f"/api/v1/reports/{meta['report_id']}/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF") and b"%%EOF" in pdf.content[-1024:]
    page = api.get("resp", f"/api/v1/reports/{meta['report_id']}/html")
    assert page.status_code == 200 and "II 重大" in page.text and "default-src 'none'" in page.headers[
        "content-security-policy"]
    assert api.get("resp", "/api/v1/reports/rep-none/pdf").status_code == 404
    stored = api.store.query("SELECT pdf FROM reports").scalar()
    assert base64.b64decode(stored) == pdf.content
    items = api.get("aud", "/api/v1/audit", params={"limit": 100}).json()
    items = items["items"] if isinstance(items, dict) else items
    actions = {(a["actor"], a["action"]) for a in items}
    assert {("resp", "POST /api/v1/reports"), ("aud", "GET /api/v1/reports/{report_id}/pdf"),
            ("resp", "GET /api/v1/reports/{report_id}/html")} <= actions


def test_elements_are_scoped(api: Seeded) -> None:
    # the seed's world ended on 2026-11-16; ask with a window reaching back to it
    wide = api.get("op", "/api/v1/situation/elements", params={"days": 7}).json()
    mine = api.get("op_b", "/api/v1/situation/elements", params={"days": 7}).json()
    assert mine["org_unit"] == seed.UNIT_B and {a["org_unit"] for a in mine["assets"]} <= {seed.UNIT_B}
    assert set(wide) == set(mine) >= {"assets", "threats", "incidents", "vulnerabilities", "traffic"}
    assert api.get("op_b", "/api/v1/situation/elements", params={"org_unit": "民政局"}).status_code == 404
    assert api.get("op", "/api/v1/situation/elements", params={"days": 8}).status_code == 422
