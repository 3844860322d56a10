"""Schemathesis on the ClickHouse server engine (the unit module runs it on chDB): parameters travel through
clickhouse-driver here, so what it escapes and what the server parses is exercised too."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from api.app import build_app
from tests.api_support import Seeded, seeded_app
from tests.unit.test_api_contract import _user_for

APP = build_app()
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP)


@pytest.fixture(scope="module")
def seeded(clickhouse_server, tmp_path_factory) -> Seeded:  # type: ignore[no-untyped-def]
    import uuid

    from pipeline.store.server import ServerStore

    store = ServerStore(f"{clickhouse_server}/contract_{uuid.uuid4().hex[:8]}")
    store.ensure_schema()
    data = seeded_app(store, tmp_path_factory.mktemp("contract"))
    APP.state.ganzhi = data.app.state.ganzhi
    yield data
    data.close()
    store.execute(f"DROP DATABASE IF EXISTS {store.database}")


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_on_the_server_engine(case, seeded: Seeded) -> None:  # type: ignore[no-untyped-def]
    headers = seeded.headers(_user_for(case.method.upper(), case.path))
    case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])
