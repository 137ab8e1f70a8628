"""The API's side of the SQLite store: a bounded pool of read-only connections, one read per transaction.

Connections are opened on first need (the API may start before the worker has created the file) and
kept for the life of the process. Every read runs all its queries inside one `BEGIN … COMMIT`: in WAL
mode that is one snapshot, so a page and its total agree and a reader never sees seq n+1 of a task
without seq n (the worker commits whole batches). A read is synchronous and never held across an
`await`.

Every read has a time limit (`timeout`, TASKEVENTS_QUERY_TIMEOUT by default), enforced by SQLite
itself as Datasette does: a progress handler, called every PROGRESS_STEPS virtual-machine steps,
interrupts the statement once the read's deadline has passed, and the read raises QueryTimeout (the
connection stays usable). So no query holds a connection, a thread or the event loop for long.
"""

import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from taskevents.db import open_reader
from taskevents.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from taskevents.api.archived import ArchivedReads

log = logging.getLogger("taskevents.api.store")

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_POOL_SIZE = 8
ACQUIRE_TIMEOUT = 5.0  # seconds a read waits for a free connection before answering 503
DEFAULT_TIMEOUT = 5.0  # seconds a read may run (TASKEVENTS_QUERY_TIMEOUT)
# Virtual-machine steps between two looks at the clock: about 0.1-1 ms of work, so a deadline is kept
# to within a millisecond, while a 100-event page (~50,000 steps) pays for a handful of calls.
PROGRESS_STEPS = 10_000


class TaskArchived(Exception):
    """The store holds only the task's row: its events are in its archive (api/archived.py)."""

    def __init__(self, task_id: str, latest_seq: int) -> None:
        super().__init__(task_id)
        self.task_id = task_id
        self.latest_seq = latest_seq  # the archive to read is the one that ends there


class StoreUnavailable(Exception):
    """The store cannot be read now (missing, not initialised, unreadable); the reason is for a person."""


class QueryTimeout(StoreUnavailable):
    """A read ran past its time limit and was interrupted (HTTP 503 `query_timeout`)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the read took longer than its limit of {seconds:g}s and was stopped")
        self.seconds = seconds


class StoreReader(Protocol):
    """What the API reads with: ReadStore here for SQLite, PgReadStore (api/pgstore.py) for PostgreSQL."""

    @property
    def name(self) -> str: ...

    def run(self, read: Callable[Concatenate[Any, P], T], *args: P.args, **kw: P.kwargs) -> T: ...

    def run_within(
        self, seconds: float, read: Callable[Concatenate[Any, P], T], *args: P.args, **kw: P.kwargs
    ) -> T: ...

    def check(self) -> int: ...

    def replayed(self, lsn: str) -> bool:
        """Whether reads see every commit up to WAL position `lsn` (a PostgreSQL replica's question)."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True, eq=False)
class _Reader:
    conn: sqlite3.Connection
    file_id: tuple[int, int]  # (st_dev, st_ino) when opened: a replaced file needs a new connection
    deadline: float = math.inf  # monotonic time past which the progress handler interrupts

    def past_deadline(self) -> bool:
        return time.monotonic() > self.deadline


class ReadStore:
    """A pool of at most `size` read-only connections to the SQLite file at `path`."""

    def __init__(
        self, path: Path, size: int = DEFAULT_POOL_SIZE, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.path = path
        self.size = size
        self.timeout = timeout
        self._idle: queue.LifoQueue[_Reader] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self.opened = 0  # connections opened so far: stays at most `size` while the file stays the same
        self.archives: ArchivedReads | None = None  # where reads of archived tasks go (api/archived.py)

    @property
    def name(self) -> str:
        return str(self.path)

    # --- reading ---------------------------------------------------------------------------------

    def run(self, read: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """`read(conn, *args)` inside one read transaction, within `timeout`; its result is returned.

        Raises QueryTimeout past the time limit, StoreUnavailable when the store cannot be read (the
        connection is then discarded).
        """
        try:
            with self.transaction() as conn:
                return read(conn, *args, **kw)
        except TaskArchived as exc:
            if self.archives is None:
                raise
            return self.archives.run(exc.task_id, exc.latest_seq, self.timeout, read, *args, **kw)

    def run_within(
        self,
        seconds: float,
        read: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kw: P.kwargs,
    ) -> T:
        """`run` with a time limit of its own. An archived task's read is never run inline (loading its
        archive, or waiting for its connection, could stall the loop): QueryTimeout sends it to a thread."""
        try:
            with self.transaction(seconds) as conn:
                return read(conn, *args, **kw)
        except TaskArchived:
            raise QueryTimeout(seconds) from None

    @contextmanager
    def transaction(self, seconds: float | None = None) -> Iterator[sqlite3.Connection]:
        """A pooled connection inside `BEGIN … COMMIT`: every query in the block sees one snapshot, and
        the block's queries are stopped (QueryTimeout) `seconds` after it began (default `timeout`)."""
        limit = self.timeout if seconds is None else seconds
        with self._connection() as reader:
            conn = reader.conn
            reader.deadline = time.monotonic() + limit
            try:
                conn.execute("BEGIN")
                yield conn
            except BaseException as exc:
                timed_out = (
                    isinstance(exc, sqlite3.OperationalError)
                    and "interrupted" in str(exc)
                    and reader.past_deadline()
                )
                reader.deadline = math.inf  # the ROLLBACK must not be interrupted too
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if timed_out:
                    raise QueryTimeout(limit) from None
                raise
            reader.deadline = math.inf
            conn.execute("COMMIT")  # nothing was written: COMMIT just ends the snapshot

    def replayed(self, lsn: str) -> bool:
        """A SQLite file has no replicas: every reader sees every commit."""
        return True

    def check(self) -> int:
        """The schema version of a readable store; raises StoreUnavailable otherwise (readiness)."""
        with self._connection() as reader:
            return int(reader.conn.execute("PRAGMA user_version").fetchone()[0])

    # --- the pool --------------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[_Reader]:
        if not self._slots.acquire(timeout=ACQUIRE_TIMEOUT):
            raise StoreUnavailable(f"all {self.size} store connections stayed busy for {ACQUIRE_TIMEOUT:g}s")
        reader: _Reader | None = None
        try:
            reader = self._take()
            yield reader
        except sqlite3.DatabaseError as exc:
            # "no such table", "disk I/O error", a corrupt or deleted file: answer 503, and let the
            # next read open a fresh connection rather than reuse this one.
            log.warning("store read failed, connection discarded: %s", exc)
            if reader is not None:
                self._discard(reader)
                reader = None
            raise StoreUnavailable(f"the store could not be read: {exc}") from exc
        except BaseException:
            if reader is not None and reader.conn.in_transaction:
                try:
                    reader.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    self._discard(reader)
                    reader = None
            raise
        finally:
            if reader is not None:
                self._idle.put(reader)
            self._slots.release()

    def _take(self) -> _Reader:
        """An idle connection still pointing at the current file, or a new one."""
        file_id = self._file_id()
        while True:
            try:
                reader = self._idle.get_nowait()
            except queue.Empty:
                return self._open(file_id)
            if reader.file_id == file_id:
                return reader
            self._discard(reader)  # the file was replaced (a new store): drop connections to the old one

    def _file_id(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise StoreUnavailable(f"the store {self.path} does not exist yet ({exc.strerror})") from None
        return st.st_dev, st.st_ino

    def _open(self, file_id: tuple[int, int]) -> _Reader:
        try:
            conn = open_reader(self.path)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store {self.path} cannot be opened: {exc}") from None
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            conn.close()
            raise StoreUnavailable(f"the store {self.path} cannot be read: {exc}") from None
        if version != SCHEMA_VERSION:
            conn.close()
            if version == 0:
                raise StoreUnavailable(f"the store {self.path} is not initialised yet (no schema)")
            raise StoreUnavailable(
                f"the store {self.path} has schema version {version}; this API reads version {SCHEMA_VERSION}"
            )
        with self._lock:
            self.opened += 1
        reader = _Reader(conn, file_id)
        conn.set_progress_handler(reader.past_deadline, PROGRESS_STEPS)
        return reader

    @staticmethod
    def _discard(reader: _Reader) -> None:
        try:
            reader.conn.close()
        except sqlite3.Error:
            log.debug("closing a discarded store connection failed", exc_info=True)

    def close(self) -> None:
        """Close the idle connections (at shutdown, after the last request). The pool stays usable."""
        while True:
            try:
                self._discard(self._idle.get_nowait())
            except queue.Empty:
                return
