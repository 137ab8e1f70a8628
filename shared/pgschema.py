"""The store's schema on PostgreSQL, created and migrated by version (`schema_version`), as
shared/schema.py does for SQLite: the same tables, columns and meaning.

What differs, and why:
- Every unique key includes `task_id`: `(task_id, seq)` is the events' primary key and
  `(task_id, event_uid)` the idempotency key, so `task_events` and `spans` are hash-partitioned by task
  (TABLE_PARTITIONS partitions; declarative partitioning needs the partition key in every unique key)
  and could be distributed by task (Citus) without a redesign. Deduplication by `event_uid` is
  therefore per task, as KurrentDB's event ids are per stream: the same uid in two tasks is two
  events (SQLite's index is global; producers make uids per event, so both stores see the same).
- `event_id` is an identity column, not a key: unique in practice (one sequence), ordered by commit
  within a task as `seq` is; pages and cursors use `seq`.
- `payload` is `text`, not `jsonb`: the API answers the payload byte for byte as the worker encoded it.
- `ingest_state` has a row per queue partition (`part`), each with its own batch id and writer epoch.
"""

from typing import Final

from taskevents.event import FAILURE_OUTCOMES, SUCCESS_OUTCOMES

TABLE_PARTITIONS: Final = 8  # hash partitions of task_events and spans, fixed when the schema is made

_PHASES = "'planning', 'executing', 'verifying', 'recovery'"
_CHECKPOINTS = "'checkpoint_commit', 'checkpoint_verified', 'checkpoint_invalid'"


def _partitions(table: str) -> str:
    return "\n".join(
        f"CREATE TABLE {table}_p{n} PARTITION OF {table}"
        f" FOR VALUES WITH (MODULUS {TABLE_PARTITIONS}, REMAINDER {n});"
        for n in range(TABLE_PARTITIONS)
    )


# shared/event.py's exit_status in PL/pgSQL: the outcome word (trimmed of what Python's str.strip()
# trims, any case), else an integral exit_code (a number, or ASCII digits with spaces), else succeeded
# only when the payload says neither. tests/test_pg_reads.py checks it against the Python rule.
_EXIT_STATUS: Final = (
    """
    CREATE FUNCTION te_exit_status(payload text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
    DECLARE
        doc json;
        word text;
        code json;
        n numeric;
    BEGIN
        BEGIN
            -- text cannot hold the \\u0000 a JSON string may: as U+FFFD, it still makes no known word
            -- and no digits, as in Python, where reading it as NUL would fail the whole statement
            doc := replace(payload, '\\u0000', '\\ufffd')::json;
        EXCEPTION WHEN others THEN
            RETURN NULL;
        END;
        IF json_typeof(doc) IS DISTINCT FROM 'object' THEN
            RETURN NULL;
        END IF;
        IF json_typeof(doc -> 'outcome') = 'string' THEN
            word := lower(btrim(doc ->> 'outcome', '"""
    + "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
    + """'));
            IF word IN ("""
    + ", ".join(f"'{w}'" for w in sorted(SUCCESS_OUTCOMES))
    + """) THEN
                RETURN 'succeeded';
            END IF;
            IF word IN ("""
    + ", ".join(f"'{w}'" for w in sorted(FAILURE_OUTCOMES))
    + """) THEN
                RETURN 'failed';
            END IF;
        END IF;
        code := doc -> 'exit_code';
        IF json_typeof(code) = 'number' THEN
            n := (code #>> '{}')::numeric;
            IF n = trunc(n) THEN
                RETURN CASE WHEN n = 0 THEN 'succeeded' ELSE 'failed' END;
            END IF;
        ELSIF json_typeof(code) = 'string'
              AND (code #>> '{}') ~ '^[ \\t\\n\\r]*[+-]?[0-9]{1,20}[ \\t\\n\\r]*$' THEN
            RETURN CASE WHEN btrim(code #>> '{}', E' \\t\\n\\r')::numeric = 0
                        THEN 'succeeded' ELSE 'failed' END;
        END IF;
        IF code IS NULL AND (doc -> 'outcome' IS NULL OR json_typeof(doc -> 'outcome') = 'null') THEN
            RETURN 'succeeded';
        END IF;
        RETURN 'failed';
    END
    $fn$;
    """
)

# Each entry moves the schema from version i to i + 1. Never edit a released entry: append a new one.
# Version 1 is SQLite's versions 1 to 4 at once (the store did not exist on PostgreSQL before).
MIGRATIONS: Final[tuple[str, ...]] = (
    f"""
    CREATE TABLE task_events (
        event_id       bigint GENERATED ALWAYS AS IDENTITY,
        task_id        text   NOT NULL CHECK (length(task_id) BETWEEN 1 AND 128),
        seq            bigint NOT NULL CHECK (seq > 0),
        event_type     text   NOT NULL CHECK (length(event_type) > 0),
        phase          text   CHECK (phase IN ({_PHASES})),
        actor          text   NOT NULL CHECK (length(actor) > 0),
        span_id        text   NOT NULL CHECK (length(span_id) > 0),
        parent_span_id text,
        payload        text   NOT NULL DEFAULT '{{}}',
        created_at     text   NOT NULL,
        event_uid      text,
        emitted_at     text,
        PRIMARY KEY (task_id, seq)
    ) PARTITION BY HASH (task_id);
    {_partitions("task_events")}
    CREATE UNIQUE INDEX idx_task_events_task_uid ON task_events (task_id, event_uid);
    CREATE INDEX idx_task_events_task_created ON task_events (task_id, created_at);
    CREATE INDEX idx_task_events_parent_span ON task_events (task_id, parent_span_id);
    CREATE INDEX idx_task_events_task_phase ON task_events (task_id, phase, seq);
    CREATE INDEX idx_task_events_checkpoints ON task_events (task_id, seq)
        WHERE event_type IN ({_CHECKPOINTS});
    CREATE INDEX idx_task_events_links ON task_events (task_id, seq) WHERE event_type = 'evidence_linked';

    CREATE TABLE tasks (
        task_id         text    PRIMARY KEY,
        latest_seq      bigint  NOT NULL,
        event_count     bigint  NOT NULL,
        first_at        text    NOT NULL,
        last_at         text    NOT NULL,
        current_phase   text,
        status          text    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
        exit_reason     text,
        archived        integer NOT NULL DEFAULT 0,
        archived_failed integer
    );
    CREATE INDEX idx_tasks_last_at ON tasks (last_at, task_id);
    CREATE INDEX idx_tasks_archivable ON tasks (last_at) WHERE archived = 0 AND status != 'running';

    CREATE TABLE spans (
        task_id        text   NOT NULL,
        span_id        text   NOT NULL,
        parent_span_id text,
        event_type     text   NOT NULL,
        phase          text,
        first_seq      bigint NOT NULL,
        last_seq       bigint NOT NULL,
        event_count    bigint NOT NULL,
        state          text   NOT NULL CHECK (state IN ('open', 'closed', 'failed')),
        started_at     text   NOT NULL,
        end_seq        bigint,
        ended_at       text,
        work_item_id   text,
        work_type      text,
        progress       text,
        error_code     text,
        PRIMARY KEY (task_id, span_id)
    ) PARTITION BY HASH (task_id);
    {_partitions("spans")}
    CREATE INDEX idx_spans_open ON spans (task_id, first_seq) WHERE state = 'open';
    CREATE INDEX idx_spans_parent ON spans (task_id, parent_span_id, first_seq);
    CREATE INDEX idx_spans_failed ON spans (task_id) WHERE state = 'failed';

    -- Per queue partition: its last committed batch (what it did) and its writer's epoch.
    CREATE TABLE ingest_state (
        part          integer PRIMARY KEY CHECK (part >= 0),
        last_batch_id bigint  NOT NULL DEFAULT 0,
        writer_epoch  bigint  NOT NULL DEFAULT 0,
        last_batch    text
    );
    INSERT INTO ingest_state (part) VALUES (0);

    CREATE TABLE task_restores (task_id text PRIMARY KEY, restored_at text NOT NULL);
    CREATE TABLE archive_pending (task_id text PRIMARY KEY, last_seq bigint NOT NULL);
    """,
    # The queue's partition count, recorded by the first worker: fixed for the deployment, since a
    # task's partition (crc32(task_id) % N) must not change while its events are in flight.
    """
    CREATE TABLE deployment (
        singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        partitions integer NOT NULL CHECK (partitions >= 1)
    );
    """,
    # For the read API (api/pgqueries.py): the task list sorts and pages by (last_at, task_id) in code
    # point order, as SQLite does, whatever the database's locale; and timeline searches for failures
    # ask te_exit_status, the rule of shared/event.py's exit_status, as SQLite's registered function.
    """
    ALTER TABLE tasks ALTER COLUMN task_id TYPE text COLLATE "C", ALTER COLUMN last_at TYPE text COLLATE "C";
    """
    + _EXIT_STATUS,
    # Retention with a partitioned queue: each partition's writer removes only its own tasks' rows.
    """
    ALTER TABLE archive_pending ADD COLUMN part integer NOT NULL DEFAULT 0;
    CREATE INDEX idx_archive_pending_part ON archive_pending (part);
    """,
)

SCHEMA_VERSION: Final = len(MIGRATIONS)
MIGRATION_LOCK: Final = 0x7A5C_E7E0  # advisory lock: one migrating session at a time
