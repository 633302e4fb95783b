"""Start the real processes for a benchmark: a fresh PostgreSQL schema and AMQP
prefix on the local services, torn down afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg

from gateway.caller import SCOPES
from gateway.tokens import mint
from infra.settings import DEV_AUTH_SECRET

ROOT = Path(__file__).resolve().parents[1]
MANAGEMENT = "http://127.0.0.1:15672/api"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    def __init__(self, app: str, logdir: Path) -> None:
        self.schema = f"bench_{uuid.uuid4().hex[:8]}"
        self.prefix = f"bench{uuid.uuid4().hex[:8]}"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("JOBLEDGER_")},
            "JOBLEDGER_APP": app,
            "JOBLEDGER_POSTGRES__SCHEMA": self.schema,
            "JOBLEDGER_AMQP__PREFIX": self.prefix,
            "JOBLEDGER_GATEWAY__PORT": str(port),
            "JOBLEDGER_AUTH__ENVIRONMENT": "development",  # the development key, on loopback
            "PYTHONPATH": str(ROOT),
        }
        self.logdir = logdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *command: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{len(self.processes)}-{command[0]}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "--log-level", "warning", *command],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append(process)
        return process

    def auth_headers(self) -> dict[str, str]:
        """A development token for the development tenant, with every scope."""
        token = mint(DEV_AUTH_SECRET, tenant="dev", subject="bench", scopes=SCOPES)
        return {"Authorization": f"Bearer {token}"}

    def pids(self) -> dict[str, int]:
        """Every process of the stack (a worker supervisor's children included)."""
        found: dict[str, int] = {}
        for process in self.processes:
            command = str(process.args[5]) if len(process.args) > 5 else "process"  # type: ignore[index]
            found[f"{command}:{process.pid}"] = process.pid
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
            if children.exists():
                for child in children.read_text().split():
                    found[f"{command}-child:{child}"] = int(child)
        return found

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/openapi.json", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the gateway did not come up")

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=jobledger", autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        with httpx.Client(auth=("guest", "guest"), timeout=60) as api:
            for kind in ("queues", "exchanges"):
                listed = api.get(  # the name filter needs a page, or it lists everything
                    f"{MANAGEMENT}/{kind}/%2F",
                    params={
                        "name": f"^{self.prefix}\\.",
                        "use_regex": "true",
                        "page": "1",
                        "page_size": "500",
                    },
                ).json()["items"]
                for item in [i for i in listed if i["name"].startswith(f"{self.prefix}.")]:
                    api.delete(f"{MANAGEMENT}/{kind}/%2F/{quote(item['name'], safe='')}")


@contextlib.contextmanager
def stack(app: str, logdir: Path) -> Iterator[Stack]:
    s = Stack(app, logdir)
    try:
        yield s
    finally:
        s.close()
