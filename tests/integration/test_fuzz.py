"""Property-based fuzzing of the live gateway against its own OpenAPI document.

Schemathesis generates requests for every operation (valid and invalid alike),
sends them over real HTTP with a valid token, and checks that no response is a
5xx and that every status, header and body is the one the document declares.
Streams (tag ``stream``) never end and operational endpoints (tag ``ops``) are
tested elsewhere, so both are left out.

The default run is bounded for CI; a longer one:
    FUZZ_EXAMPLES=500 .venv/bin/pytest -q tests/integration/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import traceback

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import DataGenerationMethod
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.integration.conftest import Stack

# schemathesis 3.x builds on a jsonschema class that jsonschema deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:jsonschema.RefResolver is deprecated")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


@pytest.fixture
def object_generation() -> None:
    # Job ids are UUIDs: generate real ones, so requests reach the routes (404s
    # included) instead of all stopping at path validation.
    schemathesis.openapi.format("uuid", st.uuids().map(str))


@pytest.mark.usefixtures("object_generation")
def test_the_gateway_answers_every_generated_request_as_documented(stack: Stack) -> None:
    # No worker takes the default pool's work, so generated jobs stay queued and cost
    # nothing; a short read-your-writes wait keeps generated X-Ledger-Position cheap.
    stack.start(
        "run",
        JOBLEDGER_APP="dental.jobs",
        JOBLEDGER_WORKER__POOL="elsewhere",
        JOBLEDGER_GATEWAY__READ_YOUR_WRITES_TIMEOUT_S="0.1",
    )
    stack.wait_ready()
    schemathesis.experimental.OPEN_API_3_1.enable()  # FastAPI writes OpenAPI 3.1
    schema = schemathesis.from_uri(f"{stack.url}/openapi.json", base_url=stack.url)
    schema = schema.exclude(tag=["stream", "ops"])
    headers = stack.auth_headers()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, [op.verbose_name for op in operations]
    failures: dict[str, str] = {}
    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(data_generation_method=DataGenerationMethod.positive),
            operation.as_strategy(data_generation_method=DataGenerationMethod.negative),
        )

        @given(case=cases)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=EXAMPLES <= 25,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            # negative_data_rejection is left out: schemathesis 3.x also flags "negative"
            # cases whose mutation does not survive serialisation (?limit=241 for a
            # limit of 1..500). test_input.py checks that bad input is refused. What is
            # checked is the answer, not its speed: the timeout leaves room for a loaded
            # machine (four test processes on two cores).
            case.call_and_validate(
                headers=headers, timeout=30, excluded_checks=(negative_data_rejection,)
            )

        try:
            fuzz()
        except Exception as exc:  # every operation is fuzzed; all failures are reported
            # A flaky failure is a group: its members say what the gateway answered.
            failures[operation.verbose_name] = "".join(traceback.format_exception(exc))[-6000:]
    log = stack.logs[0].read_text()[-4000:] if failures else ""
    assert not failures, "\n\n".join([*(f"{k}:\n{v}" for k, v in failures.items()), log])


# JSON that Python's parser takes and the specification (or any store) does not, and
# JSON that is only unusual: raw texts, placed anywhere in a body.
HOSTILE = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "-1e999",
        '"\\u0000"',
        '"a\\u0000b"',
        '"\\ud800"',
        '"x\\udfffy"',
        "1" + "0" * 400,
        "-" + "9" * 50,
        "[" * 3000 + "]" * 3000,
        '"' + "\\\\" * 2000 + '"',
    ]
)
PLAIN = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
).map(json.dumps)


def _document(leaves: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    keys = st.text(max_size=8).map(json.dumps)
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
            st.lists(st.tuples(keys, children), max_size=4).map(
                lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
            ),
        ),
        max_leaves=8,
    )


def test_hostile_values_anywhere_in_a_body_are_refused_and_never_logged(stack: Stack) -> None:
    """NaN, infinities, huge numbers, NUL, lone surrogates and deep nesting, in every
    field of every submit route (neither schemathesis nor the test above makes them):
    no 5xx, and nothing of them in the log."""
    stack.start("run", JOBLEDGER_APP="dental.jobs", JOBLEDGER_WORKER__POOL="elsewhere")
    stack.wait_ready()
    hostile_doc = _document(st.one_of(HOSTILE, PLAIN)).filter(
        lambda text: any(
            h in text
            for h in (
                "NaN",
                "Infinity",
                "e400",
                "e999",
                "\\u0000",
                "\\ud",
                "[[[",
                "0" * 400,
                "9" * 50,
                "\\\\\\\\",
            )
        )
    )
    answered: dict[int, int] = {}
    with stack.client() as client:

        @given(
            route=st.sampled_from(["/jobs", "/jobs/case-1/segment", "/jobs/case-1/process"]),
            doc=hostile_doc,
            field=st.sampled_from(["type", "case_id", "params", "extra"]),
        )
        @settings(
            max_examples=EXAMPLES * 4,
            deadline=None,
            database=None,
            derandomize=EXAMPLES <= 25,
            suppress_health_check=list(HealthCheck),
        )
        def send(route: str, doc: str, field: str) -> None:
            if route == "/jobs":
                fields = {"type": '"segment"', "case_id": '"c-1"', "params": '{"scan_id": "s"}'}
                fields[field] = doc
                body = "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"
            else:
                body = doc
            response = client.post(
                route, content=body.encode(), headers={"content-type": "application/json"}
            )
            answered[response.status_code] = answered.get(response.status_code, 0) + 1
            assert response.status_code < 500, (route, body[:200], response.text[:500])

        send()
    log = stack.logs[0].read_text()
    assert "Traceback" not in log, log[-3000:]
    assert set(answered) <= {202, 404, 409, 413, 422}, answered
