"""Early warning: four levels after China's national cyber incident grading, from documented trigger rules.

Level 1 = I 特别重大 (red) is the most severe, 4 = IV 一般 (blue), 0 = no warning. The trigger rules live in
`rules/warnings.yaml` (its header documents every kind); each firing trigger names the org units it concerns,
and a scope's level is the most severe trigger firing in it (an org unit's parents and the extranet inherit
it). Level changes are recorded in `warning_levels` (append-only) and notified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from pipeline.incidents.model import LEVELS as SEVERITIES
from pipeline.incidents.model import Incident
from pipeline.store.base import Store

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "rules" / "warnings.yaml"
LEVELS = {1: ("I", "特别重大", "red"), 2: ("II", "重大", "orange"), 3: ("III", "较大", "yellow"),
          4: ("IV", "一般", "blue")}
HOUR_MS = 3_600_000
_PARAMS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "index": {"scope": str, "at_least": (int, float)},
    "incident": {"min_severity": str, "min_criticality": int},
    "spread": {"window_hours": (int, float), "min_departments": int},
    "forecast": {"series": str, "scope": str, "at_least": (int, float), "horizon_hours": int},
    "exposure": {"kev": bool, "min_cvss": (int, float), "min_criticality": int},
    "anomalies": {"window_hours": (int, float), "at_least": int},
}


class WarningRulesError(ValueError):
    """The trigger rules cannot be used; the message names the rule and the problem."""


def level_name(level: int) -> str:
    if level not in LEVELS:
        return "none"
    roman, name, colour = LEVELS[level]
    return f"{roman} {name} ({colour})"


@dataclass(frozen=True)
class Trigger:
    id: str
    level: int
    kind: str
    params: dict[str, Any]
    description: str = ""


def load_triggers(path: Path | None = None) -> list[Trigger]:
    path = path or Path(os.environ.get("GANZHI_WARNING_RULES") or DEFAULT_RULES)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise WarningRulesError(f"{path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("triggers"), list):
        raise WarningRulesError(f"{path}: expected a mapping with a `triggers` list")
    triggers, seen = [], set()
    for n, item in enumerate(doc["triggers"], 1):
        where = f"{path}: trigger {n}"
        if not isinstance(item, dict):
            raise WarningRulesError(f"{where}: not a mapping")
        item = dict(item)
        tid, level, kind = item.pop("id", None), item.pop("level", None), item.pop("kind", None)
        description = str(item.pop("description", ""))
        if not isinstance(tid, str) or not tid or tid in seen:
            raise WarningRulesError(f"{where}: needs a unique string `id`")
        if level not in LEVELS:
            raise WarningRulesError(f"{where} ({tid}): level must be 1 (I) .. 4 (IV), got {level!r}")
        if kind not in _PARAMS:
            raise WarningRulesError(f"{where} ({tid}): unknown kind {kind!r}; one of {', '.join(_PARAMS)}")
        expected = _PARAMS[kind]
        if set(item) != set(expected):
            raise WarningRulesError(f"{where} ({tid}): kind {kind} takes exactly {', '.join(expected)}")
        for key, types in expected.items():
            if not isinstance(item[key], types) or (types is int and isinstance(item[key], bool)):
                raise WarningRulesError(f"{where} ({tid}): {key} has the wrong type ({item[key]!r})")
        if kind == "incident" and item["min_severity"] not in SEVERITIES:
            raise WarningRulesError(f"{where} ({tid}): min_severity must be one of {', '.join(SEVERITIES)}")
        if item.get("scope", "extranet") not in ("extranet", "org_unit"):
            raise WarningRulesError(f"{where} ({tid}): scope must be extranet or org_unit")
        seen.add(tid)
        triggers.append(Trigger(tid, level, kind, item, description))
    return triggers


@dataclass(frozen=True)
class Firing:
    trigger: str
    level: int
    units: tuple[str, ...]  # empty: the extranet as a whole
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "level": self.level, "level_name": level_name(self.level),
                "units": list(self.units), "detail": self.detail}


@dataclass
class Context:
    """What the triggers look at, read once per evaluation."""

    at_ms: int
    scores: list[dict[str, Any]]  # scope_kind, scope, score
    incidents: list[Incident]  # open ones
    exposures: list[dict[str, Any]] = field(default_factory=list)
    forecasts: list[dict[str, Any]] = field(default_factory=list)  # series, points [{ts, mean, ...}]
    anomalies: list[dict[str, Any]] = field(default_factory=list)  # org_unit, hour_ms
    rule_departments: dict[str, list[str]] = field(default_factory=dict)  # rule id -> departments, per window


def rule_departments(store: Store, since_ms: int, until_ms: int) -> dict[str, list[str]]:
    result = store.query(
        "SELECT rule_id, arraySort(groupUniqArray(splitByChar('/', unit)[1])) FROM alert_hits "
        "ARRAY JOIN [src_org_unit, dst_org_unit] AS unit WHERE unit != '' AND suppression_id = '' "
        "AND window_start >= fromUnixTimestamp64Milli({since:Int64}) "
        "AND window_start <= fromUnixTimestamp64Milli({until:Int64}) GROUP BY rule_id",
        {"since": since_ms, "until": until_ms})
    return {rule: list(units) for rule, units in result.rows}


def _fire(trigger: Trigger, ctx: Context) -> list[Firing]:
    p, out = trigger.params, []
    if trigger.kind == "index":
        kind = "extranet" if p["scope"] == "extranet" else "org_unit"
        for s in ctx.scores:
            if s["scope_kind"] == kind and s["score"] >= p["at_least"]:
                units = (s["scope"],) if s["scope"] else ()
                out.append(Firing(trigger.id, trigger.level, units,
                                  f"situation index of {s['scope'] or 'the extranet'} is {s['score']:.1f}"))
    elif trigger.kind == "incident":
        floor = SEVERITIES.index(p["min_severity"])
        for i in ctx.incidents:
            if SEVERITIES.index(i.severity) >= floor and i.max_criticality >= p["min_criticality"]:
                out.append(Firing(trigger.id, trigger.level, tuple(i.org_units),
                                  f"{i.severity} incident {i.incident_id}: {i.title}"))
    elif trigger.kind == "spread":
        for rule, departments in sorted(ctx.rule_departments.items()):
            if len(departments) >= p["min_departments"]:
                out.append(Firing(trigger.id, trigger.level, tuple(departments),
                                  f"rule {rule} fired in {len(departments)} departments: {', '.join(departments)}"))
    elif trigger.kind == "forecast":
        horizon_end = ctx.at_ms + p["horizon_hours"] * HOUR_MS
        for f in ctx.forecasts:
            kind, _, scope = f["series"].partition(":")
            if kind != p["series"] or (scope == "extranet") != (p["scope"] == "extranet"):
                continue
            ahead = [pt for pt in f["points"] if ctx.at_ms < pt["ts"] <= horizon_end]
            peak = max(ahead, key=lambda pt: pt["mean"], default=None)
            if peak and peak["mean"] >= p["at_least"]:
                units = () if scope == "extranet" else (scope,)
                out.append(Firing(trigger.id, trigger.level, units,
                                  f"{f['series']} forecast to reach {peak['mean']:.1f} within {p['horizon_hours']} h"))
    elif trigger.kind == "exposure":
        for e in ctx.exposures:
            if (e["kev"] or not p["kev"]) and e["cvss"] >= p["min_cvss"] and e["criticality"] >= p["min_criticality"]:
                units = (e["org_unit"],) if e["org_unit"] else ()
                out.append(Firing(trigger.id, trigger.level, units,
                                  f"{e['cve_id']} ({'KEV, ' if e['kev'] else ''}CVSS {e['cvss']}) in {e['product']} "
                                  f"on {e['asset'] or e['ip']}"))
    elif trigger.kind == "anomalies":
        since = ctx.at_ms - p["window_hours"] * HOUR_MS
        per_unit: dict[str, int] = {}
        for a in ctx.anomalies:
            if a["org_unit"] and since <= a["hour_ms"] < ctx.at_ms:
                per_unit[a["org_unit"]] = per_unit.get(a["org_unit"], 0) + 1
        for unit, n in sorted(per_unit.items()):
            if n >= p["at_least"]:
                out.append(Firing(trigger.id, trigger.level, (unit,), f"{n} traffic anomalies in {unit}"))
    return out


def evaluate(triggers: list[Trigger], ctx: Context) -> list[Firing]:
    return [firing for trigger in triggers for firing in _fire(trigger, ctx)]


def scope_levels(firings: list[Firing]) -> dict[str, tuple[int, list[Firing]]]:
    """Scope ('' = extranet, else an org unit and each of its parents) -> (most severe level, its firings)."""
    out: dict[str, tuple[int, list[Firing]]] = {}
    for firing in firings:
        scopes = {""}
        for unit in firing.units:
            parts = unit.split("/")
            scopes.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        for scope in scopes:
            level, fired = out.get(scope, (0, []))
            fired.append(firing)
            out[scope] = (firing.level if level == 0 else min(level, firing.level), fired)
    return out


@dataclass(frozen=True)
class Change:
    scope: str
    previous: int
    level: int
    reasons: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"scope": self.scope or "extranet", "previous": self.previous, "level": self.level,
                "level_name": level_name(self.level), "previous_name": level_name(self.previous),
                "reasons": self.reasons}


def current(store: Store) -> dict[str, dict[str, Any]]:
    """Scope -> its current level (the newest recorded change), with when and why."""
    result = store.query(
        "SELECT scope, argMax(level, at), toUnixTimestamp64Milli(max(at)), argMax(reasons, at) "
        "FROM warning_levels GROUP BY scope ORDER BY scope")
    return {scope: {"scope": scope or "extranet", "level": level, "level_name": level_name(level), "since": since,
                    "reasons": orjson.loads(reasons)} for scope, level, since, reasons in result.rows}


def record(store: Store, at_ms: int, firings: list[Firing]) -> list[Change]:
    """Store the level of every scope whose level changed since the last evaluation; return the changes."""
    before = {scope: row["level"] for scope, row in current(store).items()}
    now = scope_levels(firings)
    changes = []
    for scope in sorted(set(before) | set(now)):
        level, fired = now.get(scope, (0, []))
        if level != before.get(scope, 0):
            reasons = [f.as_json() for f in sorted(fired, key=lambda f: (f.level, f.trigger, f.detail))[:10]]
            changes.append(Change(scope, before.get(scope, 0), level, reasons))
    if changes:
        store.insert_columns("warning_levels", {
            "at": [at_ms] * len(changes), "scope": [c.scope for c in changes], "level": [c.level for c in changes],
            "previous": [c.previous for c in changes],
            "reasons": [orjson.dumps(c.reasons).decode() for c in changes]},
            {"at": "ts", "scope": "str", "level": "u8", "previous": "u8", "reasons": "str"})
    return changes


def history(store: Store, since_ms: int, scope: str | None = None) -> list[dict[str, Any]]:
    where = " AND scope = {scope:String}" if scope is not None else ""
    result = store.query(
        "SELECT toUnixTimestamp64Milli(at), scope, level, previous, reasons FROM warning_levels "
        f"WHERE at >= fromUnixTimestamp64Milli({{since:Int64}}){where} ORDER BY at, scope",
        {"since": since_ms} | ({"scope": scope} if scope is not None else {}))
    return [{"at": at, "scope": s or "extranet", "level": level, "level_name": level_name(level),
             "previous": previous, "reasons": orjson.loads(reasons)} for at, s, level, previous, reasons in result.rows]
