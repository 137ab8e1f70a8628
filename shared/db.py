"""Opening the SQLite store: one read-write connection for the worker, read-only ones for the API."""

import logging
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import orjson

from taskevents.event import exit_status
from taskevents.schema import migrate

log = logging.getLogger("taskevents.writer")

BUSY_TIMEOUT_MS = 5000
WAL_AUTOCHECKPOINT_PAGES = 16384  # 64 MiB of 4 KiB pages: the writer's PASSIVE checkpoint threshold
# Past this the writer forces a TRUNCATE checkpoint (ingest/walcap.py): overlapping readers can keep
# the PASSIVE one from ever restarting the WAL.
WAL_LIMIT_BYTES = 2 * WAL_AUTOCHECKPOINT_PAGES * 4096
READER_MMAP_BYTES = 1 << 30  # address space, not memory: pages come from the OS page cache


def open_writer(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """The single writer: WAL, synchronous NORMAL (or FULL), schema migrated. Transactions are explicit.

    NORMAL syncs the WAL at checkpoints only: a crash of the process loses nothing, a power loss may
    lose the last commits. FULL syncs it at every commit (docs/reliability.md has the cost).
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: the worker may be built on one thread and run on another (tests do).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    # Pages freed by archiving go back to the file system a bounded step at a time (the worker's
    # `PRAGMA incremental_vacuum`), never by a full VACUUM. Takes effect on a new store at once.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: keeps the hot index pages of a large store
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
    migrate(conn)
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
        _convert_to_incremental_vacuum(conn, path)
    return conn


INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL


def _convert_to_incremental_vacuum(conn: sqlite3.Connection, path: Path) -> None:
    """A store made before retention existed: once, a VACUUM switches it to incremental vacuum (SQLite
    changes the mode only by rebuilding the file). It takes a while for a large store (logged), writes
    the whole store through the WAL once, and the WAL is emptied right after."""
    log.warning("converting %s to incremental vacuum, once (a VACUUM: time and disk as its size)", path)
    started = time.monotonic()
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.warning("converted %s in %.1f s", path, time.monotonic() - started)


def open_reader(path: Path) -> sqlite3.Connection:
    """A connection that cannot write: `mode=ro` at open and `query_only` on top.

    The file is not opened read-only at the file-system level: a WAL reader must still update `-shm`.
    Raises sqlite3.OperationalError if the store does not exist.
    """
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only = 1")
    # Read pages straight from the OS page cache (shared by every connection of every API process)
    # instead of a read() into each connection's small private cache: a task's events are spread over
    # the file, so a graph of 5,000 spans touches ~5,000 pages (first-event lookups 11 ms -> 5 ms).
    conn.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES}")
    add_read_functions(conn)
    return conn


def add_read_functions(conn: sqlite3.Connection) -> None:
    """The SQL functions the API's queries use: the status a runner_exit's payload gives, for queries
    that look for failures (api/queries.py)."""
    conn.create_function("te_exit_status", 1, _exit_status_of, deterministic=True)


def _exit_status_of(payload: str | None) -> str | None:
    try:
        value = orjson.loads(payload) if payload is not None else None
    except orjson.JSONDecodeError:
        return None
    return exit_status(value) if isinstance(value, dict) else None
