"""The work message: what the dispatcher publishes and the worker consumes.

The body names the job, the attempt it is meant to start and the copy it is
(``delivery_id``, new for every publish); everything else, params included, is read
from the ledger, so no patient data rides the broker. Headers repeat the ids for
operators reading the DLQ in the management UI. Nothing a message says is believed
without the ledger: the worker checks it against the job it names."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from domain.correlation import accept_or_empty

CONTENT_TYPE = "application/json"
MAX_BODY_BYTES = 4096
# When the attempt was due, in epoch milliseconds: the dispatcher's publish time plus
# the delay. An integer: AMQP carries a Python float as a 32-bit one, which rounds an
# epoch time to the nearest two minutes.
DUE_AT_HEADER = "x-due-at-ms"
DELIVERY_ID = re.compile(r"[0-9a-f]{0,32}")


class UndecodableDelivery(ValueError):
    """The message is not a delivery this system wrote."""


def new_delivery_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Delivery:
    job_id: UUID
    attempt: int
    job_type: str
    tenant: str
    case_id: str
    pool: str
    correlation_id: str = ""
    traceparent: str = ""
    delivery_id: str = field(default_factory=new_delivery_id)

    @property
    def message_id(self) -> str:
        return f"{self.job_id}:{self.attempt}"

    def body(self) -> bytes:
        fields = {
            "job_id": str(self.job_id),
            "attempt": self.attempt,
            "job_type": self.job_type,
            "tenant": self.tenant,
            "case_id": self.case_id,
            "pool": self.pool,
            "correlation_id": self.correlation_id,
            "delivery_id": self.delivery_id,
        }  # the trace context rides in the headers
        return json.dumps(fields, separators=(",", ":")).encode()

    def headers(self) -> dict[str, Any]:
        headers: dict[str, Any] = {
            "x-job-id": str(self.job_id),
            "x-job-type": self.job_type,
            "x-attempt": self.attempt,
            "x-tenant": self.tenant,
            "x-correlation-id": self.correlation_id,
        }
        if self.traceparent:
            headers["traceparent"] = self.traceparent
        return headers

    @classmethod
    def decode(cls, body: bytes, headers: dict[str, Any] | None = None) -> Delivery:
        """The delivery a message carries; UndecodableDelivery for anything else,
        whatever is wrong with it (size, nesting, types, encoding)."""
        if len(body) > MAX_BODY_BYTES:
            raise UndecodableDelivery(f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        try:
            fields = json.loads(body)
            delivery = cls(
                job_id=UUID(_str(fields["job_id"])),
                attempt=_int(fields["attempt"]),
                job_type=_str(fields["job_type"]),
                tenant=_str(fields["tenant"]),
                case_id=_str(fields["case_id"]),
                pool=_str(fields["pool"]),
                correlation_id=accept_or_empty(_str(fields.get("correlation_id", ""))),
                traceparent=_str((headers or {}).get("traceparent", "")),
                delivery_id=_delivery_id(fields.get("delivery_id", "")),
            )
        except Exception as exc:  # noqa: BLE001 - nothing a message holds may escape
            raise UndecodableDelivery(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if delivery.attempt < 1:
            raise UndecodableDelivery(f"attempt {delivery.attempt} is not a positive number")
        return delivery


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _delivery_id(value: object) -> str:
    text = _str(value)
    if not DELIVERY_ID.fullmatch(text):
        raise ValueError("delivery_id is not up to 32 lowercase hex digits")
    return text
