"""The responders' API on the embedded store: every route × role, department isolation on every list, search
and export route, masking, audit chain, injection attempts, rate and size limits, error shapes."""

from __future__ import annotations

import threading
from urllib.parse import quote

import orjson
import pytest

from api import audit
from api.principal import MASK
from tests.api_support import DEPT_A, DEPT_B, DEPTS, USERS, seeded_app

R, W, A, ADM = "operator", "responder", "auditor", "admin"
EVERYONE = {R, W, A, ADM}
# The access policy, written out independently of the code: every route must appear here.
POLICY: dict[tuple[str, str], set[str]] = {
    ("GET", "/api/v1/incidents"): EVERYONE,
    ("GET", "/api/v1/incidents/export"): {W, A},
    ("GET", "/api/v1/incidents/{incident_id}"): EVERYONE,
    ("PATCH", "/api/v1/incidents/{incident_id}"): {W},
    ("POST", "/api/v1/incidents/{incident_id}/notes"): {W},
    ("GET", "/api/v1/incidents/{incident_id}/timeline"): EVERYONE,
    ("GET", "/api/v1/incidents/{incident_id}/alerts"): EVERYONE,
    ("POST", "/api/v1/incidents/{incident_id}/alerts"): {W},
    ("GET", "/api/v1/incidents/{incident_id}/events"): EVERYONE,
    ("GET", "/api/v1/alerts"): EVERYONE,
    ("GET", "/api/v1/alerts/{alert_id}"): EVERYONE,
    ("POST", "/api/v1/alerts/{alert_id}/ack"): {W},
    ("POST", "/api/v1/alerts/{alert_id}/suppress"): {W},
    ("GET", "/api/v1/events"): EVERYONE,
    ("GET", "/api/v1/events/top"): EVERYONE,
    ("GET", "/api/v1/events/histogram"): EVERYONE,
    ("GET", "/api/v1/events/export"): {W, A},
    ("GET", "/api/v1/rules"): EVERYONE,
    ("GET", "/api/v1/rules/versions"): EVERYONE,
    ("POST", "/api/v1/rules/versions/{version}/activate"): {ADM},
    ("GET", "/api/v1/rules/{rule_id}"): EVERYONE,
    ("POST", "/api/v1/rules/{rule_id}/enable"): {ADM},
    ("POST", "/api/v1/rules/{rule_id}/disable"): {ADM},
    ("POST", "/api/v1/rules"): {ADM},
    ("POST", "/api/v1/replays"): {A, ADM},
    ("GET", "/api/v1/replays"): {A, ADM},
    ("GET", "/api/v1/replays/{job_id}"): {A, ADM},
    ("GET", "/api/v1/replays/{job_id}/report"): {A, ADM},
    ("GET", "/api/v1/replays/{job_id}/diff"): {A, ADM},
    ("GET", "/api/v1/org-units"): EVERYONE,
    ("GET", "/api/v1/org-units/{path}"): EVERYONE,
    ("GET", "/api/v1/assets"): EVERYONE,
    ("GET", "/api/v1/assets/{name}"): EVERYONE,
    ("GET", "/api/v1/situation"): EVERYONE,
    ("GET", "/api/v1/situation/elements"): EVERYONE,
    ("GET", "/api/v1/situation/history"): EVERYONE,
    ("GET", "/api/v1/situation/forecast"): EVERYONE,
    ("GET", "/api/v1/situation/anomalies"): EVERYONE,
    ("GET", "/api/v1/warnings"): EVERYONE,
    ("GET", "/api/v1/warnings/history"): EVERYONE,
    ("GET", "/api/v1/exposures"): EVERYONE,
    ("GET", "/api/v1/exposures/inventory"): EVERYONE,
    ("GET", "/api/v1/exposures/exclusions"): EVERYONE,
    ("POST", "/api/v1/exposures/exclusions"): {W},
    ("DELETE", "/api/v1/exposures/exclusions/{exclusion_id}"): {W},
    ("POST", "/api/v1/reports"): {W, A},
    ("GET", "/api/v1/reports"): {W, A},
    ("GET", "/api/v1/reports/{report_id}/pdf"): {W, A},
    ("GET", "/api/v1/reports/{report_id}/html"): {W, A},
    ("GET", "/api/v1/users"): {ADM},
    ("POST", "/api/v1/users"): {ADM},
    ("POST", "/api/v1/users/{name}/disable"): {ADM},
    ("GET", "/api/v1/tokens"): {ADM},
    ("POST", "/api/v1/tokens"): {ADM},
    ("DELETE", "/api/v1/tokens/{token_id}"): {ADM},
    ("GET", "/api/v1/audit"): {A},
    ("GET", "/api/v1/audit/verify"): {A},
}
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz")}
ROLE_USER = {R: "op", W: "resp", A: "aud", ADM: "adm"}


@pytest.fixture
def api(embedded_store, tmp_path):  # type: ignore[no-untyped-def]
    seeded = seeded_app(embedded_store, tmp_path)
    yield seeded
    seeded.close()


def _routes(app) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Every operation the application serves, from its OpenAPI schema (no route is hidden from it)."""
    return {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}


def _incident_id(api, user: str = "resp") -> str:  # type: ignore[no-untyped-def]
    items = api.get(user, "/api/v1/incidents").json()["items"]
    assert items, "seeding opened no incident"
    return items[0]["incident_id"]


def test_every_route_has_a_policy_and_it_is_enforced(api) -> None:  # type: ignore[no-untyped-def]
    routes = _routes(api.app)
    assert routes - PUBLIC == set(POLICY), "a route without a decided policy (add it to POLICY) or a stale entry"
    incident = _incident_id(api)
    alert = api.get("resp", "/api/v1/alerts").json()["items"][0]["alert_id"]
    fill = {"{incident_id}": incident, "{alert_id}": alert, "{rule_id}": "no-such-rule", "{job_id}": "nojob",
            "{path}": DEPT_A, "{name}": "nobody", "{token_id}": "0000000000000000", "{exclusion_id}": "x-none",
            "{report_id}": "rep-none", "{version}": "0000000000000000"}
    for (method, template), allowed in sorted(POLICY.items()):
        path = template
        for key, value in fill.items():
            path = path.replace(key, value)
        assert api.client.request(method, path).status_code == 401, f"{method} {template} without a token"
        for role, user in ROLE_USER.items():
            # an empty JSON body: allowed roles get past the role check (then 4xx for the body), others get 403
            status = api.client.request(method, path, headers=api.headers(user),
                                        json={} if method in ("POST", "PATCH") else None).status_code
            if role in allowed:
                assert status != 403 and status < 500, f"{role} {method} {template} -> {status}"
            else:
                assert status == 403, f"{role} must not {method} {template} (got {status})"
    for method, path in PUBLIC:
        assert api.client.request(method, path).status_code == 200


def _text_of(response) -> str:  # type: ignore[no-untyped-def]
    return response.text


def test_department_isolation_on_every_list_search_and_export_route(api) -> None:  # type: ignore[no-untyped-def]
    other = DEPTS[DEPT_B]
    own = DEPTS[DEPT_A]
    reads = ["/api/v1/incidents", "/api/v1/alerts", "/api/v1/events?limit=1000", "/api/v1/events?q=Failed",
             f"/api/v1/events?ip={other['attacker']}", f"/api/v1/events?domain={other['domain']}",
             f"/api/v1/events?user={other['user']}", "/api/v1/events?cidr=10.0.0.0/8",
             "/api/v1/events/top?field=src_ip&n=100", "/api/v1/events/top?field=dns_query&n=100",
             "/api/v1/events/histogram", "/api/v1/incidents/export?format=csv", "/api/v1/incidents/export",
             "/api/v1/events/export?format=csv", "/api/v1/events/export", "/api/v1/org-units", "/api/v1/assets",
             f"/api/v1/events?org_unit={DEPT_B}", "/api/v1/alerts?suppressed=true"]
    # the unbound responder sees both departments: the probes are meaningful
    everything = "".join(api.get("resp", p).text for p in reads)
    assert other["attacker"] in everything and own["attacker"] in everything
    bound = "".join(_text_of(r) for r in (api.get("resp_a", p) for p in reads))
    assert own["attacker"] in bound, "the bound user must still see its own department"
    for value in (other["attacker"], other["domain"], DEPT_B, "卫健委"):
        assert value not in bound, f"{value} leaked to a user bound to {DEPT_A}"
    # by id: the other department's incident, alerts and events are 404, not 403 (existence is not confirmed)
    b_incidents = [i for i in api.get("resp", "/api/v1/incidents").json()["items"] if DEPT_B in i["org_units"]]
    assert b_incidents
    iid = b_incidents[0]["incident_id"]
    for path in (f"/api/v1/incidents/{iid}", f"/api/v1/incidents/{iid}/timeline", f"/api/v1/incidents/{iid}/alerts",
                 f"/api/v1/incidents/{iid}/events"):
        assert api.get("resp_a", path).status_code == 404, path
    assert api.client.patch(f"/api/v1/incidents/{iid}", headers=api.headers("resp_a"),
                            json={"status": "acknowledged"}).status_code == 404
    b_alert = api.get("resp", f"/api/v1/alerts?entity=src_ip={other['attacker']}").json()["items"][0]["alert_id"]
    assert api.get("resp_a", f"/api/v1/alerts/{b_alert}").status_code == 404
    assert api.client.post(f"/api/v1/alerts/{b_alert}/ack", headers=api.headers("resp_a")).status_code == 404
    # an operator bound to the department above DEPT_B sees DEPT_B (its unit and below) and not DEPT_A
    b_view = "".join(api.get("op_b", p).text for p in reads if "export" not in p)
    assert other["attacker"] in b_view and own["attacker"] not in b_view


def test_fields_above_clearance_are_masked(api) -> None:  # type: ignore[no-untyped-def]
    user = DEPTS[DEPT_A]["user"]
    operator = api.get("op", "/api/v1/events?category=auth&fields=all").json()["items"]
    responder = api.get("resp", "/api/v1/events?category=auth").json()["items"]
    assert operator and all(e["user_name"] == MASK and e["raw"] == MASK for e in operator)
    assert any(e["user_name"] == user for e in responder)
    assert api.get("op", "/api/v1/events/top?field=user_name").status_code == 403
    summary = api.get("resp", "/api/v1/events?category=auth").json()["items"][0]
    assert "raw" not in summary and "user_name" in summary
    assert set(api.get("resp", "/api/v1/events?fields=dns_query").json()["items"][0]) <= {
        "ts", "ts_ms", "event_id", "dns_query"}
    assert api.get("resp", "/api/v1/events?fields=nope").status_code == 422
    # free text reaches the raw record only for callers cleared for it
    assert not api.get("op", "/api/v1/events?q=sshd:").json()["items"]
    assert api.get("resp", "/api/v1/events?q=sshd:").json()["items"]


def test_incident_lifecycle_through_the_api_is_audited(api) -> None:  # type: ignore[no-untyped-def]
    iid = _incident_id(api)
    h = api.headers("resp")
    assert api.client.patch(f"/api/v1/incidents/{iid}", headers=h, json={"status": "acknowledged",
                                                                         "assignee": "resp"}).status_code == 200
    bad = api.client.patch(f"/api/v1/incidents/{iid}", headers=h, json={"status": "new"})
    assert bad.status_code == 409 and "cannot move" in bad.json()["error"]
    note = api.client.post(f"/api/v1/incidents/{iid}/notes", headers=h, json={"text": "blocked at fw"})
    assert note.status_code == 201
    assert api.client.patch(f"/api/v1/incidents/{iid}", headers=h, json={"assignee": "ghost"}).status_code == 422
    actions = [e["action"] for e in api.get("resp", f"/api/v1/incidents/{iid}/timeline").json()]
    assert actions[0] == "opened" and "status" in actions and "assignee" in actions and "note" in actions
    assert api.get("resp", f"/api/v1/incidents/{iid}").json()["status"] == "acknowledged"
    assert api.get("resp", f"/api/v1/incidents/{iid}/events").json()["items"]
    api.get("resp", "/api/v1/events/export")
    log = api.get("aud", "/api/v1/audit").json()
    seen = [(r["actor"], r["action"], r["result"]) for r in log]
    assert ("resp", "PATCH /api/v1/incidents/{incident_id}", "200") in seen
    assert ("resp", "PATCH /api/v1/incidents/{incident_id}", "409") in seen  # refused changes are recorded too
    assert ("resp", "POST /api/v1/incidents/{incident_id}/notes", "201") in seen
    assert ("resp", "GET /api/v1/events/export", "200") in seen
    assert api.get("aud", "/api/v1/audit/verify").json()["ok"] is True


def test_audit_verify_detects_edited_deleted_and_truncated_records(api) -> None:  # type: ignore[no-untyped-def]
    for n in range(5):
        api.client.post(f"/api/v1/incidents/{_incident_id(api)}/notes", headers=api.headers("resp"),
                        json={"text": f"note {n}"})
    store = api.store
    clean = audit.verify(store)
    assert clean.ok and clean.records >= 5
    head = (clean.head_seq, clean.head_hash)
    store.execute("ALTER TABLE audit_log UPDATE actor = 'someone-else' WHERE seq = 2 SETTINGS mutations_sync = 2")
    edited = audit.verify(store)
    assert not edited.ok and any("record 2 was altered" in p for p in edited.problems)
    store.execute("ALTER TABLE audit_log UPDATE actor = 'resp' WHERE seq = 2 SETTINGS mutations_sync = 2")
    assert audit.verify(store).ok
    store.execute("ALTER TABLE audit_log DELETE WHERE seq = 3 SETTINGS mutations_sync = 2")
    deleted = audit.verify(store)
    assert any("record 3 missing" in p for p in deleted.problems)
    assert any("record 4 does not follow" in p for p in deleted.problems)
    store.execute(f"ALTER TABLE audit_log DELETE WHERE seq = {head[0]} SETTINGS mutations_sync = 2")
    assert any("truncated" in p for p in audit.verify(store, expect_head=head).problems)


INJECTIONS = ["' OR 1=1 --", "x') OR ('1'='1", "1; DROP TABLE events", "{q:String}", "\\'; SELECT 1 --",
              "%' UNION SELECT * FROM api_tokens --", "\x00", "' || sleep(3) || '"]
STRING_FILTERS = ["/api/v1/events?user=", "/api/v1/events?domain=", "/api/v1/events?q=", "/api/v1/events?rule=",
                  "/api/v1/events?category=", "/api/v1/events?sensor=", "/api/v1/events?org_unit=",
                  "/api/v1/events?ip=", "/api/v1/events?cidr=", "/api/v1/events?cursor=", "/api/v1/incidents?org_unit=",
                  "/api/v1/incidents?assignee=", "/api/v1/incidents?cursor=", "/api/v1/alerts?rule_id=",
                  "/api/v1/alerts?entity=", "/api/v1/incidents/", "/api/v1/alerts/", "/api/v1/rules/",
                  "/api/v1/assets/", "/api/v1/org-units/", "/api/v1/events/top?field=src_ip&user="]


def test_injection_attempts_on_every_filter_are_harmless(api) -> None:  # type: ignore[no-untyped-def]
    events_before = api.store.query("SELECT count() FROM events").scalar()
    for prefix in STRING_FILTERS:
        for payload in INJECTIONS:
            response = api.get("resp", prefix + quote(payload, safe=""))
            assert response.status_code in (200, 404, 422), f"{prefix}{payload!r} -> {response.status_code}"
            if response.status_code == 200 and prefix.startswith("/api/v1/events?"):
                assert response.json()["items"] == [], f"{prefix}{payload!r} matched rows"
    assert api.store.query("SELECT count() FROM events").scalar() == events_before
    assert api.store.query("SELECT count() FROM api_tokens").scalar() == len(USERS)


def test_tokens_revoked_expired_and_malformed_are_refused(api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import api.auth as auth

    monkeypatch.setattr(auth, "CACHE_S", 0.0)
    admin = api.headers("adm")
    created = api.client.post("/api/v1/tokens", headers=admin, json={"user": "op", "days": 1}).json()
    fresh = {"Authorization": f"Bearer {created['token']}"}
    assert api.client.get("/api/v1/incidents", headers=fresh).status_code == 200
    listed = api.client.get("/api/v1/tokens", headers=admin).text
    secret = auth.TOKEN_RE.match(created["token"]).group(2)  # the secret itself may contain '_'
    assert secret not in listed, "a token secret must never be readable again"
    assert api.store.query("SELECT count() FROM api_tokens WHERE position(secret_hash, {s:String}) > 0",
                           {"s": secret[-20:]}).scalar() == 0
    assert api.client.delete(f"/api/v1/tokens/{created['token_id']}", headers=admin).status_code == 204
    assert api.client.get("/api/v1/incidents", headers=fresh).json()["error"] == "API token revoked"
    wrong = created["token"][:-4] + "AAAA"
    assert api.client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert api.client.get("/api/v1/incidents", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    log = api.get("aud", "/api/v1/audit").text
    assert created["token"] not in log and "secret" not in log


def test_rate_limit_and_body_limit(embedded_store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    limited = seeded_app(embedded_store, tmp_path, rate=0.5, burst=3)
    codes = [limited.get("op", "/api/v1/rules/versions").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    assert limited.get("resp", "/api/v1/rules/versions").status_code == 200, "the limit is per token"
    big = limited.client.post(
        "/api/v1/rules", headers=limited.headers("adm") | {"Content-Type": "application/json"},
        content=b'{"path": "a.yml", "yaml": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    assert big.status_code == 413 and "over" in big.json()["error"]


class _GatedStore:
    """The real store, but an event search waits at a gate while it is armed: a call that holds its slot."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        self._store = store
        self.armed, self.reached, self.release = False, threading.Event(), threading.Event()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._store, name)

    def query(self, sql: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.armed and "FROM events" in sql:
            self.reached.set()
            assert self.release.wait(30)
        return self._store.query(sql, *args, **kwargs)


def test_reads_over_capacity_are_shed_changes_and_health_are_not(embedded_store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    gated = _GatedStore(embedded_store)
    api = seeded_app(gated, tmp_path, inflight=1, queue_ms=100)  # type: ignore[arg-type]
    iid = _incident_id(api)
    with TestClient(api.app, raise_server_exceptions=False) as client:  # one event loop, as under uvicorn
        def get(user: str, path: str):  # type: ignore[no-untyped-def]
            return client.get(path, headers=api.headers(user))

        gated.armed = True
        first: list = []
        holder = threading.Thread(target=lambda: first.append(get("op", "/api/v1/events")))
        holder.start()
        try:
            assert gated.reached.wait(30), "the first search never reached the store"
            shed = get("op", "/api/v1/events?limit=5")
            assert shed.status_code == 503 and shed.headers["Retry-After"] == "1" and "capacity" in shed.json()["error"]
            assert get("resp", "/api/v1/incidents").status_code == 503, "every read waits for the same slots"
            assert client.get("/healthz").status_code == 200
            note = client.post(f"/api/v1/incidents/{iid}/notes", headers=api.headers("resp"),
                               json={"text": "handled while dashboards load the API"})
            assert note.status_code == 201, "a responder's change is never shed"
        finally:
            gated.release.set()
            holder.join(30)
        assert first and first[0].status_code == 200
        gated.armed = False
        assert get("op", "/api/v1/events?limit=5").status_code == 200
    api.close()


def test_errors_are_json_with_a_message(api) -> None:  # type: ignore[no-untyped-def]
    for response in (api.get("resp", "/api/v1/nothing"), api.get("resp", "/api/v1/events?since=yesterday"),
                     api.get("resp", "/api/v1/events?since=2024-01-01T00:00:00&until=2024-06-01T00:00:00"),
                     api.client.post("/api/v1/incidents/x/notes", headers=api.headers("resp"), content=b"{"),
                     api.get("resp", "/api/v1/incidents?limit=100000")):
        body = response.json()
        assert 400 <= response.status_code < 500 and body["error"] and body["status"] == response.status_code


def test_rules_upload_enable_disable_and_replay_diff(api) -> None:  # type: ignore[no-untyped-def]
    admin = api.headers("adm")
    bad = api.client.post("/api/v1/rules", headers=admin, json={"path": "custom/bad.yml", "yaml": "title: x\n"})
    assert bad.status_code == 422 and "not accepted" in bad.json()["error"]
    rule = ("title: DNS to b-only\nid: 11111111-2222-3333-4444-555555555555\nstatus: test\nlogsource: {category: dns}\n"
            "detection:\n  sel:\n    query: b-only.example.org\n  condition: sel\nlevel: medium\n")
    made = api.client.post("/api/v1/rules", headers=admin, json={"path": "custom/b_only.yml", "yaml": rule})
    assert made.status_code == 201, made.text
    version = made.json()["version"]
    ids = [r["rule_id"] for r in api.get("op", "/api/v1/rules").json()]
    assert "11111111-2222-3333-4444-555555555555" in ids
    off = api.client.post("/api/v1/rules/11111111-2222-3333-4444-555555555555/disable", headers=admin).json()
    assert off["enabled"] is False
    assert not next(r for r in api.get("op", "/api/v1/rules").json() if r["rule_id"] == off["rule_id"])["enabled"]
    import time as _t
    now = _t.time()
    job = api.client.post("/api/v1/replays", headers=api.headers("aud"), json={
        "ruleset_version": version, "since": _iso(now - 7200), "until": _iso(now + 60)}).json()
    for _ in range(300):
        state = api.get("aud", f"/api/v1/replays/{job['job_id']}").json()
        if state["status"] in ("done", "failed"):
            break
        _t.sleep(0.1)
    assert state["status"] == "done", state
    report = api.get("aud", f"/api/v1/replays/{job['job_id']}/report").json()
    assert report["report_hash"] == state["report_hash"]
    hits = {r["rule_id"]: r["hit_count"] for r in report["rules"]}
    assert hits["11111111-2222-3333-4444-555555555555"] == 5
    diff = api.get("aud", f"/api/v1/replays/{job['job_id']}/diff").json()
    assert diff["only_replay"] and diff["both"] == diff["live_alerts"], diff  # the new rule's alerts are replay-only
    assert api.get("resp_a", "/api/v1/replays").status_code == 403


def test_upload_is_judged_in_the_whole_set_and_activations_roll_back(api) -> None:  # type: ignore[no-untyped-def]
    admin = api.headers("adm")
    before = next(v for v in api.get("op", "/api/v1/rules/versions").json() if v["active"])["version"]
    base = ("title: DNS to c-only\nid: 22222222-2222-3333-4444-555555555555\nname: dns_c_only\nstatus: test\n"
            "logsource: {category: dns}\ndetection:\n  sel:\n    query: c-only.example.org\n  condition: sel\n"
            "level: low\n")
    first = api.client.post("/api/v1/rules", headers=admin, json={"path": "custom/c_only.yml", "yaml": base})
    assert first.status_code == 201 and first.json()["active"], first.text
    # a correlation in its own file referring to the rule of another file: accepted (judged in the whole set)
    corr = ("title: Repeated c-only lookups\nid: 33333333-2222-3333-4444-555555555555\nstatus: test\n"
            "correlation:\n  type: event_count\n  rules: [dns_c_only]\n  group-by: [src_ip]\n  timespan: 5m\n"
            "  condition: {gte: 3}\nlevel: medium\n")
    second = api.client.post("/api/v1/rules", headers=admin, json={"path": "custom/c_corr.yml", "yaml": corr})
    assert second.status_code == 201, second.text
    assert "33333333-2222-3333-4444-555555555555" in [r["rule_id"] for r in api.get("op", "/api/v1/rules").json()]
    # a correlation naming a rule that exists nowhere: refused with the reason, nothing activated
    dangling = corr.replace("dns_c_only", "no_such_rule").replace("33333333", "44444444")
    refused = api.client.post("/api/v1/rules", headers=admin, json={"path": "custom/dangling.yml", "yaml": dangling})
    assert refused.status_code == 422 and "no_such_rule" in refused.json()["error"], refused.text
    versions = api.get("op", "/api/v1/rules/versions").json()
    assert [v["version"] for v in versions if v["active"]] == [second.json()["version"]]
    # roll back to the version before the uploads: the API's current rule set follows
    back = api.client.post(f"/api/v1/rules/versions/{before}/activate", headers=admin, json={"reason": "rollback"})
    assert back.status_code == 200 and back.json()["active"], back.text
    assert "33333333-2222-3333-4444-555555555555" not in [r["rule_id"] for r in api.get("op", "/api/v1/rules").json()]
    assert [v["version"] for v in api.get("op", "/api/v1/rules/versions").json() if v["active"]] == [before]
    assert api.client.post("/api/v1/rules/versions/0123456789abcdef/activate", headers=admin).status_code == 404
    assert api.client.post("/api/v1/rules/versions/not-a-version/activate", headers=admin).status_code == 422
    audit = api.get("aud", "/api/v1/audit?limit=200").json()
    records = audit["items"] if isinstance(audit, dict) else audit
    assert any(before in orjson.dumps(r).decode() and "activate" in orjson.dumps(r).decode() for r in records)


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat()


def test_ack_and_suppress_an_alert(api) -> None:  # type: ignore[no-untyped-def]
    alert = api.get("resp", "/api/v1/alerts").json()["items"][0]
    acked = api.client.post(f"/api/v1/alerts/{alert['alert_id']}/ack", headers=api.headers("resp"))
    assert acked.status_code == 200 and acked.json()["status"] in ("acknowledged", "investigating")
    made = api.client.post(f"/api/v1/alerts/{alert['alert_id']}/suppress", headers=api.headers("resp"),
                           json={"scope": "src_ip", "reason": "scanner under test", "days": 1})
    assert made.status_code == 201 and made.json()["value"] == alert["src_ip"]
    assert api.client.post(f"/api/v1/alerts/{alert['alert_id']}/suppress", headers=api.headers("resp"),
                           json={"scope": "cidr", "value": "nope", "reason": "bad"}).status_code == 422


def test_org_unit_and_asset_risk(api) -> None:  # type: ignore[no-untyped-def]
    units = {u["name"]: u for u in api.get("op", "/api/v1/org-units").json()}
    assert units[DEPT_A]["open_incidents"] >= 1 and units[DEPT_A]["risk"] > 0
    parent = DEPT_B.split("/")[0]
    assert units[parent]["open_incidents"] >= units[DEPT_B]["open_incidents"] >= 1
    assert api.get("op", f"/api/v1/org-units/{DEPT_B}").json()["name"] == DEPT_B
    assets = api.get("op", "/api/v1/assets").json()
    assert any(a["criticality"] for a in assets)
