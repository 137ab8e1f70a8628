"""The original design's store, as its acceptance report describes it (seed document, "schema_v32").

One SQLite transaction per event: initialise the task's counter, read next_seq, insert the event,
bump the counter, commit. The table, its 5 indexes and its 4 validation triggers are the original's.

Two variants:
- as designed: each event handed to the original's `SQLiteWriter` thread and waited for
  (`writer.submit(_insert_event, timeout=10.0)`), with the original's pragmas only (WAL,
  synchronous=NORMAL, busy_timeout); SQLite's defaults for the rest;
- favoured: called directly on the caller's thread with our writer's pragmas (64 MiB cache, larger
  WAL auto-checkpoint), an upper bound for any tuning of the original.
Both: foreign keys not enforced (sqlite3's default) and the payload serialized with orjson.
"""

import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS task_events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    phase TEXT,
    actor TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    seq INTEGER NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (task_id) REFERENCES tasks(task_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS task_event_seq_counters (
    task_id TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL DEFAULT 1,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (task_id) REFERENCES tasks(task_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_task_events_task_seq ON task_events (task_id, seq);
CREATE INDEX IF NOT EXISTS idx_task_events_task_created ON task_events (task_id, created_at);
CREATE INDEX IF NOT EXISTS idx_task_events_parent_span ON task_events (parent_span_id);
CREATE INDEX IF NOT EXISTS idx_task_events_task_phase ON task_events (task_id, phase);
CREATE INDEX IF NOT EXISTS idx_event_seq_counters_task ON task_event_seq_counters (task_id);
CREATE TRIGGER IF NOT EXISTS check_task_events_seq_positive BEFORE INSERT ON task_events
    WHEN NEW.seq <= 0 BEGIN SELECT RAISE(ABORT, 'seq must be positive'); END;
CREATE TRIGGER IF NOT EXISTS check_task_events_event_type BEFORE INSERT ON task_events
    WHEN NEW.event_type IS NULL OR NEW.event_type = '' BEGIN SELECT RAISE(ABORT, 'event_type empty'); END;
CREATE TRIGGER IF NOT EXISTS check_task_events_actor BEFORE INSERT ON task_events
    WHEN NEW.actor IS NULL OR NEW.actor = '' BEGIN SELECT RAISE(ABORT, 'actor empty'); END;
CREATE TRIGGER IF NOT EXISTS check_task_events_span_id BEFORE INSERT ON task_events
    WHEN NEW.span_id IS NULL OR NEW.span_id = '' BEGIN SELECT RAISE(ABORT, 'span_id empty'); END;
"""


def connect(path: Path | str, *, favoured: bool = False) -> sqlite3.Connection:
    """The original's WAL, synchronous=NORMAL and busy_timeout; `favoured` adds the rest of our
    writer's pragmas (shared/db.py `open_writer`), so the designs differ in transactions only."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    if favoured:
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA wal_autocheckpoint = 16384")
    conn.executescript(SCHEMA)
    return conn


class SQLiteWriter:
    """The original's serializer: one thread owns the connection; callers submit and wait."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._jobs: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="original-sqlite-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], Any], timeout: float) -> Any:
        done: Future[Any] = Future()
        self._jobs.put((fn, done))
        return done.result(timeout)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, done = job
            try:
                done.set_result(fn(self._conn))
            except BaseException as exc:  # handed to the submitter, as the original's writer does
                done.set_exception(exc)


_INIT_COUNTER = "INSERT OR IGNORE INTO task_event_seq_counters (task_id, next_seq) VALUES (?, 1)"
_NEXT_SEQ = "SELECT next_seq FROM task_event_seq_counters WHERE task_id = ?"
_INSERT = """
INSERT INTO task_events (task_id, event_type, phase, actor, span_id, parent_span_id, seq, payload)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_BUMP = "UPDATE task_event_seq_counters SET next_seq = next_seq + 1 WHERE task_id = ?"


def emit_event(conn: sqlite3.Connection, event: dict[str, Any]) -> int:
    """Store one wire event the way the original's `emit_event` did; returns its seq."""
    task_id = event["task_id"]
    payload = orjson.dumps(event.get("payload") or {}).decode()
    conn.execute("BEGIN")
    try:
        conn.execute(_INIT_COUNTER, (task_id,))
        seq = conn.execute(_NEXT_SEQ, (task_id,)).fetchone()[0]
        row = (task_id, event["event_type"], event.get("phase"), event["actor"], event["span_id"],
               event.get("parent_span_id"), seq, payload)  # fmt: skip
        conn.execute(_INSERT, row)
        conn.execute(_BUMP, (task_id,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(seq)
