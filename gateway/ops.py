"""What operations endpoints are given: readiness probes, the metrics text and the
live workers. Built by infra/bootstrap.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

PROBE_TIMEOUT_S = 3.0
log = logging.getLogger("jobledger.ops")


@dataclass(frozen=True)
class LiveWorker:
    worker_id: str
    pool: str
    started_at: datetime
    heartbeat_at: datetime
    in_flight: list[str]


Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Ops:
    # name → a probe that raises (any exception) when that dependency is not ready
    probes: Mapping[str, Probe] = field(default_factory=dict)
    metrics: Callable[[], tuple[bytes, str]] | None = None
    workers: Callable[[], list[LiveWorker]] | None = None
    # The tenant a job belongs to, from the ledger (None: no such job).
    tenant_of: Callable[[str], str | None] | None = None
    # What an operator should know that does not make the process unready (blocking).
    warnings: Callable[[], dict[str, str]] | None = None


async def check_all(ops: Ops) -> dict[str, str]:
    """Every probe, concurrently: ``ok`` or why not."""

    async def check(name: str) -> str:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await ops.probes[name]()
        except TimeoutError:
            return f"no answer within {PROBE_TIMEOUT_S:.0f}s"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            # The answer is public: the error's text (hosts, users) goes to the log only.
            log.warning("readiness check %s failed: %s", name, exc)
            return f"failed: {type(exc).__name__}"
        return "ok"

    names = list(ops.probes)
    results = await asyncio.gather(*(check(n) for n in names))
    return dict(zip(names, results, strict=True))
