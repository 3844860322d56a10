"""`ganzhi pipeline status`: consumer lag per partition, what the store holds, and a writer's metrics."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pipeline.bus.base import Bus
from pipeline.store.base import Store


def store_status(store: Store) -> dict[str, Any]:
    row = store.query(
        "SELECT (SELECT count() FROM events), (SELECT count() FROM deadletter), "
        "(SELECT max(ingested_at) FROM events), "
        "(SELECT count() FROM events WHERE ingested_at > now64(3) - INTERVAL 5 MINUTE)").rows[0]
    return {"events": row[0], "dead_letters": row[1], "last_ingested_at": row[2].isoformat() if row[0] else None,
            "ingested_last_5_min": row[3]}


def lag_status(bus: Bus, group: str) -> list[dict[str, Any]]:
    """Per partition: committed offset of the group, end offset, lag (Kafka only; [] for the in-process bus)."""
    offsets = getattr(bus, "group_offsets", None)
    if offsets is None:
        return []
    return [{"topic": t, "partition": p, "committed": c, "end": e, "lag": max(0, e - c)}
            for (t, p), (c, e) in sorted(offsets(group).items())]


def writer_metrics(url: str) -> dict[str, float]:
    """A writer's /metrics as {name{labels}: value} (samples of the ganzhi_* families)."""
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"cannot read writer metrics at {url}: {exc}") from None
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("ganzhi_"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket")):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out
