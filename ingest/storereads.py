"""The store as the archive pass and `taskevents restore` read it, a SQLite file or PostgreSQL: the
tasks to archive, one task's rows in one snapshot, a sample of archived tasks, a task's archived flag.

Read-only, and never the writer's connection: only the worker changes the store (ingest/archived.py).
"""

import sqlite3
from typing import Any

import orjson

from taskevents.archive import TaskRows, read_rows
from taskevents.db import open_reader
from taskevents.settings import Settings

# Ended tasks quiet since before the cutoff, least recently active first; not one restored since then.
_CANDIDATES = """
SELECT task_id, latest_seq, event_count, last_at FROM tasks INDEXED BY idx_tasks_archivable
WHERE archived = 0 AND status != 'running' AND last_at < ?1
AND NOT EXISTS (SELECT 1 FROM task_restores AS r WHERE r.task_id = tasks.task_id AND r.restored_at >= ?1)
ORDER BY last_at LIMIT ?2
"""
# tasks.task_id is COLLATE "C" (pgschema migration 3): compared in task_restores' collation, whose key
# index then serves.
_CANDIDATES_PG = """
SELECT task_id, latest_seq, event_count, last_at FROM tasks
WHERE archived = 0 AND status != 'running' AND last_at < %(cutoff)s
AND NOT EXISTS (SELECT 1 FROM task_restores AS r
                WHERE r.task_id = tasks.task_id COLLATE "default" AND r.restored_at >= %(cutoff)s)
ORDER BY last_at LIMIT %(limit)s
"""
_NAMED = """
SELECT task_id, latest_seq, event_count, last_at, status, archived FROM tasks
WHERE task_id IN (SELECT value FROM json_each(?))
"""
_NAMED_PG = """
SELECT task_id, latest_seq, event_count, last_at, status, archived FROM tasks
WHERE task_id IN (SELECT json_array_elements_text(%s::json))
"""


class StoreReads:
    """A read-only connection to the store of `settings`; close() when done."""

    def __init__(self, settings: Settings, application: str = "taskevents-archive") -> None:
        self.postgres = settings.postgres
        if self.postgres:
            import psycopg
            from psycopg.conninfo import make_conninfo

            from taskevents.pgdb import CONNECT_OPTIONS

            conninfo = make_conninfo(str(settings.db), application_name=application, **CONNECT_OPTIONS)
            conn = psycopg.connect(conninfo, autocommit=True)
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # what transaction() begins
            conn.read_only = True
            self._conn: Any = conn
        else:
            self._conn = open_reader(settings.sqlite_path)

    def _mark(self) -> str:
        return "%s" if self.postgres else "?"

    def candidates(self, cutoff: str, limit: int) -> list[tuple[str, int, int, str]]:
        if self.postgres:
            return list(self._conn.execute(_CANDIDATES_PG, {"cutoff": cutoff, "limit": limit}).fetchall())
        return list(self._conn.execute(_CANDIDATES, (cutoff, limit)).fetchall())

    def named(self, task_ids: list[str]) -> list[tuple[Any, ...]]:
        """(task_id, latest_seq, event_count, last_at, status, archived) of those the store has."""
        sql = _NAMED_PG if self.postgres else _NAMED
        return list(self._conn.execute(sql, (orjson.dumps(task_ids).decode(),)).fetchall())

    def task_rows(self, task_id: str) -> TaskRows | None:
        """The task's rows from one snapshot; None if the store has none."""
        if self.postgres:
            with self._conn.transaction():
                return read_rows(self._conn, task_id)
        conn: sqlite3.Connection = self._conn
        conn.execute("BEGIN")
        try:
            return read_rows(conn, task_id)
        finally:
            conn.execute("COMMIT")

    def archived_sample(self, n: int) -> list[str]:
        """Up to `n` archived tasks, at random."""
        sql = f"SELECT task_id FROM tasks WHERE archived = 1 ORDER BY random() LIMIT {self._mark()}"
        return [row[0] for row in self._conn.execute(sql, (n,)).fetchall()]

    def archived(self, task_id: str) -> int | None:
        """The task's `archived` flag (0 in the store, 1 archived); None if the store has no such task."""
        sql = f"SELECT archived FROM tasks WHERE task_id = {self._mark()}"
        row = self._conn.execute(sql, (task_id,)).fetchone()
        return None if row is None else int(row[0])

    def partitions(self) -> int | None:
        """The queue's partition count the store records (PostgreSQL's first worker records it); None
        for SQLite (one partition, always) or a store no worker has taken yet."""
        if not self.postgres:
            return None
        row = self._conn.execute("SELECT partitions FROM deployment").fetchone()
        return None if row is None else int(row[0])

    def close(self) -> None:
        self._conn.close()
