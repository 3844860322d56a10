"""Create or update the data source, the folder and the dashboards through the Grafana HTTP API (grafana-client),
idempotently: run it again and it updates in place (same uids), never duplicates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from dashboards.definitions import DASHBOARDS
from dashboards.model import FOLDER_TITLE, FOLDER_UID


@dataclass
class Provisioned:
    datasource: str = ""  # created or updated
    folder: str = ""
    dashboards: list[str] = field(default_factory=list)


def _missing(exc: GrafanaClientError) -> bool:
    return exc.status_code == 404


def provision(api: GrafanaApi, datasource: dict[str, Any]) -> Provisioned:
    done = Provisioned()
    try:
        current = api.datasource.get_datasource_by_uid(datasource["uid"])
        api.datasource.update_datasource_by_uid(datasource["uid"], {**datasource, "id": current.get("id")})
        done.datasource = "updated"
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.datasource.create_datasource(datasource)
        done.datasource = "created"
    try:
        folder = api.folder.get_folder(FOLDER_UID)
        if folder.get("title") != FOLDER_TITLE:
            api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True)
        done.folder = "kept" if folder.get("title") == FOLDER_TITLE else "updated"
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        done.folder = "created"
    for dashboard in DASHBOARDS:
        api.dashboard.update_dashboard({"dashboard": {**dashboard.render(), "id": None}, "folderUid": FOLDER_UID,
                                        "overwrite": True, "message": "ganzhi dashboards provision"})
        done.dashboards.append(dashboard.uid)
    return done
