"""Opening the PostgreSQL store (psycopg 3): the worker's connection, the schema migrated by version.

Only imported when TASKEVENTS_DB is a `postgresql://` URL: psycopg is the `postgres` extra's.
"""

import psycopg

from taskevents.pgschema import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION
from taskevents.schema import SchemaError


def open_pg_writer(url: str) -> psycopg.Connection:
    """The writer's connection, schema migrated. Autocommit: every change is made in an explicit
    `with conn.transaction()`, so no transaction is ever left open between batches."""
    conn = psycopg.connect(url, autocommit=True, application_name="taskevents-ingest")
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
