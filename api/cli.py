"""`ganzhi serve`, `ganzhi user ...`, `ganzhi token ...`, `ganzhi audit ...`. Account changes made here are
audited like the API's (actor `cli:<login>`)."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer
from rich.console import Console

from api import audit
from api.auth import AccountError, create_token, list_tokens, list_users, revoke_token, save_user
from pipeline.config import UsageProblem
from pipeline.store import QueryResult, Store, open_store

user_app = typer.Typer(help="API users: name, role, org unit, clearance.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens: issue, list, revoke.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log: show, verify.", no_args_is_help=True)
console = Console()


def audited(store: Store, action: str, target: str, detail: dict[str, object]) -> None:
    audit.AuditLog(store).append(f"cli:{getpass.getuser()}", "cli", action, target, "localhost", "ok", detail)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    tls_cert: Annotated[str | None, typer.Option(help="TLS certificate (PEM); serve HTTPS")] = None,
    tls_key: Annotated[str | None, typer.Option(help="TLS private key (PEM)")] = None,
) -> None:
    """Run the responders' API (uvicorn) on the embedded store or the configured ClickHouse."""
    import uvicorn

    from api.app import create_app

    if bool(tls_cert) != bool(tls_key):
        raise UsageProblem("HTTPS needs both --tls-cert and --tls-key")
    app = create_app(ctx.obj)
    console.print(f"Ganzhi API on {'https' if tls_cert else 'http'}://{host}:{port}/api/v1/docs "
                  f"({app.state.ganzhi.store.server_version()})")
    # one process: the audit chain has a single appender (api/audit.py)
    uvicorn.run(app, host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key, log_level="warning",
                server_header=False)


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="operator, responder, auditor or admin")],
    org_unit: Annotated[str, typer.Option(help="bind to this org unit (sees it and below); empty = all")] = "",
    clearance: Annotated[int | None, typer.Option(min=1, max=4, help="1 public .. 4 secret; default by role")] = None,
) -> None:
    """Create or change a user."""
    store = open_store(ctx.obj)
    try:
        user = save_user(store, name, role, org_unit, clearance)
    except AccountError as exc:
        raise UsageProblem(str(exc)) from None
    audited(store, "user add", name, {"role": role, "org_unit": org_unit, "clearance": clearance})
    console.print(f"user {user.name}: {user.role.value}, org unit {user.org_unit or '(all)'}, "
                  f"clearance {int(user.clearance)}")


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """Users and their roles."""
    from pipeline.cli import _show

    rows = [(u.name, u.role.value, u.org_unit, int(u.clearance), u.disabled) for u in list_users(open_store(ctx.obj))]
    _show(QueryResult(["name", "role", "org_unit", "clearance", "disabled"], ["String"] * 5, rows), False)


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument()],
    days: Annotated[float, typer.Option(help="lifetime in days (at most 366)")] = 90,
    description: Annotated[str, typer.Option(help="what the token is for")] = "",
) -> None:
    """Issue a token; it is printed once (stdout), keep it safe."""
    store = open_store(ctx.obj)
    try:
        token_id, token, _ = create_token(store, user, days, description)
    except AccountError as exc:
        raise UsageProblem(str(exc)) from None
    audited(store, "token create", user, {"token_id": token_id, "days": days})
    Console(stderr=True).print(f"token {token_id} for {user}, valid {days:g} days:")
    sys.stdout.write(token + "\n")


@token_app.command("list")
def token_list(ctx: typer.Context, user: Annotated[str | None, typer.Option()] = None) -> None:
    """Tokens (ids, owners, expiry; never the secrets)."""
    from pipeline.cli import _show

    items = list_tokens(open_store(ctx.obj), user)
    columns = ["token_id", "user", "description", "created_at", "expires_at", "revoked"]
    _show(QueryResult(columns, ["String"] * len(columns), [tuple(t[c] for c in columns) for t in items]), False)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a token (it stops working within seconds)."""
    store = open_store(ctx.obj)
    try:
        revoke_token(store, token_id)
    except AccountError as exc:
        raise UsageProblem(str(exc)) from None
    audited(store, "token revoke", token_id, {})
    console.print(f"revoked {token_id}")


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    head: Annotated[str | None, typer.Option(help="SEQ:HASH noted from an earlier verify: also detects a "
                                                  "truncated or rewritten tail")] = None,
) -> None:
    """Recompute the audit log's hash chain; exit 1 if any record was edited, deleted or inserted."""
    expect = None
    if head:
        seq, sep, digest = head.partition(":")
        if not sep or not seq.isdigit() or len(digest) != 64:
            raise UsageProblem("--head takes SEQ:HASH as printed by an earlier verify")
        expect = (int(seq), digest)
    result = audit.verify(open_store(ctx.obj), expect)
    for problem in result.problems:
        console.print(f"[red]{problem}[/]")
    console.print(f"{result.records} record(s); head {result.head_seq}:{result.head_hash}")
    if not result.ok:
        console.print("[red]audit log verification FAILED[/]")
        raise typer.Exit(1)
    console.print("[green]audit log intact[/]")


@audit_app.command("show")
def audit_show(
    ctx: typer.Context,
    after: Annotated[int, typer.Option(help="records after this seq")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Audit records in order."""
    from pipeline.cli import _show

    rows = list(audit.records(open_store(ctx.obj), after, limit))
    columns = ["seq", "ts", "actor", "role", "action", "target", "source", "result", "detail"]
    _show(QueryResult(columns, ["String"] * len(columns), [tuple(r[c] for c in columns) for r in rows]), as_json)
