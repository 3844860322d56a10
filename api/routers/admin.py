"""Users and tokens (admin), and the audit log (auditor)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from api import audit, schemas
from api.auth import AccountError, create_token, get_user, list_tokens, list_users, revoke_token, save_user
from api.deps import Admin, App, Auditor, audit_detail, network_wide

router = APIRouter(tags=["admin"])


def _user_json(user: Any) -> dict[str, Any]:
    return {"name": user.name, "role": user.role.value, "org_unit": user.org_unit, "clearance": int(user.clearance),
            "disabled": user.disabled}


@router.get("/users", response_model=list[schemas.User])
def users(app: App, principal: Admin) -> list[dict[str, Any]]:
    return [_user_json(u) for u in list_users(app.store)]


@router.post("/users", response_model=schemas.User, status_code=201, summary="Create or change a user")
def put_user(request: Request, app: App, principal: Admin, body: schemas.UserIn) -> dict[str, Any]:
    audit_detail(request, user=body.name, role=body.role, org_unit=body.org_unit, clearance=body.clearance)
    try:
        return _user_json(save_user(app.store, body.name, body.role, body.org_unit, body.clearance))
    except AccountError as exc:
        raise HTTPException(422, str(exc)) from None


@router.post("/users/{name}/disable", response_model=schemas.User, summary="Disable a user (its tokens stop working)")
def disable_user(request: Request, app: App, principal: Admin, name: str) -> dict[str, Any]:
    user = get_user(app.store, name)
    if user is None:
        raise HTTPException(404, f"no user {name!r}")
    if user.name == principal.user:
        raise HTTPException(409, "you cannot disable yourself")
    audit_detail(request, user=name)
    return _user_json(save_user(app.store, user.name, user.role.value, user.org_unit, int(user.clearance),
                                disabled=True))


@router.get("/tokens", response_model=list[schemas.Token])
def tokens(app: App, principal: Admin,
           user: Annotated[str | None, Query(max_length=64)] = None) -> list[dict[str, Any]]:
    return list_tokens(app.store, user)


@router.post("/tokens", response_model=schemas.TokenCreated, status_code=201,
             summary="Issue a token (the secret is in this response only)")
def issue_token(request: Request, app: App, principal: Admin, body: schemas.TokenIn) -> dict[str, Any]:
    try:
        token_id, token, expires = create_token(app.store, body.user, body.days, body.description)
    except AccountError as exc:
        raise HTTPException(422, str(exc)) from None
    audit_detail(request, user=body.user, token_id=token_id, days=body.days)
    return {"token_id": token_id, "token": token, "expires_at": expires}


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke a token")
def delete_token(request: Request, app: App, principal: Admin, token_id: str) -> None:
    try:
        revoke_token(app.store, token_id)
    except AccountError as exc:
        raise HTTPException(404, str(exc)) from None
    audit_detail(request, token_id=token_id)


@router.get("/audit", response_model=list[schemas.AuditRecord], tags=["audit"])
def audit_records(app: App, principal: Auditor, after: Annotated[int, Query(ge=0, le=2**62)] = 0,
                  limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> list[dict[str, Any]]:
    network_wide(principal)
    return list(audit.records(app.store, after, limit))


@router.get("/audit/verify", response_model=schemas.AuditVerification, tags=["audit"])
def audit_verify(app: App, principal: Auditor) -> dict[str, Any]:
    network_wide(principal)
    result = audit.verify(app.store)
    return {"ok": result.ok, "records": result.records, "head_seq": result.head_seq, "head_hash": result.head_hash,
            "problems": result.problems}
