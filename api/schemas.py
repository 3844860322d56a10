"""Request and response bodies (they make the OpenAPI schema the contract tests check)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.detect.compile import VERSION_RE

Level = Literal["informational", "low", "medium", "high", "critical"]
Status = Literal["new", "acknowledged", "investigating", "contained", "resolved", "false_positive"]
Name = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    error: str = Field(description="what went wrong and what to do about it")
    status: int


class Incident(BaseModel):
    incident_id: str
    title: str
    status: Status
    severity: Level
    group_key: str
    org_units: list[str]
    assets: list[str]
    max_criticality: int
    rule_ids: list[str]
    alert_count: int
    assignee: str
    tags: list[str]
    first_seen: int = Field(description="epoch milliseconds")
    last_seen: int
    opened_at: int
    updated_at: int


class IncidentPage(BaseModel):
    items: list[Incident]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class IncidentUpdate(Strict):
    status: Status | None = None
    assignee: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.@-]*$",
                                 description="a user name; empty string unassigns")
    tags: list[str] | None = Field(None, max_length=50)
    severity: Level | None = None
    reason: str = Field("", max_length=2000)


class NoteIn(Strict):
    text: str = Field(min_length=1, max_length=10_000)


class LinkIn(Strict):
    alert_id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")


class TimelineEntry(BaseModel):
    at: int
    actor: str
    action: str
    detail: dict[str, Any]


class Alert(BaseModel):
    alert_id: str
    rule_id: str
    rule_title: str
    level: str
    tags: list[str]
    kind: str
    ruleset_version: str
    entity: str
    first_seen: int
    last_seen: int
    hit_count: int
    src_ip: str
    dst_ip: str
    host_name: str
    user_name: str
    src_org_unit: str
    dst_org_unit: str
    src_asset: str
    dst_asset: str
    suppression_id: str
    incident_id: str = ""


class AlertPage(BaseModel):
    items: list[Alert]
    next_cursor: str | None


class SuppressIn(Strict):
    scope: Literal["src_ip", "dst_ip", "cidr", "org_unit", "asset", "entity"] = "entity"
    value: str | None = Field(None, max_length=200, description="default: the alert's own value for the scope")
    all_rules: bool = Field(False, description="hide every rule's alerts in this scope, not only this rule's")
    days: float = Field(7, gt=0, le=366)
    reason: str = Field(min_length=3, max_length=2000)


class Suppression(BaseModel):
    suppression_id: str
    rule_id: str
    scope: str
    value: str
    owner: str
    reason: str
    created_at: int
    expires_at: int


class EventPage(BaseModel):
    items: list[dict[str, Any]] = Field(description="events in their JSON form; masked fields read ***")
    next_cursor: str | None


class Bucket(BaseModel):
    key: str
    count: int


class Rule(BaseModel):
    rule_id: str
    title: str
    level: str
    tags: list[str]
    kind: str
    path: str
    enabled: bool


class RuleDetail(Rule):
    source: str


class RuleUpload(Strict):
    path: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_./-]+\.ya?ml$",
                      description="where the file goes in the rule set, e.g. custom/smb_lateral.yml")
    yaml: str = Field(min_length=1, max_length=512 * 1024)


class RuleSetVersion(BaseModel):
    version: str
    created_at: int
    files: int
    active: bool = Field(False, description="the version live detection runs (writers that follow activations)")


class Activation(Strict):
    reason: str = Field("", max_length=500, description="why (kept with the activation and in the audit log)")


class ReplayIn(Strict):
    ruleset_version: str | None = Field(None, pattern=VERSION_RE.pattern, description="default: the newest")
    since: str = Field(description="ISO 8601 start of the range")
    until: str = Field(description="ISO 8601 end of the range")


class ReplayJob(BaseModel):
    job_id: str
    status: Literal["queued", "running", "done", "failed"]
    submitted_by: str
    ruleset_version: str
    range_from: int
    range_to: int
    submitted_at: int
    finished_at: int
    report_hash: str
    error: str


class ReplayDiff(BaseModel):
    job_id: str
    replay_alerts: int
    live_alerts: int
    both: int
    only_replay: list[str]
    only_live: list[str]


class RiskEntry(BaseModel):
    name: str
    open_incidents: int
    open_by_severity: dict[str, int]
    risk: int


class Asset(RiskEntry):
    cidr: str = ""
    org_unit: str = ""
    owner: str = ""
    criticality: int = 0
    zone: str = ""


class UserIn(Strict):
    name: str = Name
    role: Literal["operator", "responder", "auditor", "admin"]
    org_unit: str = Field("", max_length=300)
    clearance: int | None = Field(None, ge=1, le=4)


class User(BaseModel):
    name: str
    role: str
    org_unit: str
    clearance: int
    disabled: bool


class TokenIn(Strict):
    user: str = Name
    days: float = Field(90, gt=0, le=366)
    description: str = Field("", max_length=200)


class TokenCreated(BaseModel):
    token_id: str
    token: str = Field(description="shown this once; store it safely")
    expires_at: int


class Token(BaseModel):
    token_id: str
    user: str
    description: str
    created_at: int
    expires_at: int
    revoked: int


class AuditRecord(BaseModel):
    seq: int
    ts: int
    actor: str
    role: str
    action: str
    target: str
    source: str
    result: str
    detail: str
    prev_hash: str
    hash: str


class AuditVerification(BaseModel):
    ok: bool
    records: int
    head_seq: int
    head_hash: str
    problems: list[str]


# -- situation, warnings, exposures, reports ----------------------------------------------------------------


class Factor(BaseModel):
    kind: str = Field(description="incident, exposure or anomaly")
    ref: str
    title: str
    org_units: list[str]
    assets: list[str]
    contribution: float = Field(description="points this threat adds on its own (0-95)")
    factors: dict[str, float] = Field(description="severity x criticality x exposure x recency")


class Score(BaseModel):
    scope_kind: str
    scope: str
    score: float = Field(ge=0, le=100)
    band: str
    factors: list[Factor]


class Situation(BaseModel):
    at: int | None = Field(description="epoch ms of the newest assessment; null before the first")
    extranet: Score | None = Field(description="null for accounts bound to an org unit")
    org_units: list[Score]
    assets: list[Score]


class HistoryPoint(BaseModel):
    ts: int
    score: float


class ForecastPoint(BaseModel):
    ts: int
    mean: float
    low: float
    high: float


class ForecastOut(BaseModel):
    series: str
    model: str
    error: dict[str, Any] = Field(description="measured on held-back history: MAPE, sMAPE, MAE, coverage, naive MAE")
    points: list[ForecastPoint]


class AnomalyOut(BaseModel):
    anomaly_id: str
    hour_ms: int
    org_unit: str
    metric: str
    observed: float
    expected: float
    low: float
    high: float


class WarningReason(BaseModel):
    trigger: str
    level: int
    level_name: str
    units: list[str]
    detail: str


class WarningLevel(BaseModel):
    scope: str
    level: int = Field(ge=0, le=4, description="1 = I 特别重大 (red) .. 4 = IV 一般 (blue), 0 = none")
    level_name: str
    since: int
    reasons: list[WarningReason]


class WarningChange(BaseModel):
    at: int
    scope: str
    level: int
    level_name: str
    previous: int
    reasons: list[WarningReason]


class Exposure(BaseModel):
    cve_id: str
    cvss: float
    severity: str
    kev: bool
    ip: str
    port: int
    kind: str
    product: str
    matched: str
    org_unit: str
    asset: str
    criticality: int
    first_seen_ms: int
    last_seen_ms: int
    description: str
    excluded_by: str


class Observed(BaseModel):
    ip: str
    port: int
    kind: str
    product: str
    org_unit: str
    asset: str
    criticality: int
    first_seen_ms: int
    last_seen_ms: int
    hits: int


class ExclusionIn(Strict):
    cve_id: str = Field("", pattern=r"^(CVE-\d{4}-\d{4,})?$", description="empty = every CVE in the scope")
    scope: Literal["ip", "asset", "org_unit", "all"]
    value: str = Field("", max_length=200)
    kind: Literal["accepted_risk", "false_positive"]
    reason: str = Field(min_length=1, max_length=2000)
    days: int = Field(90, ge=1, le=3650)


class Exclusion(BaseModel):
    exclusion_id: str
    cve_id: str
    scope: str
    value: str
    kind: str
    reason: str
    owner: str
    expires_at: int


class ReportIn(Strict):
    period: Literal["day", "week"]
    end: int | None = Field(None, ge=0, le=4_102_444_800_000, description="epoch ms; default now")


class ReportMeta(BaseModel):
    report_id: str
    period: str
    period_start: int
    period_end: int
    generated_at: int
    generated_by: str
