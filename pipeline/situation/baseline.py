"""Traffic baselines per org unit with weekly seasonality; hours outside the expected range become alerts.

For each org unit (and the extranet as a whole, scope '') and each metric, the hourly value is compared with
the same hour of the same weekday in the previous `weeks` weeks (falling back to the same hour of the
previous 7 days while less than two such weeks exist). Expected = their median; the band is
median +- k x spread. Four samples alone estimate the spread poorly, so the spread is the larger of their own
MAD (x 1.4826) and sqrt(phi x median): counts and byte sums behave like (compound) Poisson processes, whose
variance grows with the mean, and the dispersion phi is pooled over the whole history of the series (robustly:
from how far every past hour fell from its own seasonal median, measured out of sample). A quiet night and a
busy morning thus get bands of the right width, one past incident does not blow a band open, and no band is
zero-width. An hour above the band (by at least the metric's minimum excess) is an anomaly; so is a volume
metric falling below it (a link or a sensor going quiet).

Anomalies are kept in `anomalies` with the expected range and become alerts (`alert_hits`, kind
`anomaly`, rule `ganzhi.baseline.<metric>`) whose title states observed vs expected. Re-running over the
same hours writes the same keys: idempotent.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.store.base import Store
from pipeline.store.ddl import ALERT_HIT_KINDS

HOUR_S = 3600
WEEK_H = 168


@dataclass(frozen=True)
class Metric:
    name: str
    sql: str  # aggregate over the events of one hour and unit
    label: str
    min_excess: float  # an hour must exceed the band by at least this much
    drop_alerts: bool  # a fall below the band is an anomaly too


METRICS = (
    Metric("bytes", "sum(bytes_in + bytes_out)", "traffic volume (bytes)", 1e6, True),
    Metric("connections", "countIf(event_category = 'network_connection')", "connections", 20, True),
    Metric("dns_queries", "countIf(event_category = 'dns')", "DNS queries", 20, True),
    Metric("failed_logins", "countIf(event_category = 'auth' AND action = 'failure')", "failed logins", 5, False),
)
METRIC_BY_NAME = {m.name: m for m in METRICS}
DROP_MIN_EXPECTED = 20.0  # drops are only judged where the metric is normally busy
# the org units an event or alert row touches (source and destination side, each once): ARRAY JOIN it to count
# a row for every unit it concerns
ROW_UNITS = "arrayDistinct(arrayFilter(x -> x != '', [src_org_unit, dst_org_unit]))"


@dataclass(frozen=True)
class Anomaly:
    hour_s: int
    org_unit: str
    metric: str
    observed: float
    expected: float
    low: float
    high: float
    samples: int

    @property
    def anomaly_id(self) -> str:
        key = f"{self.org_unit}\x1f{self.metric}\x1f{self.hour_s}".encode()
        return hashlib.blake2b(key, digest_size=16).hexdigest()

    @property
    def level(self) -> str:
        return "high" if self.observed > 2 * self.high + METRIC_BY_NAME[self.metric].min_excess else "medium"

    def title(self) -> str:
        label = METRIC_BY_NAME[self.metric].label
        where = self.org_unit or "extranet"
        direction = "above" if self.observed > self.high else "below"
        return (f"{where}: {label} {self.observed:,.0f} in one hour, {direction} the expected "
                f"{self.low:,.0f}-{self.high:,.0f} (median {self.expected:,.0f})")


def hourly_series(store: Store, since_s: int, until_s: int) -> dict[tuple[str, str], dict[int, float]]:
    """(org unit, metric) -> {hour start (epoch s): value} for [since, until). Scope '' is the whole extranet."""
    aggregates = ", ".join(f"{m.sql} AS {m.name}" for m in METRICS)
    result = store.query(
        f"SELECT toUnixTimestamp(toStartOfHour(ts)) AS hour, unit, {aggregates} FROM events "
        f"ARRAY JOIN arrayConcat([''], {ROW_UNITS}) AS unit "
        "WHERE ts >= toDateTime({since:Int64}, 'UTC') AND ts < toDateTime({until:Int64}, 'UTC') "
        "GROUP BY hour, unit", {"since": since_s, "until": until_s})
    series: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for hour, unit, *values in result.rows:
        for metric, value in zip(METRICS, values, strict=True):
            series[(unit, metric.name)][int(hour)] = float(value)
    return series


def expected_range(past: list[float], k: float, dispersion: float = 1.0) -> tuple[float, float, float]:
    """(median, low, high) of the band from past values of the same seasonal slot."""
    values = np.asarray(past, dtype=float)
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    spread = max(1.4826 * mad, float(np.sqrt(dispersion * median)), 1.0)
    return median, max(0.0, median - k * spread), median + k * spread


def seasonal_samples(values: dict[int, float], hour_s: int, weeks: int, first_s: int) -> list[float]:
    """The same hour of the weekday in past weeks; else the same hour of the past 7 days. Missing hours are 0
    (no events), but only hours after the start of the data count."""
    weekly = [hour_s - w * WEEK_H * HOUR_S for w in range(1, weeks + 1)]
    weekly = [h for h in weekly if h >= first_s]
    if len(weekly) >= 2:
        return [values.get(h, 0.0) for h in weekly]
    daily = [h for h in (hour_s - d * 24 * HOUR_S for d in range(1, 8)) if h >= first_s]
    return [values.get(h, 0.0) for h in daily]


def dispersion(values: dict[int, float], first_s: int, until_s: int, weeks: int) -> float:
    """Pooled variance-to-mean ratio of the series: (1.4826 x median |value - seasonal median| / sqrt(median))^2
    over every past hour with a baseline (1 for a Poisson count; larger for byte sums and bursty series)."""
    scaled = []
    # hours with a weekly baseline only: the daily fallback mixes weekends into weekdays and would inflate phi
    weekly_from = first_s + 2 * WEEK_H * HOUR_S
    for hour in range(weekly_from if weekly_from < until_s else first_s, until_s, HOUR_S):
        past = seasonal_samples(values, hour, weeks, first_s)
        if len(past) >= 2:
            median = float(np.median(past))
            if median > 0:
                scaled.append(abs(values.get(hour, 0.0) - median) / np.sqrt(median))
    return max(1.0, (1.4826 * float(np.median(scaled))) ** 2) if scaled else 1.0


def find_anomalies(store: Store, since_s: int, until_s: int, weeks: int = 4, k: float = 4.0) -> list[Anomaly]:
    """Anomalous complete hours in [since, until)."""
    since_s -= since_s % HOUR_S
    until_s -= until_s % HOUR_S
    history_start = since_s - weeks * WEEK_H * HOUR_S
    first = store.query("SELECT toUnixTimestamp(toStartOfHour(min(ts))) FROM events").scalar()
    first_s = max(history_start, int(first or 0))
    found = []
    for (unit, name), values in sorted(hourly_series(store, history_start, until_s).items()):
        metric = METRIC_BY_NAME[name]
        phi = dispersion(values, first_s, since_s, weeks)
        for hour in range(since_s, until_s, HOUR_S):
            past = seasonal_samples(values, hour, weeks, first_s)
            if len(past) < 3:
                continue  # no baseline yet
            observed = values.get(hour, 0.0)
            median, low, high = expected_range(past, k, phi)
            above = observed > high and observed - high >= metric.min_excess
            below = metric.drop_alerts and median >= DROP_MIN_EXPECTED and observed < low
            if above or below:
                found.append(Anomaly(hour, unit, name, observed, median, low, high, len(past)))
    return found


def save_anomalies(store: Store, anomalies: list[Anomaly], detected_ms: int) -> None:
    """Into `anomalies` and, as alerts, into `alert_hits` (one hit per anomaly, keyed by the anomaly)."""
    if not anomalies:
        return
    store.insert_columns("anomalies", {
        "anomaly_id": [a.anomaly_id for a in anomalies], "hour": [a.hour_s * 1000 for a in anomalies],
        "org_unit": [a.org_unit for a in anomalies], "metric": [a.metric for a in anomalies],
        "observed": [a.observed for a in anomalies], "expected": [a.expected for a in anomalies],
        "low": [a.low for a in anomalies], "high": [a.high for a in anomalies],
        "samples": [a.samples for a in anomalies], "detected_at": [detected_ms] * len(anomalies)},
        {"anomaly_id": "str", "hour": "ts", "org_unit": "str", "metric": "str", "observed": "f64", "expected": "f64",
         "low": "f64", "high": "f64", "samples": "u16", "detected_at": "ts"})
    hits = {
        "alert_id": [a.anomaly_id for a in anomalies], "rule_id": [f"ganzhi.baseline.{a.metric}" for a in anomalies],
        "rule_title": [a.title() for a in anomalies], "level": [a.level for a in anomalies],
        "tags": [["anomaly", f"metric.{a.metric}"] for a in anomalies], "kind": ["anomaly"] * len(anomalies),
        "ruleset_version": ["baseline"] * len(anomalies),
        "entity": [f"org_unit={a.org_unit}" if a.org_unit else "extranet" for a in anomalies],
        "window_start": [a.hour_s * 1000 for a in anomalies], "event_id": [a.anomaly_id for a in anomalies],
        "event_ts": [a.hour_s * 1000 for a in anomalies],
        "src_org_unit": [a.org_unit for a in anomalies], "dst_org_unit": [a.org_unit for a in anomalies]}
    store.insert_columns("alert_hits", hits, ALERT_HIT_KINDS)


def stored_anomalies(store: Store, since_ms: int, until_ms: int, limit: int = 10_000) -> list[dict[str, Any]]:
    """Anomalies of the hours starting in [since, until), newest first."""
    result = store.query(
        "SELECT anomaly_id, toUnixTimestamp(hour) * 1000 AS hour_ms, org_unit, metric, observed, expected, low, high "
        "FROM anomalies FINAL WHERE hour >= fromUnixTimestamp64Milli({since:Int64}) "
        "AND hour < fromUnixTimestamp64Milli({until:Int64}) ORDER BY hour DESC, org_unit, metric LIMIT {limit:UInt32}",
        {"since": since_ms, "until": until_ms, "limit": limit})
    return result.dicts()
