"""A cap on the store's WAL when readers never pause: past it, the writer forces a checkpoint.

SQLite's automatic checkpoint (`wal_autocheckpoint`, run after a commit) is PASSIVE: it copies what no
reader still needs and never waits. The WAL starts again from its beginning only after a checkpoint
has copied every frame while no reader still reads an older snapshot. Readers that overlap without a
pause (several long graph queries at once, many API processes) can deny it that moment for as long as
they keep coming, and the WAL then grows with everything written: four concurrent graph readers took
it to ~200 MiB over a 200,000-event ingest (tests/test_reliability_api_wal.py).

Past `limit` bytes the writer runs a TRUNCATE checkpoint instead. It waits (at most `wait_ms`) for the
readers of older snapshots to finish; readers that start meanwhile read the database file and do not
hold it up, so under the API's short reads it completes in milliseconds and empties the WAL. If a
reader holds one snapshot for longer, the writer logs it and goes on committing, and tries again
once the WAL has grown by a step: limit/16 at first, doubling with each attempt that fails, up to
`limit`. A read that ran long (a graph of 5,000 spans while the machine is saturated) is over by the
next attempt, so the WAL stays within about limit + limit/16; a reader that never lets go (an
external `sqlite3` shell left in a transaction) costs one wait per step, soon one per `limit`.
"""

import logging
import sqlite3
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from taskevents.db import BUSY_TIMEOUT_MS, WAL_LIMIT_BYTES
from taskevents.ingest.checkpointer import Checkpointer

log = logging.getLogger("taskevents.writer")

MiB = 1 << 20


class WalCap:
    """Call `after_commit()` after each commit of the writer connection `conn`. `checkpointer`: the
    store's background one (ingest/checkpointer.py), whose restarts of the WAL it completes."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        limit: int = WAL_LIMIT_BYTES,
        wait_ms: int = 1000,
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self._conn = conn
        self._checkpointer = checkpointer
        self._lock: AbstractContextManager[object] = checkpointer.lock if checkpointer else nullcontext()
        self.limit = limit
        self.wait_ms = wait_ms
        path = conn.execute("PRAGMA database_list").fetchone()[2]
        self._wal = Path(path + "-wal") if path else None  # an in-memory store has no WAL
        self._threshold = limit
        self._step = limit // 16  # growth before the next attempt, after one that failed
        self.forced = 0  # checkpoints forced so far (tests, logs)

    def after_commit(self) -> None:
        if self._wal is None:
            return
        if self._checkpointer is not None and self._checkpointer.restart_due:
            self._checkpointer.restart_due = False
            self._restart()
        try:
            size = self._wal.stat().st_size
        except OSError:
            return
        if size <= self._threshold:
            return
        self.forced += 1
        busy = self._truncate()
        if busy:
            self._threshold = size + self._step
            self._step = min(self._step * 2, self.limit)
            log.warning(
                "WAL at %.0f MiB: a reader has held one snapshot for over %d ms, so no checkpoint can "
                "finish; committing on, next attempt at %.0f MiB",
                size / MiB,
                self.wait_ms,
                self._threshold / MiB,
            )
        else:
            self._threshold, self._step = self.limit, self.limit // 16
            log.info(
                "WAL at %.0f MiB (readers overlapping without a pause): checkpointed, emptied", size / MiB
            )

    def _restart(self) -> None:
        """The background checkpointer has copied a long WAL: copy the few frames committed since,
        so that the next commit starts the WAL over."""
        try:
            with self._lock:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # committed all the same; the next pass sets restart_due again
            log.warning("WAL checkpoint before its restart failed: %s", exc)

    def _truncate(self) -> bool:
        """A TRUNCATE checkpoint waiting at most `wait_ms`; True if readers kept it from finishing."""
        conn = self._conn
        try:
            with self._lock:
                conn.execute(f"PRAGMA busy_timeout = {self.wait_ms}")
                try:
                    return bool(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
                finally:
                    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:  # the batch is committed: a failed checkpoint must not undo that
            log.warning("forced WAL checkpoint failed: %s", exc)
            return True
