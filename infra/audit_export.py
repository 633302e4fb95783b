"""``jobledger audit export``: the token's tenant's events as NDJSON on standard
output, streamed from ``GET /audit/events`` (the ``jobs:audit`` scope), never held
in memory. Interrupted, it resumes with ``--after`` = the last line's position."""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

import httpx


def export(url: str, headers: dict[str, str], params: dict[str, str], out: BinaryIO) -> int:
    """Copy the export to ``out``; 0, or 1 with the gateway's reason on stderr."""
    try:
        with (
            httpx.Client(base_url=url, headers=headers, timeout=60) as client,
            client.stream("GET", "/audit/events", params=params) as response,
        ):
            if response.status_code != 200:
                response.read()
                print(f"{response.status_code}: {response.text[:500]}", file=sys.stderr)
                return 1
            for chunk in response.iter_raw():
                out.write(chunk)
            out.flush()
    except httpx.HTTPError as exc:
        print(f"the export from {url} broke off: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`| head`): stop, as a filter does, and keep the
        # interpreter's last flush of stdout from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
