"""The worker supervisor's checks before it starts anything."""

from __future__ import annotations

import pytest

from infra.errors import InfraError
from infra.supervisor import supervise


def test_worker_processes_whose_ops_ports_would_pass_the_last_port_are_refused() -> None:
    with pytest.raises(InfraError, match="65535 to 65536"):
        supervise(2, ["worker"], ops_port=65535)
