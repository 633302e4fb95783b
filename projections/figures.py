"""A tenant's figures of the last hour, per pool, read from the job view (the
dashboard's queues page): jobs submitted, succeeded and failed per minute, the jobs
waiting for their first attempt at the end of each minute, and the queue wait
(first start less submission) at the 50th and 95th percentiles.

No time series is kept: the rows of the jobs that changed in the window (the index
on tenant and ``updated_at``) and the jobs still waiting (the partial index of
waiting jobs) hold every fact these need. The view keeps a job's latest start, so
the waits are those of first attempts (``attempt = 1``): a retried job's later
start is not a queue wait."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.sql import SQL, Composable

MINUTES = 60
SERIES = ("submitted", "succeeded", "failed", "waiting")

_RECENT = """
WITH p(job_type, pool) AS (SELECT * FROM unnest(%(types)s::text[], %(pools)s::text[])),
r AS (
  SELECT coalesce(p.pool, '') AS pool, v.status, v.attempt,
         v.submitted_at, v.started_at, v.finished_at
  FROM {t} v LEFT JOIN p USING (job_type)
  WHERE v.tenant = %(tenant)s
    AND (v.updated_at >= %(since)s OR v.status IN ('queued', 'retry_scheduled'))
)
"""

COUNTS = (
    _RECENT
    + """
SELECT pool, 'submitted' AS what,
       floor(extract(epoch FROM submitted_at - %(since)s) / 60)::int AS minute, count(*) AS n
FROM r WHERE submitted_at >= %(since)s GROUP BY 1, 2, 3
UNION ALL
SELECT pool, status, floor(extract(epoch FROM finished_at - %(since)s) / 60)::int, count(*)
FROM r WHERE finished_at >= %(since)s AND status IN ('succeeded', 'failed') GROUP BY 1, 2, 3
UNION ALL
SELECT r.pool, 'waiting', m.minute, count(*)
FROM r CROSS JOIN LATERAL generate_series(
  -- the minutes m whose end (since + m + 1 minutes) is at or after the submission
  -- and before the first start (or the end of a job cancelled while it waited)
  greatest(0, ceil(extract(epoch FROM r.submitted_at - %(since)s) / 60)::int - 1),
  least(%(last)s, ceil(extract(epoch FROM coalesce(least(r.started_at, r.finished_at),
    %(since)s + (%(last)s + 2) * interval '1 minute') - %(since)s) / 60)::int - 2)
) AS m(minute)
WHERE r.attempt <= 1
GROUP BY 1, 2, 3
"""
)

WAITS = (
    _RECENT
    + """
SELECT pool,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - submitted_at))
         AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - submitted_at))
         AS p95
FROM r WHERE attempt = 1 AND started_at >= %(since)s GROUP BY pool
"""
)


@dataclass
class PoolFigures:
    """One pool's last hour: a count per minute for each of ``SERIES``, oldest first."""

    series: dict[str, list[int]] = field(
        default_factory=lambda: {name: [0] * MINUTES for name in SERIES}
    )
    wait_p50_s: float | None = None
    wait_p95_s: float | None = None


def statements(table: Composable) -> tuple[bytes, bytes]:
    return (
        SQL(COUNTS).format(t=table).as_bytes(None),
        SQL(WAITS).format(t=table).as_bytes(None),
    )


def collect(
    counts: list[dict[str, Any]], waits: list[dict[str, Any]], pools: Mapping[str, str]
) -> dict[str, PoolFigures]:
    """Every pool of ``pools`` (job type -> pool), and any other the rows name ('' for
    a job type no longer registered), with its figures."""
    figures = {pool: PoolFigures() for pool in pools.values()}
    for row in counts:
        minute = row["minute"]
        if 0 <= minute < MINUTES and row["what"] in SERIES:
            figures.setdefault(row["pool"], PoolFigures()).series[row["what"]][minute] = row["n"]
    for row in waits:
        pool = figures.setdefault(row["pool"], PoolFigures())
        pool.wait_p50_s, pool.wait_p95_s = row["p50"], row["p95"]
    return figures


def parameters(tenant: str, since: datetime, pools: Mapping[str, str]) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "since": since,
        "last": MINUTES - 1,
        "types": list(pools),
        "pools": list(pools.values()),
    }
