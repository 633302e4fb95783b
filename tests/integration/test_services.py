"""The shared servers the suite runs on are set up as scripts/services leaves them."""

from __future__ import annotations

import subprocess

import pytest

# A test stack declares about twenty quorum queues (six delay levels, a DLQ, five lanes
# for each of its pools), four test processes run stacks at once, and a test that dies
# leaves its queues behind until the end of the run.
QUORUM_QUEUES_AT_ONCE = 600


def test_the_broker_can_hold_the_quorum_queues_of_the_suite(vhost: str) -> None:
    """RabbitMQ 3.10 reserves three handles of its file handle cache for each quorum
    queue, within a limit taken from its open-files limit at boot (about 927 under
    1024). Past it, every new connection waits for a handle forever and the node
    answers nothing: a CI run hung until its time ran out."""
    limit = subprocess.run(
        ["rabbitmqctl", "-q", "eval", "file_handle_cache:get_limit()."],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    if int(limit) < 3 * QUORUM_QUEUES_AT_ONCE:
        pytest.fail(
            f"RabbitMQ's file handle cache holds {limit} handles, "
            f"{int(limit) // 3} quorum queues: run scripts/services, which raises it",
            pytrace=False,
        )
