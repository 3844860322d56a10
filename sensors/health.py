"""Sensor health events: a sensor's counters, published periodically on the bus like any other event."""

from __future__ import annotations

import time
from typing import Any

from pipeline.schema import event_id, normalize


def _flat(counters: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in counters.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def health_event(sensor: str, kind: str, counters: dict[str, Any], ts_ms: int | None = None) -> dict[str, Any]:
    """One `sensor_health` event: counters flattened into extra (`decode_errors.truncated_tcp` = "3")."""
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    extra = _flat(counters)
    extra["sensor_kind"] = kind
    summary = ", ".join(f"{k}={v}" for k, v in extra.items() if "." not in k and k != "sensor_kind")
    return normalize({"ts": ts_ms, "sensor": sensor, "source_type": "sensor_health", "event_category":
                      "sensor_health", "severity": "info", "message": f"{kind} sensor: {summary}", "extra": extra,
                      "event_id": event_id(f"{sensor}/sensor_health", str(sorted(extra.items())), ts_ms)})
