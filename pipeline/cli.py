"""The `ganzhi` command line.

With no configuration everything runs embedded: chDB under $GANZHI_HOME (./.ganzhi) and an
in-process bus. `--kafka` / `--clickhouse` (or GANZHI_KAFKA / GANZHI_CLICKHOUSE) switch to servers.
"""

from __future__ import annotations

import getpass
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
    ruleset = _ruleset([active] if active else rules, store)
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


# -- detection -------------------------------------------------------------------------------

rules_app = typer.Typer(help="Sigma rules: convert, check, test, list, import.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
RulesOption = Annotated[list[str] | None, typer.Option(
    "--rules", help="rule file, folder or rule-set version (repeatable); default: Ganzhi's own pack")]
_VERSION_RE = re.compile(r"^[0-9a-f]{16}$")


def _ruleset(specs: list[str] | None, store: Any = None) -> Any:
    """Compile rules from paths, or fetch a stored rule-set version (a 16-hex content hash)."""
    from pipeline.detect.compile import compile_rules, compile_sources
    from pipeline.detect.live import load_ruleset_files
    from rules import PACK

    specs = specs or [str(PACK)]
    if len(specs) == 1 and _VERSION_RE.match(specs[0]) and not Path(specs[0]).exists():
        if store is None:
            raise UsageProblem("a rule-set version needs the store it was recorded in")
        files = load_ruleset_files(store, specs[0])
        if files is None:
            raise UsageProblem(f"no rule set with version {specs[0]} in the store; `ganzhi rules versions` lists them")
        return compile_sources(files)
    paths = [Path(p) for p in specs]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageProblem(f"no such rule file or folder: {', '.join(missing)}")
    ruleset = compile_rules(paths)
    for path, reason in ruleset.errors:
        err.print(f"[yellow]rule not compiled[/] {path}: {reason}", highlight=False)
    return ruleset


@rules_app.command("convert")
def rules_convert(
    paths: Annotated[list[Path], typer.Argument(help="Sigma rule files or folders", exists=True)],
) -> None:
    """Print each rule's ClickHouse query over the events table (Sigma semantics: case-insensitive, ...)."""
    from pipeline.detect.compile import compile_rules
    from pipeline.detect.engine import Detector, Selector

    report = compile_rules(paths)
    for rule in report.rules:
        console.print(f"-- {rule.rule_id} {rule.title} [{rule.level}] ({rule.path})", markup=False, highlight=False)
        console.print(f"SELECT event_id FROM events WHERE {rule.sql};\n", markup=False, highlight=False,
                      soft_wrap=True)
    for corr in report.correlations:
        sql = Detector(None, report).correlation_sql(corr, Selector(0, 0), Selector(0, 0))  # type: ignore[arg-type]
        console.print(f"-- {corr.rule_id} {corr.title} [{corr.level}] {corr.kind} ({corr.path})", markup=False,
                      highlight=False)
        console.print(sql + ";\n", markup=False, highlight=False, soft_wrap=True)
    for path, reason in report.errors:
        err.print(f"[yellow]not converted[/] {path}: {reason}", markup=True, highlight=False)
    err.print(f"{len(report.rules)} rule(s) and {len(report.correlations)} correlation(s) converted, "
              f"{len(report.errors)} not converted")
    if report.errors and not report.rules:
        raise typer.Exit(1)


@rules_app.command("list")
def rules_list(
    rules: RulesOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the rules of a rule set with level, log source and tags."""
    ruleset = _ruleset(rules)
    rows = [(r.rule_id, r.title, r.level, "rule" if r.alerts else "feeds a correlation", r.logsource,
             " ".join(r.tags)) for r in ruleset.rules]
    rows += [(c.rule_id, c.title, c.level, c.kind, f"group by {', '.join(c.group_names) or '-'} within "
              f"{c.timespan_s}s", " ".join(c.tags)) for c in ruleset.correlations]
    _show(QueryResult(["rule_id", "title", "level", "kind", "applies to", "tags"], ["String"] * 6, rows), as_json)
    err.print(f"rule set version {ruleset.version}")


@rules_app.command("check")
def rules_check(
    ctx: typer.Context,
    rules: RulesOption = None,
    against_store: Annotated[bool, typer.Option("--store/--no-store", help="also lint against stored events")]
    = True,
) -> None:
    """Validate rules; lint rules that can never fire here (fields in no column and never seen in extra)."""
    from pipeline.detect.lint import lint

    ruleset = _ruleset(rules)
    seen_keys: set[str] | None = None
    if against_store:
        store = open_store(_settings(ctx))
        seen_keys = {r[0] for r in store.query(
            "SELECT DISTINCT arrayJoin(mapKeys(extra)) FROM (SELECT extra FROM events LIMIT 1000000)").rows}
    problems = lint(ruleset, seen_keys)
    for path, reason in ruleset.errors:
        console.print(f"[red]error[/] {path}: {reason}", highlight=False)
    for rule_id, path, reason in problems:
        console.print(f"[yellow]never fires[/] {rule_id} ({path}): {reason}", highlight=False)
    console.print(f"{ruleset.rule_count} rule(s), {len(ruleset.errors)} error(s), {len(problems)} that cannot fire "
                  f"here; version {ruleset.version}")
    if ruleset.errors:
        raise typer.Exit(1)


@rules_app.command("test")
def rules_test(
    ctx: typer.Context,
    rules: RulesOption = None,
) -> None:
    """Run each rule's golden tests (`<rule>.tests.yml`: events that must and must not fire it)."""
    from pipeline.detect.golden import run_golden_tests
    from pipeline.store.embedded import EmbeddedStore

    ruleset = _ruleset(rules)
    settings = _settings(ctx)
    store = EmbeddedStore(settings.home / "chdb", database=f"golden_{int(time.time() * 1000)}")
    store.ensure_schema()
    try:
        results = run_golden_tests(store, ruleset)
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {store.database}")
    failed = [r for r in results if not r.passed]
    for r in results:
        mark = "[green]pass[/]" if r.passed else "[red]FAIL[/]"
        console.print(f"{mark} {r.test_file} {r.kind} '{r.case}': {r.detail}", highlight=False, soft_wrap=True)
    tested = {r.test_file for r in results}
    untested = {Path(p).name for p in {r.path for r in ruleset.rules} | {c.path for c in ruleset.correlations}} - tested
    console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed, {len(untested)} rule file(s) "
                  "without tests")
    if failed:
        raise typer.Exit(1)


@rules_app.command("import")
def rules_import(
    source: Annotated[Path, typer.Argument(help="a SigmaHQ checkout (or any folder of Sigma rules)", exists=True)],
    dest: Annotated[Path, typer.Option(help="where imported rules go")] = Path("rules/imported"),
) -> None:
    """Copy the rules of a SigmaHQ checkout that compile here into DEST (Ganzhi ships none of them)."""
    import shutil

    from pipeline.detect.compile import compile_rules

    folders = sorted(p for p in source.glob("rules*") if p.is_dir()) or [source]
    ruleset = compile_rules(folders)
    copied = 0
    for path in sorted({r.path for r in ruleset.rules} | {c.path for c in ruleset.correlations}):
        target = dest / Path(path).relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied += 1
    for path, reason in ruleset.errors:
        err.print(f"[yellow]skipped[/] {path}: {reason}", highlight=False)
    console.print(f"imported {copied} rule file(s) into {dest}, skipped {len(ruleset.errors)}")


@rules_app.command("versions")
def rules_versions(ctx: typer.Context) -> None:
    """Rule-set versions recorded in the store (live detection records the one it runs) and which is active."""
    from pipeline.detect.live import active_version

    store = open_store(_settings(ctx))
    store.ensure_schema()
    active = active_version(store) or ""
    _show(store.query("SELECT version, min(created_at) AS first_used, length(mapKeys(any(files))) AS files, "
                      "version = {active:String} AS active FROM rulesets GROUP BY version ORDER BY first_used",
                      {"active": active}), False)


@rules_app.command("activate")
def rules_activate(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="a stored rule-set version (`ganzhi rules versions`)")],
    reason: Annotated[str, typer.Option(help="why: kept with the activation and in the audit log")] = "",
) -> None:
    """Make a stored version the one live detection runs; writers started without --rules switch within 30 s."""
    from api.cli import audited
    from pipeline.detect.compile import compile_sources
    from pipeline.detect.live import activate_ruleset, load_ruleset_files

    store = open_store(_settings(ctx))
    store.ensure_schema()
    if not _VERSION_RE.match(version):
        raise UsageProblem(f"{version!r} is not a rule-set version (16 hex digits; `ganzhi rules versions`)")
    files = load_ruleset_files(store, version)
    if files is None:
        raise UsageProblem(f"no rule set with version {version} in the store; `ganzhi rules versions` lists them")
    compiled = compile_sources(files)
    if not compiled.rules and not compiled.correlations:
        raise UsageProblem(f"rule set {version} holds no rule that compiles here; not activated")
    activate_ruleset(store, version, f"cli:{getpass.getuser()}", reason)
    audited(store, "rules activate", version, {"reason": reason})
    console.print(f"activated rule set {version} ({compiled.rule_count} rules); following writers switch within 30 s")


@app.command()
def replay(
    ctx: typer.Context,
    rules: RulesOption = None,
    since: Annotated[str | None, typer.Option("--from", help="start: duration ago (7d) or ISO time")] = None,
    until: Annotated[str | None, typer.Option("--to", help="end: duration ago or ISO time (default now)")] = None,
    events_files: Annotated[list[Path] | None, typer.Option("--events", help="event files or folders (JSON, JSON "
                                                            "lines, Windows event JSON, .evtx); no servers needed",
                                                            exists=True)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per rule per line")] = False,
    report_path: Annotated[Path | None, typer.Option("--report", help="write the full report (JSON) here")] = None,
) -> None:
    """Run a rule set over stored history (--from/--to) or over event files (--events); hits per rule."""
    from pipeline.detect.engine import Selector
    from pipeline.detect.replay import event_files, read_event_file, replay_events
    from pipeline.detect.replay import replay as replay_range

    settings = _settings(ctx)
    if events_files:
        import tempfile

        from pipeline.store.embedded import EmbeddedStore

        ruleset = _ruleset(rules)
        dead: list[dict[str, Any]] = []
        events = []
        for path in event_files(events_files):
            events.extend(read_event_file(path, on_dead=dead.append))
        for record in dead:
            err.print(f"[yellow]unreadable[/] {record['origin']}: {record['reason']}", highlight=False)
        with tempfile.TemporaryDirectory(prefix="ganzhi-replay-") as tmp:
            store = EmbeddedStore(tmp, database="replay")
            store.ensure_schema()
            report = replay_events(store, ruleset, events)
        err.print(f"{len(events):,} events read, {len(dead):,} unreadable")
    else:
        if since is None:
            raise UsageProblem("give a time range (--from 7d [--to ...]) or event files (--events PATH)")
        store = open_store(settings)
        ruleset = _ruleset(rules, store)
        lo, hi = parse_time(since), parse_time(until) if until else datetime.now(UTC)
        selector = Selector(int(lo.timestamp() * 1000), int(hi.timestamp() * 1000))
        with err.status(f"replaying {ruleset.rule_count} rules over {lo:%Y-%m-%d %H:%M} .. {hi:%Y-%m-%d %H:%M}"):
            report = replay_range(store, ruleset, selector)
    if report_path is not None:
        report_path.write_bytes(report.to_json())
    if as_json:
        out = sys.stdout.buffer
        for result in report.results:
            record = {k: v for k, v in result.as_json().items() if k != "alert_ids"}
            out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        out.flush()
    else:
        table = Table("hits", "level", "rule", "title")
        for result in report.results:
            if result.hit_count:
                table.add_row(f"{result.hit_count:,}", result.level, result.rule_id, result.title)
        console.print(table)
        console.print(f"rule set {report.ruleset_version}: {sum(1 for r in report.results if r.hit_count)} of "
                      f"{len(report.results)} rules hit, {len(report.alerts)} alerts; report {report.report_hash[:16]}")


@app.command()
def alerts(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="alerts last seen after: duration ago or ISO time")] = "24h",
    level: Annotated[str | None, typer.Option(help="only this level (low, medium, high, critical)")] = None,
    rule: Annotated[str | None, typer.Option(help="only this rule id")] = None,
    suppressed: Annotated[bool, typer.Option(help="include alerts hidden by a suppression")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Alerts found by live detection, newest first."""
    conditions = ["last_seen >= {since:DateTime64(3, 'UTC')}"]
    params: dict[str, Any] = {"since": parse_time(since), "limit": limit}
    if level:
        conditions.append("level = {level:String}")
        params["level"] = level
    if rule:
        conditions.append("rule_id = {rule:String}")
        params["rule"] = rule
    if not suppressed:
        conditions.append("suppression_id = ''")
    columns = "last_seen, level, rule_title, entity, hit_count, kind, alert_id, suppression_id"
    store = open_store(_settings(ctx))
    _show(store.query(f"SELECT {'*' if as_json else columns} FROM alerts WHERE {' AND '.join(conditions)} "
                      "ORDER BY last_seen DESC LIMIT {limit:UInt32}", params), as_json)


suppress_app = typer.Typer(help="Suppressions: hide alerts by rule and scope, with expiry, owner and reason.",
                           no_args_is_help=True)
app.add_typer(suppress_app, name="suppress")


@suppress_app.command("add")
def suppress_add(
    ctx: typer.Context,
    scope: Annotated[str, typer.Option(help="src_ip, dst_ip, cidr, org_unit, asset or entity")],
    value: Annotated[str, typer.Option(help="the address, network, org unit path, asset or entity")],
    owner: Annotated[str, typer.Option(help="who decided")],
    reason: Annotated[str, typer.Option(help="why")],
    rule: Annotated[str, typer.Option(help="rule id; empty = every rule")] = "",
    days: Annotated[float, typer.Option(help="expires after this many days")] = 30,
    dry_run: Annotated[int | None, typer.Option("--dry-run", help="only show what it would have hidden over the "
                                                "last N days")] = None,
) -> None:
    """Create a suppression (or, with --dry-run N, show what it would have hidden in the last N days)."""
    from pipeline.detect import suppress

    try:
        suppression = suppress.new_suppression(rule, scope, value, owner, reason, days)
    except suppress.SuppressionError as exc:
        raise UsageProblem(str(exc)) from None
    store = open_store(_settings(ctx))
    if dry_run is not None:
        console.print_json(orjson.dumps(suppress.dry_run(store, suppression, dry_run)).decode())
        return
    suppress.save(store, suppression)
    console.print(f"suppression {suppression.suppression_id} until {suppression.expires_at}")


@suppress_app.command("list")
def suppress_list(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="include expired and revoked")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Active suppressions."""
    from pipeline.detect import suppress

    items = suppress.load(open_store(_settings(ctx)), include_inactive=all_)
    rows = [tuple(s.__dict__.values()) for s in items]
    columns = list(suppress.Suppression.__dataclass_fields__)
    _show(QueryResult(columns, ["String"] * len(columns), rows), as_json)


@suppress_app.command("revoke")
def suppress_revoke(ctx: typer.Context, suppression_id: Annotated[str, typer.Argument()]) -> None:
    """End a suppression now."""
    from pipeline.detect import suppress

    try:
        suppress.revoke(open_store(_settings(ctx)), suppression_id)
    except suppress.SuppressionError as exc:
        raise UsageProblem(str(exc)) from None
    console.print(f"revoked {suppression_id}")


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
    """Command groups that live next to what they drive (incidents, the situation, the API and its accounts)."""
    from api.cli import audit_app, serve, token_app, user_app
    from dashboards.cli import dashboards_app
    from pipeline.demo.cli import demo
    from pipeline.incidents.cli import incidents_app
    from pipeline.situation.cli import exposures_app, report_cmd, situation_app, warnings_app

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
