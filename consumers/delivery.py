"""The work message: what the dispatcher publishes and the worker consumes.

The body names the job and the attempt it is meant to start; everything else
(params included) is read from the ledger, so no patient data rides the broker.
Headers repeat the ids for operators reading the DLQ in the management UI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from domain.correlation import accept_or_empty

CONTENT_TYPE = "application/json"
MAX_BODY_BYTES = 4096
# When the attempt was due, in epoch milliseconds: the dispatcher's publish time plus
# the delay. An integer: AMQP carries a Python float as a 32-bit one, which rounds an
# epoch time to the nearest two minutes.
DUE_AT_HEADER = "x-due-at-ms"


class UndecodableDelivery(ValueError):
    """The message is not a delivery this system wrote."""


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
        if len(body) > MAX_BODY_BYTES:
            raise UndecodableDelivery(f"body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
        try:
            fields = json.loads(body)
            delivery = cls(
                job_id=UUID(fields["job_id"]),
                attempt=_int(fields["attempt"]),
                job_type=_str(fields["job_type"]),
                tenant=_str(fields["tenant"]),
                case_id=_str(fields["case_id"]),
                pool=_str(fields["pool"]),
                correlation_id=accept_or_empty(_str(fields.get("correlation_id", ""))),
                traceparent=_str((headers or {}).get("traceparent", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UndecodableDelivery(f"{type(exc).__name__}: {exc}") from None
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
