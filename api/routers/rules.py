"""Rules and rule-set versions: list, get, enable/disable, upload (validated, makes a new version and activates
it), activate a stored version (roll back or forward), and replay jobs: submit, status, report, diff against what
live detection produced. "The current rule set" is the active version (the newest stored before any
activation); writers that follow activations switch to it within 30 s."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response

from api import schemas
from api.deps import Admin, ApiState, App, Reader, Replayer, audit_detail, network_wide
from api.principal import Principal
from pipeline.detect.compile import VERSION_RE, RuleSet, compile_sources
from pipeline.detect.engine import Selector
from pipeline.detect.live import (
    activate_ruleset,
    active_version,
    disabled_rules,
    load_ruleset_files,
    save_ruleset,
    set_rule_enabled,
)
from pipeline.detect.replay import replay

router = APIRouter(tags=["rules"])
MAX_REPLAY_S = 400 * 86400
_JOB_KINDS = {"job_id": "str", "status": "str", "submitted_by": "str", "ruleset_version": "str", "range_from": "ts",
              "range_to": "ts", "submitted_at": "ts", "finished_at": "ts", "report_hash": "str", "report": "str",
              "error": "str", "version": "u64"}
_JOB_COLUMNS = ("job_id, status, submitted_by, ruleset_version, toUnixTimestamp64Milli(range_from) AS range_from, "
                "toUnixTimestamp64Milli(range_to) AS range_to, toUnixTimestamp64Milli(submitted_at) AS submitted_at, "
                "toUnixTimestamp64Milli(finished_at) AS finished_at, report_hash, error")


def current_version(app: ApiState) -> str | None:
    """The active version; before any activation the newest stored one (what a writer recorded)."""
    return active_version(app.store) or app.store.query(
        "SELECT version FROM rulesets ORDER BY created_at DESC, version LIMIT 1").scalar()


def ruleset(app: ApiState, version: str | None = None) -> RuleSet:
    """A stored rule-set version compiled (cached), the current one by default; the built-in pack if none is
    stored."""
    version = version or current_version(app)
    key = f"ruleset:{version}"
    if key not in app.cache:
        if version is None:
            from pipeline.detect.compile import compile_rules
            from rules import PACK

            app.cache[key] = compile_rules([PACK])
        else:
            files = load_ruleset_files(app.store, version)
            if files is None:
                raise HTTPException(404, f"no rule-set version {version}")
            app.cache[key] = compile_sources(files)
    return app.cache[key]  # type: ignore[no-any-return]


def _rules(app: ApiState) -> list[dict[str, Any]]:
    current = ruleset(app)
    off = disabled_rules(app.store)
    seen: dict[str, dict[str, Any]] = {}
    for r in current.rules:
        if r.alerts:
            seen.setdefault(r.rule_id, {"rule_id": r.rule_id, "title": r.title, "level": r.level,
                                        "tags": list(r.tags), "kind": "rule", "path": r.path})
    for c in current.correlations:
        seen.setdefault(c.rule_id, {"rule_id": c.rule_id, "title": c.title, "level": c.level, "tags": list(c.tags),
                                    "kind": c.kind, "path": c.path})
    return [r | {"enabled": r["rule_id"] not in off} for r in sorted(seen.values(), key=lambda r: r["rule_id"])]


def _rule(app: ApiState, rule_id: str) -> dict[str, Any]:
    for rule in _rules(app):
        if rule["rule_id"] == rule_id:
            return rule
    raise HTTPException(404, f"no rule {rule_id!r} in the current rule set")


@router.get("/rules", response_model=list[schemas.Rule], summary="Rules of the current rule set")
def list_rules(app: App, principal: Reader) -> list[dict[str, Any]]:
    return _rules(app)


@router.get("/rules/versions", response_model=list[schemas.RuleSetVersion])
def versions(app: App, principal: Reader) -> list[dict[str, Any]]:
    current = current_version(app)
    rows = app.store.query("SELECT version, toUnixTimestamp64Milli(min(created_at)) AS created_at, "
                           "length(mapKeys(any(files))) AS files FROM rulesets GROUP BY version "
                           "ORDER BY created_at").dicts()
    return [r | {"active": r["version"] == current} for r in rows]


@router.post("/rules/versions/{version}/activate", response_model=schemas.RuleSetVersion,
             summary="Make a stored rule-set version the one live detection runs (a rollback or roll-forward)")
def activate(request: Request, app: App, principal: Admin, version: str,
             body: schemas.Activation | None = None) -> dict[str, Any]:
    reason = body.reason if body is not None else ""
    if not VERSION_RE.match(version):
        raise HTTPException(422, "version: a rule-set version is 16 hex digits (GET /api/v1/rules/versions)")
    rules = ruleset(app, version)  # 404 when not stored; compiled and cached for the reads that follow
    if not rules.rule_count:
        raise HTTPException(422, f"rule-set version {version} holds no rule that compiles here")
    activate_ruleset(app.store, version, principal.user, reason)
    audit_detail(request, version=version, reason=reason)
    return {"version": version, "created_at": int(time.time() * 1000), "files": len(rules.sources), "active": True}


@router.get("/rules/{rule_id}", response_model=schemas.RuleDetail)
def get_rule(app: App, principal: Reader, rule_id: str) -> dict[str, Any]:
    rule = _rule(app, rule_id)
    return rule | {"source": ruleset(app).sources.get(rule["path"], "")}


def _switch(request: Request, app: ApiState, principal: Principal, rule_id: str, enabled: bool) -> dict[str, Any]:
    rule = _rule(app, rule_id)
    set_rule_enabled(app.store, rule_id, enabled, principal.user)
    audit_detail(request, rule_id=rule_id, enabled=enabled)
    return rule | {"enabled": enabled}


@router.post("/rules/{rule_id}/enable", response_model=schemas.Rule)
def enable_rule(request: Request, app: App, principal: Admin, rule_id: str) -> dict[str, Any]:
    return _switch(request, app, principal, rule_id, True)


@router.post("/rules/{rule_id}/disable", response_model=schemas.Rule, summary="Stop a rule in live detection "
             "(writers pick it up within 30 s)")
def disable_rule(request: Request, app: App, principal: Admin, rule_id: str) -> dict[str, Any]:
    return _switch(request, app, principal, rule_id, False)


@router.post("/rules", response_model=schemas.RuleSetVersion, status_code=201,
             summary="Add or replace a rule file: validated, then a new rule-set version")
def upload_rule(request: Request, app: App, principal: Admin, body: schemas.RuleUpload) -> dict[str, Any]:
    if ".." in body.path.split("/"):
        raise HTTPException(422, "path: no '..' components")
    current = ruleset(app)
    files = dict(current.sources) | {body.path: body.yaml}
    # judged within the whole set, so a correlation may refer to rules of other files; only errors this file
    # brings count (a rule of the current set that does not compile here must not block every upload)
    combined = compile_sources(files)
    known = set(current.errors)
    new_errors = [(p, r) for p, r in combined.errors if (p, r) not in known]
    if new_errors:
        raise HTTPException(422, "rule not accepted: " + "; ".join(
            r if p == body.path else f"{p}: {r}" for p, r in new_errors))
    if not any(r.path == body.path for r in [*combined.rules, *combined.correlations]):
        raise HTTPException(422, "the file holds no rule")
    save_ruleset(app.store, combined)
    activate_ruleset(app.store, combined.version, principal.user, f"upload of {body.path}")
    app.cache[f"ruleset:{combined.version}"] = combined
    audit_detail(request, path=body.path, version=combined.version, bytes=len(body.yaml))
    return {"version": combined.version, "created_at": int(time.time() * 1000), "files": len(files), "active": True}


# -- replay jobs --------------------------------------------------------------------------------------


def _save_job(app: ApiState, job: dict[str, Any]) -> None:
    row = {k: job.get(k, 0 if _JOB_KINDS[k] in ("ts", "u64") else "") for k in _JOB_KINDS} | {"version": time.time_ns()}
    app.store.insert_columns("replay_jobs", {k: [v] for k, v in row.items()}, _JOB_KINDS)


def _load_job(app: ApiState, job_id: str, with_report: bool = False) -> dict[str, Any]:
    columns = _JOB_COLUMNS + (", report" if with_report else "")
    rows = app.store.query(f"SELECT {columns} FROM replay_jobs FINAL WHERE job_id = {{id:String}}",
                           {"id": job_id}).dicts()
    if not rows:
        raise HTTPException(404, f"no replay job {job_id!r}")
    return rows[0]


def _parse(name: str, text: str) -> int:
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(422, f"{name}: {text[:40]!r} is not an ISO 8601 time") from None
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    if not 1970 <= dt.year <= 2200:
        raise HTTPException(422, f"{name}: out of range")
    return int(dt.timestamp() * 1000)


def _run_job(app: ApiState, job: dict[str, Any], rules: RuleSet) -> None:
    job = job | {"status": "running"}
    _save_job(app, job)
    try:
        report = replay(app.store, rules, Selector(job["range_from"], job["range_to"]))
        job |= {"status": "done", "report": report.to_json().decode(), "report_hash": report.report_hash}
    except Exception as exc:  # a failed job is reported, not lost
        job |= {"status": "failed", "error": str(exc)[:2000]}
    job["finished_at"] = int(time.time() * 1000)
    _save_job(app, job)


@router.post("/replays", response_model=schemas.ReplayJob, status_code=202, tags=["replays"],
             summary="Replay a rule-set version over stored history (runs in the background)")
def submit_replay(request: Request, app: App, principal: Replayer, body: schemas.ReplayIn) -> dict[str, Any]:
    network_wide(principal)
    lo, hi = _parse("since", body.since), _parse("until", body.until)
    if not lo < hi or hi - lo > MAX_REPLAY_S * 1000:
        raise HTTPException(422, f"the range must be non-empty and at most {MAX_REPLAY_S // 86400} days")
    rules = ruleset(app, body.ruleset_version)
    job = {"job_id": uuid.uuid4().hex, "status": "queued", "submitted_by": principal.user,
           "ruleset_version": rules.version, "range_from": lo, "range_to": hi, "submitted_at": int(time.time() * 1000)}
    _save_job(app, job)
    audit_detail(request, job_id=job["job_id"], ruleset_version=rules.version)
    app.replays.submit(_run_job, app, job, rules)
    return job | {"finished_at": 0, "report_hash": "", "error": ""}


@router.get("/replays", response_model=list[schemas.ReplayJob], tags=["replays"])
def list_replays(app: App, principal: Replayer) -> list[dict[str, Any]]:
    network_wide(principal)
    return app.store.query(f"SELECT {_JOB_COLUMNS} FROM replay_jobs FINAL ORDER BY submitted_at DESC LIMIT 500").dicts()


@router.get("/replays/{job_id}", response_model=schemas.ReplayJob, tags=["replays"])
def get_replay(app: App, principal: Replayer, job_id: str) -> dict[str, Any]:
    network_wide(principal)
    return _load_job(app, job_id)


def _report(app: ApiState, job_id: str) -> dict[str, Any]:
    job = _load_job(app, job_id, with_report=True)
    if job["status"] != "done":
        raise HTTPException(409, f"replay {job_id} is {job['status']}" + (f": {job['error']}" if job["error"] else ""))
    return job


@router.get("/replays/{job_id}/report", tags=["replays"], summary="The reproducible JSON report (audited)",
            responses={200: {"content": {"application/json": {}}}})
def replay_report(request: Request, app: App, principal: Replayer, job_id: str) -> Response:
    network_wide(principal)
    job = _report(app, job_id)
    audit_detail(request, report_hash=job["report_hash"])
    return Response(job["report"], media_type="application/json")


@router.get("/replays/{job_id}/diff", response_model=schemas.ReplayDiff, tags=["replays"],
            summary="Alerts the replay found against the alerts live detection stored for the same range")
def replay_diff(app: App, principal: Replayer, job_id: str) -> dict[str, Any]:
    network_wide(principal)
    job = _report(app, job_id)
    found = set(orjson.loads(job["report"])["alerts"])
    live = {r[0] for r in app.store.query(
        "SELECT DISTINCT alert_id FROM alert_hits WHERE event_ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') "
        "AND event_ts < fromUnixTimestamp64Milli({hi:Int64}, 'UTC')", {"lo": job["range_from"], "hi": job["range_to"]}
    ).rows}
    return {"job_id": job_id, "replay_alerts": len(found), "live_alerts": len(live), "both": len(found & live),
            "only_replay": sorted(found - live)[:1000], "only_live": sorted(live - found)[:1000]}
