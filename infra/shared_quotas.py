"""The tenants' quota slots in memory shared by the processes of one gateway
(``jobledger gateway --processes N``), so that N processes admit what one would.

The supervisor creates the memory (an anonymous ``memfd``) and hands its descriptor
to every gateway process it starts, a replacement included: the buckets outlive any
one process. The memory is a table of fixed-size slots, a tenant's found by the hash
of its name and linear probing. A slot is held with a POSIX lock on its own bytes
(other processes) and a thread lock (this process's threads), for the few
microseconds a submit reads and writes it. A tenant that finds no slot within
``PROBES`` (the table nearly full: thousands of tenants) is counted in this
process's memory instead, as before the memory was shared, and said so once."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
from collections.abc import Iterator

from application.quotas import LocalQuotaBook, QuotaSlot

log = logging.getLogger("jobledger.quotas")

# The descriptor of the shared memory, in a gateway process the supervisor started.
FD_ENV = "JOBLEDGER_GATEWAY_QUOTA_FD"
SLOTS = 16384
PROBES = 64
# key (the hash of the tenant's name; 0: free), tokens, at, waiting, counted_at
_SLOT = struct.Struct("<Qddqd")
SIZE = SLOTS * _SLOT.size
# Named beside the descriptor: a replacement process started from newer code (an
# upgrade while the supervisor runs) whose table differs does not misread it.
LAYOUT = f"{_SLOT.format}x{SLOTS}"


def create() -> int:
    """The shared memory, zeroed (every slot free): its descriptor, inheritable."""
    fd = os.memfd_create("jobledger-quotas", 0)
    os.ftruncate(fd, SIZE)
    os.set_inheritable(fd, True)
    return fd


class SharedQuotaBook:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._memory = mmap.mmap(fd, SIZE)
        self._threads = threading.Lock()
        self._overflow = LocalQuotaBook()
        self._overflowed = False

    @classmethod
    def inherited(cls) -> SharedQuotaBook | None:
        """The book this process was handed (``FD_ENV``: its descriptor and layout),
        if any, and if its layout is this code's; else the process counts alone."""
        handed = os.environ.get(FD_ENV)
        if not handed:
            return None
        fd, _, layout = handed.partition(":")
        if layout != LAYOUT:
            log.warning(
                "the gateway's shared quota table is laid out as %r, this process as %r "
                "(started from other code than its supervisor): it counts quotas alone "
                "until the gateway is restarted",
                layout,
                LAYOUT,
            )
            return None
        return cls(int(fd))

    @staticmethod
    def handed(fd: int) -> str:
        """``FD_ENV``'s value for a process handed the table ``fd``."""
        return f"{fd}:{LAYOUT}"

    @contextlib.contextmanager
    def locked(self, tenant: str) -> Iterator[QuotaSlot]:
        key = int.from_bytes(hashlib.blake2b(tenant.encode(), digest_size=8).digest(), "little")
        key = key or 1  # 0 marks a free slot
        home = key % SLOTS
        with self._threads:
            for probe in range(PROBES):
                offset = (home + probe) % SLOTS * _SLOT.size
                fcntl.lockf(self._fd, fcntl.LOCK_EX, _SLOT.size, offset, os.SEEK_SET)
                try:
                    held, tokens, at, waiting, counted_at = _SLOT.unpack_from(self._memory, offset)
                    if held not in (0, key):
                        continue
                    slot = QuotaSlot(tokens, at, waiting, counted_at) if held else QuotaSlot()
                    try:
                        yield slot
                    finally:  # kept even when the block raises, as in a local book
                        _SLOT.pack_into(
                            self._memory,
                            offset,
                            key,
                            slot.tokens,
                            slot.at,
                            slot.waiting,
                            slot.counted_at,
                        )
                    return
                finally:
                    fcntl.lockf(self._fd, fcntl.LOCK_UN, _SLOT.size, offset, os.SEEK_SET)
        if not self._overflowed:
            self._overflowed = True
            log.warning(
                "the gateway's shared quota table is full near tenant %s: such tenants are "
                "counted by each gateway process apart",
                tenant,
            )
        with self._overflow.locked(tenant) as slot:
            yield slot
