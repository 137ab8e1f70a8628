"""The store's schema, created and migrated by version (`PRAGMA user_version`)."""

import sqlite3
from typing import Final

# Each entry moves the schema from version i to i + 1. Never edit a released entry: append a new one.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    -- The original's table and columns, plus event_uid (idempotency) and emitted_at (producer clock).
    CREATE TABLE task_events (
        event_id       INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, even after archiving
        task_id        TEXT    NOT NULL CHECK (length(task_id) BETWEEN 1 AND 128),
        seq            INTEGER NOT NULL CHECK (seq > 0),
        event_type     TEXT    NOT NULL CHECK (length(event_type) > 0),
        phase          TEXT    CHECK (phase IN ('planning', 'executing', 'verifying', 'recovery')),
        actor          TEXT    NOT NULL CHECK (length(actor) > 0),
        span_id        TEXT    NOT NULL CHECK (length(span_id) > 0),
        parent_span_id TEXT,
        payload        TEXT    NOT NULL DEFAULT '{}',
        created_at     TEXT    NOT NULL,                      -- store's clock, ISO 8601 UTC, ms
        event_uid      TEXT,
        emitted_at     TEXT
    );
    CREATE UNIQUE INDEX idx_task_events_task_seq ON task_events (task_id, seq);
    CREATE UNIQUE INDEX idx_task_events_event_uid ON task_events (event_uid);
    CREATE INDEX idx_task_events_task_created ON task_events (task_id, created_at);
    CREATE INDEX idx_task_events_parent_span ON task_events (parent_span_id);
    -- The original indexed (task_id, phase); seq is added so phase pages walk the index in order.
    CREATE INDEX idx_task_events_task_phase ON task_events (task_id, phase, seq);
    CREATE INDEX idx_task_events_checkpoints ON task_events (task_id, seq)
        WHERE event_type IN ('checkpoint_commit', 'checkpoint_verified', 'checkpoint_invalid');

    -- Per task, kept by the worker in the batch's transaction so reads never scan events.
    CREATE TABLE tasks (
        task_id       TEXT    PRIMARY KEY,
        latest_seq    INTEGER NOT NULL,
        event_count   INTEGER NOT NULL,
        first_at      TEXT    NOT NULL,
        last_at       TEXT    NOT NULL,
        current_phase TEXT,                                   -- last non-null phase seen
        status        TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed'))
    ) WITHOUT ROWID;
    CREATE INDEX idx_tasks_last_at ON tasks (last_at, task_id);

    -- Per span: its first event, parent, state and extent.
    CREATE TABLE spans (
        task_id        TEXT    NOT NULL,
        span_id        TEXT    NOT NULL,
        parent_span_id TEXT,
        event_type     TEXT    NOT NULL,                      -- of the span's first event
        phase          TEXT,                                  -- of the span's first event
        first_seq      INTEGER NOT NULL,
        last_seq       INTEGER NOT NULL,
        event_count    INTEGER NOT NULL,
        state          TEXT    NOT NULL CHECK (state IN ('open', 'closed', 'failed')),
        started_at     TEXT    NOT NULL,
        end_seq        INTEGER,
        ended_at       TEXT,
        PRIMARY KEY (task_id, span_id)
    ) WITHOUT ROWID;
    CREATE INDEX idx_spans_open ON spans (task_id, first_seq) WHERE state = 'open';

    -- The id of the last committed batch: tells recovery whether the in-flight batch was committed.
    CREATE TABLE ingest_state (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        last_batch_id INTEGER NOT NULL
    );
    INSERT INTO ingest_state (id, last_batch_id) VALUES (1, 0);
    """,
    """
    -- The single writer, fenced: a worker that takes the queue's lease bumps writer_epoch, and every
    -- commit checks the epoch it started with, so a deposed worker's commit is refused.
    ALTER TABLE ingest_state ADD COLUMN writer_epoch INTEGER NOT NULL DEFAULT 0;
    -- What the last committed batch did (counts, task ranges, which elements were dead-lettered and
    -- why), so that a worker acknowledging it after a crash does exactly what its committer would have.
    ALTER TABLE ingest_state ADD COLUMN last_batch TEXT;
    """,
    """
    -- What the runner UI shows without reading events: why a run ended, and per work item span its
    -- id and type (from its events' payloads), its latest progress and its error code.
    ALTER TABLE tasks ADD COLUMN exit_reason TEXT;          -- of the latest runner_exit; null while running
    ALTER TABLE spans ADD COLUMN work_item_id TEXT;
    ALTER TABLE spans ADD COLUMN work_type TEXT;
    ALTER TABLE spans ADD COLUMN progress TEXT;             -- JSON: the latest progress event's
    ALTER TABLE spans ADD COLUMN error_code TEXT;           -- of the latest work_item_failed
    -- A span's children in the order they started (the span tree, a phase's work items).
    CREATE INDEX idx_spans_parent ON spans (task_id, parent_span_id, first_seq);
    -- Failed spans of a task, counted for the task list.
    CREATE INDEX idx_spans_failed ON spans (task_id) WHERE state = 'failed';
    -- Evidence linked to checkpoints, for the evidence drawer (a few events of a run).
    CREATE INDEX idx_task_events_links ON task_events (task_id, seq) WHERE event_type = 'evidence_linked';
    -- Stores written before this version: what their first and last events say.
    UPDATE spans SET
        work_item_id = (SELECT json_extract(e.payload, '$.work_item_id') FROM task_events AS e
                        WHERE e.task_id = spans.task_id AND e.seq = spans.first_seq),
        work_type = (SELECT json_extract(e.payload, '$.work_type') FROM task_events AS e
                     WHERE e.task_id = spans.task_id AND e.seq = spans.first_seq),
        error_code = (SELECT json_extract(e.payload, '$.error_code') FROM task_events AS e
                      WHERE e.task_id = spans.task_id AND e.seq = spans.end_seq AND spans.state = 'failed');
    UPDATE tasks SET exit_reason = (
        SELECT coalesce(json_extract(e.payload, '$.explanation'), json_extract(e.payload, '$.outcome'))
        FROM task_events AS e WHERE e.task_id = tasks.task_id AND e.seq = tasks.latest_seq
        AND e.event_type = 'runner_exit')
    WHERE status != 'running';
    """,
    """
    -- Retention (ingest/retention.py): an archived task keeps its tasks row, so its seq goes on from
    -- latest_seq and the task list lists it, while its events and spans live in its archive.
    ALTER TABLE tasks ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN archived_failed INTEGER;   -- its failed work items (its spans are gone)
    -- When a task was last brought back: not archived again for a retention after (beside the task's
    -- row, which a restore leaves exactly as it was).
    CREATE TABLE task_restores (task_id TEXT PRIMARY KEY, restored_at TEXT NOT NULL) WITHOUT ROWID;
    -- Archived tasks whose rows the worker is still removing, a bounded chunk at a time: only rows up to
    -- the archive's last seq (a late event stored beside an unreadable archive is never removed).
    CREATE TABLE archive_pending (task_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID;
    -- What an archive pass looks for: ended tasks, least recently active first.
    CREATE INDEX idx_tasks_archivable ON tasks (last_at) WHERE archived = 0 AND status != 'running';
    """,
)

SCHEMA_VERSION: Final = len(MIGRATIONS)


class SchemaError(Exception):
    """The store's schema is not one this code can write (a newer version)."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION, each step in its own transaction. Returns the version.

    The version is read inside each step's write transaction, so two workers starting at once on a
    new store never both run a step. Raises SchemaError for a schema newer than this code.
    """
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"store schema is version {version}, newer than this code ({SCHEMA_VERSION})"
                )
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return SCHEMA_VERSION
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit on its own)."""
    out, buf = [], ""
    for line in script.splitlines():
        buf += line.split("--", 1)[0] + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return [s for s in out if s]
