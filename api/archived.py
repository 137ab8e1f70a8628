"""Reads of archived tasks, answered from their archives with the store's own queries.

An archived task keeps its `tasks` row in the store (`archived = 1`); its events and spans are in its
archive (shared/archive.py). A read that meets such a task (`TaskArchived`, api/store.py, raised by the
first query of every task read, always on a worker thread) runs again here: on an in-memory SQLite
database of the store's schema holding the archive's rows, with the same function, so the answer is
the same JSON, byte for byte, as when the task was in the store. The task row there says
`archived = 2` ("served from its archive"): reads show `archived: true` and are not sent here again.

- The archive read is the one that ends at the store row's latest seq: a task restored, given a late
  event and archived again is loaded anew, never served from an older copy.
- Loaded databases are kept, the most recently used first, up to MAX_EVENTS events in all; one load
  per task at a time, at most LOADS at once (a load holds the archive's rows twice for a moment).
- Reads on a loaded database take turns (one connection each) and stop at TASKEVENTS_QUERY_TIMEOUT.
- A missing archive answers 410 `archive_missing`; one that cannot be read, or that does not end
  where the store says, 503 `archive_unreadable`.
"""

import math
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from taskevents.api.errors import ApiError
from taskevents.api.store import QueryTimeout
from taskevents.archive import ArchiveError, ArchiveMissing, TaskArchive, insert_rows
from taskevents.db import add_read_functions
from taskevents.schema import migrate

P = ParamSpec("P")
T = TypeVar("T")

MAX_EVENTS = 500_000  # events held in loaded archives, in all (~1 KB each in SQLite)
LOADS = 2  # archives loaded at once
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
    last_seq: int
    events: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    deadline: float = math.inf


class ArchivedReads:
    """Runs a task read on the task's archive (loaded once, kept while room allows)."""

    def __init__(self, directory: Path, max_events: int = MAX_EVENTS) -> None:
        self.archive = TaskArchive.at(directory)
        self.max_events = max_events
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._loads = threading.BoundedSemaphore(LOADS)
        self.loads = 0  # archives read so far (tests)

    def run(
        self,
        task_id: str,
        latest_seq: int,
        timeout: float,
        read: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kw: P.kwargs,
    ) -> T:
        loaded = self._get(task_id, latest_seq)
        with loaded.lock:  # one read at a time on a connection
            loaded.deadline = time.monotonic() + timeout
            loaded.conn.execute("BEGIN")
            try:
                return read(loaded.conn, *args, **kw)
            except sqlite3.OperationalError as exc:
                if "interrupted" in str(exc) and time.monotonic() > loaded.deadline:
                    raise QueryTimeout(timeout) from None
                raise
            finally:
                loaded.deadline = math.inf
                loaded.conn.execute("ROLLBACK")

    def _cached(self, task_id: str, latest_seq: int) -> _Loaded | None:
        with self._lock:
            loaded = self._loaded.get(task_id)
            if loaded is None or loaded.last_seq != latest_seq:
                return None
            self._loaded.move_to_end(task_id)
            return loaded

    def _get(self, task_id: str, latest_seq: int) -> _Loaded:
        loaded = self._cached(task_id, latest_seq)
        if loaded is not None:
            return loaded
        with self._lock:
            one = self._loading.setdefault(task_id, threading.Lock())
        with one:  # the first reader loads it; the others then find it loaded
            loaded = self._cached(task_id, latest_seq)
            if loaded is not None:
                return loaded
            with self._loads:
                loaded = self._load(task_id, latest_seq)
            with self._lock:
                self._loaded[task_id] = loaded
                self._loaded.move_to_end(task_id)
                self._loading.pop(task_id, None)
                total = sum(entry.events for entry in self._loaded.values())
                while total > self.max_events and len(self._loaded) > 1:
                    _, dropped = self._loaded.popitem(last=False)
                    total -= dropped.events
        return loaded

    def _load(self, task_id: str, latest_seq: int) -> _Loaded:
        try:
            rows = self.archive.read(task_id)
        except ArchiveMissing as exc:
            raise ArchiveGone(task_id, str(exc)) from None
        except ArchiveError as exc:
            raise ArchiveUnreadable(task_id, str(exc)) from None
        last_seq = int(rows.events[-1]["seq"]) if rows.events else 0
        if last_seq != latest_seq:
            raise ArchiveUnreadable(task_id, f"it ends at seq {last_seq}, the store's task at {latest_seq}")
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        add_read_functions(conn)
        migrate(conn)
        conn.execute("BEGIN")
        try:
            insert_rows(conn, rows)
        except ArchiveError as exc:
            raise ArchiveUnreadable(task_id, str(exc)) from None
        conn.execute("UPDATE tasks SET archived = ? WHERE task_id = ?", (SERVED, task_id))
        conn.execute("COMMIT")
        conn.execute("PRAGMA query_only = 1")
        loaded = _Loaded(conn, last_seq, len(rows.events))
        # Stopped at its deadline like the store's reads (api/store.py): checked every 1,000 steps.
        conn.set_progress_handler(lambda: time.monotonic() > loaded.deadline, 1000)
        self.loads += 1
        return loaded
