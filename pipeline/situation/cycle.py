"""One situation cycle — what `ganzhi situation update` runs on a schedule (every few minutes):

inventory of observed software (events received since the last cycle) -> exposures -> anomalies of the
complete hours since the last cycle -> scores (saved to history) -> forecasts (once an hour) -> warning
levels (changes recorded) -> notifications (pending ones retried first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.enrich.inventory import Inventory
from pipeline.incidents.model import LEVELS as SEVERITIES
from pipeline.situation import assess, baseline, early_warning, exposure, forecast, notify
from pipeline.store.base import Store

HOUR_MS = 3_600_000
FORECAST_HORIZON_H = 7 * 24


def get_state(store: Store, name: str, default: int = 0) -> int:
    value = store.query("SELECT argMax(value, version) FROM situation_state WHERE name = {n:String} "
                        "GROUP BY name", {"n": name}).scalar()
    return default if value is None else int(value)


def set_state(store: Store, name: str, value: int) -> None:
    store.insert_columns("situation_state", {"name": [name], "value": [value], "version": [time.time_ns()]},
                         {"name": "str", "value": "u64", "version": "u64"})


@dataclass
class CycleResult:
    at_ms: int
    inventory_rows: int = 0
    exposures: int = 0
    anomalies: int = 0
    extranet_index: float = 0.0
    forecasts: int = 0
    forecast_skipped: list[str] = field(default_factory=list)
    firings: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    notified: notify.Outcome = field(default_factory=notify.Outcome)


def run_cycle(store: Store, at_ms: int | None = None, inventory: Inventory | None = None,
              triggers: list[early_warning.Trigger] | None = None, notifier: notify.Notifier | None = None,
              forecast_horizon_h: int = FORECAST_HORIZON_H) -> CycleResult:
    at_ms = at_ms or int(time.time() * 1000)
    triggers = early_warning.load_triggers() if triggers is None else triggers
    result = CycleResult(at_ms)
    book = assess.AssetBook(inventory.blocks() if inventory else [])

    received = int(store.query("SELECT toUnixTimestamp64Milli(max(ingested_at)) FROM events").scalar() or 0)
    watermark = get_state(store, "inventory_watermark")
    if received > watermark:
        result.inventory_rows = exposure.refresh_inventory(store, watermark, received)
        set_state(store, "inventory_watermark", received)
    exposures = exposure.exposures(store, at_ms, inventory)
    result.exposures = len(exposures)

    hour_ms = at_ms - at_ms % HOUR_MS
    since = get_state(store, "anomalies_until", hour_ms - 24 * HOUR_MS)
    if hour_ms > since:
        found = baseline.find_anomalies(store, since // 1000, hour_ms // 1000)
        baseline.save_anomalies(store, found, at_ms)
        set_state(store, "anomalies_until", hour_ms)
        result.anomalies = len(found)

    # read once, for the scores and the warning triggers
    open_incidents = assess.open_at(assess.incidents_open_between(store, at_ms, at_ms), at_ms)
    anomalies = baseline.stored_anomalies(store, at_ms - 7 * 24 * HOUR_MS, at_ms)
    scores = assess.assess(store, book, at_ms, exposures, open_incidents, anomalies)
    assess.save_scores(store, [(at_ms, scores)])
    result.extranet_index = scores[0].score

    if get_state(store, "forecast_hour", -1) != hour_ms:
        made, result.forecast_skipped = forecast.forecast_all(store, at_ms // 1000, forecast_horizon_h)
        forecast.save_forecasts(store, at_ms, made)
        set_state(store, "forecast_hour", hour_ms)
        result.forecasts = len(made)

    ctx = early_warning.Context(
        at_ms=at_ms, scores=[{"scope_kind": s.scope_kind, "scope": s.scope, "score": s.score} for s in scores],
        incidents=open_incidents, exposures=exposures, forecasts=forecast.latest_forecasts(store),
        anomalies=anomalies,
        rule_departments=early_warning.rule_departments(store, at_ms - 24 * HOUR_MS, at_ms))
    firings = early_warning.evaluate(triggers, ctx)
    changes = early_warning.record(store, at_ms, firings)
    result.firings, result.changes = len(firings), [c.as_json() for c in changes]

    if notifier is not None:
        pending = notifier.retry_pending()
        messages = [notify.level_message(c, at_ms) for c in changes]
        messages += [notify.incident_message(i, at_ms) for i in open_incidents
                     if SEVERITIES.index(i.severity) >= SEVERITIES.index("high")
                     and i.opened_at >= at_ms - 24 * HOUR_MS]
        sent = notifier.send(messages)
        result.notified = notify.Outcome(pending.sent + sent.sent, pending.duplicate + sent.duplicate,
                                         sent.deferred, sent.failed, pending.errors + sent.errors)
    return result
