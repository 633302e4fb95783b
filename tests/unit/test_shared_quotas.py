"""The quota table a gateway's processes share: what one process takes, another
cannot take again."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from application.quotas import Quota, QuotaExceeded, TenantQuotas
from infra import shared_quotas
from infra.shared_quotas import SharedQuotaBook

ROOT = Path(__file__).resolve().parents[2]
NOW = 1000.0  # one clock for both processes, stopped

# Another process, handed the table as a gateway process is: what it may still admit.
OTHER = textwrap.dedent(
    """
    from application.quotas import Quota, QuotaExceeded, TenantQuotas
    from infra.shared_quotas import SharedQuotaBook

    def admitted(quotas, tenant):
        for n in range(20):
            try:
                quotas.admit(tenant)
            except QuotaExceeded:
                return n
        return 20

    book = SharedQuotaBook.inherited()
    rate = TenantQuotas(Quota(submits_per_s=1, burst=5), {}, lambda t: 0, clock=lambda: 1000.0,
                        book=book)
    waiting = TenantQuotas(Quota(max_waiting=5), {}, lambda t: 0, clock=lambda: 1000.0,
                           count_every_s=60, book=book)
    print(admitted(rate, "rated"), admitted(waiting, "capped"), admitted(rate, "new"))
    """
)


def test_what_one_process_admits_another_cannot_admit_again() -> None:
    fd = shared_quotas.create()
    try:
        book = SharedQuotaBook(fd)
        rate = TenantQuotas(
            Quota(submits_per_s=1, burst=5), {}, lambda t: 0, clock=lambda: NOW, book=book
        )
        waiting = TenantQuotas(
            Quota(max_waiting=5), {}, lambda t: 0, clock=lambda: NOW, count_every_s=60, book=book
        )
        for _ in range(3):
            rate.admit("rated")
        for _ in range(4):
            waiting.admit("capped")

        other = subprocess.run(
            [sys.executable, "-c", OTHER],
            cwd=ROOT,
            env={
                **os.environ,
                shared_quotas.FD_ENV: SharedQuotaBook.handed(fd),
                "PYTHONPATH": str(ROOT),
            },
            pass_fds=(fd,),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

        # The other process had 2 tokens left, 1 waiting place, and a whole burst for a
        # tenant new to both.
        assert other.stdout.split() == ["2", "1", "5"]
        with pytest.raises(QuotaExceeded):  # and this one sees what the other took
            rate.admit("rated")
    finally:
        os.close(fd)


# From the moment given, takes the one place of each of 3,000 tenants it can, in the
# same order as the other racer: 3,000 races for a last place.
RACER = textwrap.dedent(
    """
    import sys, time
    from application.quotas import Quota, QuotaExceeded, TenantQuotas
    from infra.shared_quotas import SharedQuotaBook

    quotas = TenantQuotas(Quota(max_waiting=1), {}, lambda t: 0, count_every_s=3600,
                          book=SharedQuotaBook.inherited())
    while time.monotonic() < float(sys.argv[1]):
        pass
    admitted = 0
    for n in range(3000):
        try:
            quotas.admit(f"tenant-{n}")
            admitted += 1
        except QuotaExceeded:
            pass
    print(admitted)
    """
)


def test_two_processes_racing_for_the_last_places_take_each_once() -> None:
    fd = shared_quotas.create()
    try:
        start_at = str(time.monotonic() + 1.5)  # both started by then
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, start_at],
                cwd=ROOT,
                env={
                    **os.environ,
                    shared_quotas.FD_ENV: SharedQuotaBook.handed(fd),
                    "PYTHONPATH": str(ROOT),
                },
                pass_fds=(fd,),
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        admitted = [int(racer.communicate(timeout=60)[0]) for racer in racers]

        assert sum(admitted) == 3000, admitted
    finally:
        os.close(fd)


def _home(tenant: str) -> int:
    digest = hashlib.blake2b(tenant.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shared_quotas.SLOTS


def test_tenants_whose_names_hash_to_one_slot_each_keep_their_own() -> None:
    homes: dict[int, str] = {}
    for n in itertools.count():
        tenant = f"clinic-{n}"
        if (first := homes.setdefault(_home(tenant), tenant)) != tenant:
            break
    fd = shared_quotas.create()
    try:
        quotas = TenantQuotas(
            Quota(submits_per_s=1, burst=2),
            {},
            lambda t: 0,
            clock=lambda: NOW,
            book=SharedQuotaBook(fd),
        )
        for _ in range(2):
            quotas.admit(first)
        with pytest.raises(QuotaExceeded):
            quotas.admit(first)
        for _ in range(2):
            quotas.admit(tenant)  # the next slot: a burst of its own
        with pytest.raises(QuotaExceeded):
            quotas.admit(tenant)
    finally:
        os.close(fd)


def test_a_process_from_code_whose_table_differs_counts_alone_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fd = shared_quotas.create()
    try:
        monkeypatch.setenv(shared_quotas.FD_ENV, f"{fd}:<QdddqdX16384")
        assert SharedQuotaBook.inherited() is None
        monkeypatch.setenv(shared_quotas.FD_ENV, SharedQuotaBook.handed(fd))
        assert SharedQuotaBook.inherited() is not None
    finally:
        os.close(fd)

    assert "counts quotas alone" in caplog.text
