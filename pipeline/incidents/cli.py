"""`ganzhi incidents ...`: list, correlate stored alerts, follow the alerts topic (the Kafka deployment's
correlator: run exactly one per database — see correlate.py)."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from pipeline.bus import open_bus
from pipeline.bus.base import next_offsets
from pipeline.codec import dead_letter
from pipeline.config import UsageProblem
from pipeline.incidents.correlate import GroupingPolicy, IncidentCorrelator, stored_alerts
from pipeline.incidents.model import STATUSES, load_incidents
from pipeline.store import QueryResult, open_store

incidents_app = typer.Typer(help="Incidents: alerts grouped by entity and time, and their lifecycle.",
                            no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@incidents_app.command("list")
def list_incidents(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option(help="only these statuses (repeatable)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Incidents, newest activity first."""
    from pipeline.cli import _show

    bad = [s for s in status or () if s not in STATUSES]
    if bad:
        raise UsageProblem(f"unknown status {bad[0]!r}; use one of {', '.join(STATUSES)}")
    where = "status IN {status:Array(String)}" if status else "1"
    found = [i.as_json() for i in load_incidents(open_store(ctx.obj), where, {"status": status or [], "limit": limit},
                                                 "ORDER BY last_seen DESC LIMIT {limit:UInt32}")]
    keep = list(found[0]) if as_json and found else list(_TABLE_COLUMNS)
    if not as_json:
        for row in found:
            row["last_seen"] = datetime.fromtimestamp(row["last_seen"] / 1000, UTC)
    _show(QueryResult(keep, ["String"] * len(keep), [tuple(row[k] for k in keep) for row in found]), as_json)


_TABLE_COLUMNS = ("incident_id", "severity", "status", "title", "group_key", "alert_count", "org_units", "assignee",
                  "last_seen")


@incidents_app.command("correlate")
def correlate(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="alerts last seen after: duration ago (7d) or ISO time")] = "30d",
) -> None:
    """Group stored alerts not yet in an incident into incidents (idempotent)."""
    from pipeline.cli import parse_time

    store = open_store(ctx.obj)
    alerts = stored_alerts(store, int(parse_time(since).timestamp() * 1000))
    result = IncidentCorrelator(store, GroupingPolicy.from_env()).process(alerts)
    console.print(f"{len(alerts)} alert(s): {len(result.opened)} incident(s) opened, {result.joined} joined an "
                  f"open one, {result.already_linked} already linked")


@incidents_app.command("follow")
def follow(
    ctx: typer.Context,
    group: Annotated[str, typer.Option(help="consumer group (one correlator per database)")] = "ganzhi-incidents",
) -> None:
    """Consume the alerts topic into incidents until SIGTERM/Ctrl-C (Kafka mode)."""
    settings = ctx.obj
    if not settings.kafka:
        raise UsageProblem("follow reads the alerts topic from Kafka: pass --kafka or set GANZHI_KAFKA "
                           "(embedded ingest groups alerts into incidents by itself)")
    store, bus = open_store(settings), open_bus(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    correlator = IncidentCorrelator(store, GroupingPolicy.from_env())
    consumer = bus.consumer([bus.topics.alerts], group, instance_id=group)
    console.print(f"incidents: {bus.describe()} {bus.topics.alerts} -> {store.server_version()}")
    opened = 0
    try:
        while not stop.is_set():
            messages = consumer.poll(1.0, 500)
            if not messages:
                continue
            records: list[dict[str, Any]] = []
            dead = []
            for message in messages:
                try:
                    record = orjson.loads(message.value)
                    if not isinstance(record, dict) or not {"alert_id", "rule_id", "first_seen"} <= record.keys():
                        raise ValueError("not an alert record (alert_id, rule_id, first_seen missing)")
                    records.append(record)
                except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
                    dead.append(dead_letter("incidents.decode", message.topic, str(exc),
                                            message.value,
                                            f"{message.topic}/{message.partition}/{message.offset}"))
            store.insert_deadletters(dead)
            opened += len(correlator.process(records).opened)
            consumer.commit(next_offsets(messages))
    finally:
        consumer.close()
        bus.close()
    console.print(f"incidents stopped: {opened} opened")
