"""WAL checkpoints off the commit path: a thread of the worker copies the WAL into the database file.

SQLite's automatic checkpoint runs inside the commit that crosses `wal_autocheckpoint`: that commit
copies every page written since the last checkpoint and syncs the file, and every event of its batch
waits, 30-50 ms every second or so at 5,000 events/s (half of the live stream's p99). With a
Checkpointer the writer's automatic checkpoint is off: a PASSIVE checkpoint runs every `interval`
seconds on a connection and thread of its own (SQLite releases the GIL while it copies), while the
writer goes on committing.

A copy racing the writer's commits cannot start the WAL over: only a write transaction does, and only
once every frame is copied. So once the WAL holds `restart_frames` and a pass has copied all of them,
the thread sets `restart_due`; the writer then checkpoints once itself after its next commit (WalCap),
copying only the frames committed since that pass, a commit or two, and its next commit starts the
WAL from its beginning. WalCap's forced TRUNCATE (readers that will not let go) and that short
checkpoint take `lock`, so they never find SQLite's checkpoint lock held by this thread.

Durability: with synchronous=NORMAL a checkpoint that copies syncs the WAL first, so a power loss
usually rolls back only the last `interval` of commits. A pass that can copy nothing (readers still in
older snapshots) syncs nothing, so while readers hold it up the window is as long as before, until
WalCap's forced checkpoint (docs/reliability.md).
"""

import logging
import sqlite3
import threading
import time
from pathlib import Path

from taskevents.db import WAL_AUTOCHECKPOINT_PAGES

log = logging.getLogger("taskevents.writer")

FAILURE_LOG_EVERY = 60.0  # seconds between warnings while checkpoints keep failing


class Checkpointer:
    """Started on construction; `close()` stops it (before the writer's connection is closed)."""

    def __init__(
        self, path: Path, synchronous: str, interval: float, restart_frames: int = WAL_AUTOCHECKPOINT_PAGES
    ) -> None:
        if interval <= 0:
            raise ValueError("a checkpointer needs an interval > 0")
        self.interval = interval
        self.restart_frames = restart_frames
        self.lock = threading.Lock()  # held while a checkpoint of this process runs
        self.restart_due = False  # the WAL is long and copied up to a moment ago: see the docstring
        self.passes = 0  # checkpoints completed
        self.failures = 0
        self._last_warning = 0.0
        # Its own read-write connection: a checkpoint syncs as its connection's `synchronous` says.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA synchronous = {synchronous}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.checkpoint()
            except Exception:  # never let the thread die: without it the WAL grows to WalCap's limit
                log.exception("background WAL checkpoint")

    def checkpoint(self) -> bool:
        """One PASSIVE checkpoint: copies what no reader still needs, waits for nobody. True if every
        frame of the WAL was copied."""
        with self.lock:
            try:
                busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:  # a broken store: the writer's own commits report it
                self._failed(exc)
                return False
        self.passes += 1
        done = not busy and frames == copied
        if done and frames >= self.restart_frames:
            self.restart_due = True
        return done

    def _failed(self, exc: sqlite3.Error) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._last_warning >= FAILURE_LOG_EVERY:
            self._last_warning = now
            log.warning("background WAL checkpoint failed (%d so far): %s", self.failures, exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()
