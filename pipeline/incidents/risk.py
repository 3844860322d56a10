"""Current risk of org units and assets, from their open incidents.

Score 0-100: each open incident adds its severity's weight, an org unit counts the incidents of the units
below it too. A first measure for the API's asset and org-unit views; the situation assessment refines it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pipeline.incidents.model import CLOSED, LEVELS
from pipeline.store.base import Store

WEIGHT = {"informational": 0, "low": 1, "medium": 3, "high": 7, "critical": 15}


def _score(counts: dict[str, int]) -> int:
    return min(100, sum(WEIGHT.get(level, 0) * n for level, n in counts.items()))


def _open_counts(store: Store, column: str) -> dict[str, dict[str, int]]:
    result = store.query(
        f"SELECT arrayJoin({column}) AS name, severity, count() FROM incidents FINAL "
        "WHERE status NOT IN {closed:Array(String)} GROUP BY name, severity", {"closed": list(CLOSED)})
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for name, severity, n in result.rows:
        out[name][severity] = n
    return out


def _entry(name: str, counts: dict[str, int]) -> dict[str, Any]:
    by_level = {level: counts.get(level, 0) for level in LEVELS}
    return {"open_incidents": sum(by_level.values()), "open_by_severity": by_level, "risk": _score(counts),
            "name": name}


def org_unit_risk(store: Store, known_units: list[str]) -> dict[str, dict[str, Any]]:
    """Every unit (known from the inventory, or seen on an open incident, and their ancestors) -> its risk."""
    direct = _open_counts(store, "org_units")
    units: set[str] = set()
    for unit in [*known_units, *direct]:
        parts = unit.split("/")
        units.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    rolled: dict[str, dict[str, int]] = {u: defaultdict(int) for u in units}
    for unit, counts in direct.items():
        parts = unit.split("/")
        for i in range(len(parts)):
            for level, n in counts.items():
                rolled["/".join(parts[: i + 1])][level] += n
    return {u: _entry(u, c) for u, c in sorted(rolled.items())}


def asset_risk(store: Store, known_assets: list[str]) -> dict[str, dict[str, Any]]:
    direct = _open_counts(store, "assets")
    return {a: _entry(a, direct.get(a, {})) for a in sorted({*known_assets, *direct})}
