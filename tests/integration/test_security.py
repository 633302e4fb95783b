"""Who may do what, against the live gateway: tokens, scopes, tenants and actors."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import pytest

from application.submissions import IDEMPOTENCY_NAMESPACE
from domain.origin import Origin
from gateway.caller import ADMIN, READ, WRITE
from infra import ledger_store
from infra.settings import LedgerSettings, PostgresSettings
from tests.integration.conftest import (
    TENANT,
    Stack,
    eventually,
    submit,
    wait_for_status,
)

# Its tests that take ``running`` keep to jobs, cases and tenants of their own.
pytestmark = pytest.mark.shared_stack


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_request_without_a_valid_token_gets_401_with_the_reason(running: Stack) -> None:
    header, _, signature = running.token().split(".")
    forged = _b64({"sub": "x", "tenant": TENANT, "scope": ADMIN, "exp": 9999999999})
    claims = {"sub": "x", "tenant": TENANT, "scope": READ, "exp": int(time.time()) + 60}
    refused = {
        "": "missing bearer token",
        running.token(ttl_s=-120): "token expired",
        f"{header}.{forged}.{signature}": "signature does not verify",
        running.token(secret="a-different-key-for-the-same-claims-000"): "signature does not",
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.": "only HS256",
        "garbage": "Not enough segments",
        running.token(tenant="../etc"): "'tenant' claim",
    }
    with httpx.Client(base_url=running.url, timeout=10) as client:
        for token, reason in refused.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = client.get(f"/jobs/{uuid.uuid4()}", headers=headers)
            assert response.status_code == 401, (token, response.text)
            assert reason in response.json()["detail"], response.text
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer realm="jobledger"')
            assert ("invalid_token" in challenge) == bool(token)
        assert client.post("/jobs", json={}).status_code == 401  # before the body is looked at
        assert client.get("/openapi.json").status_code == 200  # the spec is public
        assert client.get("/healthz").status_code == 200  # and the probes
        assert client.get("/metrics").status_code == 401  # metrics span every tenant


def test_each_route_needs_its_scope(running: Stack) -> None:
    with running.client(scopes=(READ, WRITE)) as writer:
        job = submit(writer, "echo", {"text": "scoped"})
        assert writer.get("/dlq").status_code == 403
        assert writer.get("/workers").status_code == 403
        assert writer.get("/metrics").status_code == 403
    with running.client(scopes=(READ,)) as reader:
        assert reader.get(f"/jobs/{job['id']}").status_code == 200
        denied = reader.post("/jobs", json={"type": "echo", "case_id": "c", "params": {}})
        assert denied.status_code == 403
        assert "jobs:write" in denied.json()["detail"]
        assert 'error="insufficient_scope"' in denied.headers["WWW-Authenticate"]
        assert reader.post(f"/jobs/{job['id']}/cancel").status_code == 403
        assert reader.post(f"/jobs/{job['id']}/retry").status_code == 403
        assert reader.post("/jobs/c/echo", json={"text": "x"}).status_code == 403
    with running.client(scopes=(ADMIN,)) as operator:
        assert operator.get("/dlq").status_code == 200
        assert operator.get("/workers").status_code == 200
        assert operator.get("/metrics").status_code == 200
        assert operator.get(f"/jobs/{job['id']}").status_code == 403
    with running.client(scopes=()) as nobody:
        assert nobody.get("/jobs/case-1/jobs").status_code == 403


def test_the_access_token_query_parameter_is_accepted_on_get_only(running: Stack) -> None:
    token = running.token()
    with httpx.Client(base_url=running.url, timeout=10) as client:
        listed = client.get("/jobs/case-1/jobs", params={"access_token": token})
        assert listed.status_code == 200
        posted = client.post(
            "/jobs",
            params={"access_token": token},
            json={"type": "echo", "case_id": "c", "params": {"text": "x"}},
        )
        assert posted.status_code == 401
        assert posted.json()["detail"] == "missing bearer token"


def test_another_tenants_job_is_not_found_on_every_route(running: Stack) -> None:
    with running.client() as own:
        job = submit(own, "echo", {"text": "mine"}, case_id="shared-case")
        wait_for_status(own, job["id"])
    unknown = f"/jobs/{uuid.uuid4()}"
    with running.client(tenant="other") as other:
        not_found = other.get(unknown).json()
        for method, path in [
            ("GET", f"/jobs/{job['id']}"),
            ("GET", f"/jobs/{job['id']}/events"),
            ("POST", f"/jobs/{job['id']}/cancel"),
            ("POST", f"/jobs/{job['id']}/retry"),
        ]:
            response = other.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json() == not_found
        assert other.get("/jobs/shared-case/jobs").json()["items"] == []
        own_job = submit(other, "echo", {"text": "theirs"}, case_id="shared-case")
        listed = eventually(
            lambda: other.get("/jobs/shared-case/jobs").json()["items"], 10, "the listing"
        )
        assert [j["id"] for j in listed] == [own_job["id"]]
    with running.client() as own:
        listed = own.get("/jobs/shared-case/jobs").json()["items"]
        assert [j["id"] for j in listed] == [job["id"]]


def test_an_idempotency_key_never_reaches_another_tenants_job(running: Stack) -> None:
    key = {"Idempotency-Key": "order-17"}
    body = {"type": "echo", "case_id": "case-k", "params": {"text": "x"}}
    with running.client() as own:
        first = own.post("/jobs", json=body, headers=key).json()
    with running.client(tenant="other") as other:
        theirs = other.post("/jobs", json=body, headers=key)
        assert theirs.status_code == 202 and theirs.json()["id"] != first["id"]

    # A job of tenant "dev" under the very id tenant "other"'s key maps to (as if two
    # keys collided): the submit answers 404, exactly like an unknown job.
    env = running.env
    pg = PostgresSettings(
        dbname=env["JOBLEDGER_POSTGRES__DBNAME"], schema=env["JOBLEDGER_POSTGRES__SCHEMA"]
    )
    ledger = ledger_store.open_ledger(pg, LedgerSettings(group_commit=False))
    taken = uuid.uuid5(IDEMPOTENCY_NAMESPACE, "other\ncollides")
    ledger.submit_job(
        job_id=taken,
        tenant=TENANT,
        case_id="case-k",
        job_type="echo",
        params={"text": "x"},
        pool="default",
        max_attempts=1,
        origin=Origin("tester"),
    )
    ledger.close()
    collide = {"Idempotency-Key": "collides"}
    with running.client(tenant="other") as other:
        not_found = other.get(f"/jobs/{uuid.uuid4()}").json()
        for response in [
            other.post("/jobs", json=body, headers=collide),
            other.post("/jobs/case-k/echo", json={"text": "x"}, headers=collide),
        ]:
            assert response.status_code == 404, response.text
            assert response.json() == not_found


def test_the_dlq_lists_only_the_callers_tenant(running: Stack) -> None:
    with running.client() as own:
        job = submit(own, "flaky_twice", {"fail_attempts": 5})
        wait_for_status(own, job["id"])
        listed = eventually(lambda: own.get("/dlq").json(), 15, "the dead letter")
        assert [d["job_id"] for d in listed] == [job["id"]]
    with running.client(tenant="other") as other:
        assert other.get("/dlq").json() == []


def test_the_history_shows_who_did_what(running: Stack) -> None:
    with running.client(subject="alice") as alice:
        job = submit(alice, "nap", {"seconds": 20})
        wait_for_status(alice, job["id"], {"running"})
    with running.client(subject="bob") as bob:
        assert bob.post(f"/jobs/{job['id']}/cancel").status_code == 200
        wait_for_status(bob, job["id"], {"cancelled"})
    with running.client(subject="carol") as carol:
        assert carol.post(f"/jobs/{job['id']}/retry").status_code == 202
        events = carol.get(f"/jobs/{job['id']}/events").json()
        carol.post(f"/jobs/{job['id']}/cancel")
    actors = {e["type"]: e["actor"] for e in events}
    assert actors["Submitted"] == "alice"
    assert actors["CancelRequested"] == "bob"
    assert actors["RetryRequested"] == "carol"
    assert actors["Started"] not in {"alice", "bob", "carol"}  # a worker


def test_the_gateway_refuses_to_start_in_production_with_the_development_key(
    stack: Stack,
) -> None:
    env = {k: v for k, v in stack.env.items() if k != "JOBLEDGER_AUTH__SECRET"}
    stack.env = {**env, "JOBLEDGER_AUTH__ENVIRONMENT": "production"}
    gateway = stack.start("gateway")
    assert gateway.wait(timeout=30) == 2
    assert "well-known development key" in stack.logs[-1].read_text()
    stack.processes.clear()
    stack.logs.clear()


def test_the_token_command_mints_what_the_gateway_accepts_and_submit_sends_jobledger_token(
    running: Stack,
) -> None:
    minted = running.cli("token", "--tenant", "clinic-7", "--subject", "dr-who", "--scope", READ)
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    with httpx.Client(base_url=running.url, timeout=10) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/jobs/case-1/jobs", headers=headers).status_code == 200
        assert client.post("/jobs", headers=headers, json={}).status_code == 403  # read only

    writer = running.token(tenant="clinic-7", subject="dr-who", scopes=(READ, WRITE))
    submitted = running.cli(
        "submit",
        "echo",
        "tok-case",
        "--param",
        "text=hi",
        "--url",
        running.url,
        JOBLEDGER_TOKEN=writer,
    )
    assert submitted.returncode == 0, submitted.stderr
    with running.client(tenant="clinic-7") as clinic:
        [job] = eventually(lambda: clinic.get("/jobs/tok-case/jobs").json()["items"], 10)
        assert job["submitted_by"] == "dr-who"
    with running.client() as dev:
        assert dev.get("/jobs/tok-case/jobs").json()["items"] == []

    dev_key = running.cli(
        "token",
        "--tenant",
        "t",
        "--subject",
        "s",
        without=("JOBLEDGER_AUTH__SECRET",),
        JOBLEDGER_AUTH__ENVIRONMENT="production",
    )
    assert dev_key.returncode == 2
    assert "well-known development key" in dev_key.stderr
