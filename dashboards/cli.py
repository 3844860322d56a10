"""`ganzhi dashboards build | provision`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from pipeline.config import UsageProblem

dashboards_app = typer.Typer(help="Grafana dashboards: render them, provision them through the Grafana API.",
                             no_args_is_help=True)
console = Console()


@dashboards_app.command("build")
def build_cmd(check: Annotated[bool, typer.Option("--check", help="only say whether the files are stale")]
              = False) -> None:
    """Render dashboards/generated/*.json and the file-provisioning YAML from dashboards/definitions.py."""
    from dashboards import build

    if check:
        stale = build.stale()
        if stale:
            raise UsageProblem(f"stale: {', '.join(p.name for p in stale)} — run `ganzhi dashboards build`")
        console.print("dashboards are up to date")
        return
    written = build.write()
    console.print(f"{len(written)} file(s) written" + "".join(f"\n  {p}" for p in written))


@dashboards_app.command("provision")
def provision_cmd(
    grafana: Annotated[str, typer.Option(help="Grafana base URL, e.g. http://grafana:3000")],
    token: Annotated[str, typer.Option(envvar="GANZHI_GRAFANA_TOKEN", help="service-account token (env "
                                       "GANZHI_GRAFANA_TOKEN keeps it out of the process list)")],
    clickhouse_host: Annotated[str, typer.Option(help="ClickHouse host as Grafana reaches it")] = "clickhouse",
    clickhouse_port: Annotated[int, typer.Option(help="native protocol port")] = 9000,
    database: Annotated[str, typer.Option(help="Ganzhi's database")] = "ganzhi",
    user: Annotated[str, typer.Option(help="a read-only ClickHouse user for Grafana")] = "grafana",
    password: Annotated[str, typer.Option(envvar="GANZHI_GRAFANA_CH_PASSWORD", help="its password")] = "",
) -> None:
    """Create or update the ClickHouse data source, the Ganzhi folder and the dashboards (idempotent)."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    from dashboards.build import datasource
    from dashboards.provision import provision

    api = GrafanaApi.from_url(grafana, credential=token, timeout=15.0)
    try:
        done = provision(api, datasource(clickhouse_host, clickhouse_port, database, user, password))
    except GrafanaException as exc:
        raise UsageProblem(f"Grafana at {grafana} refused: {exc} — check the URL and that the token's service "
                           "account has the Admin role") from None
    console.print(f"data source {done.datasource}, folder {done.folder}, dashboards: {', '.join(done.dashboards)}")
