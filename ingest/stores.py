"""The worker's store, of either kind: TASKEVENTS_DB a SQLite file (the embedded default) or a
`postgresql://` URL. Opening its writer, and telling its errors apart: a busy store is waited out
on the same connection; a broken one, or a PostgreSQL connection lost, is a fault the worker waits
out by reopening the store, taking it over again and recovering by batch id (ingest/recovery.py).

psycopg is imported only for a PostgreSQL store: it is the `postgres` extra's.
"""

import os
import sys
from typing import TYPE_CHECKING

from taskevents.archive import TaskArchive
from taskevents.db import open_writer
from taskevents.ingest.checkpointer import Checkpointer
from taskevents.ingest.writer import BatchWriter, StoreWriter
from taskevents.settings import Settings

if TYPE_CHECKING:
    import psycopg


def open_store_writer(settings: Settings, archive: TaskArchive) -> BatchWriter:
    """The store's writer, its schema migrated (made on first use). Raises the driver's errors."""
    if settings.postgres:
        from taskevents.ingest.pgwriter import PgStoreWriter
        from taskevents.pgdb import open_pg_writer

        pg = open_pg_writer(settings.db)
        try:
            return PgStoreWriter(pg, part=settings.partition, partitions=settings.partitions, archive=archive)
        except BaseException:
            pg.close()
            raise
    path = settings.sqlite_path
    conn = open_writer(path, settings.sqlite_synchronous)
    checkpointer = None
    try:
        if settings.checkpoint_interval > 0:
            checkpointer = Checkpointer(path, settings.sqlite_synchronous, settings.checkpoint_interval)
        return StoreWriter(conn, archive=archive, checkpointer=checkpointer)
    except BaseException:  # a store that opens but cannot be written: leave nothing running
        if checkpointer is not None:
            checkpointer.close()
        conn.close()
        raise


def store_identity(settings: Settings) -> tuple[int, int] | None:
    """Which SQLite file is at TASKEVENTS_DB now (st_dev, st_ino; None if none): a file replaced or
    removed under the worker is reopened, never written through a stale handle. A PostgreSQL
    database has no file to be replaced: always None."""
    if settings.postgres:
        return None
    try:
        st = os.stat(settings.sqlite_path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def postgres_error(exc: BaseException) -> "psycopg.Error | None":
    """`exc` if it is psycopg's (without importing psycopg for a SQLite store)."""
    psycopg = sys.modules.get("psycopg")  # imported by the PostgreSQL writer, if there is one
    return exc if psycopg is not None and isinstance(exc, psycopg.Error) else None
