"""`ganzhi rules ...`, `ganzhi replay`, `ganzhi alerts`, `ganzhi suppress ...`: the detection commands."""

from __future__ import annotations

import getpass
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from pipeline.config import UsageProblem
from pipeline.store import QueryResult, open_store

console = Console()
err = Console(stderr=True)


def _settings(ctx: typer.Context) -> Any:
    return ctx.obj


def _show(result: QueryResult, as_json: bool) -> None:
    from pipeline.cli import _show as show

    show(result, as_json)


def parse_time(text: str) -> datetime:
    from pipeline.cli import parse_time as parse

    return parse(text)


rules_app = typer.Typer(help="Sigma rules: convert, check, test, list, import, versions, activate.",
                         no_args_is_help=True)
RulesOption = Annotated[list[str] | None, typer.Option(
    "--rules", help="rule file, folder or rule-set version (repeatable); default: Ganzhi's own pack")]


def load_rules(specs: list[str] | None, store: Any = None) -> Any:
    """Compile rules from paths, or fetch a stored rule-set version (a 16-hex content hash)."""
    from pipeline.detect.compile import VERSION_RE, compile_rules, compile_sources
    from pipeline.detect.live import load_ruleset_files
    from rules import PACK

    specs = specs or [str(PACK)]
    if len(specs) == 1 and VERSION_RE.match(specs[0]) and not Path(specs[0]).exists():
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
    ruleset = load_rules(rules)
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

    ruleset = load_rules(rules)
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

    ruleset = load_rules(rules)
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
    from pipeline.detect.compile import VERSION_RE
    from pipeline.detect.live import activate_ruleset

    store = open_store(_settings(ctx))
    store.ensure_schema()
    if not VERSION_RE.match(version):
        raise UsageProblem(f"{version!r} is not a rule-set version (16 hex digits; `ganzhi rules versions`)")
    compiled = load_rules([version], store)
    if not compiled.rule_count:
        raise UsageProblem(f"rule set {version} holds no rule that compiles here; not activated")
    activate_ruleset(store, version, f"cli:{getpass.getuser()}", reason)
    audited(store, "rules activate", version, {"reason": reason})
    console.print(f"activated rule set {version} ({compiled.rule_count} rules); following writers switch within 30 s")


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

        ruleset = load_rules(rules)
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
        ruleset = load_rules(rules, store)
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


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")
    app.command()(replay)
    app.command()(alerts)
    app.add_typer(suppress_app, name="suppress")
