"""Risk per asset and the situation index per org unit and for the whole extranet (0-100), explainably.

The formula (model `v1`; README "Situation assessment" documents it for operators):

- Every *threat* present at the moment assessed contributes `c = 100 x S x C x E x R` (at most 95):
  - an open incident: S = its severity (low .1, medium .25, high .5, critical .8),
    R = recency, halving every 24 h since its last alert (an incident still open keeps at least .25);
  - the vulnerability exposure of an address (CVEs matched to software seen answering there, not excluded),
    one threat per address weighted by its worst CVE: S = CVSS / 10 x .2, doubled when the CVE is in CISA's
    Known Exploited Vulnerabilities list; R = 1 while it is observed;
  - a traffic anomaly of the last 24 h: S = .15 x min(3, observed / upper bound), R halving every 6 h;
  - C = criticality of the asset involved / 5 (unknown: .6); E = its zone's exposure (external and dmz 1.0,
    backbone .9, internal .75, unknown .85).
- A score combines the contributions of the threats within its scope like independent probabilities:
  `100 x (1 - prod(1 - c / 100))` — one critical threat on a critical server gives ~64, several
  mid-sized threats add up, nothing exceeds 100. An org unit's scope is its subtree; the extranet's is all.
- Every score keeps its top contributing threats with the factors above, so "why 72?" has an answer.

Snapshots are computed by scheduled SQL reads (`ganzhi situation assess`, and `--backfill` for history) and
kept in `situation_history` for trends and the forecast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.enrich.inventory import Block
from pipeline.incidents.model import CLOSED, Incident, load_incidents
from pipeline.situation.baseline import stored_anomalies
from pipeline.store.base import COLUMNS_BEFORE_ALIASES, Store

MODEL = "v1"
HOUR_MS = 3_600_000
SEVERITY = {"informational": 0.0, "low": 0.1, "medium": 0.25, "high": 0.5, "critical": 0.8}
ZONE_EXPOSURE = {"external": 1.0, "dmz": 1.0, "backbone": 0.9, "internal": 0.75}
UNKNOWN_CRITICALITY, UNKNOWN_ZONE = 0.6, 0.85
EXPOSURE_WEIGHT = 0.2
INCIDENT_HALF_LIFE_H, ANOMALY_HALF_LIFE_H, OPEN_FLOOR = 24.0, 6.0, 0.25
MAX_CONTRIBUTION = 95.0
TOP_FACTORS = 5
BANDS = ((75, "severe"), (50, "high"), (25, "elevated"), (0, "low"))  # 严重 / 高 / 中 / 低


def band(score: float) -> str:
    return next(name for low, name in BANDS if score >= low)


def criticality_factor(criticality: int) -> float:
    return criticality / 5 if 1 <= criticality <= 5 else UNKNOWN_CRITICALITY


def decay(age_ms: int, half_life_h: float) -> float:
    return 0.5 ** (max(0, age_ms) / (half_life_h * HOUR_MS))


@dataclass
class Threat:
    kind: str  # incident, exposure, anomaly
    ref: str  # incident id, "CVE-... @ ip:port", anomaly id
    title: str
    org_units: list[str]
    assets: list[str]
    factors: dict[str, float]

    @property
    def contribution(self) -> float:
        return min(MAX_CONTRIBUTION, 100 * math.prod(self.factors.values()))

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "ref": self.ref, "title": self.title, "org_units": self.org_units,
                "assets": self.assets, "contribution": round(self.contribution, 2),
                "factors": {k: round(v, 3) for k, v in self.factors.items()}}


@dataclass
class Score:
    scope_kind: str  # extranet, org_unit, asset
    scope: str
    score: float
    top: list[Threat] = field(default_factory=list)
    threats: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"scope_kind": self.scope_kind, "scope": self.scope, "score": self.score, "band": band(self.score),
                "threats": self.threats, "factors": [t.as_json() for t in self.top]}


def combine(threats: list[Threat]) -> float:
    return round(100 * (1 - math.prod(1 - t.contribution / 100 for t in threats)), 2)


class AssetBook:
    """Criticality, zone and org unit of assets by name, from the inventory."""

    def __init__(self, blocks: Iterable[Block]):
        self.assets = {b.asset: b for b in blocks if b.asset}
        self.units = sorted({b.org_unit for b in blocks if b.org_unit})

    def zone_factor(self, assets: list[str]) -> float:
        zones = [self.assets[a].zone for a in assets if a in self.assets and self.assets[a].zone]
        return max((ZONE_EXPOSURE.get(z, UNKNOWN_ZONE) for z in zones), default=UNKNOWN_ZONE)


def incident_threat(incident: Incident, at_ms: int, book: AssetBook) -> Threat:
    recency = decay(at_ms - min(incident.last_seen, at_ms), INCIDENT_HALF_LIFE_H)
    return Threat("incident", incident.incident_id, incident.title, list(incident.org_units), list(incident.assets), {
        "severity": SEVERITY.get(incident.severity, 0.0),
        "criticality": criticality_factor(incident.max_criticality),
        "exposure": book.zone_factor(list(incident.assets)),
        "recency": max(recency, OPEN_FLOOR)})


def exposure_threats(exposures: list[dict[str, Any]], book: AssetBook) -> list[Threat]:
    """One threat per exposed address, weighted by its worst CVE (ten CVEs on one server are one way in)."""
    by_ip: dict[str, list[dict[str, Any]]] = {}
    for e in exposures:
        by_ip.setdefault(e["ip"], []).append(e)
    threats = []
    for ip, found in sorted(by_ip.items()):
        worst = max(found, key=lambda e: (e["cvss"] * (2 if e.get("kev") else 1), e["cve_id"]))
        asset = worst.get("asset") or ""
        assets = [asset] if asset else []
        kev = sum(1 for e in found if e.get("kev"))
        threats.append(Threat(
            "exposure", ip, f"{len(found)} CVE(s) on {asset or ip}, worst {worst['cve_id']}"
            + (f", {kev} known exploited" if kev else ""),
            [worst["org_unit"]] if worst.get("org_unit") else [], assets, {
                "severity": worst["cvss"] / 10 * EXPOSURE_WEIGHT * (2 if worst.get("kev") else 1),
                "criticality": criticality_factor(worst.get("criticality", 0)),
                "exposure": book.zone_factor(assets), "recency": 1.0}))
    return threats


def anomaly_threat(anomaly: dict[str, Any], at_ms: int) -> Threat:
    ratio = anomaly["observed"] / anomaly["high"] if anomaly["high"] > 0 else 3.0
    hour_end = anomaly["hour_ms"] + HOUR_MS
    return Threat("anomaly", anomaly["anomaly_id"], f"{anomaly['metric']} anomaly",
                  [anomaly["org_unit"]] if anomaly["org_unit"] else [], [], {
                      "severity": 0.15 * min(3.0, max(ratio, 1.0)), "criticality": UNKNOWN_CRITICALITY,
                      "exposure": UNKNOWN_ZONE, "recency": decay(at_ms - hour_end, ANOMALY_HALF_LIFE_H)})


def _ancestors(unit: str) -> list[str]:
    parts = unit.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def score_threats(threats: list[Threat], book: AssetBook) -> list[Score]:
    """Extranet, every org unit (known or named by a threat, with its ancestors) and every asset."""
    by_unit: dict[str, dict[int, Threat]] = {u: {} for unit in book.units for u in _ancestors(unit)}
    by_asset: dict[str, list[Threat]] = {a: [] for a in book.assets}
    for threat in threats:
        for unit in threat.org_units:
            for u in _ancestors(unit):
                by_unit.setdefault(u, {})[id(threat)] = threat  # once per scope, however many units it names
        for asset in dict.fromkeys(threat.assets):
            by_asset.setdefault(asset, []).append(threat)

    def score(kind: str, scope: str, members: list[Threat]) -> Score:
        members = [t for t in members if t.contribution > 0]
        top = sorted(members, key=lambda t: (-t.contribution, t.kind, t.ref))[:TOP_FACTORS]
        return Score(kind, scope, combine(members), top, len(members))

    scores = [score("extranet", "", threats)]
    scores += [score("org_unit", u, list(m.values())) for u, m in sorted(by_unit.items())]
    scores += [score("asset", a, m) for a, m in sorted(by_asset.items())]
    return scores


# -- reading the threats present at a moment ---------------------------------------------------------


def incidents_open_between(store: Store, since_ms: int, until_ms: int) -> list[Incident]:
    """Incidents open at some moment of [since, until] (seen by `until`, not closed before `since`): the ones
    `open_at` can pick from for any moment of the range, without reading every incident ever opened."""
    return load_incidents(
        store, "first_seen <= fromUnixTimestamp64Milli({until:Int64}) AND (status NOT IN {closed:Array(String)} "
        "OR updated_at > fromUnixTimestamp64Milli({since:Int64}))",
        {"since": since_ms, "until": until_ms, "closed": list(CLOSED)})


def open_at(incidents: list[Incident], at_ms: int) -> list[Incident]:
    """Incidents open at `at_ms`: seen by then and not closed by then (a closed incident's last update closed it)."""
    return [i for i in incidents
            if i.first_seen <= at_ms and not (i.status in CLOSED and i.updated_at <= at_ms)]


def assess(store: Store, book: AssetBook, at_ms: int, exposures: list[dict[str, Any]] | None = None,
           incidents: list[Incident] | None = None, anomalies: list[dict[str, Any]] | None = None) -> list[Score]:
    """Scores at `at_ms` (pass pre-read incidents/anomalies to assess many moments with one read)."""
    if incidents is None:
        incidents = incidents_open_between(store, at_ms, at_ms)
    if anomalies is None:
        anomalies = stored_anomalies(store, at_ms - 24 * HOUR_MS, at_ms)
    threats = [incident_threat(i, at_ms, book) for i in open_at(incidents, at_ms)]
    threats += exposure_threats([e for e in exposures or () if e.get("first_seen_ms", 0) <= at_ms], book)
    threats += [anomaly_threat(a, at_ms) for a in anomalies
                if at_ms - 24 * HOUR_MS <= a["hour_ms"] + HOUR_MS <= at_ms]
    return scores_sorted(score_threats(threats, book))


def scores_sorted(scores: list[Score]) -> list[Score]:
    return sorted(scores, key=lambda s: (("extranet", "org_unit", "asset").index(s.scope_kind), s.scope))


def save_scores(store: Store, snapshots: list[tuple[int, list[Score]]]) -> None:
    """Snapshots (moment, its scores) into `situation_history`; assets without risk are left out (they would
    swamp the history and a missing asset row reads as 0)."""
    rows = [(at, s) for at, scores in snapshots for s in scores if s.scope_kind != "asset" or s.score > 0]
    store.insert_columns("situation_history", {
        "at": [at for at, _ in rows], "scope_kind": [s.scope_kind for _, s in rows],
        "scope": [s.scope for _, s in rows], "score": [s.score for _, s in rows],
        "factors": [orjson.dumps([t.as_json() for t in s.top]).decode() for _, s in rows],
        "model": [MODEL] * len(rows)},
        {"at": "ts", "scope_kind": "str", "scope": "str", "score": "f64", "factors": "str", "model": "str"})


def backfill(store: Store, book: AssetBook, since_ms: int, until_ms: int,
             exposures: list[dict[str, Any]] | None = None, step_ms: int = HOUR_MS) -> int:
    """Hourly snapshots over a past range (reads incidents and anomalies once). Returns how many moments."""
    incidents = incidents_open_between(store, since_ms, until_ms)
    anomalies = stored_anomalies(store, since_ms - 24 * HOUR_MS, until_ms)
    moments = range(since_ms - since_ms % step_ms + step_ms, until_ms + 1, step_ms)
    for start in range(0, len(moments), 500):
        save_scores(store, [(at, assess(store, book, at, exposures, incidents, anomalies))
                            for at in moments[start:start + 500]])
    return len(moments)


def history(store: Store, scope_kind: str, scope: str, since_ms: int, until_ms: int) -> list[tuple[int, float]]:
    result = store.query(
        "SELECT toUnixTimestamp64Milli(at) AS t, score FROM situation_history FINAL "
        "WHERE scope_kind = {kind:String} AND scope = {scope:String} "
        "AND at BETWEEN fromUnixTimestamp64Milli({since:Int64}) AND fromUnixTimestamp64Milli({until:Int64}) "
        "ORDER BY t", {"kind": scope_kind, "scope": scope, "since": since_ms, "until": until_ms})
    return [(int(t), float(s)) for t, s in result.rows]


def latest(store: Store) -> list[dict[str, Any]]:
    """The newest snapshot: every scope's score and factors at the last moment assessed."""
    result = store.query(
        "SELECT toUnixTimestamp64Milli(at) AS at, scope_kind, scope, score, factors FROM situation_history FINAL "
        f"WHERE at = (SELECT max(at) FROM situation_history) ORDER BY scope_kind, scope {COLUMNS_BEFORE_ALIASES}")
    return [{"at": at, "scope_kind": kind, "scope": scope, "score": score, "band": band(score),
             "factors": orjson.loads(factors)} for at, kind, scope, score, factors in result.rows]
