"""The ledger's hash chain: tamper evidence for every event.

Each row of the events table holds ``hash``, the SHA-256 of its predecessor's hash
(the job's previous version; 32 zero bytes for a job's first event) and of its own
stored bytes: job id, version, ledger position, topic and state. A trigger computes
it inside the inserting transaction, so every writer chains its events and none can
skip it; ``prev_hash`` keeps the predecessor's hash beside it. The writers' table
lock (one inserting transaction at a time) makes the predecessor the row the chain
names.

``jobledger verify`` recomputes every hash here, in Python, from the rows: an edited
row no longer matches its hash, a deleted or reordered one breaks its successor's
link. ``head`` folds the hashes of the whole ledger in position order into one value:
printed by ``jobledger audit head`` and kept elsewhere, it catches what the chain
alone cannot (the deletion of a job's last events, or a rewrite of a whole chain).

Rows recorded before the chain was installed have no hash; the position where it
began is kept in ``ledger_chain``, so a row after it without a hash is damage too."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

GENESIS = bytes(32)  # the predecessor of a job's first event
_NUMBERS = struct.Struct(">qqi")  # version, position, length of the topic


def event_hash(
    prev: bytes, job_id: UUID, version: int, position: int, topic: str, state: bytes
) -> bytes:
    """What the trigger computes, field for field (lengths are fixed or prefixed, so
    no two rows hash the same bytes)."""
    encoded = topic.encode()
    numbers = _NUMBERS.pack(version, position, len(encoded))
    return hashlib.sha256(prev + job_id.bytes + numbers + encoded + state).digest()


def fold_head(head: bytes, position: int, hash_: bytes) -> bytes:
    """The ledger's head after one more event, in position order."""
    return hashlib.sha256(head + position.to_bytes(8, "big") + hash_).digest()


@dataclass(frozen=True)
class Head:
    position: int  # the last position folded in (0: none)
    events: int  # the chained events folded in
    value: bytes

    def __str__(self) -> str:
        return f"{self.position}:{self.value.hex()}"

    @classmethod
    def parse(cls, text: str) -> tuple[int, bytes]:
        """``POSITION:HEX`` as printed; ValueError when it is not that."""
        position, _, value = text.partition(":")
        digest = bytes.fromhex(value)
        if len(digest) != 32 or not position.isdigit():
            raise ValueError(f"not a head (POSITION:64 hex digits): {text!r}")
        return int(position), digest


def install(conn: psycopg.Connection[Any], schema: str, table: str) -> None:
    """Add the chain to the events table. The columns and the trigger are added once
    (a process that starts later takes no lock on the table); the trigger's function
    is replaced at each start."""
    names = {
        "schema": sql.Identifier(schema),
        "table": sql.Identifier(schema, table),
        "chain": sql.Identifier(schema, "ledger_chain"),
        "function": sql.Identifier(schema, f"{table}_chain"),
        "trigger": sql.Identifier(f"{table}_chain"),
    }

    def run(text: str) -> None:
        conn.execute(sql.SQL(text).format(**names))

    # Replaced at every start (under the caller's schema lock; it takes no lock on the
    # table), so a changed body reaches every database. A job's first event has no
    # predecessor to look up.
    run(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "DECLARE prev bytea; topic bytea := convert_to(NEW.topic, 'UTF8'); "
        "BEGIN "
        "  IF NEW.originator_version > 1 THEN "
        "    SELECT p.hash INTO prev FROM {table} p "
        "    WHERE p.originator_id = NEW.originator_id "
        "    AND p.originator_version = NEW.originator_version - 1; "
        "  END IF; "
        "  NEW.prev_hash := coalesce(prev, "
        "    '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea); "
        "  NEW.hash := sha256(NEW.prev_hash || uuid_send(NEW.originator_id) "
        "    || int8send(NEW.originator_version) || int8send(NEW.notification_id) "
        "    || int4send(octet_length(topic)) || topic || NEW.state); "
        "  RETURN NEW; "
        "END $$"
    )
    installed = conn.execute(
        "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND t.tgname = %s",
        (schema, table, f"{table}_chain"),
    ).fetchone()
    if installed:
        return
    with conn.transaction():
        run("LOCK TABLE {table} IN EXCLUSIVE MODE")
        run("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS prev_hash bytea")
        run("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS hash bytea")
        run("CREATE TABLE IF NOT EXISTS {chain} (since bigint NOT NULL)")
        run(
            "INSERT INTO {chain} SELECT coalesce(max(notification_id), 0) FROM {table} "
            "WHERE NOT EXISTS (SELECT FROM {chain})"
        )
        run(
            "CREATE OR REPLACE TRIGGER {trigger} BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION {function}()"
        )


def since(conn: psycopg.Connection[Any], schema: str) -> int | None:
    """The last position recorded before the chain began (None: no chain here)."""
    try:
        with conn.transaction():
            row = conn.execute(
                sql.SQL("SELECT since FROM {}").format(sql.Identifier(schema, "ledger_chain"))
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return row[0] if row else None


def head(rows: Iterable[tuple[int, bytes | None]]) -> Head:
    """The fold of (position, hash) rows, in position order; unchained rows skipped."""
    value, position, events = GENESIS, 0, 0
    for position, hash_ in rows:
        if hash_ is not None:
            value = fold_head(value, position, bytes(hash_))
            events += 1
    return Head(position=position, events=events, value=value)


def read_head(conn: psycopg.Connection[Any], schema: str, table: str, upto: int | None) -> Head:
    """The head of the ledger up to position ``upto`` (None: its last event)."""
    with conn.cursor(name="ledger_head") as cursor:
        cursor.itersize = 10_000
        cursor.execute(
            sql.SQL(
                "SELECT notification_id, hash FROM {} "
                "WHERE %(upto)s::bigint IS NULL OR notification_id <= %(upto)s "
                "ORDER BY notification_id"
            ).format(sql.Identifier(schema, table)),
            {"upto": upto},
        )
        return head(cursor)
