"""The API's side of a PostgreSQL store: a pool of read-only sessions, one read per transaction.

The same contract as api/store.py's ReadStore for SQLite, so every read of api/reads.py and
api/livereads.py runs on either:
- every read runs all its queries in one `REPEATABLE READ READ ONLY` transaction: one snapshot, so a
  page and its total agree, and a reader never sees seq n+1 of a task without seq n (the worker
  commits whole batches);
- every statement of a read has a time limit (TASKEVENTS_QUERY_TIMEOUT): the server's
  `statement_timeout`, set for the session, stops one past it, and the read raises QueryTimeout (503
  `query_timeout`). A read of several statements (an overview has eight, and one a stage) may take longer;
  each is an index walk of one task, bounded by the endpoints' limits;
- a store that cannot be read (server down, schema not created yet, every connection busy) raises
  StoreUnavailable (503 `store_unavailable`), and the pool reconnects by itself.

The sessions are read-only twice over: `default_transaction_read_only`, and the role the API should
connect as, which needs SELECT only (docs/scaling.md has the grants). psycopg_pool keeps the pool:
connections opened in the background, broken ones replaced.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg import IsolationLevel
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from taskevents.api.errors import BadParameter
from taskevents.api.store import (
    ACQUIRE_TIMEOUT,
    DEFAULT_POOL_SIZE,
    DEFAULT_TIMEOUT,
    QueryTimeout,
    StoreUnavailable,
    TaskArchived,
)
from taskevents.pgdb import CONNECT_OPTIONS
from taskevents.pgschema import SCHEMA_VERSION

if TYPE_CHECKING:
    from taskevents.api.archived import ArchivedReads

log = logging.getLogger("taskevents.api.pgstore")

P = ParamSpec("P")
T = TypeVar("T")

UNREACHABLE_WAIT = 1.0  # seconds a read waits for a session while the server does not answer


def _conninfo(url: str, timeout: float) -> str:
    options = (
        f"{CONNECT_OPTIONS['options']} -c default_transaction_read_only=on"
        f" -c statement_timeout={max(1, round(timeout * 1000))}"
    )
    return make_conninfo(url, application_name="taskevents-api", **{**CONNECT_OPTIONS, "options": options})


class PgReadStore:
    """A pool of at most `size` read-only sessions to the PostgreSQL store at `url`; `name` is what
    logs and errors show of it (its password masked)."""

    def __init__(
        self, url: str, name: str, size: int = DEFAULT_POOL_SIZE, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.name = name
        self.size = size
        self.timeout = timeout
        self.opened = 0  # sessions opened so far
        self.archives: ArchivedReads | None = None  # where reads of archived tasks go (api/archived.py)
        self._conninfo = _conninfo(url, timeout)
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._lock = threading.Lock()
        self._reachable = True  # the last read reached the server (see `transaction`)
        self._closed = False
        self._count = threading.Lock()  # apart from _lock: the pool's threads configure while it is held

    # --- reading ---------------------------------------------------------------------------------

    def run(self, read: Callable[Concatenate[Any, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """`read(conn, *args)` inside one read transaction, within `timeout`; its result is returned."""
        try:
            with self.transaction() as conn:
                return read(conn, *args, **kw)
        except TaskArchived as exc:
            if self.archives is None:
                raise
            return self.archives.run(exc.task_id, exc.latest_seq, self.timeout, read, *args, **kw)

    def run_within(
        self, seconds: float, read: Callable[Concatenate[Any, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """`run` with a time limit of its own."""
        with self.transaction(seconds) as conn:
            return read(conn, *args, **kw)

    @contextmanager
    def transaction(self, seconds: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A pooled session inside one read-only transaction, its statements stopped (QueryTimeout)
        past `seconds` (default `timeout`, the session's own statement_timeout)."""
        limit = self.timeout if seconds is None else seconds
        try:
            pool = self._pool_()
            # While the server does not answer (the last read could not reach it), a read fails
            # within a second rather than waiting the full ACQUIRE_TIMEOUT for a session: readiness
            # probes and clients learn fast.
            wait = ACQUIRE_TIMEOUT if self._reachable else UNREACHABLE_WAIT
            failed = pool.get_stats().get("connections_errors", 0)
            with pool.connection(timeout=wait) as conn, conn.transaction():
                if seconds is not None:
                    ms = f"{max(1, round(limit * 1000))}ms"
                    conn.execute("SELECT set_config('statement_timeout', %s, true)", (ms,))
                yield conn
            self._reachable = True
        except psycopg.errors.QueryCanceled:
            raise QueryTimeout(limit) from None
        except PoolTimeout:
            # Unreachable if the pool failed to connect meanwhile; else every session was busy.
            self._reachable = pool.get_stats().get("connections_errors", 0) == failed
            raise StoreUnavailable(
                f"no connection to the store {self.name} within {wait:g}s"
                " (all busy, or the server does not answer)"
            ) from None
        except psycopg.errors.UndefinedTable as exc:
            raise StoreUnavailable(f"the store {self.name} is not initialised yet ({exc})") from None
        except psycopg.DataError as exc:
            # A value PostgreSQL's text cannot hold (a NUL character), in a path or query parameter.
            raise BadParameter("request", f"{exc}") from None
        except (psycopg.OperationalError, psycopg.InternalError) as exc:
            # The server gone, shutting down, out of resources, or the session's state refused: the
            # store's fault, not the client's (a bug in a statement, a ProgrammingError, stays a 500).
            self._reachable = self._reachable and not isinstance(exc, psycopg.OperationalError)
            log.warning("store read failed: %s", exc)
            raise StoreUnavailable(f"the store {self.name} could not be read: {exc}") from exc

    def replayed(self, lsn: str) -> bool:
        """The server can serve what was committed up to WAL position `lsn`: a replica that has
        replayed it, or a primary (which has it)."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)
            ).fetchone()
        return bool(row and row[0])

    def check(self) -> int:
        """The schema version of a readable store; raises StoreUnavailable otherwise (readiness)."""
        with self.transaction() as conn:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version != SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the store {self.name} has schema version {version}; this API reads version {SCHEMA_VERSION}"
            )
        return version

    # --- the pool --------------------------------------------------------------------------------

    def _pool_(self) -> "ConnectionPool[psycopg.Connection[Any]]":
        """The pool, opened on first need: the API may start before the server answers."""
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"the API is shutting down: no more reads of {self.name}")
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._conninfo,
                    min_size=1,
                    max_size=self.size,
                    open=False,
                    configure=self._configure,
                    name="taskevents-api",
                )
                self._pool.open(wait=False)
            return self._pool

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with self._count:
            self.opened += 1

    def close(self) -> None:
        """Close every session (at shutdown, after the last request); later reads are refused, so
        that a thread still running (the live hub's) cannot open a pool nobody closes."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.close()
