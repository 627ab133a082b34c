"""The local broker's journal: every accepted job in SQLite until it has been answered.

One row per job, written before the member is told "queued": the request (its
images included) in the contract's wire format (bytes + JSON, never pickle), what
delivery needs to answer it (JSON), the ids of its status message, its state, and
once it has one, its outcome. A row is answered when it has an outcome and
delivered once the answer is posted; delivered rows keep only their id and state,
so a job is never posted twice and the file does not grow with images.

WAL mode lets the bot read while a write is in flight; `synchronous=FULL` makes each
commit survive a host crash, not only a killed process (an OOM kill or a reboot is
exactly what this is for). Calls block: the broker runs them on one thread of its
own, in order. Stdlib only.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.jobs import JobFailed, JobRequest, JobResult, from_wire, to_wire

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    guild_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    label TEXT NOT NULL,
    request BLOB,
    meta TEXT NOT NULL,
    status_channel_id INTEGER NOT NULL DEFAULT 0,
    status_message_id INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    outcome BLOB,
    delivered INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (delivered, seq);
"""


@dataclass(frozen=True)
class Entry:
    """One journalled job that still needs an answer posted."""

    seq: int
    request: JobRequest
    guild_id: int
    channel_id: int
    user_id: int
    label: str
    meta: Mapping[str, Any]
    status_channel_id: int
    status_message_id: int
    state: str
    outcome: JobResult | JobFailed | None

    @property
    def id(self) -> str:
        return self.request.job_id


def open_database(path: str | Path, schema: str) -> sqlite3.Connection:
    """A connection to the SQLite file `path` (":memory:" for tests), WAL and FULL sync,
    with `schema` applied; usable from any thread (callers hold a lock)."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


class Journal:
    """The SQLite file under the data directory (`path` ":memory:" for tests)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = open_database(path, SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, *args: Any) -> int:
        with self._lock:
            cursor = self._db.execute(sql, args)
            return int(cursor.lastrowid or 0)

    def add(
        self,
        request: JobRequest,
        *,
        guild_id: int,
        channel_id: int,
        user_id: int,
        label: str,
        meta: Mapping[str, Any],
    ) -> int:
        """Journal a new job; returns its sequence number (the fair order's tie-break)."""
        now = time.time()
        return self._write(
            "INSERT INTO jobs (id, guild_id, channel_id, user_id, label, request, meta, state,"
            " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
            request.job_id,
            guild_id,
            channel_id,
            user_id,
            label,
            to_wire(request),
            json.dumps(dict(meta)),
            now,
            now,
        )

    def set_status_message(self, job_id: str, channel_id: int, message_id: int) -> None:
        self._write(
            "UPDATE jobs SET status_channel_id = ?, status_message_id = ?, updated = ? WHERE id = ?",
            channel_id,
            message_id,
            time.time(),
            job_id,
        )

    def set_state(self, job_id: str, state: str) -> None:
        """queued or running (answered jobs go through `answer`)."""
        self._write(
            "UPDATE jobs SET state = ?, updated = ? WHERE id = ? AND outcome IS NULL",
            state,
            time.time(),
            job_id,
        )

    def answer(self, job_id: str, state: str, outcome: JobResult | JobFailed) -> None:
        """Store the outcome (once: a second answer for the same job is ignored)."""
        self._write(
            "UPDATE jobs SET state = ?, outcome = ?, updated = ?"
            " WHERE id = ? AND outcome IS NULL",
            state,
            to_wire(outcome),
            time.time(),
            job_id,
        )

    def mark_delivered(self, job_id: str) -> None:
        self._write(
            "UPDATE jobs SET delivered = 1, outcome = NULL, request = NULL, updated = ?"
            " WHERE id = ?",
            time.time(),
            job_id,
        )

    def delivered(self, job_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT delivered FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def pending(self) -> list[Entry]:
        """Every job not yet delivered, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, request, guild_id, channel_id, user_id, label, meta,"
                " status_channel_id, status_message_id, state, outcome FROM jobs"
                " WHERE delivered = 0 ORDER BY seq"
            ).fetchall()
        entries = []
        for seq, job_id, request, guild, channel, user, label, meta, s_chan, s_msg, state, out in rows:
            entry = _entry(seq, job_id, request, guild, channel, user, label, meta)
            if entry is None:
                continue
            entries.append(
                Entry(
                    seq, entry, guild, channel, user, label, json.loads(meta), s_chan, s_msg,
                    state, from_wire(out) if out is not None else None,
                )  # fmt: skip
            )
        return entries


def _entry(seq: int, job_id: str, request: bytes | None, *_: Any) -> JobRequest | None:
    """The request of a row; None (logged) when it cannot be read back."""
    try:
        read: JobRequest = from_wire(request or b"")
    except (ValueError, KeyError, TypeError):
        log.exception("journal: job %s (row %d) cannot be read; skipping it", job_id, seq)
        return None
    return read
