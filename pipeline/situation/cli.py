"""`ganzhi situation ...`, `ganzhi warnings ...`, `ganzhi exposures ...` and `ganzhi report`."""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from pipeline.config import Settings, UsageProblem
from pipeline.enrich.inventory import Inventory
from pipeline.situation import assess, cycle, early_warning, elements, exposure, forecast, notify, report
from pipeline.store import QueryResult, open_store

situation_app = typer.Typer(help="Situation assessment: risk, situation index, baselines, forecasts.",
                            no_args_is_help=True)
warnings_app = typer.Typer(help="Early warnings: the current levels (I-IV) and their history.", no_args_is_help=True)
exposures_app = typer.Typer(help="Passive vulnerability exposure: observed software x an offline CVE feed.",
                            no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def _inventory(settings: Settings) -> Inventory | None:
    return Inventory.load(settings.inventory) if settings.inventory else None


def _ms(text: str | None) -> int:
    from pipeline.cli import parse_time

    return int(parse_time(text).timestamp() * 1000) if text else int(time.time() * 1000)


def _table(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    from pipeline.cli import _show

    _show(QueryResult(columns, ["String"] * len(columns), [tuple(r.get(c, "") for c in columns) for r in rows]),
          as_json)


def _run_cycle(settings: Settings, at: str | None, notify_on: bool) -> cycle.CycleResult:
    store = open_store(settings)
    notifier = notify.Notifier(store, notify.channels_from_env()) if notify_on else None
    with err.status("situation cycle: inventory, exposures, anomalies, scores, forecasts, warnings ..."):
        return cycle.run_cycle(store, _ms(at), _inventory(settings), notifier=notifier)


@situation_app.command("update")
def update(
    ctx: typer.Context,
    at: Annotated[str | None, typer.Option(help="assess this moment (ISO time or 2h ago) instead of now")] = None,
    every: Annotated[int, typer.Option(help="repeat every N seconds until SIGTERM/Ctrl-C (0: once)", min=0)] = 0,
    notify_on: Annotated[bool, typer.Option("--notify/--no-notify", help="send notifications (GANZHI_NOTIFY_*)")]
    = True,
) -> None:
    """Run the situation cycle: inventory -> exposures -> anomalies -> scores -> forecasts -> warnings."""
    stop = threading.Event()
    if every:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    while True:
        r = _run_cycle(ctx.obj, at, notify_on)
        level = next((c["level_name"] for c in r.changes if c["scope"] == "extranet"), None)
        console.print(f"situation index {r.extranet_index:.1f} ({assess.band(r.extranet_index)}); "
                      f"{r.exposures} exposure(s), {r.anomalies} new anomaly(ies), {r.forecasts} forecast(s), "
                      f"{r.firings} trigger(s) firing, {len(r.changes)} level change(s)"
                      + (f"; extranet warning now {level}" if level else "")
                      + f"; notifications sent {r.notified.sent}, deferred {r.notified.deferred}, "
                        f"failed {r.notified.failed}")
        for error in r.notified.errors[:5]:
            err.print(f"[yellow]notification failed:[/] {error}")
        if not every or stop.wait(every):
            break


@situation_app.command("show")
def show(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The newest assessment: extranet and org-unit indexes, asset risks, with their top factors."""
    rows = assess.latest(open_store(ctx.obj))
    if not rows:
        raise UsageProblem("no assessment yet: run `ganzhi situation update` first")
    for row in rows:
        row["top_factors"] = "; ".join(f"{f['title']} (+{f['contribution']})" for f in row["factors"][:3])
    _table(rows, ["scope_kind", "scope", "score", "band"] + (["factors"] if as_json else ["top_factors"]), as_json)


@situation_app.command("elements")
def elements_cmd(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="window start: duration ago (24h) or ISO time (at most 7 days)")] = "24h",
    org_unit: Annotated[str, typer.Option(help="only this org unit and below")] = "",
) -> None:
    """Situation elements: assets seen, threats by kind / ATT&CK tactic / source, incidents, vulnerabilities,
    traffic against the same window a week earlier (JSON)."""
    settings = ctx.obj
    now = int(time.time() * 1000)
    found = elements.elements(open_store(settings), _ms(since), now, org_unit, _inventory(settings))
    console.print_json(orjson.dumps(found).decode())


@situation_app.command("backfill")
def backfill(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="from: duration ago (28d) or ISO time")] = "28d",
    until: Annotated[str | None, typer.Option(help="to (default now)")] = None,
) -> None:
    """Hourly snapshots of the past (history for trends and the forecast), from stored incidents and anomalies."""
    store, settings = open_store(ctx.obj), ctx.obj
    inventory = _inventory(settings)
    with err.status("assessing every hour of the range ..."):
        n = assess.backfill(store, assess.AssetBook(inventory.blocks() if inventory else []), _ms(since),
                            _ms(until), exposure.exposures(store, _ms(until), inventory))
    console.print(f"{n} hourly snapshot(s) saved")


@situation_app.command("forecast")
def forecast_cmd(
    ctx: typer.Context,
    horizon: Annotated[int, typer.Option(help="hours ahead (24 = a day, 168 = a week)", min=1, max=24 * 31)] = 168,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Forecast every index and alert series now, with the error measured on held-back history."""
    store = open_store(ctx.obj)
    now = int(time.time())
    with err.status("fitting ETS models ..."):
        made, skipped = forecast.forecast_all(store, now, horizon)
    forecast.save_forecasts(store, now * 1000, made)
    for reason in skipped:
        err.print(f"[yellow]skipped:[/] {reason}")
    rows = [{"series": f.series, "model": f.model, "next_mean": round(f.mean[0], 2),
             "end_mean": round(f.mean[-1], 2), "end_interval": f"{f.low[-1]:.1f} - {f.high[-1]:.1f}",
             **{k: v for k, v in f.error.items()}} for f in made]
    _table(rows, ["series", "model", "next_mean", "end_mean", "end_interval", "held_back_hours", "mape_pct",
                  "smape_pct", "mae", "seasonal_naive_mae", "interval_coverage_pct"], as_json)


@warnings_app.command("list")
def warnings_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Current warning level of the extranet and of every org unit with a warning."""
    rows = list(early_warning.current(open_store(ctx.obj)).values())
    for row in rows:
        row["reasons_text"] = "; ".join(f"[{r['trigger']}] {r['detail']}" for r in row["reasons"][:3])
        if not as_json:
            row["since"] = datetime.fromtimestamp(row["since"] / 1000, UTC)
    _table(rows, ["scope", "level", "level_name", "since"] + (["reasons"] if as_json else ["reasons_text"]), as_json)


@warnings_app.command("history")
def warnings_history(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="duration ago (7d) or ISO time")] = "7d",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every level change since a time."""
    rows = early_warning.history(open_store(ctx.obj), _ms(since))
    for row in rows if not as_json else ():
        row["at"] = datetime.fromtimestamp(row["at"] / 1000, UTC)
    _table(rows, ["at", "scope", "previous", "level", "level_name"] + (["reasons"] if as_json else []), as_json)


@warnings_app.command("check")
def warnings_check(path: Annotated[Path | None, typer.Argument(help="trigger rules (default: the shipped ones)")]
                   = None) -> None:
    """Validate a trigger-rules file."""
    try:
        triggers = early_warning.load_triggers(path)
    except early_warning.WarningRulesError as exc:
        raise UsageProblem(str(exc)) from None
    for t in triggers:
        console.print(f"{early_warning.level_name(t.level):18} {t.id:32} {t.kind:10} {t.description}")


@exposures_app.command("load-feed")
def load_feed(
    ctx: typer.Context,
    nvd: Annotated[list[Path], typer.Argument(help="NVD CVE JSON 2.0 files (nvdcve-2.0-*.json[.gz])")],
    kev: Annotated[list[Path] | None, typer.Option(help="CISA known_exploited_vulnerabilities.json")] = None,
) -> None:
    """Load an offline CVE feed (and the KEV catalogue) for matching against observed software."""
    try:
        with err.status("reading the feed ..."):
            counts = exposure.load_feed(open_store(ctx.obj), nvd, kev or [])
    except exposure.FeedError as exc:
        raise UsageProblem(f"{exc} — download the feeds from nvd.nist.gov and cisa.gov") from None
    console.print(f"{counts['cves']} CVE(s) with CPE criteria loaded, {counts['kev']} known exploited")


@exposures_app.command("list")
def exposures_list(
    ctx: typer.Context,
    include_excluded: Annotated[bool, typer.Option("--include-excluded")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Exposures, known-exploited and highest CVSS first."""
    settings = ctx.obj
    rows = exposure.exposures(open_store(settings), int(time.time() * 1000), _inventory(settings), include_excluded)
    _table(rows, ["cve_id", "kev", "cvss", "ip", "port", "product", "matched", "org_unit", "asset", "criticality",
                  "excluded_by"] + (["description"] if as_json else []), as_json)


@exposures_app.command("inventory")
def inventory_list(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The software and services observed answering on the network."""
    _table(exposure.inventory(open_store(ctx.obj)), ["ip", "port", "kind", "product", "org_unit", "hits"], as_json)


@exposures_app.command("exclude")
def exclude(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="why (kept for the audit)")],
    cve: Annotated[str, typer.Option(help="one CVE id (default: every CVE in the scope)")] = "",
    scope: Annotated[str, typer.Option(help="ip, asset, org_unit or all")] = "ip",
    value: Annotated[str, typer.Option(help="the address, asset name or org unit path")] = "",
    kind: Annotated[str, typer.Option(help="accepted_risk or false_positive")] = "accepted_risk",
    days: Annotated[int, typer.Option(help="expires after this many days", min=1, max=3650)] = 90,
) -> None:
    """Exclude exposures (accepted risk or false positive), scoped and expiring."""
    import getpass

    try:
        x = exposure.add_exclusion(open_store(ctx.obj), cve, scope, value, kind, reason, getpass.getuser(),
                                   int(time.time() * 1000) + days * 86_400_000)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    console.print(f"exclusion {x.exclusion_id} until {days} day(s) from now")


@exposures_app.command("revoke")
def revoke(ctx: typer.Context, exclusion_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke an exclusion."""
    if not exposure.revoke_exclusion(open_store(ctx.obj), exclusion_id, int(time.time() * 1000)):
        raise UsageProblem(f"no active exclusion {exclusion_id!r} (see `ganzhi exposures list --include-excluded`)")
    console.print(f"exclusion {exclusion_id} revoked")


def report_cmd(
    ctx: typer.Context,
    period: Annotated[str, typer.Option(help="day or week")] = "day",
    end: Annotated[str | None, typer.Option(help="end of the period (ISO time; default now)")] = None,
    out: Annotated[Path, typer.Option(help="directory for the .html and .pdf")] = Path("."),
) -> None:
    """Render the situation bulletin (态势通报) as HTML and PDF."""
    settings = ctx.obj
    end_ms = _ms(end)
    try:
        with err.status(f"rendering the {period} bulletin ..."):
            bulletin = report.render(open_store(settings), period, end_ms, _inventory(settings))
    except report.ReportError as exc:
        raise UsageProblem(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"ganzhi-bulletin-{period}-{time.strftime('%Y%m%d-%H%M', time.gmtime(end_ms / 1000))}"
    stem.with_suffix(".html").write_text(bulletin.html, encoding="utf-8")
    stem.with_suffix(".pdf").write_bytes(bulletin.pdf)
    stem.with_suffix(".json").write_bytes(orjson.dumps(bulletin.data, option=orjson.OPT_INDENT_2))
    console.print(f"bulletin: {stem}.html, {stem}.pdf (warning level {bulletin.data['level']['level_name']}, "
                  f"index {bulletin.data['index']['score']:.1f})")
