"""Seeding a store for the API tests: two departments with SSH brute force and DNS traffic, detected by the
real rule pack and grouped into incidents, plus one user and token per role (some bound to a department)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from api.app import create_app
from api.auth import create_token, save_user
from pipeline.bus.memory import MemoryBus
from pipeline.config import Settings
from pipeline.detect.compile import RuleSet, compile_rules
from pipeline.detect.live import LiveDetection
from pipeline.incidents.correlate import IncidentCorrelator
from pipeline.schema import event_id, normalize
from pipeline.store.base import Store
from rules import PACK

DEPT_A, DEPT_B = "民政局", "卫健委/东湖街道"
# what each department's traffic looks like: the isolation tests look for the other one's values
DEPTS = {
    DEPT_A: {"attacker": "10.10.1.50", "user": "alice-a", "domain": "a-only.example.org"},
    DEPT_B: {"attacker": "10.10.2.50", "user": "bob-b", "domain": "b-only.example.org"},
}
USERS = {  # name: (role, org unit)
    "op": ("operator", ""), "resp": ("responder", ""), "aud": ("auditor", ""), "adm": ("admin", ""),
    "resp_a": ("responder", DEPT_A), "op_b": ("operator", DEPT_B.split("/")[0]),
}


@lru_cache(maxsize=1)
def pack() -> RuleSet:
    return compile_rules([PACK])


def department_events(now_ms: int) -> list[dict[str, Any]]:
    events = []
    for unit, d in DEPTS.items():
        for i in range(12):  # >= 10 failures in 5 minutes: the SSH brute-force correlation fires
            events.append({"ts": now_ms - 1_800_000 + i * 1000, "sensor": "edge-1", "source_type": "sshd",
                           "event_category": "auth", "action": "failure", "app_protocol": "ssh",
                           "src_ip": d["attacker"], "dst_ip": "10.30.0.22", "dst_port": 22, "protocol": "tcp",
                           "user_name": d["user"], "host_name": "jump-01", "src_org_unit": unit,
                           "message": f"Failed password for {d['user']}", "raw": f"sshd: Failed password {d['user']}"})
        for i in range(5):
            events.append({"ts": now_ms - 1_700_000 + i * 1000, "sensor": "dns-1", "source_type": "zeek_dns",
                           "event_category": "dns", "action": "query", "src_ip": d["attacker"],
                           "dst_ip": "10.0.0.53", "dst_port": 53, "protocol": "udp", "dns_query": d["domain"],
                           "user_name": d["user"], "src_org_unit": unit})
    return [normalize({**e, "event_id": event_id("api-test", str(e), n)}) for n, e in enumerate(events)]


def seed(store: Store) -> list[dict[str, Any]]:
    events = department_events(int(time.time() * 1000))
    store.insert_events(events)
    live = LiveDetection(store, MemoryBus(), pack(), on_alerts=IncidentCorrelator(store).process)
    live(events)
    return events


@dataclass
class Seeded:
    client: Any  # fastapi TestClient
    app: Any  # the FastAPI application
    store: Store
    tokens: dict[str, str]

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def close(self) -> None:
        """Wait for background work (replay jobs) before the store goes away."""
        self.app.state.ganzhi.close()

    def get(self, user: str, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self.headers(user), **kw)


def seeded_app(store: Store, home: Path, **app_options: Any) -> Seeded:
    from fastapi.testclient import TestClient

    seed(store)
    tokens = {}
    for name, (role, unit) in USERS.items():
        save_user(store, name, role, unit)
        tokens[name] = create_token(store, name, days=1)[1]
    settings = Settings(home=home, inventory=Path(__file__).resolve().parents[1] / "deploy/samples/inventory.yaml")
    app = create_app(settings, store, **({"rate": 10_000, "burst": 10_000} | app_options))
    return Seeded(TestClient(app, raise_server_exceptions=False), app, store, tokens)
