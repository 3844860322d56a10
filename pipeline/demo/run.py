"""`ganzhi demo`: generate the simulated day, run it through the real sensors, pipeline, detection, incident
grouping and situation assessment on the embedded engines, and render the bulletin.

Sensors read the day the way they would on site — the packet sensor replays the mirror-port capture, the log
sensor reads the mail server's auth.log and the portal's access log — and their events are merged in time
order onto the in-process bus (as a live feed would deliver them); the writer stores and enriches them and
live detection groups its alerts into incidents. The situation cycle then assesses the end of the day.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from pipeline.bus.memory import MemoryBus
from pipeline.demo.scenario import Scenario, generate
from pipeline.detect.compile import compile_rules
from pipeline.detect.live import LiveDetection
from pipeline.enrich import Enricher
from pipeline.enrich.inventory import Inventory
from pipeline.incidents.correlate import GroupingPolicy, IncidentCorrelator
from pipeline.incidents.model import LEVELS, load_incidents
from pipeline.situation import cycle, early_warning, report
from pipeline.store.base import Store
from pipeline.writer import Writer
from rules import PACK
from sensors.logs.parsers import ParseContext
from sensors.logs.router import RecordRouter
from sensors.logs.tail import Tailer
from sensors.packet.capture import read_file
from sensors.packet.sensor import PacketSensor
from sensors.sink import BusSink, ListSink

# alerts from one of our own assets group by that asset (a compromised server's later stages share an
# incident); the rest by their entity (an outside attacker's address)
DEMO_GROUPING = GroupingPolicy(group_by=("src_asset", "src_ip", "entity"))
Step = Callable[[str], None]
_TACTIC = re.compile(r"^attack\.(?![tgs]\d)[a-z_-]+$")  # attack.credential-access, not attack.t1110


@dataclass
class DemoResult:
    scenario: Scenario
    events_by_source: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    alerts_by_rule: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    warning: dict[str, Any] = field(default_factory=dict)
    extranet_index: float = 0.0
    bulletin_html: Path | None = None
    bulletin_pdf: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"day": self.scenario.day.date().isoformat(), "events_by_source": dict(self.events_by_source),
                "dead_letters": self.dead_letters, "alerts_by_rule": self.alerts_by_rule, "incidents": self.incidents,
                "warning": self.warning, "extranet_index": self.extranet_index,
                "bulletin": {"html": str(self.bulletin_html), "pdf": str(self.bulletin_pdf)}, "seconds": self.seconds}


def sense(scenario: Scenario) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sensors over the day's files: events (in time order) and dead letters."""
    sink = ListSink()
    PacketSensor(sink, "dmz-mirror", str(scenario.pcap), health_interval_s=3600).run(read_file(scenario.pcap))
    year = scenario.day.year
    for path, fmt, host in ((scenario.auth_log, "syslog", "mail"), (scenario.access_log, "nginx", "portal")):
        context = ParseContext.make(sensor=f"{host}-logs", timezone="Asia/Shanghai", year=year, host=host)
        Tailer([str(path)], fmt, RecordRouter(sink), None, context).run_once()
    return sorted(sink.events, key=lambda e: (e["ts"], e["event_id"])), sink.dead_letters


def ingest(store: Store, scenario: Scenario, events: list[dict[str, Any]], dead: list[dict[str, Any]]) -> None:
    """Events onto the in-process bus in time order, then the writer with enrichment, detection, incidents."""
    bus = MemoryBus()
    sink = BusSink(bus)
    for event in events:
        sink.emit(event)
    for record in dead:
        sink.dead(record)
    sink.flush()
    store.ensure_schema()
    live = LiveDetection(store, bus, compile_rules([PACK]),
                         on_alerts=IncidentCorrelator(store, DEMO_GROUPING).process)
    enricher = Enricher(scenario.inventory, [scenario.iocs])
    Writer(bus, store, on_batch=live, enricher=enricher).run(threading.Event(), idle_exit_s=0.2)
    bus.close()


def incidents_with_stages(store: Store) -> list[dict[str, Any]]:
    """Incidents, most severe first, each with its alerts' rules in the order they first fired (the stage chain)."""
    found = load_incidents(store, "1", {})
    chains = store.query(
        "SELECT l.incident_id, a.rule_id, any(a.rule_title), min(a.first_seen) AS first, any(a.tags) "
        "FROM incident_alerts AS l INNER JOIN alerts AS a ON a.alert_id = l.alert_id "
        "GROUP BY l.incident_id, a.rule_id ORDER BY l.incident_id, first, a.rule_id").rows
    stages: dict[str, list[dict[str, Any]]] = {}
    for incident_id, rule_id, title, first, tags in chains:
        tactics = sorted(t[7:].replace("-", "_") for t in tags if _TACTIC.match(t))
        stages.setdefault(incident_id, []).append({"rule_id": rule_id, "title": title, "first_seen": first,
                                                   "tactics": tactics})
    rank = {level: n for n, level in enumerate(reversed(LEVELS))}
    out = [i.as_json() | {"stages": stages.get(i.incident_id, [])} for i in found]
    return sorted(out, key=lambda i: (rank[i["severity"]], -i["alert_count"], i["first_seen"]))


def run(directory: Path, day: datetime, store: Store, seed: int = 20261121, step: Step = lambda _: None
        ) -> DemoResult:
    clock = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.monotonic() - clock, 2)
        clock = time.monotonic()

    step("generating the simulated day (scapy capture, sshd and nginx logs, inventory, IOC list)")
    scenario = generate(directory / "scenario", day, seed)
    lap("generate")
    step("sensors: packet sensor over the capture, log sensor over the server logs")
    events, dead = sense(scenario)
    lap("sense")
    step(f"pipeline: {len(events):,} events -> enrichment -> ClickHouse (chDB) -> live detection -> incidents")
    ingest(store, scenario, events, dead)
    lap("ingest")
    step("situation: inventory, baselines, scores, warning level")
    inventory = Inventory.load(scenario.inventory)
    end_ms = int(scenario.end * 1000)
    outcome = cycle.run_cycle(store, end_ms, inventory)
    lap("situation")
    step("bulletin: charts, HTML and PDF")
    out = directory / "bulletin"
    out.mkdir(parents=True, exist_ok=True)
    html: Path | None = out / "situation-bulletin.html"
    pdf: Path | None = out / "situation-bulletin.pdf"
    try:
        bulletin = report.render(store, "day", end_ms, inventory)
        html.write_text(bulletin.html, encoding="utf-8")  # type: ignore[union-attr]
        pdf.write_bytes(bulletin.pdf)  # type: ignore[union-attr]
    except report.ReportError as exc:  # no CJK font: everything else of the demo still stands
        step(f"bulletin skipped: {exc}")
        html = pdf = None
    lap("report")
    alerts = store.query(
        "SELECT rule_id, any(rule_title) AS title, any(level) AS level, count() AS alerts FROM alerts "
        "WHERE suppression_id = '' GROUP BY rule_id ORDER BY alerts DESC, rule_id").dicts()
    result = DemoResult(
        scenario=scenario, events_by_source=Counter(e["source_type"] for e in events), dead_letters=len(dead),
        alerts_by_rule=alerts, incidents=incidents_with_stages(store),
        warning=early_warning.current(store).get("", {"level": 0, "level_name": "none", "reasons": []}),
        extranet_index=outcome.extranet_index, bulletin_html=html, bulletin_pdf=pdf, seconds=timings)
    (directory / "summary.json").write_bytes(orjson.dumps(result.as_json(), option=orjson.OPT_INDENT_2))
    return result
