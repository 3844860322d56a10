"""Schemathesis against the API's own OpenAPI schema: generated requests (valid and invalid) on every
operation, with the role each operation needs, must never produce a server error or a response that
violates the schema."""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from api.app import build_app
from tests.api_support import Seeded, seeded_app

EXAMPLES = 10  # per operation; enough to reach every parameter's validation, small enough for CI
STATEFUL_SCENARIOS = 15  # call sequences of up to 6 steps
APP = build_app()  # the schema is known at import; the seeded state is attached by the fixture below
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP)


@pytest.fixture(scope="module")
def seeded(chdb_path, tmp_path_factory) -> Seeded:  # type: ignore[no-untyped-def]
    from pipeline.store.embedded import EmbeddedStore

    store = EmbeddedStore(chdb_path, database="contract_" + uuid.uuid4().hex[:8])
    store.ensure_schema()
    data = seeded_app(store, tmp_path_factory.mktemp("contract"))
    APP.state.ganzhi = data.app.state.ganzhi
    yield data
    data.close()


def _user_for(method: str, path: str) -> str:
    if path.startswith(("/api/v1/users", "/api/v1/tokens")) or (path.startswith("/api/v1/rules") and method != "GET"):
        return "adm"
    if path.startswith(("/api/v1/audit", "/api/v1/replays")):
        return "aud"
    return "resp"


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case, seeded: Seeded) -> None:  # type: ignore[no-untyped-def]
    seeded.store.use_database()  # the session's chDB connection is shared: make this module's database current
    headers = seeded.headers(_user_for(case.method.upper(), case.path))
    case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])


class _Workflow(schema.as_state_machine()):  # type: ignore[misc]
    """Stateful: sequences of calls chained by the links schemathesis infers from the responses and path
    parameters (list incidents -> get / patch / note one, list alerts -> ack / suppress one, upload a rule ->
    activate its version, ...), each call with the role it needs."""

    seeded: Seeded | None = None

    def get_call_kwargs(self, case):  # type: ignore[no-untyped-def]
        assert self.seeded is not None
        self.seeded.store.use_database()
        return {"headers": self.seeded.headers(_user_for(case.method.upper(), case.path))}

    def validate_response(self, response, case, additional_checks=None, **kwargs):  # type: ignore[no-untyped-def]
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])


def test_stateful_call_sequences_give_no_server_errors(seeded: Seeded) -> None:
    _Workflow.seeded = seeded
    _Workflow.run(settings=settings(max_examples=STATEFUL_SCENARIOS, stateful_step_count=6, deadline=None,
                                    suppress_health_check=list(HealthCheck)))
