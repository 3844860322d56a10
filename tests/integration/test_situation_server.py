"""The situation cycle on the ClickHouse server gives what it gives on embedded chDB: same anomalies, scores,
exposures, forecasts and warning levels from the same four seeded weeks; the bulletin renders from the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.situation import assess, cycle, early_warning, exposure, forecast, report
from tests import situation_support as seed

pytestmark = pytest.mark.integration
FEED = Path(__file__).resolve().parents[1] / "data" / "cve"


def _outcome(store: Any) -> dict[str, Any]:
    seed.seed(store)
    exposure.load_feed(store, [FEED / "nvdcve-2.0-synthetic.json"], [FEED / "kev-synthetic.json"])
    assess.backfill(store, assess.AssetBook(seed.INVENTORY.blocks()), seed.START_MS, seed.END_MS - seed.HOUR_MS)
    result = cycle.run_cycle(store, seed.END_MS, seed.INVENTORY)
    return {
        "anomalies": store.query("SELECT org_unit, metric, hour, observed, low, high FROM anomalies FINAL "
                                 "ORDER BY org_unit, metric, hour").rows,
        "scores": [(s["scope_kind"], s["scope"], s["score"], [f["ref"] for f in s["factors"]])
                   for s in assess.latest(store)],
        "history": assess.history(store, "org_unit", seed.UNIT_A, seed.START_MS, seed.END_MS),
        "exposures": [(e["cve_id"], e["ip"], e["port"], e["org_unit"]) for e in
                      exposure.exposures(store, seed.END_MS, seed.INVENTORY)],
        "levels": {k: v["level"] for k, v in early_warning.current(store).items()},
        "forecasts": {f["series"]: (f["model"], f["points"][:3], f["error"]) for f in forecast.latest_forecasts(store)},
        "changes": result.changes,
    }


def test_both_engines_agree(server_store, embedded_store) -> None:  # type: ignore[no-untyped-def]
    on_server = _outcome(server_store)
    embedded_store.use_database()
    on_chdb = _outcome(embedded_store)
    assert on_server["levels"] == {"": 2, seed.UNIT_B: 2, "民政局": 4, seed.UNIT_A: 4}
    assert len(on_server["anomalies"]) == 2 and len(on_server["exposures"]) == 4
    for key in on_server:
        assert on_server[key] == on_chdb[key], key


def test_bulletin_from_the_server(server_store) -> None:  # type: ignore[no-untyped-def]
    seed.seed(server_store)
    cycle.run_cycle(server_store, seed.END_MS, seed.INVENTORY)
    bulletin = report.render(server_store, "day", seed.END_MS, seed.INVENTORY)
    assert bulletin.pdf.startswith(b"%PDF") and "seeded incident 5" in bulletin.html
    assert bulletin.data["level"]["level"] == 2 and bulletin.data["incident_count"] == 2
