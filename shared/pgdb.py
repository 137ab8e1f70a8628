"""Opening the PostgreSQL store (psycopg 3): the worker's connection, the schema migrated by version.

Only imported when TASKEVENTS_DB is a `postgresql://` URL: psycopg is the `postgres` extra's.
"""

import psycopg
from psycopg.conninfo import make_conninfo

from taskevents.pgschema import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION
from taskevents.schema import SchemaError

# A network split must not leave the worker blocked on a dead socket (its heartbeat still saying
# healthy), nor a deposed writer's transaction holding its partition's row for the successor. Both
# ends probe the connection (the client's keepalives and user timeout; the server's, set for this
# session, and its check of the client during a statement), so a dead one ends in about 30 s; a
# lock waited for over 30 s, or a transaction left idle for 60 s, is ended by the server. The worker
# then reopens, takes over and recovers by batch id (ingest/worker.py).
CONNECT_OPTIONS: dict[str, str | int] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms
    "options": " ".join(
        f"-c {setting}"
        for setting in (
            "lock_timeout=30s",
            "idle_in_transaction_session_timeout=60s",
            "tcp_keepalives_idle=10",
            "tcp_keepalives_interval=5",
            "tcp_keepalives_count=3",
            "tcp_user_timeout=30000",
            "client_connection_check_interval=10s",
        )
    ),
}


def open_pg_writer(url: str) -> psycopg.Connection:
    """The writer's connection, schema migrated. Autocommit: every change is made in an explicit
    `with conn.transaction()`, so no transaction is ever left open between batches."""
    conninfo = make_conninfo(url, application_name="taskevents-ingest", **CONNECT_OPTIONS)
    conn = psycopg.connect(conninfo, autocommit=True)
    try:
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: psycopg.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION, each step in its own transaction under an advisory lock (two
    workers starting at once on a new database never both run a step). Raises SchemaError for a schema
    newer than this code."""
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"store schema is version {version}, newer than this code ({SCHEMA_VERSION})"
                )
            if version == SCHEMA_VERSION:
                return version
            conn.execute(MIGRATIONS[version].encode())  # a script: psycopg sends it as one simple query
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (1)")
            else:
                conn.execute("UPDATE schema_version SET version = %s", (version + 1,))
