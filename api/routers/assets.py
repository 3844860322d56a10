"""Assets and org units with their current risk (open incidents), scoped to the caller's org unit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from api import schemas
from api.deps import ApiState, App, Reader
from api.principal import Principal
from pipeline.enrich.inventory import Block
from pipeline.incidents.risk import asset_risk, org_unit_risk

router = APIRouter(tags=["assets"])


def _blocks(app: ApiState) -> list[Block]:
    inventory = app.inventory()
    return inventory.blocks() if inventory else []


def _units(app: ApiState, principal: Principal) -> dict[str, dict[str, Any]]:
    units = org_unit_risk(app.store, [b.org_unit for b in _blocks(app) if b.org_unit])
    return {u: r for u, r in units.items() if principal.sees_unit(u)}


def _assets(app: ApiState, principal: Principal) -> list[dict[str, Any]]:
    known = {b.asset: b for b in _blocks(app) if b.asset}
    out = []
    for name, risk in asset_risk(app.store, list(known)).items():
        block = known.get(name)
        unit = block.org_unit if block else ""
        if block is None and principal.org_unit:
            continue  # an asset only incidents name: its unit is unknown, so only network-wide users see it
        if principal.sees_unit(unit):
            info = {"cidr": block.cidr, "org_unit": unit, "owner": block.owner, "criticality": block.criticality,
                    "zone": block.zone} if block else {}
            out.append(risk | info)
    return out


@router.get("/org-units", response_model=list[schemas.RiskEntry], summary="Org units with their current risk")
def list_units(app: App, principal: Reader) -> list[dict[str, Any]]:
    return list(_units(app, principal).values())


@router.get("/org-units/{path:path}", response_model=schemas.RiskEntry)
def get_unit(app: App, principal: Reader, path: str) -> dict[str, Any]:
    found = _units(app, principal).get(path.strip("/"))
    if found is None:
        raise HTTPException(404, f"no org unit {path!r} in your scope")
    return found


@router.get("/assets", response_model=list[schemas.Asset], summary="Assets with their current risk")
def list_assets(app: App, principal: Reader) -> list[dict[str, Any]]:
    return _assets(app, principal)


@router.get("/assets/{name}", response_model=schemas.Asset)
def get_asset(app: App, principal: Reader, name: str) -> dict[str, Any]:
    for asset in _assets(app, principal):
        if asset["name"] == name:
            return asset
    raise HTTPException(404, f"no asset {name!r} in your scope")
