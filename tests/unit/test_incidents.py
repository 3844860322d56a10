"""Incident grouping and lifecycle on the embedded store."""

from __future__ import annotations

import pytest

from pipeline.incidents import lifecycle
from pipeline.incidents.correlate import GroupingPolicy, IncidentCorrelator, derive_severity
from pipeline.incidents.model import IncidentError, get_incident, load_incidents

T0 = 1_714_550_400_000
MIN = 60_000


def alert(n: int, at_ms: int, entity: str = "src_ip=10.1.1.1", rule: str = "r1", level: str = "medium",
          **context: str) -> dict:
    return {"alert_id": f"a{n:04d}", "rule_id": rule, "title": f"rule {rule}", "level": level, "entity": entity,
            "first_seen": at_ms, "last_seen": at_ms + MIN, "event_ids": [], "src_org_unit": "民政局", **context}


def _all(store) -> list:  # type: ignore[no-untyped-def]
    return sorted(load_incidents(store, "1", {}), key=lambda i: i.first_seen)


def test_alerts_group_by_entity_and_time_gap(embedded_store) -> None:  # type: ignore[no-untyped-def]
    correlator = IncidentCorrelator(embedded_store, GroupingPolicy(gap_s=3600))
    result = correlator.process([alert(1, T0), alert(2, T0 + 30 * MIN), alert(3, T0 + 10 * MIN, "src_ip=10.9.9.9")])
    assert len(result.opened) == 2 and result.joined == 1
    # 3 h after the last alert of 10.1.1.1: beyond the gap, a new incident
    later = correlator.process([alert(4, T0 + 31 * MIN + 3 * 60 * MIN)])
    assert len(later.opened) == 1
    incidents = _all(embedded_store)
    by_key = {}
    for incident in incidents:
        by_key.setdefault(incident.group_key, []).append(incident.alert_count)
    assert by_key == {"src_ip=10.1.1.1": [2, 1], "src_ip=10.9.9.9": [1]}


def test_reprocessing_is_idempotent_and_suppressed_alerts_open_nothing(embedded_store) -> None:  # type: ignore[no-untyped-def]
    correlator = IncidentCorrelator(embedded_store)
    batch = [alert(1, T0), alert(2, T0 + MIN)]
    first = correlator.process(batch)
    again = IncidentCorrelator(embedded_store).process(batch)  # a restarted correlator sees the same alerts
    assert len(first.opened) == 1 and again.opened == [] and again.already_linked == 2
    assert correlator.process([alert(3, T0, "src_ip=10.7.7.7") | {"suppression_id": "s1"}]).opened == []
    assert len(_all(embedded_store)) == 1


def test_group_by_policy_and_multi_stage_severity(embedded_store) -> None:  # type: ignore[no-untyped-def]
    policy = GroupingPolicy(group_by=("dst_asset", "entity"))
    correlator = IncidentCorrelator(embedded_store, policy)
    alerts = [alert(i, T0 + i * MIN, f"src_ip=10.0.0.{i}", rule=f"r{i}", level="medium", dst_asset="oa")
              for i in range(3)]
    correlator.process(alerts)
    (incident,) = _all(embedded_store)
    assert incident.group_key == "dst_asset=oa" and sorted(incident.rule_ids) == ["r0", "r1", "r2"]
    assert incident.severity == "high"  # medium, one step up for three distinct rules
    assert derive_severity("high", 5, 1) == "critical" and derive_severity("critical", 5, 9) == "critical"
    with pytest.raises(ValueError):
        GroupingPolicy(group_by=("nonsense",))


def test_lifecycle_transitions_and_timeline(embedded_store) -> None:  # type: ignore[no-untyped-def]
    IncidentCorrelator(embedded_store).process([alert(1, T0)])
    (incident,) = _all(embedded_store)
    iid = incident.incident_id
    lifecycle.update(embedded_store, iid, "ann", status="investigating", assignee="ann", tags=["apt", "apt", " "])
    with pytest.raises(IncidentError, match="cannot move"):
        lifecycle.update(embedded_store, iid, "ann", status="new")
    lifecycle.update(embedded_store, iid, "ann", status="contained")
    lifecycle.update(embedded_store, iid, "ann", status="resolved", reason="reimaged")
    lifecycle.add_note(embedded_store, iid, "bob", "verified clean")
    done = get_incident(embedded_store, iid)
    assert done.status == "resolved" and done.assignee == "ann" and done.tags == ["apt"]
    steps = [(e["actor"], e["action"], e["detail"].get("to")) for e in lifecycle.timeline(embedded_store, iid)]
    assert steps[0][1] == "opened" and ("ann", "status", "investigating") in steps
    assert ("ann", "status", "resolved") in steps and steps[-1][:2] == ("bob", "note")
    # a closed incident takes no new alerts: the next one for the entity opens a new incident
    assert len(IncidentCorrelator(embedded_store).process([alert(2, T0 + 2 * MIN)]).opened) == 1
