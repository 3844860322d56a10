"""Forecasts of the situation index and alert volumes, with prediction intervals and a measured error.

Model: statsmodels' ETS (exponential smoothing state space, additive error and season) on the hourly series,
with a weekly season (168 h) once three weeks of history exist, else a daily one (24 h), else no season.
Intervals are the model's own 90 % prediction intervals. The error is measured, not assumed: the last
`horizon` hours (at most a quarter of the history) are held back, the model is refitted on the rest and
its forecast compared with what happened — MAE, sMAPE, MAPE (over non-zero hours), the coverage of the
90 % interval, and the MAE of the seasonal-naive forecast (same hour one season earlier) as the bar to beat.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from pipeline.situation.baseline import ROW_UNITS
from pipeline.store.base import Store

HOUR_S = 3600
ALPHA = 0.1  # 90 % intervals
MIN_HISTORY_H = 48


class ForecastError(ValueError):
    """Not enough history to forecast; the message says how much is needed."""


@dataclass
class Forecast:
    series: str
    model: str
    start_s: int  # first forecast hour
    mean: list[float]
    low: list[float]
    high: list[float]
    error: dict[str, Any] = field(default_factory=dict)

    def points(self) -> list[dict[str, Any]]:
        return [{"ts": (self.start_s + i * HOUR_S) * 1000, "mean": round(m, 3), "low": round(lo, 3),
                 "high": round(hi, 3)} for i, (m, lo, hi) in enumerate(zip(self.mean, self.low, self.high,
                                                                           strict=True))]

    def as_json(self) -> dict[str, Any]:
        return {"series": self.series, "model": self.model, "points": self.points(), "error": self.error}


def _season(n: int) -> int | None:
    if n >= 3 * 168:
        return 168
    if n >= 2 * 24:
        return 24
    return None


def _fit_predict(values: np.ndarray, horizon: int, start_s: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    season = _season(len(values))
    index = pd.date_range(pd.Timestamp(start_s, unit="s"), periods=len(values), freq="h")
    series = pd.Series(values, index=index)
    model = ETSModel(series, error="add", trend=None, seasonal="add" if season else None,
                     seasonal_periods=season, initialization_method="heuristic" if season else "estimated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on flat series; the held-back error tells the truth
        fitted = model.fit(disp=False)
        frame = fitted.get_prediction(start=len(values), end=len(values) + horizon - 1).summary_frame(alpha=ALPHA)
    name = f"ETS(A,N,{'A' if season else 'N'}){f', season {season} h' if season else ''}"
    return (name, np.asarray(frame["mean"], dtype=float), np.asarray(frame["pi_lower"], dtype=float),
            np.asarray(frame["pi_upper"], dtype=float))


def held_back_error(values: np.ndarray, horizon: int, start_s: int) -> dict[str, Any]:
    held = min(horizon, len(values) // 4)
    train, actual = values[:-held], values[-held:]
    if len(train) < MIN_HISTORY_H:
        return {"held_back_hours": 0, "note": f"needs {MIN_HISTORY_H + held} hours to measure"}
    _, mean, low, high = _fit_predict(train, held, start_s)
    season = _season(len(train)) or 1
    naive = np.array([train[len(train) - season + (i % season)] for i in range(held)])
    nonzero = actual != 0
    denominator = np.abs(actual) + np.abs(mean)
    smape = np.where(denominator > 0, 2 * np.abs(mean - actual) / np.where(denominator > 0, denominator, 1), 0)
    return {
        "held_back_hours": int(held),
        "mae": round(float(np.mean(np.abs(mean - actual))), 3),
        "smape_pct": round(float(100 * np.mean(smape)), 2),
        "mape_pct": round(float(100 * np.mean(np.abs((mean - actual)[nonzero] / actual[nonzero]))), 2)
        if nonzero.any() else None,
        "interval_coverage_pct": round(float(100 * np.mean((actual >= low) & (actual <= high))), 1),
        "seasonal_naive_mae": round(float(np.mean(np.abs(naive - actual))), 3),
    }


def forecast(series: str, values: list[float], start_s: int, horizon: int,
             bounds: tuple[float, float | None] = (0.0, None)) -> Forecast:
    """Forecast `horizon` hours after an hourly series starting at `start_s` (epoch s)."""
    if len(values) < MIN_HISTORY_H:
        raise ForecastError(f"{series}: {len(values)} hours of history, at least {MIN_HISTORY_H} are needed")
    y = np.asarray(values, dtype=float)
    model, mean, low, high = _fit_predict(y, horizon, start_s)
    lo, hi = bounds
    clip = (lambda a: np.clip(a, lo, hi))  # noqa: E731 - counts cannot go negative, an index stays 0-100
    return Forecast(series, model, start_s + len(values) * HOUR_S, clip(mean).tolist(), clip(low).tolist(),
                    clip(high).tolist(), held_back_error(y, horizon, start_s))


# -- the series ---------------------------------------------------------------------------------------------


def dense(points: dict[int, float], since_s: int, until_s: int, fill: float | None = 0.0) -> list[float]:
    """Hourly values over [since, until); missing hours get `fill` (None: carry the last value forward)."""
    out, last = [], 0.0
    for hour in range(since_s - since_s % HOUR_S, until_s, HOUR_S):
        value = points.get(hour)
        if value is None:
            value = last if fill is None else fill
        out.append(value)
        last = value
    return out


def index_series(store: Store, since_s: int, until_s: int) -> dict[str, dict[int, float]]:
    """'index:extranet' / 'index:<org unit>' -> hourly situation index (the last snapshot of each hour)."""
    result = store.query(
        "SELECT scope_kind, scope, toUnixTimestamp(toStartOfHour(at - INTERVAL 1 MILLISECOND)) AS hour, "
        "argMax(score, at) FROM situation_history WHERE scope_kind != 'asset' "
        "AND at > toDateTime64({since:Int64}, 3, 'UTC') AND at <= toDateTime64({until:Int64}, 3, 'UTC') "
        "GROUP BY scope_kind, scope, hour", {"since": since_s, "until": until_s})
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for kind, scope, hour, score in result.rows:
        out["index:extranet" if kind == "extranet" else f"index:{scope}"][int(hour)] = float(score)
    return out


def alert_series(store: Store, since_s: int, until_s: int) -> dict[str, dict[int, float]]:
    """'alerts:extranet' / 'alerts:<org unit>' -> alerts per hour (by window start, suppressed ones left out)."""
    result = store.query(
        "SELECT unit, toUnixTimestamp(toStartOfHour(window_start)) AS hour, uniqExact(alert_id) FROM alert_hits "
        f"ARRAY JOIN arrayConcat([''], {ROW_UNITS}) AS unit "
        "WHERE suppression_id = '' AND window_start >= toDateTime({since:Int64}, 'UTC') "
        "AND window_start < toDateTime({until:Int64}, 'UTC') GROUP BY unit, hour", {"since": since_s, "until": until_s})
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for unit, hour, n in result.rows:
        out[f"alerts:{unit}" if unit else "alerts:extranet"][int(hour)] = float(n)
    return out


def forecast_all(store: Store, until_s: int, horizon: int, days: int = 28) -> tuple[list[Forecast], list[str]]:
    """Every index and alert series with enough history -> forecasts; plus the series skipped and why."""
    until_s -= until_s % HOUR_S
    since_s = until_s - days * 24 * HOUR_S
    made, skipped = [], []
    for read, fill, bounds in ((index_series, None, (0.0, 100.0)), (alert_series, 0.0, (0.0, None))):
        for name, points in sorted(read(store, since_s, until_s).items()):
            first = min(points)
            values = dense(points, first, until_s, fill)
            try:
                made.append(forecast(name, values, first, horizon, bounds))
            except ForecastError as exc:
                skipped.append(str(exc))
    return made, skipped


def save_forecasts(store: Store, made_ms: int, forecasts: list[Forecast]) -> None:
    columns: dict[str, list[Any]] = defaultdict(list)
    for f in forecasts:
        error = orjson.dumps(f.error).decode()
        for point in f.points():
            for key, value in (("made_at", made_ms), ("series", f.series), ("ts", point["ts"]),
                               ("mean", point["mean"]), ("low", point["low"]), ("high", point["high"]),
                               ("model", f.model), ("error", error)):
                columns[key].append(value)
    if columns:
        store.insert_columns("forecasts", dict(columns), {
            "made_at": "ts", "series": "str", "ts": "ts", "mean": "f64", "low": "f64", "high": "f64",
            "model": "str", "error": "str"})


def latest_forecasts(store: Store, series: str | None = None) -> list[dict[str, Any]]:
    where = "series = {series:String}" if series else "1"
    result = store.query(
        "SELECT series, any(model), any(error), groupArray((toUnixTimestamp(ts) * 1000, mean, low, high)) "
        "FROM (SELECT * FROM forecasts FINAL WHERE made_at = (SELECT max(made_at) FROM forecasts) AND "
        f"{where} ORDER BY series, ts) GROUP BY series ORDER BY series", {"series": series} if series else {})
    return [{"series": name, "model": model, "error": orjson.loads(error),
             "points": [{"ts": int(t), "mean": m, "low": lo, "high": hi} for t, m, lo, hi in points]}
            for name, model, error, points in result.rows]
