"""Which SQL a read speaks: SQLite's (api/queries.py) or PostgreSQL's (api/pgqueries.py).

Every read in api/reads.py and api/livereads.py is one function of a connection, for both stores:
both drivers' connections have `execute(sql, params)` returning a cursor with `fetchone`/`fetchall`,
so a read only picks its statements by the connection it was given. The two modules define the same
names (tests/test_pg_reads.py checks it), and both render every row's JSON in the database, so the
answers are the same bytes.
"""

import sqlite3
from types import ModuleType
from typing import Any, Protocol

from taskevents.api import queries as sqlite_queries


class Connection(Protocol):
    """What a read uses of a connection: sqlite3's and psycopg's alike."""

    def execute(self, sql: Any, parameters: Any = ..., /) -> Any: ...


def queries(conn: Connection) -> ModuleType:
    """The statements for this connection's store."""
    if isinstance(conn, sqlite3.Connection):
        return sqlite_queries
    from taskevents.api import pgqueries  # psycopg's side: only with a PostgreSQL store

    return pgqueries
