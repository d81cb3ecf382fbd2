"""A bounded schemathesis run against a real `marina up`: no 5xx, and every
response (status, content type, body, headers) is what the OpenAPI document says."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.marina import Marina

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@schemathesis.serializer("application/zip")
def _zip_bytes(ctx: object, value: object) -> bytes:
    """Package uploads: whatever bytes were generated (they are refused as zips)."""
    return value if isinstance(value, bytes) else str(value).encode()


EXAMPLES = 100
"""Cases per operation: about 20 operations, so a few hundred requests, within minutes."""


@pytest.mark.timeout(600)
def test_every_response_matches_the_document(marina: Marina) -> None:
    schema = schemathesis.openapi.from_url(marina.api + "/v1/openapi.json")
    headers = {"Authorization": f"Bearer {marina.token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19
    # A second pass names a real environment and task, so generated bodies and
    # queries reach the handlers behind the 404 (deleting is left to the first).
    env = marina.ok("POST", "/v1/environments", {"name": "fuzzed"})["id"]
    marina.ok(
        "POST",
        f"/v1/environments/{env}/services",
        {"package": "kubernetes-cluster", "properties": {"name": "k"}},
    )
    task = marina.run(env, "k:exportConfig")
    real = {"env_id": env, "task_id": task["id"], "name": task["files"][0]}
    passes = [(op, {}) for op in operations] + [
        (op, real)
        for op in operations
        # An environment's event stream never ends by design.
        if op.method.upper() != "DELETE" and not op.path.endswith("/events")
    ]
    for operation, fixed in passes:
        _fuzz(operation, fixed, headers)


def _fuzz(
    operation: schemathesis.APIOperation, fixed: dict[str, str], headers: dict[str, str]
) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: schemathesis.Case) -> None:
        for name, value in fixed.items():
            if case.path_parameters and name in case.path_parameters:
                case.path_parameters[name] = value
        case.call_and_validate(headers=headers, checks=CHECKS)

    conforms()
