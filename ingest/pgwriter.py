"""Commits a batch of decoded events to PostgreSQL: the same contract as the SQLite writer
(ingest/writer.py), with the same planning (ingest/plan.py): dedup by event_uid per task, per-task
seq in queue order, task and span summaries, the batch id and its record, all in one transaction.

Rows go in as `unnest()` of one array per column: one statement, and one round trip, per table and
batch, whatever the batch's size (COPY would need a round trip per table too, and cannot upsert).

Exactly one writer per queue partition (`part`): `take_over` bumps the partition's writer epoch; every
commit locks the partition's `ingest_state` row (`FOR UPDATE`) and checks the epoch first, so a deposed
writer's commit is refused, and a take-over waits for a commit in progress to end. Two partitions'
writers never touch the same task (the queue routes each task to one partition).
"""

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from taskevents.archive import ArchiveError, TaskArchive, TaskRows
from taskevents.clock import format_ms
from taskevents.ingest.plan import SpanChange, TaskChange, cached_latest, plan, span_rows, span_upsert_set
from taskevents.ingest.writer import (
    CommitResult,
    DeadMark,
    Decoded,
    PartitionsChanged,
    Prepared,
    StoreFenced,
)
from taskevents.keys import partition_of

_INSERT_EVENTS = """
INSERT INTO task_events (task_id, seq, event_type, phase, actor, span_id, parent_span_id,
                         payload, created_at, event_uid, emitted_at)
SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],
                     %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
"""
_INSERT_TASKS = """
INSERT INTO tasks (task_id, latest_seq, event_count, first_at, last_at, current_phase, status, exit_reason)
SELECT t, s, n, %s, %s, p, st, r
FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[])
     AS c(t, s, n, p, st, r)
"""
_UPDATE_TASKS = """
UPDATE tasks SET latest_seq = c.s, event_count = tasks.event_count + c.n, last_at = %s,
                 current_phase = coalesce(c.p, tasks.current_phase), status = coalesce(c.st, tasks.status),
                 exit_reason = CASE WHEN c.changed THEN c.r ELSE tasks.exit_reason END
FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::boolean[], %s::text[])
     AS c(t, s, n, p, st, changed, r)
WHERE tasks.task_id = c.t
"""
_SPAN_ARRAYS = (
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[],"
    " %s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[]"
)

log = logging.getLogger("taskevents.pgwriter")


def _upsert_spans_sql(state_changed: bool) -> str:
    return f"""
INSERT INTO spans (task_id, span_id, parent_span_id, event_type, phase, first_seq, last_seq, event_count,
                   state, started_at, end_seq, ended_at, work_item_id, work_type, progress, error_code)
SELECT * FROM unnest({_SPAN_ARRAYS})
{span_upsert_set(state_changed)}
"""


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to one list per column (what unnest() takes)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


class PgStoreWriter:
    """Owns the partition's read-write connection; `commit` is the only way its events get stored."""

    def __init__(
        self,
        conn: psycopg.Connection,
        *,
        part: int = 0,
        partitions: int = 1,
        archive: TaskArchive | None = None,
        seq_cache_size: int = 100_000,
    ) -> None:
        self._conn = conn
        self.archive = archive  # where archived tasks' rows are, for a late event (None: unreadable)
        self._columns_of: dict[str, set[str]] = {}
        self.part = part
        self.partitions = partitions
        self._latest: dict[str, int] = {}  # task_id -> latest committed seq (bounded, refilled)
        self._cache_size = seq_cache_size
        self.epoch: int | None = None
        row = conn.execute(
            "SELECT last_batch_id, last_batch FROM ingest_state WHERE part = %s", (part,)
        ).fetchone()
        if row is None:  # a partition this store has not had yet
            conn.execute("INSERT INTO ingest_state (part) VALUES (%s) ON CONFLICT DO NOTHING", (part,))
            row = (0, None)
        self.last_batch_id, self.last_batch = self._committed(row)

    @staticmethod
    def _committed(row: tuple[int, str | None]) -> tuple[int, CommitResult | None]:
        last_id, record = row
        return int(last_id), CommitResult.from_json(record) if record is not None else None

    def take_over(self) -> int:
        """Become the partition's writer: bump its epoch (refusing every later commit of an earlier
        writer) and reload what it has committed. Returns the epoch. Raises PartitionsChanged if the
        store's queue was partitioned otherwise (the first worker records the count)."""
        with self._conn.transaction():
            self._conn.execute(
                "INSERT INTO deployment (partitions) VALUES (%s) ON CONFLICT DO NOTHING", (self.partitions,)
            )
            recorded = self._conn.execute("SELECT partitions FROM deployment").fetchone()
            if recorded is not None and int(recorded[0]) != self.partitions:
                raise PartitionsChanged(
                    f"the store's queue has {recorded[0]} partitions and this worker was given "
                    f"{self.partitions} (TASKEVENTS_PARTITIONS): docs/scaling.md says how to change it"
                )
            row = self._conn.execute(
                "UPDATE ingest_state SET writer_epoch = writer_epoch + 1 WHERE part = %s"
                " RETURNING writer_epoch, last_batch_id, last_batch",
                (self.part,),
            ).fetchone()
            # Archived tasks still to empty that are this partition's now (the count was changed as
            # docs/scaling.md says): their rows are this writer's to remove, no other's.
            pending = self._conn.execute("SELECT task_id, part FROM archive_pending").fetchall()
            mine = [t for t, p in pending if p != self.part and partition_of(t, self.partitions) == self.part]
            if mine:
                self._conn.execute(
                    "UPDATE archive_pending SET part = %s WHERE task_id = ANY(%s)", (self.part, mine)
                )
        assert row is not None  # made in __init__
        self.epoch = int(row[0])
        self.last_batch_id, self.last_batch = self._committed((row[1], row[2]))
        self._latest.clear()
        return self.epoch

    @contextmanager
    def fenced(self) -> Iterator[psycopg.Connection]:
        """A transaction that commits only while this writer holds the partition (its epoch)."""
        if self.epoch is None:
            raise StoreFenced("take_over() the store before writing to it")
        with self._conn.transaction():
            row = self._conn.execute(
                "SELECT writer_epoch FROM ingest_state WHERE part = %s FOR UPDATE", (self.part,)
            ).fetchone()
            epoch = None if row is None else int(row[0])
            if epoch != self.epoch:
                raise StoreFenced(
                    f"another worker took the store over (epoch {epoch}; ours was {self.epoch})"
                )
            yield self._conn

    def commit(
        self,
        batch_id: int,
        batch: Sequence[Decoded],
        dead: Sequence[DeadMark] = (),
        *,
        keep: int | None = None,
        prepared: Prepared | None = None,
    ) -> CommitResult:
        """Store the batch and record `batch_id` as committed, with what it did, all or nothing.
        Raises StoreFenced if another writer took the partition over, psycopg.Error with nothing written.
        `prepared` is always None here (`prepare`)."""
        created_at = format_ms(time.time_ns())
        result = CommitResult(batch_id, dead=list(dead), dead_at=created_at, keep=keep)
        with self.fenced() as conn:
            # A late event of an archived task brings the task back first: its seq goes on from the
            # archived ones, and its event_uids are known again. Cached tasks are not archived.
            self._bring_back(conn, {d.event.task_id for d in batch if d.event.task_id not in self._latest})
            fresh = self._drop_duplicates(conn, batch)
            result.duplicates = len(batch) - len(fresh)
            latest = self._load_latest(conn, {d.event.task_id for d in fresh})
            rows, task_changes, span_changes = plan(fresh, latest, created_at)
            if rows:
                conn.execute(_INSERT_EVENTS, _columns(rows, 11))
            self._write_tasks(conn, task_changes, created_at)
            self._write_spans(conn, span_changes.values(), created_at)
            result.stored = len(rows)
            result.tasks = {t: (c.first_seq, c.last_seq) for t, c in task_changes.items()}
            conn.execute(
                "UPDATE ingest_state SET last_batch_id = %s, last_batch = %s WHERE part = %s",
                (batch_id, result.to_json().decode(), self.part),
            )
        result.lsn = self._wal_position(batch_id)
        if len(self._latest) + len(task_changes) > self._cache_size:
            self._latest.clear()
        for task_id, change in task_changes.items():
            self._latest[task_id] = change.last_seq
        self.last_batch_id, self.last_batch = batch_id, result
        return result

    def prepare(self, batch: Sequence[Decoded], base: dict[str, int | None]) -> None:
        """Nothing to plan ahead: a PostgreSQL commit is bound by its round trips and the server's
        work, not by the worker's Python (docs/scaling.md), so it plans inside its transaction."""
        return None

    # --- retention (ingest/archived.py asks; the same contract as StoreWriter's) ------------------
    # archive_pending rows carry their partition: a writer removes only its own tasks' rows.

    def mark_archived(self, task_id: str, latest_seq: int) -> bool:
        """The task's archive holds seq 1..latest_seq: if the task has ended there (no late event
        since), it is archived from now on and its rows are queued for removal. False if it is not,
        or if another partition's writer owns the task."""
        if not self._owns(task_id):
            return False
        with self.fenced() as conn:
            row = conn.execute(
                "SELECT latest_seq, status, archived FROM tasks WHERE task_id = %s FOR UPDATE", (task_id,)
            ).fetchone()
            if row is None or row[0] != latest_seq or row[1] == "running" or row[2] != 0:
                return False
            conn.execute(
                "UPDATE tasks SET archived = 1, archived_failed = (SELECT count(*) FROM spans"
                " WHERE task_id = %s AND state = 'failed') WHERE task_id = %s",
                (task_id, task_id),
            )
            conn.execute(
                "INSERT INTO archive_pending (task_id, last_seq, part) VALUES (%s, %s, %s)"
                " ON CONFLICT (task_id) DO NOTHING",
                (task_id, latest_seq, self.part),
            )
        self._latest.pop(task_id, None)  # its next event must find it archived
        return True

    def drop_archived_rows(self, limit: int) -> int:
        """Remove up to `limit` rows of this partition's archived tasks not yet emptied; returns how
        many (0: none left)."""
        with self.fenced() as conn:
            dropped = 0
            pending = conn.execute(
                "SELECT task_id, last_seq FROM archive_pending WHERE part = %s LIMIT 8", (self.part,)
            ).fetchall()
            for task_id, last_seq in pending:
                if partition_of(task_id, self.partitions) != self.part:
                    continue  # tagged under another partition count: its owner takes it over (take_over)
                dropped += conn.execute(
                    "DELETE FROM task_events WHERE task_id = %s AND seq IN (SELECT seq FROM task_events"
                    " WHERE task_id = %s AND seq <= %s LIMIT %s)",
                    (task_id, task_id, last_seq, limit - dropped),
                ).rowcount
                if dropped < limit:
                    dropped += conn.execute(
                        "DELETE FROM spans WHERE task_id = %s AND span_id IN (SELECT span_id FROM spans"
                        " WHERE task_id = %s AND last_seq <= %s LIMIT %s)",
                        (task_id, task_id, last_seq, limit - dropped),
                    ).rowcount
                if dropped < limit:  # both emptied
                    conn.execute("DELETE FROM archive_pending WHERE task_id = %s", (task_id,))
                if dropped >= limit:
                    break
        return dropped

    def archived_backlog(self) -> int:
        """About how many rows of this partition's archived tasks wait to be removed."""
        row = self._conn.execute(
            "SELECT coalesce(sum(last_seq), 0) FROM archive_pending WHERE part = %s", (self.part,)
        ).fetchone()
        return int(row[0]) if row else 0

    def reclaim(self, pages: int, keep: float = 0.0) -> int:
        """Nothing to give back by hand: PostgreSQL's autovacuum makes removed rows' space reusable
        (a VACUUM FULL to shrink the files is an operator's decision, it locks the tables)."""
        return 0

    def restore(self, task_id: str, rows: TaskRows) -> bool:
        """Put an archived task's rows back (those still in the store are kept); False if it is not
        archived, or if another partition's writer owns the task."""
        if not self._owns(task_id):
            return False
        with self.fenced() as conn:
            row = conn.execute(
                "SELECT archived FROM tasks WHERE task_id = %s FOR UPDATE", (task_id,)
            ).fetchone()
            if row is None or row[0] == 0:
                return False
            self._put_back(conn, task_id, rows)
        self._latest.pop(task_id, None)
        return True

    def _owns(self, task_id: str) -> bool:
        """The task's rows are this partition's writer's to change (a request sent to the wrong
        partition's control list is refused, logged: two writers never change one task)."""
        if partition_of(task_id, self.partitions) == self.part:
            return True
        log.error("retention of task %r asked of partition %d's worker: refused", task_id, self.part)
        return False

    def _put_back(self, conn: psycopg.Connection, task_id: str, rows: TaskRows) -> None:
        """Raises ArchiveError, with nothing changed, if the rows do not fit the store."""
        try:
            with conn.transaction():  # a savepoint: the batch's transaction goes on without these rows
                self._insert(conn, "spans", rows.spans)
                self._insert(conn, "task_events", rows.events)
        except psycopg.OperationalError:
            raise  # the server or the connection: the store's fault, retried as any commit
        except psycopg.DatabaseError as exc:
            # What the archive holds does not fit (a CHECK, a type, a column): refused for this task
            # alone, as SQLite's writer does, so that one archive can never stall the partition.
            # Unlike SQLite's INSERT OR IGNORE, a row that breaks a CHECK refuses the whole restore.
            raise ArchiveError(f"its rows do not fit the store: {exc}") from None
        conn.execute("UPDATE tasks SET archived = 0, archived_failed = NULL WHERE task_id = %s", (task_id,))
        conn.execute(
            "INSERT INTO task_restores (task_id, restored_at) VALUES (%s, %s)"
            " ON CONFLICT (task_id) DO UPDATE SET restored_at = excluded.restored_at",
            (task_id, format_ms(time.time_ns())),
        )
        conn.execute("DELETE FROM archive_pending WHERE task_id = %s", (task_id,))

    def _insert(self, conn: psycopg.Connection, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Rows (back) into `table`, those already there by their keys kept as they are."""
        if not rows:
            return
        names = list(rows[0])
        if table not in self._columns_of:
            self._columns_of[table] = {
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = %s",
                    (table,),
                )
            }
        columns = self._columns_of[table]
        if not set(names) <= columns or any(list(row) != names for row in rows):
            raise ArchiveError(
                f"{table} rows with columns the store does not have: {sorted(set(names) - columns)}"
            )
        overriding = " OVERRIDING SYSTEM VALUE" if table == "task_events" else ""  # the archived event_ids
        marks = ", ".join(["%s"] * len(names))
        sql = f"INSERT INTO {table} ({', '.join(names)}){overriding} VALUES ({marks}) ON CONFLICT DO NOTHING"
        with conn.cursor() as cur:
            cur.executemany(sql, [[row[n] for n in names] for row in rows])

    def _bring_back(self, conn: psycopg.Connection, task_ids: Iterable[str]) -> None:
        """Restore, inside the batch's transaction, the archived tasks among `task_ids` (as
        StoreWriter's): one whose archive cannot be read stays archived, and none of its rows are
        removed any more; `taskevents restore` brings the archive back once it can be read."""
        ids = list(task_ids)
        if not ids:
            return
        archived = conn.execute(
            "SELECT task_id, latest_seq FROM tasks WHERE archived = 1 AND task_id = ANY(%s)", (ids,)
        ).fetchall()
        for task_id, latest_seq in archived:
            try:
                if self.archive is None:
                    raise ArchiveError("no archive directory configured")
                self._put_back(conn, task_id, self.archive.read(task_id))
            except ArchiveError as exc:
                log.error("a late event for archived task %r, whose archive cannot be read: %s", task_id, exc)
                conn.execute("DELETE FROM archive_pending WHERE task_id = %s", (task_id,))
                continue
            log.info("task %r restored from its archive (seq 1..%d) for a late event", task_id, latest_seq)

    def _wal_position(self, batch_id: int) -> str | None:
        """After a commit: a WAL position at or past its commit record (the insert position, since
        with synchronous_commit off the write position may not have reached it yet), which a replica
        must have replayed to serve the batch. None if the server did not answer: readers then use
        the primary, and the next batch finds out about the connection."""
        try:
            row = self._conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        except psycopg.Error as exc:
            log.warning("the WAL position after batch %s is unknown: %s", batch_id, exc)
            return None
        return None if row is None else str(row[0])

    def close(self) -> None:
        self._conn.close()

    def _drop_duplicates(self, conn: psycopg.Connection, batch: Sequence[Decoded]) -> list[Decoded]:
        """Events whose (task_id, event_uid) is already stored, or repeated in this batch, are stored once."""
        keyed = [(d.event.task_id, d.event.event_uid) for d in batch if d.event.event_uid is not None]
        if not keyed:
            return list(batch)
        tasks, uids = _columns(keyed, 2)
        seen = {
            (row[0], row[1])
            for row in conn.execute(
                "SELECT e.task_id, e.event_uid FROM task_events AS e"
                " JOIN unnest(%s::text[], %s::text[]) AS k(t, u) ON e.task_id = k.t AND e.event_uid = k.u",
                (tasks, uids),
            )
        }
        fresh = []
        for d in batch:
            uid = d.event.event_uid
            if uid is not None:
                key = (d.event.task_id, uid)
                if key in seen:
                    continue
                seen.add(key)
            fresh.append(d)
        return fresh

    def _load_latest(self, conn: psycopg.Connection, task_ids: Iterable[str]) -> dict[str, int | None]:
        latest, missing = cached_latest(self._latest, task_ids)
        if missing:
            found = {
                row[0]: int(row[1])
                for row in conn.execute(
                    "SELECT task_id, latest_seq FROM tasks WHERE task_id = ANY(%s)", (missing,)
                )
            }
            for task_id in missing:
                latest[task_id] = found.get(task_id)
        return latest

    @staticmethod
    def _write_tasks(conn: psycopg.Connection, changes: dict[str, TaskChange], at: str) -> None:
        new = [
            (tid, c.last_seq, c.count, c.phase, c.status or "running", c.exit_reason)
            for tid, c in changes.items()
            if not c.existing
        ]
        old = [
            (tid, c.last_seq, c.count, c.phase, c.status, c.reason_changed, c.exit_reason)
            for tid, c in changes.items()
            if c.existing
        ]
        if new:
            conn.execute(_INSERT_TASKS, [at, at, *_columns(new, 6)])
        if old:
            conn.execute(_UPDATE_TASKS, [at, *_columns(old, 7)])

    @staticmethod
    def _write_spans(conn: psycopg.Connection, changes: Iterable[SpanChange], at: str) -> None:
        for state_changed, rows in span_rows(changes, at).items():
            if rows:
                conn.execute(_upsert_spans_sql(state_changed), _columns(rows, 16))
