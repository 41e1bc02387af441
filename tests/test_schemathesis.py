"""Generated requests against the OpenAPI document of the real service (`index-ticker serve`
under uvicorn, the shipped family, the simulator feed, the default limits) with the ingest and
admin tokens supplied: schemathesis draws valid and invalid path parameters, query strings,
headers and bodies for every operation, then the service must answer each without a server
error, in the status, content type, headers and body shape its document declares."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_security import ServedProcess, served_process

pytestmark = pytest.mark.system  # a served process, fuzzed over HTTP

INGEST_TOKEN = "schema-ingest-0123456789abcdef"
ADMIN_TOKEN = "schema-admin-0123456789abcdef"
# Examples drawn per operation in the fuzzing phase; the examples and coverage phases add
# their own (boundary values, missing and wrong-typed fields, unexpected methods).
MAX_EXAMPLES = 250
MIN_REQUESTS = 2_000  # the run as a whole, so a silently shrunken run fails
# Not checked: negative_data_rejection and positive_data_acceptance. POST /v1/ticks answers 200
# for a batch of invalid ticks by design (each refused by position), and a well-formed code
# that names no index is a 404.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

REQUESTS: defaultdict[str, Counter[int]] = defaultdict(Counter)  # operation -> status -> count


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    environment = {
        "INDEX_TICKER_INGEST_TOKEN": INGEST_TOKEN,
        "INDEX_TICKER_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    directory = tmp_path_factory.mktemp("schemathesis")
    with served_process(directory, environment, feed="simulator", log_level="warning") as served:
        yield served


def _known(service: ServedProcess) -> tuple[list[str], list[str], list[str]]:
    """Index codes, definition names and secids the service knows."""
    with httpx.Client(base_url=service.base_url, trust_env=False, timeout=10) as client:
        codes = [value["code"] for value in client.get("/v1/indices").json()]
        definitions = sorted(client.get("/v1/bases").json()["current"])
        constituents = client.get(f"/v1/indices/{codes[0]}/constituents").json()
    return codes, definitions, [line["secid"] for line in constituents["constituents"]]


@pytest.fixture(scope="module")
def api_schema(service: ServedProcess) -> Any:
    schema = schemathesis.openapi.from_url(f"{service.base_url}/openapi.json", timeout=10)
    codes, definitions, secids = _known(service)
    known = {"code": st.sampled_from(codes), "definition": st.sampled_from(definitions)}

    # Mixed in beside what schemathesis draws from the document: names that exist, so that
    # requests get past the 404 into the code that reads the rest of the request.
    @schema.hook
    def before_generate_path_parameters(context: Any, strategy: Any) -> Any:
        names = [name for name in known if "{" + name + "}" in context.operation.path]
        if not names:
            return strategy
        real = st.fixed_dictionaries({name: known[name] for name in names})
        return strategy | st.tuples(strategy, real).map(
            lambda pair: {**pair[0], **pair[1]} if isinstance(pair[0], dict) else pair[0]
        )

    @schema.hook
    def before_generate_body(context: Any, strategy: Any) -> Any:
        path = context.operation.path
        if path == "/v1/admin/bases":
            real = st.tuples(strategy, known["definition"]).map(
                lambda pair: (
                    {**pair[0], "definition": pair[1]} if isinstance(pair[0], dict) else pair[0]
                )
            )
            return strategy | real
        if path == "/v1/ticks":
            finite = st.floats(allow_nan=False, allow_infinity=False)  # what JSON can carry
            tick = st.fixed_dictionaries(
                {"secid": st.sampled_from(secids), "price": st.floats(0.01, 1e5) | st.text()},
                optional={"time": st.text() | finite, "volume": finite},
            )
            return strategy | st.lists(tick, max_size=20)
        return strategy

    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_every_answer_as_documented(case: Any) -> None:
    token = ADMIN_TOKEN if "/admin/" in case.operation.path else INGEST_TOKEN
    headers = {"Authorization": f"Bearer {token}"}
    response = case.call(headers=headers, timeout=30)
    REQUESTS[case.operation.label][response.status_code] += 1
    case.validate_response(response, checks=CHECKS, headers=headers)


def test_the_run_reached_every_operation_and_the_service_is_well(service: ServedProcess) -> None:
    assert REQUESTS, "run this module whole: the requests are counted by the test above"
    with httpx.Client(base_url=service.base_url, trust_env=False, timeout=10) as client:
        operations = {
            f"{method.upper()} {path}"
            for path, methods in client.get("/openapi.json").json()["paths"].items()
            for method in methods
        }
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["engine"]["state"] == "running"
    assert set(REQUESTS) == operations
    total = sum(sum(statuses.values()) for statuses in REQUESTS.values())
    errors = {op: s for op, statuses in REQUESTS.items() for s in statuses if s >= 500}
    summary = ", ".join(
        f"{op}: {dict(sorted(statuses.items()))}" for op, statuses in sorted(REQUESTS.items())
    )
    print(f"\nschemathesis: {total} requests across {len(REQUESTS)} operations; {summary}")
    assert not errors and total >= MIN_REQUESTS, summary
    # Nothing went wrong inside either: no unhandled error was logged.
    log = Path(service.output).read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
    assert service.process.poll() is None
