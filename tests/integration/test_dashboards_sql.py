"""Every panel's SQL of every dashboard, expanded as Grafana and the ClickHouse plugin would (macros, variables),
runs on a ClickHouse server holding four seeded weeks plus pipeline telemetry, and returns the columns its
panel reads — for the whole extranet and for one department (the org-unit variable)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dashboards.definitions import DASHBOARDS
from dashboards.model import ALL, expand
from pipeline.incidents.model import append_timeline
from pipeline.schema import normalize
from pipeline.situation import assess, cycle
from pipeline.store.ddl import ALERT_HIT_KINDS
from sensors.health import health_event
from tests import situation_support as seed

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000
PANELS = [(d.uid, p.title, q) for d in DASHBOARDS for p in d.panels for q in p.queries]


def _telemetry(store: Any, now_ms: int) -> None:
    """What the seed lacks: writer counters, sensor heartbeats with drops, dead letters, a suppression, a
    disabled rule, an incident's timeline, and a rule that stopped firing before the range."""
    store.insert_columns("writer_stats", {
        "ts": [now_ms - 60_000 * i for i in range(5)], "instance": ["writer-0"] * 5, "group": ["ganzhi-writer"] * 5,
        "messages": [100 * i for i in range(5)], "events_written": [1000 * i for i in range(5)],
        "dead_letters": [0] * 5, "duplicates_dropped": [0] * 5, "batches": list(range(5)), "store_retries": [0] * 5,
        "bus_retries": [0] * 5, "insert_seconds": [0.1 * i for i in range(5)], "last_insert_seconds": [0.02] * 5,
        "lag": [50, 40, 30, 20, 10]}, {"ts": "ts", "instance": "str", "group": "str", "messages": "u64",
                                       "events_written": "u64", "dead_letters": "u64", "duplicates_dropped": "u64",
                                       "batches": "u64", "store_retries": "u64", "bus_retries": "u64",
                                       "insert_seconds": "f64", "last_insert_seconds": "f64", "lag": "u64"})
    store.insert_events([health_event("edge-1", "packet", {"packets": 1000 * i, "drops": 3 * i},
                                      seed.END_MS - i * 600_000) for i in range(4)])
    store.insert_events([normalize({"ts": seed.END_MS - 5 * 60_000, "event_id": f"tls-{v}", "sensor": "edge-1",
                                    "source_type": "zeek_ssl", "event_category": "tls", "tls_version": v,
                                    "src_ip": "10.20.3.99", "dst_ip": "10.30.0.10", "dst_port": 443,
                                    "src_org_unit": seed.UNIT_A, "dst_org_unit": seed.UNIT_B})
                         for v in ("TLSv13", "TLSv10")])
    store.insert_deadletters([{"ts": now_ms - 1000, "dl_id": "dl-1", "stage": "writer.decode", "source": "t",
                               "reason": "not JSON", "field": "", "origin": "t/0/1", "payload": "{"}])
    store.execute("INSERT INTO suppressions VALUES ('s-1', 'r-scan', 'src_ip', '10.99.0.1', 'resp', 'scanner', "
                  "now64(3), now64(3) + INTERVAL 30 DAY, 0, 1)")
    store.execute("INSERT INTO rule_state VALUES ('r-noisy', 0, 'adm', now64(3), 1)")
    opened = seed.END_MS - 3 * seed.HOUR_MS
    append_timeline(store, [("inc-5", opened + 600_000, "resp", "status", {"from": "new", "to": "acknowledged"}),
                            ("inc-5", opened + 7_200_000, "resp", "status", {"from": "contained", "to": "resolved"})])
    old = seed.END_MS - 9 * DAY_MS
    row = {k: "" for k in ALERT_HIT_KINDS} | {
        "alert_id": "old-1", "rule_id": "r-old", "rule_title": "retired rule", "level": "low", "tags": [],
        "window_start": old, "event_ts": old, "src_org_unit": seed.UNIT_A}
    store.insert_columns("alert_hits", {k: [v] for k, v in row.items()}, ALERT_HIT_KINDS)


@pytest.fixture(scope="module")
def world(clickhouse_server: str) -> Any:
    from pipeline.store.server import ServerStore

    name = f"dash_{int(time.time() * 1000)}"
    store = ServerStore(f"{clickhouse_server}/{name}")
    store.ensure_schema()
    seed.seed(store)
    assess.backfill(store, assess.AssetBook(seed.INVENTORY.blocks()), seed.START_MS, seed.END_MS - seed.HOUR_MS)
    cycle.run_cycle(store, seed.END_MS, seed.INVENTORY)
    now = int(time.time() * 1000)
    _telemetry(store, now)
    yield store, seed.END_MS - 7 * DAY_MS, now + 3_600_000
    store.execute(f"DROP DATABASE IF EXISTS {name}")
    store.close()


@pytest.mark.parametrize("unit", [ALL, "民政局"])
def test_every_panel_query_runs_and_returns_its_columns(world: Any, unit: str) -> None:
    store, from_ms, to_ms = world
    empty = []
    for uid, title, query in PANELS:
        sql = expand(query.sql, from_ms, to_ms, 3600, {"org_unit": unit, "sensor": ALL})
        assert "$" not in sql, f"{uid} / {title}: unexpanded macro or variable"
        result = store.query(sql)
        missing = set(query.columns) - set(result.columns)
        assert not missing, f"{uid} / {title}: columns {sorted(missing)} missing (got {result.columns})"
        if not result.rows:
            empty.append(f"{uid} / {title}")
    if unit == ALL:  # the seeded world has something for every panel
        assert empty == []
    else:  # a department sees its own: 民政局's street has incidents, anomalies, alerts and traffic
        assert all(not e.startswith(("ganzhi-situation / 未关闭事件", "ganzhi-network / 流量 Traffic"))
                   for e in empty), empty


def test_a_sensor_variable_narrows_the_pipeline_panels(world: Any) -> None:
    store, from_ms, to_ms = world
    for uid, title, query in PANELS:
        if "sensor" not in query.sql or uid != "ganzhi-pipeline":
            continue
        sql = expand(query.sql, from_ms, to_ms, 3600, {"org_unit": ALL, "sensor": "no-such-sensor"})
        assert store.query(sql).rows == [], f"{title} ignores the sensor variable"


def test_variable_values_cannot_break_out_of_their_string(world: Any) -> None:
    store, from_ms, to_ms = world
    query = next(q for _, t, q in PANELS if t.startswith("未关闭事件 Open incidents by"))
    hostile = "x') OR 1=1 OR ('"
    assert store.query(expand(query.sql, from_ms, to_ms, 3600, {"org_unit": hostile, "sensor": ALL})).rows == []
