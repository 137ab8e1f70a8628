"""Reads of archived tasks, answered from their archives with the store's own queries.

An archived task keeps its `tasks` row in the store (`archived = 1`); its events and spans are in its
archive (shared/archive.py). A read that meets such a task (`TaskArchived`, raised by the first query
of every task read) runs again here: on an in-memory SQLite database of the store's schema holding
the archive's rows, with the same function, so the answer is the same JSON, byte for byte, as when
the task was in the store. The task row there says `archived = 2` ("served from its archive"): reads
show `archived: true` and do not send the read here again.

Loaded databases are kept, the most recently used first, up to MAX_EVENTS events in all (an
archived task is read the way a finished run is looked at: a few times, then not for long). A
missing archive answers 410 `archive_missing`, one that cannot be read 503 `archive_unreadable`.
"""

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from taskevents.api.errors import ApiError
from taskevents.archive import ArchiveError, ArchiveMissing, TaskArchive, insert_rows
from taskevents.db import add_read_functions
from taskevents.schema import migrate

P = ParamSpec("P")
T = TypeVar("T")

MAX_EVENTS = 500_000  # events held in loaded archives, in all (~1 KB each in SQLite)
SERVED = 2  # tasks.archived in a loaded archive: the read is answered here


class ArchiveGone(ApiError):
    def __init__(self, task_id: str, problem: str) -> None:
        super().__init__(
            410, "archive_missing", f"task {task_id!r} is archived, and its archive is gone: {problem}"
        )


class ArchiveUnreadable(ApiError):
    def __init__(self, task_id: str, problem: str) -> None:
        super().__init__(503, "archive_unreadable", f"task {task_id!r} is archived; its archive: {problem}")


@dataclass
class _Loaded:
    conn: sqlite3.Connection
    events: int
    lock: threading.Lock = field(default_factory=threading.Lock)


class ArchivedReads:
    """Runs a task read on the task's archive (loaded once, kept while room allows)."""

    def __init__(self, directory: Path, max_events: int = MAX_EVENTS) -> None:
        self.archive = TaskArchive.at(directory)
        self.max_events = max_events
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # archives read so far (tests)

    def cached(self, task_id: str) -> bool:
        with self._lock:
            return task_id in self._loaded

    def run(
        self,
        task_id: str,
        read: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kw: P.kwargs,
    ) -> T:
        loaded = self._get(task_id)
        with loaded.lock:  # one read at a time on a connection
            loaded.conn.execute("BEGIN")
            try:
                return read(loaded.conn, *args, **kw)
            finally:
                loaded.conn.execute("ROLLBACK")

    def _get(self, task_id: str) -> _Loaded:
        with self._lock:
            loaded = self._loaded.get(task_id)
            if loaded is not None:
                self._loaded.move_to_end(task_id)
                return loaded
        loaded = self._load(task_id)  # outside the lock: another task's read need not wait for it
        with self._lock:
            self._loaded[task_id] = loaded
            self._loaded.move_to_end(task_id)
            total = sum(entry.events for entry in self._loaded.values())
            while total > self.max_events and len(self._loaded) > 1:
                _, dropped = self._loaded.popitem(last=False)
                total -= dropped.events
        return loaded

    def _load(self, task_id: str) -> _Loaded:
        try:
            rows = self.archive.read(task_id)
        except ArchiveMissing as exc:
            raise ArchiveGone(task_id, str(exc)) from None
        except ArchiveError as exc:
            raise ArchiveUnreadable(task_id, str(exc)) from None
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        add_read_functions(conn)
        migrate(conn)
        conn.execute("BEGIN")
        insert_rows(conn, rows)
        conn.execute("UPDATE tasks SET archived = ? WHERE task_id = ?", (SERVED, task_id))
        conn.execute("COMMIT")
        conn.execute("PRAGMA query_only = 1")
        self.loads += 1
        return _Loaded(conn, len(rows.events))
