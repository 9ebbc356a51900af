"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis): no input may cause a 5xx."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from fakeface.serve import ServeConfig, create_app

schemathesis = pytest.importorskip("schemathesis")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api_schema(tiny_run):
    app = create_app(ServeConfig(checkpoint=str(tiny_run[1]), precision="fp32", max_upload_bytes=100_000))
    with TestClient(app):  # runs the lifespan: the model is loaded for every fuzzed call
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_input_makes_the_server_fail(api_schema):
    from hypothesis import given
    from hypothesis import strategies as st

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/model", "/healthz"}

    @given(case=st.one_of(*[op.as_strategy() for op in operations]))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call()
        assert response.status_code < 500, (case.path, response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}  # the stable error shape

    check()
