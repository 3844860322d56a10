"""The situation (risk, index, history, forecasts, anomalies), early warnings, vulnerability exposures and
the situation bulletins — every view scoped to the caller's org unit; extranet-wide figures only for
network-wide accounts."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response

from api import schemas
from api.deps import ApiState, App, Exporter, Reader, Worker, audit_detail, network_wide
from api.principal import Principal
from api.query import ip_text
from pipeline.situation import assess, baseline, early_warning, elements, exposure, forecast, report
from pipeline.store.base import COLUMNS_BEFORE_ALIASES

router = APIRouter(tags=["situation"])
DAY_MS = 86_400_000


def _now() -> int:
    return int(time.time() * 1000)


def _asset_units(app: ApiState) -> dict[str, str]:
    inventory = app.inventory()
    return {b.asset: b.org_unit for b in inventory.blocks() if b.asset} if inventory else {}


@router.get("/situation", response_model=schemas.Situation, summary="Newest assessment, with top factors")
def situation(app: App, principal: Reader) -> dict[str, Any]:
    rows = assess.latest(app.store)
    units = _asset_units(app)
    extranet = next((r for r in rows if r["scope_kind"] == "extranet"), None)
    return {
        "at": rows[0]["at"] if rows else None,
        "extranet": None if principal.org_unit else extranet,
        "org_units": [r for r in rows if r["scope_kind"] == "org_unit" and principal.sees_unit(r["scope"])],
        "assets": [r for r in rows if r["scope_kind"] == "asset"
                   and (not principal.org_unit or principal.sees_unit(units.get(r["scope"], "")))
                   and (r["scope"] in units or not principal.org_unit)],
    }


def _check_scope(principal: Principal, scope: str) -> None:
    if scope == "" and principal.org_unit:
        raise HTTPException(403, f"the extranet-wide view covers every department; your account is bound to "
                                 f"{principal.org_unit}")
    if scope and not principal.sees_unit(scope):
        raise HTTPException(404, f"no org unit {scope!r} in your scope")


@router.get("/situation/elements", summary="Situation elements: assets, threats (kind, ATT&CK tactic, source), "
            "incidents, vulnerabilities, traffic vs a week earlier")
def situation_elements(app: App, principal: Reader, days: int = Query(1, ge=1, le=7),
                       org_unit: str = Query("", max_length=300, description="narrow to this unit and below")
                       ) -> dict[str, Any]:
    unit = org_unit.strip("/") or principal.org_unit
    if unit and not principal.sees_unit(unit):
        raise HTTPException(404, f"no org unit {unit!r} in your scope")
    now = _now()
    return elements.elements(app.store, now - days * DAY_MS, now, unit, app.inventory())


@router.get("/situation/history", response_model=list[schemas.HistoryPoint])
def situation_history(app: App, principal: Reader,
                      scope: str = Query("", max_length=300, description="org unit path; empty = the extranet"),
                      days: int = Query(7, ge=1, le=400)) -> list[dict[str, Any]]:
    _check_scope(principal, scope)
    now = _now()
    points = assess.history(app.store, "org_unit" if scope else "extranet", scope, now - days * DAY_MS, now)
    return [{"ts": t, "score": s} for t, s in points]


def _series_visible(principal: Principal, series: str) -> bool:
    scope = series.partition(":")[2]
    return not principal.org_unit if scope == "extranet" else principal.sees_unit(scope)


@router.get("/situation/forecast", response_model=list[schemas.ForecastOut],
            summary="Newest forecasts (index and alerts per org unit) with their measured error")
def situation_forecast(app: App, principal: Reader,
                       series: str | None = Query(None, max_length=300, description="e.g. index:extranet")
                       ) -> list[dict[str, Any]]:
    return [f for f in forecast.latest_forecasts(app.store, series) if _series_visible(principal, f["series"])]


@router.get("/situation/anomalies", response_model=list[schemas.AnomalyOut])
def situation_anomalies(app: App, principal: Reader, days: int = Query(7, ge=1, le=400)) -> list[dict[str, Any]]:
    now = _now()
    return [a for a in baseline.stored_anomalies(app.store, now - days * DAY_MS, now + DAY_MS, limit=1000)
            if (principal.sees_unit(a["org_unit"]) if a["org_unit"] else not principal.org_unit)]


def _level_visible(principal: Principal, scope: str) -> bool:
    return not principal.org_unit if scope == "extranet" else principal.sees_unit(scope)


@router.get("/warnings", response_model=list[schemas.WarningLevel],
            summary="Current warning levels (I 特别重大 .. IV 一般) of the extranet and org units")
def warnings_current(app: App, principal: Reader) -> list[dict[str, Any]]:
    return [w for w in early_warning.current(app.store).values() if _level_visible(principal, w["scope"])]


@router.get("/warnings/history", response_model=list[schemas.WarningChange])
def warnings_history(app: App, principal: Reader, days: int = Query(30, ge=1, le=400)) -> list[dict[str, Any]]:
    return [w for w in early_warning.history(app.store, _now() - days * DAY_MS)
            if _level_visible(principal, w["scope"])]


def _visible_exposure(principal: Principal, e: dict[str, Any]) -> bool:
    return principal.sees_unit(e["org_unit"]) if e["org_unit"] else not principal.org_unit


@router.get("/exposures", response_model=list[schemas.Exposure],
            summary="Vulnerable software observed on the network, known-exploited and highest CVSS first")
def exposures_list(app: App, principal: Reader, include_excluded: bool = False,
                   kev: bool | None = None, min_cvss: float = Query(0.0, ge=0, le=10)) -> list[dict[str, Any]]:
    found = exposure.exposures(app.store, _now(), app.inventory(), include_excluded)
    return [e for e in found if _visible_exposure(principal, e) and e["cvss"] >= min_cvss
            and (kev is None or e["kev"] == kev)]


@router.get("/exposures/inventory", response_model=list[schemas.Observed],
            summary="Services and software observed answering")
def exposures_inventory(app: App, principal: Reader) -> list[dict[str, Any]]:
    inventory = app.inventory()
    out = []
    for row in exposure.inventory(app.store):
        block = inventory.lookup(row["ip"]) if inventory else None
        if block:
            row |= {"org_unit": block.org_unit, "asset": block.asset, "criticality": block.criticality}
        if _visible_exposure(principal, row):
            out.append(row)
    return out


@router.get("/exposures/exclusions", response_model=list[schemas.Exclusion])
def exclusions_list(app: App, principal: Reader) -> list[dict[str, Any]]:
    found = [x.__dict__ for x in exposure.active_exclusions(app.store, _now())]
    return found if not principal.org_unit else [x for x in found if x["scope"] == "org_unit"
                                                 and principal.sees_unit(x["value"])]


def _exclusion_unit(app: ApiState, body: schemas.ExclusionIn) -> str:
    """The org unit an exclusion would reach ('' = more than one unit or unknown)."""
    if body.scope == "org_unit":
        return body.value
    inventory = app.inventory()
    if body.scope == "ip" and inventory:
        block = inventory.lookup(body.value)
        return block.org_unit if block else ""
    if body.scope == "asset":
        return _asset_units(app).get(body.value, "")
    return ""


@router.post("/exposures/exclusions", status_code=201, response_model=schemas.Exclusion,
             summary="Exclude exposures (accepted risk, false positive): scoped and expiring")
def exclusions_add(app: App, principal: Worker, body: schemas.ExclusionIn, request: Request) -> dict[str, Any]:
    if principal.org_unit:
        unit = _exclusion_unit(app, body)
        if not unit or not principal.sees_unit(unit):
            raise HTTPException(403, f"an exclusion must stay within your org unit {principal.org_unit}")
    value = ip_text("value", body.value) if body.scope == "ip" else body.value
    try:
        x = exposure.add_exclusion(app.store, body.cve_id, body.scope, value, body.kind, body.reason,
                                   principal.user, _now() + body.days * DAY_MS)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    audit_detail(request, exclusion_id=x.exclusion_id, cve_id=x.cve_id, scope=x.scope, value=x.value, kind=x.kind)
    return x.__dict__


@router.delete("/exposures/exclusions/{exclusion_id}", status_code=204)
def exclusions_revoke(app: App, principal: Worker, exclusion_id: str, request: Request) -> Response:
    active = {x.exclusion_id: x for x in exposure.active_exclusions(app.store, _now())}
    x = active.get(exclusion_id)
    if x is None or (principal.org_unit and not (x.scope == "org_unit" and principal.sees_unit(x.value))):
        raise HTTPException(404, f"no active exclusion {exclusion_id!r} in your scope")
    exposure.revoke_exclusion(app.store, exclusion_id, _now())
    audit_detail(request, exclusion_id=exclusion_id)
    return Response(status_code=204)


_REPORT_META = ("report_id, period, toUnixTimestamp64Milli(period_start) AS period_start, "
                "toUnixTimestamp64Milli(period_end) AS period_end, "
                "toUnixTimestamp64Milli(generated_at) AS generated_at, generated_by")


@router.post("/reports", status_code=201, response_model=schemas.ReportMeta,
             summary="Render the situation bulletin (态势通报) for a day or a week: HTML and PDF")
def reports_create(app: App, principal: Exporter, body: schemas.ReportIn, request: Request) -> dict[str, Any]:
    network_wide(principal)
    try:
        bulletin = report.render(app.store, body.period, body.end or _now(), app.inventory())
    except report.ReportError as exc:
        raise HTTPException(503, str(exc)) from None
    report_id = f"rep-{secrets.token_hex(8)}"
    report.save(app.store, bulletin, report_id, principal.user)
    audit_detail(request, report_id=report_id, period=body.period)
    d = bulletin.data
    return {"report_id": report_id, "period": d["period"], "period_start": d["start_ms"], "period_end": d["end_ms"],
            "generated_at": d["generated_ms"], "generated_by": principal.user}


@router.get("/reports", response_model=list[schemas.ReportMeta])
def reports_list(app: App, principal: Exporter) -> list[dict[str, Any]]:
    network_wide(principal)
    return app.store.query(
        f"SELECT {_REPORT_META} FROM reports FINAL ORDER BY generated_at DESC LIMIT 200 "
        f"{COLUMNS_BEFORE_ALIASES}").dicts()


def _report_column(app: ApiState, report_id: str, column: str) -> str:
    found = app.store.query(f"SELECT {column} FROM reports FINAL WHERE report_id = {{id:String}}",
                            {"id": report_id}).scalar()
    if found is None:
        raise HTTPException(404, f"no report {report_id!r}")
    return str(found)


@router.get("/reports/{report_id}/pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}}})
def report_pdf(app: App, principal: Exporter, report_id: str) -> Response:
    network_wide(principal)
    pdf = base64.b64decode(_report_column(app, report_id, "pdf"))
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{report_id}.pdf"'})


@router.get("/reports/{report_id}/html", response_class=Response, responses={200: {"content": {"text/html": {}}}})
def report_html(app: App, principal: Exporter, report_id: str) -> Response:
    network_wide(principal)
    return Response(_report_column(app, report_id, "html"), media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'"})
