"""The work message's codec: what the dispatcher writes reads back the same, and
anything else, whatever is wrong with it, is refused with one error type (the worker
dead-letters it with the reason and goes on)."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest

from application.delivery import MAX_BODY_BYTES, Delivery, UndecodableDelivery


def test_a_delivery_reads_back_as_written_with_its_copy_id() -> None:
    delivery = Delivery(uuid4(), 2, "echo", "t1", "c1", "default", "corr-1", "tp")
    again = Delivery.decode(delivery.body(), {"traceparent": "tp"})
    assert again == delivery
    assert len(delivery.delivery_id) == 16


def test_a_message_written_before_copies_had_ids_still_reads() -> None:
    fields = json.loads(Delivery(uuid4(), 1, "echo", "t1", "c1", "default").body())
    del fields["delivery_id"]
    assert Delivery.decode(json.dumps(fields).encode()).delivery_id == ""


def message(**raw: str) -> bytes:
    """A work message whose fields are the given raw JSON texts, the rest valid."""
    fields = {"job_id": f'"{uuid4()}"', "attempt": "1", "job_type": '"e"', "tenant": '"t"'}
    fields |= {"case_id": '"c"', "pool": '"p"'} | raw
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 2000 + b"]" * 2000,  # deep nesting: RecursionError inside the JSON decoder
        b'{"job_id": ' + b"[" * 1500 + b"]" * 1500 + b"}",
        b"\xff\xfe not utf-8",
        b"null",
        b'{"job_id": "not-a-uuid", "attempt": 1}',
        message(attempt="true"),
        message(delivery_id='"NOT HEX"'),
        message(attempt="0"),
        message(attempt="NaN"),
        b"x" * (MAX_BODY_BYTES + 1),
    ],
    ids=[
        "nested",
        "nested-field",
        "bytes",
        "null",
        "uuid",
        "bool-attempt",
        "delivery-id",
        "attempt-0",
        "nan",
        "too-long",
    ],
)
def test_anything_else_is_refused_with_one_error(body: bytes) -> None:
    with pytest.raises(UndecodableDelivery):
        Delivery.decode(body, {})
