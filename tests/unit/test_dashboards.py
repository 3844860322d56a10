"""Dashboards as code: the committed JSON is what the code renders, the panels are well formed, and provisioning
makes exactly the expected Grafana API calls (against a recording HTTP server standing in for Grafana)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_client import GrafanaApi

from dashboards import build
from dashboards.definitions import DASHBOARDS
from dashboards.model import ALL, DATASOURCE, FOLDER_TITLE, FOLDER_UID, expand
from dashboards.provision import provision


def test_committed_json_is_what_the_code_renders() -> None:
    assert build.stale() == [], "run `ganzhi dashboards build` and commit dashboards/"


def test_dashboards_are_well_formed() -> None:
    assert {d.uid for d in DASHBOARDS} == {"ganzhi-situation", "ganzhi-incidents", "ganzhi-network",
                                           "ganzhi-detections", "ganzhi-pipeline"}
    for d in DASHBOARDS:
        doc = json.loads((build.GENERATED / f"{d.uid}.json").read_text(encoding="utf-8"))
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)) and len(ids) >= 6, d.uid
        variables = {v["name"] for v in doc["templating"]["list"]}
        for panel in doc["panels"]:
            assert panel["datasource"] == DATASOURCE and panel["targets"], panel["title"]
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
            for target in panel["targets"]:
                used = set(re.findall(r"\$\{(\w+):sqlstring\}", target["rawSql"]))
                assert used <= variables, f"{panel['title']} uses undeclared {used - variables}"
                assert "${" not in re.sub(r"\$\{\w+:sqlstring\}", "", target["rawSql"]), "unformatted variable"
    situation = json.loads((build.GENERATED / "ganzhi-situation.json").read_text(encoding="utf-8"))
    assert situation["time"] == {"from": "now-7d", "to": "now+1d"}  # the forecast is in the future


def test_expand_quotes_variables_and_expands_macros() -> None:
    sql = expand("SELECT $__timeInterval(ts) AS t FROM e WHERE $__timeFilter(ts) AND u = ${org_unit:sqlstring} "
                 "AND x > $__fromTime - $__interval_s", 1_000_000, 2_000_000, 60, {"org_unit": "a'b\\c"})
    assert sql == ("SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) AS t FROM e WHERE "
                   "ts >= toDateTime(1000) AND ts <= toDateTime(2000) AND u = 'a''b\\\\c' "
                   "AND x > toDateTime(1000) - 60")
    assert expand("${sensor:sqlstring}", 0, 0, 0, {"sensor": ALL}) == f"'{ALL}'"


def test_file_provisioning_points_grafana_at_the_generated_dashboards() -> None:
    sources = yaml.safe_load((build.PROVISIONING / "datasources" / "ganzhi.yaml").read_text(encoding="utf-8"))
    (source,) = sources["datasources"]
    assert source["uid"] == DATASOURCE["uid"] and source["type"] == "grafana-clickhouse-datasource"
    assert source["jsonData"]["protocol"] == "native" and source["secureJsonData"]["password"].startswith("$")
    providers = yaml.safe_load((build.PROVISIONING / "dashboards" / "ganzhi.yaml").read_text(encoding="utf-8"))
    assert providers["providers"][0]["folderUid"] == FOLDER_UID
    assert providers["providers"][0]["options"]["path"] == build.DASHBOARD_PATH


class FakeGrafana:
    """Answers the few Grafana API routes provisioning uses, keeps their state, records every request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.auth: set[str] = set()
        self.datasources: dict[str, dict[str, Any]] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.calls.append((self.command, self.path, body))
                fake.auth.add(self.headers.get("Authorization", ""))
                status, answer = fake.route(self.command, self.path, body)
                self._answer(status, answer)

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if m := re.fullmatch(r"/api/datasources/uid/([\w-]+)", path):
            if m.group(1) not in self.datasources:
                return 404, {"message": "Data source not found"}
            if method == "PUT":
                self.datasources[m.group(1)] = body
                return 200, {"message": "Datasource updated", "id": body["id"]}
            return 200, self.datasources[m.group(1)]
        if path == "/api/datasources" and method == "POST":
            self.datasources[body["uid"]] = {**body, "id": 7}
            return 200, {"message": "Datasource added", "id": 7}
        if m := re.fullmatch(r"/api/folders/([\w-]+)", path):
            if m.group(1) not in self.folders:
                return 404, {"message": "folder not found"}
            return 200, self.folders[m.group(1)]
        if path == "/api/folders" and method == "POST":
            self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "version": 1}
            return 200, self.folders[body["uid"]]
        if path == "/api/dashboards/db" and method == "POST":
            uid = body["dashboard"]["uid"]
            version = self.dashboards.get(uid, {}).get("version", 0) + 1
            self.dashboards[uid] = {"body": body, "version": version}
            return 200, {"status": "success", "uid": uid, "version": version}
        return 404, {"message": f"no route {method} {path}"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    yield fake
    fake.close()


def test_provisioning_makes_exactly_these_calls_and_is_idempotent(grafana: FakeGrafana) -> None:
    source = build.datasource("clickhouse", 9000, "ganzhi", "grafana", "s3cret")
    api = GrafanaApi.from_url(grafana.url, credential="glsa_test_token")
    first = provision(api, source)
    uids = [d.uid for d in DASHBOARDS]
    assert (first.datasource, first.folder, first.dashboards) == ("created", "created", uids)
    assert [(m, p) for m, p, _ in grafana.calls] == [
        ("GET", "/api/datasources/uid/ganzhi-clickhouse"), ("POST", "/api/datasources"),
        ("GET", f"/api/folders/{FOLDER_UID}"), ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * len(uids)]
    assert grafana.calls[1][2] == source and grafana.calls[3][2] == {"title": FOLDER_TITLE, "uid": FOLDER_UID}
    for (_, _, body), dashboard in zip(grafana.calls[4:], DASHBOARDS, strict=True):
        assert body == {"dashboard": {**dashboard.render(), "id": None}, "folderUid": FOLDER_UID, "overwrite": True,
                        "message": "ganzhi dashboards provision"}
    assert grafana.auth == {"Bearer glsa_test_token"}

    grafana.calls.clear()
    again = provision(api, source)
    assert (again.datasource, again.folder) == ("updated", "kept")
    assert [(m, p) for m, p, _ in grafana.calls] == [
        ("GET", "/api/datasources/uid/ganzhi-clickhouse"), ("PUT", "/api/datasources/uid/ganzhi-clickhouse"),
        ("GET", f"/api/folders/{FOLDER_UID}"), *[("POST", "/api/dashboards/db")] * len(uids)]
    assert grafana.calls[1][2] == {**source, "id": 7}
    assert len(grafana.datasources) == 1 and len(grafana.folders) == 1
    assert {uid: d["version"] for uid, d in grafana.dashboards.items()} == dict.fromkeys(uids, 2)


def test_provision_command(grafana: FakeGrafana, tmp_path: Path) -> None:
    env = {**os.environ, "GANZHI_HOME": str(tmp_path), "GANZHI_GRAFANA_TOKEN": "glsa_cli"}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "dashboards", "provision", "--grafana", grafana.url,
                           "--clickhouse-host", "ch.internal"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "data source created, folder created" in done.stdout
    assert grafana.datasources["ganzhi-clickhouse"]["jsonData"]["host"] == "ch.internal"
    assert grafana.auth == {"Bearer glsa_cli"}
    refused = subprocess.run([sys.executable, "-m", "pipeline.cli", "dashboards", "provision", "--grafana",
                              f"{grafana.url}/nothing-here"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "refused" in refused.stderr
    check = subprocess.run([sys.executable, "-m", "pipeline.cli", "dashboards", "build", "--check"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "up to date" in check.stdout
