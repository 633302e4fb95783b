"""The worker supervisor's checks before it starts anything."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from infra.errors import InfraError
from infra.supervisor import supervise

ROOT = Path(__file__).resolve().parents[2]


def test_worker_processes_whose_ops_ports_would_pass_the_last_port_are_refused() -> None:
    with pytest.raises(InfraError, match="65535 to 65536"):
        supervise(2, ["worker"], ops_port=65535)


# Children that exit at once, under a supervisor that records its backoffs and stops
# itself after the fourth; argv[1] is how long a child must run to have run well.
DYING = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    from infra import supervisor

    supervisor.RAN_WELL_S = float(sys.argv[1])
    slept = []

    def sleep(seconds):
        slept.append(seconds)

    def start(command, pass_fds=(), **env):
        if len(slept) == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return subprocess.Popen([sys.executable, "-c", "pass"])

    supervisor.time.sleep = sleep
    supervisor.start = start
    supervisor.supervise(1, ["worker"])
    print(*slept)
    """
)


@pytest.mark.parametrize(
    ("ran_well_s", "backoffs"), [("3600", "0.5 1.0 2.0 4.0"), ("0", "0.5 0.5 0.5 0.5")]
)
def test_a_child_that_dies_young_again_waits_longer_and_one_that_ran_well_does_not(
    ran_well_s: str, backoffs: str
) -> None:
    supervised = subprocess.run(
        [sys.executable, "-c", DYING, ran_well_s],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert supervised.stdout.strip() == backoffs
