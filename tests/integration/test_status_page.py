"""The status page in a real browser: headless Chromium's own EventSource receives
the progress of a real job. Chromium comes from scripts/chromium."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.integration.browser import HEADLESS, chromium
from tests.integration.conftest import Stack, submit


def dump_dom(url: str, profile: Path) -> str:
    """The page's DOM once it has loaded and its stream has ended."""
    result = subprocess.run(
        [
            chromium(),
            *HEADLESS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=30000",
            "--dump-dom",
            url,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_status_page_shows_a_running_jobs_progress_through_eventsource(
    running: Stack, tmp_path: Path
) -> None:
    with running.client() as client:
        job = submit(client, "nap", {"seconds": 2.0})
    token = running.token()
    dom = dump_dom(f"{running.url}/ui/jobs/{job['id']}?access_token={token}", tmp_path)
    assert 'data-done="yes"' in dom, dom
    assert 'data-state="succeeded"' in dom, dom
    assert f'data-stream="../../jobs/{job["id"]}/progress?access_token={token}"' in dom, dom
    types = re.findall(r'data-type="(\w+)"', dom)
    assert types[0] == "Submitted" and types[-1] == "Succeeded", types
    assert types.count("ProgressReported") >= 5, types


def test_the_status_page_shows_where_a_failed_job_raised(running: Stack, tmp_path: Path) -> None:
    with running.client() as client:
        job = submit(client, "fail", {"message": "the scan is unreadable"})
    dom = dump_dom(f"{running.url}/ui/jobs/{job['id']}?access_token={running.token()}", tmp_path)
    assert 'data-state="failed"' in dom, dom
    shown = re.search(r'<pre id="traceback">(.*?)</pre>', dom, re.S)
    assert shown is not None, dom
    assert "Traceback (most recent call last)" in shown.group(1), dom
    assert "PermanentError: the scan is unreadable" in shown.group(1), dom
