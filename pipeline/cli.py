"""The `ganzhi` command line.

With no configuration everything runs embedded: chDB under $GANZHI_HOME (./.ganzhi) and an
in-process bus. `--kafka` / `--clickhouse` (or GANZHI_KAFKA / GANZHI_CLICKHOUSE) switch to servers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline import __version__
from pipeline.bus import BusError, open_bus
from pipeline.config import ConfigError, Settings, UsageProblem
from pipeline.detect.cli import RulesOption, load_rules
from pipeline.enrich import open_enricher
from pipeline.ingest import IngestReport, ingest_file
from pipeline.schema import FIELDS
from pipeline.store import QueryResult, StoreError, open_store
from pipeline.store.ddl import all_ddl, cluster_ddl
from pipeline.writer import Writer
from sensors.cli import sensor_app

app = typer.Typer(
    name="ganzhi",
    help="Ganzhi (感知): network-security threat perception and early warning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(sensor_app, name="sensor")
console = Console()
err = Console(stderr=True)


@app.callback()
def _global(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option(help="Data directory for embedded mode (env GANZHI_HOME)")] = None,
    kafka: Annotated[str | None, typer.Option(help="Kafka bootstrap servers host:port (env GANZHI_KAFKA)")] = None,
    clickhouse: Annotated[
        str | None, typer.Option(help="ClickHouse URL clickhouse://host:9000/db (env GANZHI_CLICKHOUSE)")
    ] = None,
    inventory: Annotated[Path | None, typer.Option(help="asset inventory .yaml/.csv (env GANZHI_INVENTORY)")] = None,
    ioc: Annotated[list[Path] | None, typer.Option(help="indicator file or directory: CSV, STIX 2.1, MISP JSON; "
                                                        "repeatable (env GANZHI_IOC)")] = None,
    geoip: Annotated[list[Path] | None, typer.Option(help="MaxMind-format .mmdb (country/city, ASN); repeatable "
                                                          "(env GANZHI_GEOIP)")] = None,
) -> None:
    ctx.obj = Settings.from_env(home=home, kafka=kafka, clickhouse=clickhouse, inventory=inventory,
                                ioc=tuple(ioc) if ioc else None, geoip=tuple(geoip) if geoip else None)


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj  # type: ignore[no-any-return]


# -- ingest and write -------------------------------------------------------------------------


def _live_detection(store: Any, bus: Any, rules: list[str] | None, incidents: bool = False) -> Any:
    """Detection on each stored batch; `incidents` groups its alerts into incidents in this process too (the
    embedded mode; with Kafka, `ganzhi incidents follow` does it from the alerts topic). Without `rules` it runs
    the active rule-set version (Ganzhi's pack until one is activated) and follows later activations."""
    from pipeline.detect.live import LiveDetection, active_version
    from pipeline.incidents.correlate import GroupingPolicy, IncidentCorrelator

    store.ensure_schema()
    follow = not rules
    active = active_version(store) if follow else None
    ruleset = load_rules([active] if active else rules, store)
    err.print(f"live detection: {ruleset.rule_count} rules, rule set {ruleset.version}"
              + (" (follows activations)" if follow else " (pinned by --rules)"))
    on_alerts = IncidentCorrelator(store, GroupingPolicy.from_env()).process if incidents else None
    return LiveDetection(store, bus, ruleset, on_alerts=on_alerts, follow_active=follow)


@app.command()
def ingest(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="JSON-lines files of normalized events", exists=True,
                                                dir_okay=False, readable=True)],
    rules: RulesOption = None,
    detect: Annotated[bool, typer.Option(help="embedded mode: run live detection while writing")] = True,
) -> None:
    """Publish normalized events (JSON lines) to the bus; embedded mode also writes them to the store."""
    settings = _settings(ctx)
    bus = open_bus(settings)
    embedded_bus = not settings.kafka
    store = open_store(settings) if embedded_bus else None
    total = IngestReport()
    started = time.monotonic()
    with _progress() as progress:
        for path in files:
            task = progress.add_task(path.name, total=path.stat().st_size)
            report = ingest_file(bus, path, on_line=lambda n, t=task: progress.advance(t, n))
            for key in total.__dict__:
                setattr(total, key, getattr(total, key) + getattr(report, key))
    if embedded_bus:
        assert store is not None
        live = _live_detection(store, bus, rules, incidents=True) if detect else None
        enricher = open_enricher(settings)
        stats = Writer(bus, store, on_batch=live, enricher=enricher).run(threading.Event(), idle_exit_s=0.2)
        if live is not None:
            live.close()
            err.print(f"detection: {live.stats.alerts_published} alert(s) published, "
                      f"{live.stats.alerts_suppressed} suppressed (`ganzhi alerts`)")
        store.close()
        where = f"written to {store.engine} ({settings.clickhouse or settings.home / 'chdb'})"
        written = stats.events_written
    else:
        where = f"published to Kafka {settings.kafka}; run `ganzhi writer` to store them"
        written = total.events
    bus.close()
    elapsed = time.monotonic() - started
    console.print(
        f"[green]{written:,} events[/] {where} in {elapsed:.1f}s"
        + (f"; [yellow]{total.dead_letters:,} dead-lettered[/] (see `ganzhi deadletters`)"
           if total.dead_letters else "")
    )


@app.command()
def writer(
    ctx: typer.Context,
    group: Annotated[str, typer.Option(help="Kafka consumer group; writers of one group share partitions")] =
    "ganzhi-writer",
    max_batch_messages: Annotated[int, typer.Option(help="messages per insert (same for every writer of a group)")] =
    2000,
    linger: Annotated[float, typer.Option(help="seconds a partial batch may wait before it is written")] = 0.5,
    rules: RulesOption = None,
    detect: Annotated[bool, typer.Option(help="run live detection on each batch")] = True,
    instance_id: Annotated[str | None, typer.Option(
        envvar="GANZHI_WRITER_ID", help="static group member id (stable per writer, e.g. the pod name): a "
        "restarted writer takes its partitions back at once")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="serve Prometheus /metrics on this port")] = None,
    metrics_address: Annotated[str, typer.Option(help="address the metrics endpoint listens on")] = "127.0.0.1",
) -> None:
    """Consume events from Kafka into ClickHouse until SIGTERM/Ctrl-C (then flush and commit)."""
    settings = _settings(ctx)
    if not settings.kafka:
        raise UsageProblem("the writer consumes from Kafka: pass --kafka HOST:PORT or set GANZHI_KAFKA")
    store = open_store(settings)
    bus = open_bus(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    console.print(f"writer: {bus.describe()} -> {store.server_version()}, group {group!r}")
    live = _live_detection(store, bus, rules) if detect else None
    enricher = open_enricher(settings)
    if enricher is not None:
        console.print(f"enrichment: {enricher.describe()}")
    w = Writer(bus, store, group=group, max_batch_messages=max_batch_messages, linger_s=linger, on_batch=live,
               enricher=enricher, instance_id=instance_id)
    from pipeline.metrics import StatsRecorder, WriterMetrics

    recorder = StatsRecorder(w, store, instance_id or f"{socket.gethostname()}:{os.getpid()}")
    w.on_tick = recorder.tick  # counters and lag into writer_stats (the pipeline-health dashboard)
    if metrics_port is not None:
        metrics = WriterMetrics(w)

        def tick(writer: Any) -> None:
            metrics.refresh_lag(writer)
            recorder.tick(writer)

        w.on_flush, w.on_tick = metrics.observe_batch, tick
        metrics.serve(metrics_port, metrics_address)
        console.print(f"metrics: http://{metrics_address}:{metrics_port}/metrics")
    stats = w.run(stop)
    recorder.tick(force=True)  # the final counters
    if live is not None:
        live.close()
        console.print(f"detection: {live.stats}")
    bus.close()
    store.close()
    console.print(f"writer stopped: {stats.as_dict()}")


# -- look at the data ------------------------------------------------------------------------


@app.command()
def query(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="ClickHouse SQL; use {name:Type} placeholders with --param")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE for a {NAME:Type} placeholder")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per row")] = False,
) -> None:
    """Run a SQL query against the store (tables: events, deadletter)."""
    params = {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageProblem(f"--param takes NAME=VALUE, got {item!r}")
        params[name] = value
    store = open_store(_settings(ctx))
    _show(store.query(sql, params), as_json)


_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """'15m', '2h', '7d' (ago) or an ISO 8601 time (UTC if no zone)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageProblem(f"time {text!r}: use a duration like 15m, 2h, 7d or an ISO time 2024-05-01T08:00") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@app.command()
def events(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="start: duration ago (15m, 2h, 7d) or ISO time")] = "1h",
    until: Annotated[str | None, typer.Option(help="end: duration ago or ISO time (default now)")] = None,
    src_ip: Annotated[str | None, typer.Option(help="source address")] = None,
    dst_ip: Annotated[str | None, typer.Option(help="destination address")] = None,
    category: Annotated[str | None, typer.Option(help="event category, e.g. dns, network_connection")] = None,
    sensor: Annotated[str | None, typer.Option(help="sensor name")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per event")] = False,
) -> None:
    """Show events in a time range, newest first, filtered by address, category or sensor."""
    start = parse_time(since)
    end = parse_time(until) if until else datetime.now(UTC)
    conditions = ["ts >= {start:DateTime64(3, 'UTC')}", "ts < {end:DateTime64(3, 'UTC')}"]
    params: dict[str, Any] = {"start": start, "end": end, "limit": limit}
    for column, value, ch_type in (("src_ip", src_ip, "IPv6"), ("dst_ip", dst_ip, "IPv6"),
                                   ("event_category", category, "String"), ("sensor", sensor, "String")):
        if value:
            conditions.append(f"{column} = {{{column}:{ch_type}}}")
            params[column] = value
    columns = ("ts, event_category, sensor, src_ip, src_port, dst_ip, dst_port, protocol, action, "
               "dns_query, http_host, http_uri, user_name, message")
    store = open_store(_settings(ctx))
    result = store.query(
        f"SELECT {'*' if as_json else columns} FROM events WHERE {' AND '.join(conditions)} "
        "ORDER BY ts DESC LIMIT {limit:UInt32}",
        params,
    )
    _show(result, as_json)


@app.command()
def deadletters(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show rejected input with the reason it was rejected, newest first."""
    store = open_store(_settings(ctx))
    _show(store.query("SELECT ts, stage, source, origin, field, reason, substring(payload, 1, 200) AS payload "
                      "FROM deadletter ORDER BY ts DESC LIMIT {limit:UInt32}", {"limit": limit}), as_json)


@app.command()
def info(ctx: typer.Context) -> None:
    """Where data goes and what is stored: mode, engine versions, row counts."""
    settings = _settings(ctx)
    store = open_store(settings)
    bus = open_bus(settings)
    counts = store.query(
        "SELECT (SELECT count() FROM events), (SELECT count() FROM deadletter), "
        "(SELECT min(ts) FROM events), (SELECT max(ts) FROM events)"
    ).rows[0]
    console.print(f"mode      : {'embedded' if settings.embedded else 'servers'}")
    console.print(f"bus       : {bus.describe()}")
    console.print(f"store     : {store.server_version()} database {store.database!r}, "
                  f"retention {settings.retention_days or 'unlimited'} days")
    console.print(f"events    : {counts[0]:,} ({counts[2]:%Y-%m-%d %H:%M} .. {counts[3]:%Y-%m-%d %H:%M} UTC)")
    console.print(f"deadletter: {counts[1]:,}")
    bus.close()


pipeline_app = typer.Typer(help="The ingest pipeline: status of the consumer group, store and writers.",
                            no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")


@pipeline_app.command("status")
def pipeline_status(
    ctx: typer.Context,
    group: Annotated[str, typer.Option(help="the writers' consumer group")] = "ganzhi-writer",
    metrics: Annotated[list[str] | None, typer.Option(
        help="a writer's metrics URL, e.g. http://127.0.0.1:9464/metrics (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Consumer lag per partition, events and dead letters stored, and (with --metrics) writer counters."""
    from pipeline.status import lag_status, store_status, writer_metrics

    settings = _settings(ctx)
    store, bus = open_store(settings), open_bus(settings)
    try:
        status: dict[str, Any] = {"store": store_status(store), "lag": lag_status(bus, group)}
        status["writers"] = {url: writer_metrics(url) for url in metrics or []}
    except ConnectionError as exc:
        raise UsageProblem(f"{exc}; is the writer running with --metrics-port?") from None
    finally:
        bus.close()
    if as_json:
        console.print_json(orjson.dumps(status).decode())
        return
    s = status["store"]
    console.print(f"store: {s['events']:,} events, {s['dead_letters']:,} dead letters, "
                  f"{s['ingested_last_5_min']:,} in the last 5 min (last at {s['last_ingested_at']})")
    if status["lag"]:
        table = Table("topic", "partition", "committed", "end", "lag", title=f"consumer group {group!r}")
        for r in status["lag"]:
            table.add_row(r["topic"], str(r["partition"]), f"{r['committed']:,}", f"{r['end']:,}", f"{r['lag']:,}")
        console.print(table)
        console.print(f"total lag: {sum(r['lag'] for r in status['lag']):,} messages")
    else:
        console.print("bus: in-process (embedded mode): nothing queued between runs")
    for url, values in status["writers"].items():
        table = Table("metric", "value", title=f"writer {url}")
        for name, value in sorted(values.items()):
            table.add_row(name, f"{value:,.3f}" if value % 1 else f"{value:,.0f}")
        console.print(table)


@app.command()
def schema(
    ddl: Annotated[bool, typer.Option("--ddl", help="print the ClickHouse DDL instead of the field list")] = False,
    database: Annotated[str, typer.Option(help="database name for --ddl")] = "ganzhi",
    cluster: Annotated[str | None, typer.Option(help="with --ddl: the DDL for this ClickHouse cluster "
                                                "(Replicated*MergeTree tables + Distributed tables over them)")] = None,
) -> None:
    """The normalized event schema (one definition for sensors, store, rules and API)."""
    if ddl:
        try:
            statements = cluster_ddl(database, cluster) if cluster else all_ddl(database)
        except ValueError as exc:
            raise UsageProblem(str(exc)) from None
        for statement in statements:
            typer.echo(statement + ";\n")  # plain: a wrapped line would break the SQL
        return
    table = Table("field", "ClickHouse type", "sensitivity", "meaning")
    for f in FIELDS:
        table.add_row(f.name, f.ch_type, f.sensitivity.name.lower(), f.doc)
    console.print(table)


@app.command()
def version() -> None:
    """Print Ganzhi's version."""
    console.print(f"ganzhi {__version__}")


# -- output helpers ----------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _show(result: QueryResult, as_json: bool) -> None:
    if as_json:
        out = sys.stdout.buffer
        for row in result.dicts():
            out.write(orjson.dumps(row, default=_json_default, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE))
        out.flush()
        return
    # a table hides columns that are empty in every row (JSON output keeps them)
    keep = [i for i in range(len(result.columns)) if not result.rows or any(row[i] not in ("", 0, None, [], {})
                                                                            for row in result.rows)]
    table = Table(*(result.columns[i] for i in keep), show_lines=False)
    for row in result.rows:
        table.add_row(*(_cell(row[i]) for i in keep))
    console.print(table)
    console.print(f"{len(result.rows)} row(s)", style="dim")


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return "" if value is None else str(value)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    console=err, transient=True)


def _register_commands() -> None:
    """Command groups that live next to what they drive (detection, incidents, the situation, the API and its
    accounts)."""
    from api.cli import audit_app, serve, token_app, user_app
    from dashboards.cli import dashboards_app
    from pipeline.demo.cli import demo
    from pipeline.detect.cli import register as register_detection
    from pipeline.incidents.cli import incidents_app
    from pipeline.situation.cli import exposures_app, report_cmd, situation_app, warnings_app

    register_detection(app)
    app.add_typer(incidents_app, name="incidents")
    app.add_typer(situation_app, name="situation")
    app.add_typer(warnings_app, name="warnings")
    app.add_typer(exposures_app, name="exposures")
    app.command("report")(report_cmd)
    app.add_typer(dashboards_app, name="dashboards")
    app.command("demo")(demo)
    app.command()(serve)
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")
    app.add_typer(audit_app, name="audit")


_register_commands()


def main() -> None:
    """Entry point: turn known failures into a one-line message with what to do, exit code 2."""
    import logging
    import os

    level = os.environ.get("GANZHI_LOG", "WARNING").upper()
    logging.basicConfig(level=level if level in logging.getLevelNamesMapping() else "WARNING",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app()
    except (UsageProblem, ConfigError) as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)
    except StoreError as exc:
        err.print(f"[red]store error:[/] {exc}\n[dim]Check the SQL, or that the ClickHouse server is up "
                  "(--clickhouse / GANZHI_CLICKHOUSE).[/]")
        sys.exit(2)
    except BusError as exc:
        err.print(f"[red]bus error:[/] {exc}\n[dim]Check that the Kafka broker is up (--kafka / GANZHI_KAFKA).[/]")
        sys.exit(2)


if __name__ == "__main__":
    main()
