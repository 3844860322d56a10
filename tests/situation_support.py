"""Four weeks of a small extranet for the situation tests: hourly traffic with daily and weekly seasonality in
two departments, alerts, incidents (some closed), observed software — and, on the last day, a burst of
failed logins and a critical incident on the most critical server. Deterministic (fixed random seed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.enrich.inventory import Block, Inventory
from pipeline.incidents.model import Incident, save_incidents
from pipeline.schema import event_id, normalize
from pipeline.store.base import Store
from pipeline.store.ddl import ALERT_HIT_KINDS

HOUR_MS = 3_600_000
END_MS = 1_794_787_200_000  # 2026-11-16 00:00 UTC, a Monday
WEEKS = 4
START_MS = END_MS - WEEKS * 7 * 24 * HOUR_MS
SPIKE_MS = END_MS - 14 * HOUR_MS  # 10:00 on the last day

UNIT_A, UNIT_B = "民政局/东城街道", "卫健委"
BLOCKS = [
    Block(department="民政局", zone="internal", cidr="10.20.0.0/16"),
    Block(department="民政局", street="东城街道", cidr="10.20.3.0/24"),
    Block(department="民政局", street="东城街道", asset="低保审批系统", criticality=4, zone="internal",
          cidr="10.20.3.15"),
    Block(department="卫健委", zone="dmz", cidr="10.30.0.0/16"),
    Block(department="卫健委", asset="卫健门户网站", criticality=5, zone="dmz", cidr="10.30.0.10"),
]
SERVERS = {UNIT_A: "10.20.3.15", UNIT_B: "10.30.0.10"}
INVENTORY = Inventory([(b.cidr, b) for b in BLOCKS], "situation seed")


@dataclass(frozen=True)
class Seeded:
    events: int
    alerts: int
    incidents: int


def _rate(hour_ms: int, base: float) -> float:
    """Busy office hours (08-18 Beijing time = 00-10 UTC), quiet nights, weekends at a third."""
    hour_cn = (hour_ms // HOUR_MS + 8) % 24
    weekday = ((hour_ms // HOUR_MS + 8) // 24 + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    daily = 1.0 if 8 <= hour_cn < 18 else 0.25
    return base * daily * (0.35 if weekday >= 5 else 1.0)


def _event(n: int, ts: int, unit: str, category: str, **fields: Any) -> dict[str, Any]:
    record = {"ts": ts, "event_id": event_id("situation-seed", f"{unit}-{category}-{ts}", n), "sensor": "edge-1",
              "source_type": "seed", "event_category": category, "dst_org_unit": unit,
              "dst_ip": SERVERS[unit], **fields}
    return normalize(record)


def seed_traffic(store: Store, rng: np.random.Generator) -> int:
    events: list[dict[str, Any]] = []
    for hour in range(START_MS, END_MS, HOUR_MS):
        for unit, base in ((UNIT_A, 40.0), (UNIT_B, 60.0)):
            for i in range(rng.poisson(_rate(hour, base))):
                events.append(_event(len(events), hour + i * 1000, unit, "network_connection", protocol="tcp",
                                     dst_port=443, bytes_out=int(rng.integers(2_000, 40_000)),
                                     bytes_in=int(rng.integers(10_000, 200_000)), conn_state="SF",
                                     src_ip="10.99.0.7", packets_in=5))
            for i in range(rng.poisson(_rate(hour, base / 2))):
                events.append(_event(len(events), hour + 500 + i * 1000, unit, "dns", dns_query="gov.example.cn",
                                     action="query", src_ip="10.99.0.7"))
            for i in range(rng.poisson(1.0)):
                events.append(_event(len(events), hour + 700 + i * 1000, unit, "auth", action="failure",
                                     user_name="clerk", src_ip="10.99.0.8"))
    for i in range(150):  # the burst: a password-guessing run against 低保审批系统
        events.append(_event(len(events), SPIKE_MS + i * 20_000, UNIT_A, "auth", action="failure",
                             user_name=f"user{i % 30}", src_ip="10.66.6.6"))
    # software answering on the servers (banners as the packet sensor and Zeek report them)
    events.append(_event(len(events), END_MS - 20 * HOUR_MS, UNIT_B, "http", http_status=200, src_ip="10.99.0.7",
                         dst_port=80, extra={"server": "Apache/2.4.49 (Unix) OpenSSL/1.1.1k",
                                             "x_powered_by": "PHP/7.4.3"}))
    events.append(_event(len(events), END_MS - 20 * HOUR_MS, UNIT_A, "ssh", src_ip="10.99.0.7", dst_port=22,
                         extra={"server": "SSH-2.0-OpenSSH_7.4", "client": "SSH-2.0-PuTTY_Release_0.70"}))
    store.insert_events(events)
    return len(events)


def seed_alerts(store: Store, rng: np.random.Generator) -> int:
    rows: list[dict[str, Any]] = []
    for hour in range(START_MS, END_MS, HOUR_MS):
        for unit, base in ((UNIT_A, 3.0), (UNIT_B, 2.0)):
            for i in range(rng.poisson(_rate(hour, base))):
                rows.append({"alert_id": f"seed-{unit}-{hour}-{i}", "rule_id": "r-scan", "rule_title": "port scan",
                             "level": "low", "tags": ["attack.discovery"], "kind": "rule", "ruleset_version": "seed",
                             "entity": f"src_ip=10.99.{i}.1", "window_start": hour, "event_id": f"e-{hour}-{i}",
                             "event_ts": hour, "src_ip": "", "dst_ip": "", "host_name": "", "user_name": "",
                             "src_org_unit": "", "dst_org_unit": unit, "src_asset": "", "dst_asset": "",
                             "suppression_id": ""})
    store.insert_columns("alert_hits", {c: [r[c] for r in rows] for c in ALERT_HIT_KINDS}, ALERT_HIT_KINDS)
    return len(rows)


def seed_incidents(store: Store) -> int:
    def incident(n: int, first: int, last: int, severity: str, unit: str, asset: str, crit: int,
                 status: str = "new", updated: int | None = None) -> Incident:
        return Incident(f"inc-{n}", f"seeded incident {n}", status, severity, f"src_ip=10.66.{n}.1", [unit],
                        [asset] if asset else [], crit, ["r-seed"], 3, "", [], first, last, first, updated or last)

    day = 24 * HOUR_MS
    incidents = [
        incident(1, START_MS + 3 * day, START_MS + 3 * day + HOUR_MS, "high", UNIT_A, "低保审批系统", 4,
                 "resolved", START_MS + 4 * day),
        incident(2, START_MS + 10 * day, START_MS + 10 * day + 2 * HOUR_MS, "medium", UNIT_B, "", 0,
                 "false_positive", START_MS + 10 * day + 5 * HOUR_MS),
        incident(3, START_MS + 17 * day, START_MS + 17 * day + HOUR_MS, "medium", UNIT_A, "", 0),
        incident(4, SPIKE_MS, SPIKE_MS + HOUR_MS, "high", UNIT_A, "低保审批系统", 4),
        incident(5, END_MS - 3 * HOUR_MS, END_MS - HOUR_MS, "critical", UNIT_B, "卫健门户网站", 5),
    ]
    save_incidents(store, incidents)
    return len(incidents)


def seed(store: Store) -> Seeded:
    rng = np.random.default_rng(20261116)
    return Seeded(seed_traffic(store, rng), seed_alerts(store, rng), seed_incidents(store))


def write_inventory(path: Path) -> Path:
    """The seed's inventory as a YAML file (what the API reads)."""
    networks = [{k: v for k, v in {"cidr": b.cidr, "department": b.department, "street": b.street,
                                   "asset": b.asset, "criticality": b.criticality or None, "zone": b.zone}.items() if v}
                for b in BLOCKS]
    path.write_text(yaml.safe_dump({"networks": networks}, allow_unicode=True), encoding="utf-8")
    return path
