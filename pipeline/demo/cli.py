"""`ganzhi demo`: the main job end to end on embedded defaults (no servers)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.config import Settings, UsageProblem

if TYPE_CHECKING:  # the run module pulls in scapy and the whole pipeline: imported when the demo starts
    from pipeline.demo.run import DemoResult
    from pipeline.store.base import Store

console = Console()
STEPS = 5


def _summary(r: DemoResult, home: Path) -> None:
    events = Table("source", "events", title="事件来源 Events per source")
    for source, n in r.events_by_source.most_common():
        events.add_row(source, f"{n:,}")
    console.print(events)
    alerts = Table("rule", "level", "alerts", title="告警 Alerts per rule")
    for a in r.alerts_by_rule:
        alerts.add_row(a["title"], a["level"], str(a["alerts"]))
    console.print(alerts)
    for incident in r.incidents:
        chain = " → ".join(s["title"] for s in incident["stages"])
        console.print(f"[bold]{incident['severity'].upper()}[/] incident {incident['incident_id']} "
                      f"({incident['group_key']}; {', '.join(incident['org_units'])}; assets "
                      f"{', '.join(incident['assets']) or '-'}):\n  {chain}", highlight=False)
    console.print(f"\n预警等级 warning level: [bold]{r.warning['level_name']}[/]; situation index "
                  f"{r.extranet_index:.1f}; {r.dead_letters} dead letter(s)")
    console.print(f"态势通报 bulletin: {r.bulletin_pdf} and {r.bulletin_html}" if r.bulletin_pdf else
                  "态势通报 bulletin: not written (no CJK font: `make fonts` installs fonts-wqy-zenhei)")
    console.print(f"explore: GANZHI_HOME={home} ganzhi incidents list | ganzhi situation show | ganzhi alerts | "
                  f"ganzhi query \"SELECT ...\"", highlight=False)
    console.print(f"timings (s): {r.seconds}", style="dim")


def demo(
    ctx: typer.Context,
    day: Annotated[str | None, typer.Option(help="UTC day to simulate, YYYY-MM-DD (default: yesterday)")] = None,
    seed: Annotated[int, typer.Option(help="scenario seed (the same seed gives the same day)")] = 20261121,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="start the API afterwards with a demo "
                                                                   "token (Ctrl-C stops it)")] = True,
    port: Annotated[int, typer.Option(min=1, max=65535, help="API port")] = 8080,
) -> None:
    """A simulated district extranet under attack — sensed, detected, grouped into incidents, assessed, reported
    and served, on embedded defaults. Everything lands in $GANZHI_HOME/demo (replaced on each run)."""
    from pipeline.demo.run import run
    from pipeline.store import open_store

    settings: Settings = ctx.obj
    if settings.kafka or settings.clickhouse:
        raise UsageProblem("the demo runs on embedded defaults: unset GANZHI_KAFKA / GANZHI_CLICKHOUSE")
    try:
        when = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC) if day else \
            datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    except ValueError:
        raise UsageProblem(f"--day {day!r}: use YYYY-MM-DD") from None
    home = settings.home / "demo"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    demo_settings = replace(settings, home=home)
    store = open_store(demo_settings)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("starting", total=STEPS)

        def step(description: str) -> None:
            if progress.tasks[task].description != "starting":
                progress.advance(task)
            progress.update(task, description=description)
            console.print(f"• {description}", style="dim")

        result = run(home, when, store, seed, step)
        progress.advance(task)
    _summary(result, home)
    demo_settings = replace(demo_settings, inventory=result.scenario.inventory)
    if not serve:
        store.close()
        return
    _serve(demo_settings, store, port)


def _serve(settings: Settings, store: Store, port: int) -> None:
    import uvicorn

    from api.app import create_app
    from api.auth import create_token, save_user

    save_user(store, "demo", "responder")
    token = create_token(store, "demo", days=1, description="ganzhi demo")[1]
    base = f"http://127.0.0.1:{port}/api/v1"
    console.print(f"\nAPI: {base}/docs — demo token (responder, valid one day):\n  {token}\n"
                  f"  curl -H 'Authorization: Bearer {token}' {base}/incidents\n"
                  f"  curl -H 'Authorization: Bearer {token}' {base}/situation\n"
                  f"  curl -H 'Authorization: Bearer {token}' -X POST -H 'Content-Type: application/json' "
                  f"-d '{{\"period\": \"day\"}}' {base}/reports\n"
                  "Grafana: point a ClickHouse server at these tables (`ganzhi schema --ddl`), then "
                  "`ganzhi dashboards provision --grafana URL` (see README). Ctrl-C stops the API.", highlight=False)
    uvicorn.run(create_app(settings, store), host="127.0.0.1", port=port, log_level="warning", server_header=False)
