"""Deployment files: the compose stack validates with docker-compose and names every service the stack needs,
each service's command is a real `ganzhi` command line, and the Kubernetes manifests and systemd units hold
together (images, commands, probes, the scale-out knobs)."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import build

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
NEEDED = {"kafka", "clickhouse", "grafana", "writer", "incidents", "situation", "api", "sensor-packet", "sensor-syslog"}


def _ganzhi_help(args: list[str]) -> None:
    """The command line parses: `ganzhi <args> --help` exits 0 (options and subcommands exist)."""
    flags = [a for a in args if a.startswith("--")]
    words = [a for a in args if not a.startswith("--")]
    words = words[: next((i for i, w in enumerate(words) if w[0].isdigit() or "/" in w or "$" in w), len(words))]
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *words, "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "300"})
    assert done.returncode == 0, f"ganzhi {' '.join(words)}: {done.stderr}"
    for flag in flags:
        assert flag in done.stdout, f"`ganzhi {' '.join(words)}` has no option {flag}"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose missing: `make system-deps` installs Debian's docker-compose"
    done = subprocess.run([tool, "--env-file", "ganzhi.env.example", "-f", "docker-compose.yml", "config"],
                          cwd=COMPOSE, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)  # type: ignore[no-any-return]


def test_compose_stack_validates_and_has_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == NEEDED
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", name
    assert set(compose["volumes"]) == {"kafka-data", "clickhouse-data", "grafana-data"}
    ganzhi = {n: s for n, s in services.items() if s.get("image", "").startswith("ganzhi:")}
    assert set(ganzhi) == NEEDED - {"kafka", "clickhouse", "grafana"}
    for name, service in ganzhi.items():
        env = service["environment"]
        assert env["GANZHI_KAFKA"] and env["GANZHI_CLICKHOUSE"].startswith("clickhouse://"), name
        if name != "sensor-packet":
            assert service["depends_on"]["kafka"]["condition"] == "service_healthy", name
            assert service["depends_on"]["clickhouse"]["condition"] == "service_healthy", name
        _ganzhi_help(service["command"])
    assert services["sensor-packet"]["network_mode"] == "host" and "NET_RAW" in services["sensor-packet"]["cap_add"]


def test_grafana_gets_the_plugin_provisioning_and_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert grafana["environment"]["GF_INSTALL_PLUGINS"] == "grafana-clickhouse-datasource"
    mounts = {v["target"] if isinstance(v, dict) else v.split(":")[1]: v for v in grafana["volumes"]}
    assert "/etc/grafana/provisioning" in mounts and build.DASHBOARD_PATH in mounts
    wanted = set()
    for source in yaml.safe_load((build.PROVISIONING / "datasources" / "ganzhi.yaml").read_text())["datasources"]:
        for value in [*source["jsonData"].values(), *source["secureJsonData"].values()]:
            if isinstance(value, str) and value.startswith("$"):
                wanted.add(value[1:])
    assert wanted <= set(grafana["environment"]), f"provisioning reads {wanted - set(grafana['environment'])}"


def test_the_image_copies_what_exists() -> None:
    for line in (COMPOSE / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def _k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_manifests() -> None:
    docs = _k8s_documents()
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for kind, name in [("StatefulSet", "kafka"), ("StatefulSet", "clickhouse"), ("Deployment", "grafana"),
                       ("Deployment", "ganzhi-writer"), ("Deployment", "ganzhi-incidents"),
                       ("Deployment", "ganzhi-api"), ("CronJob", "ganzhi-situation"), ("DaemonSet", "ganzhi-sensor"),
                       ("ConfigMap", "ganzhi-config"), ("Service", "ganzhi-api"), ("Service", "kafka"),
                       ("Service", "clickhouse")]:
        assert (kind, name) in by_name, f"{kind}/{name} missing"
    assert all(d["metadata"].get("namespace") == "ganzhi" for d in docs if d["kind"] != "Namespace")
    writer = by_name[("Deployment", "ganzhi-writer")]
    assert writer["spec"]["replicas"] >= 2  # consumer group: scale up to the topic's partitions
    for (kind, name), doc in by_name.items():
        outer = doc.get("spec", {})  # ConfigMaps and Secrets have none
        spec = outer.get("template", {}).get("spec") or \
            outer.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
        for container in (spec or {}).get("containers", []):
            if container["image"].startswith("ganzhi:"):
                _ganzhi_help(container["args"])
                assert container.get("resources", {}).get("limits"), f"{name}: no resource limits"
            if kind in ("Deployment", "StatefulSet") and name != "grafana":
                assert container.get("readinessProbe") or container.get("livenessProbe"), f"{name}: no probe"
    incidents = by_name[("Deployment", "ganzhi-incidents")]
    assert incidents["spec"]["replicas"] == 1  # exactly one correlator per database


def test_systemd_units_for_capture_hosts() -> None:
    units = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
    assert {u.name for u in units} >= {"ganzhi-sensor-packet@.service", "ganzhi-sensor-syslog.service",
                                       "ganzhi-sensor-tail@.service"}
    for unit in units:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.read(unit)
        service = parser["Service"]
        command = shlex.split(service["ExecStart"])
        assert command[0] == "/opt/ganzhi/bin/ganzhi", unit.name
        _ganzhi_help([a for a in command[1:] if "%" not in a])
        assert service["Restart"] == "on-failure" and "EnvironmentFile" in service, unit.name
        assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_kraft_cluster_ids_never_start_with_a_dash(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """kafka-storage reads `-t -AEn...` as an option: a CI run's broker failed to format (1 start in 64)."""
    import uuid

    from deploy.local import kafka

    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x10" + bytes(15))])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(drawn))
    assert kafka.new_cluster_id() == "EAAAAAAAAAAAAAAAAAAAAA"  # the draw that encodes to '-AAAA...' is skipped
    monkeypatch.undo()
    ids = [kafka.new_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
