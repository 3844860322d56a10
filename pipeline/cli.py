"""The `ganzhi` command line.

With no configuration everything runs embedded: chDB under $GANZHI_HOME (./.ganzhi) and an
in-process bus. `--kafka` / `--clickhouse` (or GANZHI_KAFKA / GANZHI_CLICKHOUSE) switch to servers.
"""

from __future__ import annotations

import re
import signal
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
from pipeline.config import ConfigError, Settings
from pipeline.ingest import IngestReport, ingest_file
from pipeline.schema import FIELDS
from pipeline.store import QueryResult, StoreError, open_store
from pipeline.store.ddl import all_ddl
from pipeline.writer import Writer

app = typer.Typer(
    name="ganzhi",
    help="Ganzhi (感知): network-security threat perception and early warning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


class UsageProblem(Exception):
    """A problem the user can fix; the message says how."""


@app.callback()
def _global(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option(help="Data directory for embedded mode (env GANZHI_HOME)")] = None,
    kafka: Annotated[str | None, typer.Option(help="Kafka bootstrap servers host:port (env GANZHI_KAFKA)")] = None,
    clickhouse: Annotated[
        str | None, typer.Option(help="ClickHouse URL clickhouse://host:9000/db (env GANZHI_CLICKHOUSE)")
    ] = None,
) -> None:
    ctx.obj = Settings.from_env(home=home, kafka=kafka, clickhouse=clickhouse)


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj  # type: ignore[no-any-return]


# -- ingest and write -------------------------------------------------------------------------


@app.command()
def ingest(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="JSON-lines files of normalized events", exists=True,
                                                dir_okay=False, readable=True)],
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
        stats = Writer(bus, store).run(threading.Event(), idle_exit_s=0.2)
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
    w = Writer(bus, store, group=group, max_batch_messages=max_batch_messages, linger_s=linger)
    stats = w.run(stop)
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


@app.command()
def schema(
    ddl: Annotated[bool, typer.Option("--ddl", help="print the ClickHouse DDL instead of the field list")] = False,
    database: Annotated[str, typer.Option(help="database name for --ddl")] = "ganzhi",
) -> None:
    """The normalized event schema (one definition for sensors, store, rules and API)."""
    if ddl:
        for statement in all_ddl(database):
            console.print(statement + ";\n", markup=False, highlight=False)
        return
    table = Table("field", "ClickHouse type", "sensitivity", "meaning")
    for f in FIELDS:
        table.add_row(f.name, f.ch_type, f.sensitivity.name.lower(), f.doc)
    console.print(table)


rules_app = typer.Typer(help="Sigma rules: convert to ClickHouse SQL.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


@rules_app.command("convert")
def rules_convert(
    paths: Annotated[list[Path], typer.Argument(help="Sigma rule files or folders", exists=True)],
) -> None:
    """Print each rule's ClickHouse query over the events table (Sigma semantics: case-insensitive, ...)."""
    from pipeline.detect.compile import compile_rules

    report = compile_rules(paths)
    for rule in report.rules:
        console.print(f"-- {rule.rule_id} {rule.title} [{rule.level}] ({rule.path})", markup=False, highlight=False)
        console.print(f"SELECT event_id FROM events WHERE {rule.where};\n", markup=False, highlight=False,
                      soft_wrap=True)
    for path, reason in report.errors:
        err.print(f"[yellow]not converted[/] {path}: {reason}", markup=True, highlight=False)
    err.print(f"{len(report.rules)} rule(s) converted, {len(report.errors)} not converted")
    if report.errors and not report.rules:
        raise typer.Exit(1)


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


def main() -> None:
    """Entry point: turn known failures into a one-line message with what to do, exit code 2."""
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
