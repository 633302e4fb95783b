"""How long the command line takes to answer, and what a worker process imports.

    .venv/bin/python -m bench.startup

Prints the median wall time of ``jobledger --help`` and of importing each process's
module in a fresh interpreter, and whether the worker's imports include an HTTP
server, client or token library."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from bench.stack import ROOT

RUNS = 7
HEAVY = ("fastapi", "starlette", "uvicorn", "httpx", "jwt")


def timed(argv: list[str]) -> float:
    samples = []
    for _ in range(RUNS):
        began = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    jobledger = str(ROOT / ".venv" / "bin" / "jobledger")
    print(f"jobledger --help                {timed([jobledger, '--help']) * 1e3:7.0f} ms")
    for module in ("infra.worker_process", "infra.ledger_processes", "infra.gateway_process"):
        seconds = timed([sys.executable, "-c", f"import {module}"])
        print(f"import {module:<24} {seconds * 1e3:7.0f} ms")
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, infra.worker_process; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"a worker process imports of {', '.join(HEAVY)}: {loaded or 'none'}")


if __name__ == "__main__":
    main()
